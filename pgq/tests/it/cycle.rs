//! One whole life of a queue, through the crate only.

use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use pgq::NewEvent;

use std::time::Duration;

use pgq_test_support::{wait_for, Pgqd};

use crate::setup;

#[tokio::test]
async fn a_queue_lives_from_create_through_consume_retry_and_maintenance_to_drop() -> Result<()> {
    let (_db, mut c) = setup().await;

    // Create and register.
    assert!(pgq::create_queue(&c, "orders").await?);
    assert!(pgq::register_consumer(&c, "orders", "mailer").await?);

    // Produce in one transaction: one by one and pipelined.
    let tx = c.transaction().await?;
    let first = pgq::insert_event(&tx, "orders", "created", r#"{"id": 1}"#).await?;
    let more = pgq::insert_events(
        &tx,
        "orders",
        &[
            NewEvent::new("created", r#"{"id": 2}"#),
            NewEvent::new("paid", r#"{"id": 1}"#),
        ],
    )
    .await?;
    tx.commit().await?;

    // Tick, as pgqd would.
    pgq::force_tick(&c, "orders").await?;
    let tick = pgq::ticker_queue(&c, "orders").await?.context("no tick")?;

    // Consume: read the batch plainly and streamed, retry one event, finish.
    let tx = c.transaction().await?;
    let batch = pgq::next_batch(&tx, "orders", "mailer").await?.context("no batch")?;
    let info = pgq::get_batch_info(&tx, batch).await?.context("no batch info")?;
    assert_eq!((info.queue_name.as_str(), info.tick_id), ("orders", tick));
    let events = pgq::get_batch_events(&tx, batch).await?;
    let streamed: Vec<_> = pgq::stream_batch_events(&tx, batch).await?.try_collect().await?;
    assert_eq!(streamed, events);
    let ids: Vec<i64> = events.iter().map(|e| e.ev_id).collect();
    assert_eq!(ids, [first, more[0], more[1]]);
    assert_eq!(events[2].json()?["id"], 1);
    let paid = events.iter().find(|e| e.kind() == "paid").context("no paid event")?;
    assert!(pgq::event_retry(&tx, batch, paid.ev_id, 0).await?);
    assert!(pgq::finish_batch(&tx, batch).await?);
    tx.commit().await?;
    assert_eq!(pgq::next_batch(&c, "orders", "mailer").await?, None);

    // Maintenance: the retried event returns, then rotation and vacuum steps.
    assert_eq!(pgq::maint_retry_events(&c).await?, 1);
    for op in pgq::maint_operations(&c).await? {
        if op.func_name == "vacuum" {
            pgq::run_maint_operation(&c, &op).await?;
        } else {
            let tx = c.transaction().await?;
            while pgq::run_maint_operation(&tx, &op).await? {}
            tx.commit().await?;
        }
    }
    pgq::force_tick(&c, "orders").await?;
    pgq::ticker(&c).await?;
    let batch = pgq::next_batch(&c, "orders", "mailer")
        .await?
        .context("no retry batch")?;
    let again = pgq::get_batch_events(&c, batch).await?;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].ev_id, again[0].ev_retry), (paid.ev_id, Some(1)));
    assert!(pgq::finish_batch(&c, batch).await?);
    let consumer = pgq::get_consumer_info(&c, "orders", "mailer")
        .await?
        .context("no consumer")?;
    assert_eq!((consumer.current_batch, consumer.pending_events), (None, Some(0)));

    // Unregister and drop.
    assert_eq!(pgq::unregister_consumer(&c, "orders", "mailer").await?, 1);
    pgq::drop_queue(&c, "orders").await?;
    assert_eq!(pgq::get_queue_info(&c, "orders").await?, None);
    assert!(pgq::get_queue_info_all(&c).await?.is_empty());
    Ok(())
}

/// Opens the next batch; returns it, still open, with the event of this id
/// if it holds it, else finishes it and returns `None`.
async fn batch_with(c: &tokio_postgres::Client, ev_id: i64) -> Option<(i64, pgq::Event)> {
    let batch = pgq::next_batch(c, "q", "reader").await.ok()??;
    let events = pgq::get_batch_events(c, batch).await.ok()?;
    match events.into_iter().find(|e| e.ev_id == ev_id) {
        Some(ev) => Some((batch, ev)),
        None => {
            pgq::finish_batch(c, batch).await.ok()?;
            None
        }
    }
}

#[tokio::test]
async fn the_real_pgqd_ticks_events_in_and_brings_a_retried_event_back() -> Result<()> {
    let (db, c) = crate::setup_queue("q", "reader").await?;
    pgq::set_queue_config(&c, "q", "ticker_max_lag", "100 milliseconds").await?;
    let _pgqd = Pgqd::start(&db, 0.1);
    let id = pgq::insert_event(&c, "q", "t", "via pgqd").await?;

    let (batch, ev) = wait_for("pgqd to tick the event in", Duration::from_secs(30), || {
        batch_with(&c, id)
    })
    .await;
    assert_eq!((ev.data(), ev.ev_retry), ("via pgqd", None));
    assert!(pgq::event_retry(&c, batch, id, 0).await?);
    assert!(pgq::finish_batch(&c, batch).await?);

    // pgqd's retry maintenance moves it back into the queue, its ticker
    // puts it into a batch.
    let (batch, ev) = wait_for("pgqd to bring the retry back", Duration::from_secs(30), || {
        batch_with(&c, id)
    })
    .await;
    assert_eq!((ev.data(), ev.ev_retry), ("via pgqd", Some(1)));
    assert!(pgq::finish_batch(&c, batch).await?);
    Ok(())
}
