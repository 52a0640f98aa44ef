//! Retrying events: one event (after seconds or at a time), a whole batch,
//! or an event given field by field; each comes back to its consumer only.

use anyhow::{ensure, Result};
use chrono::{DateTime, SubsecRound, Utc};
use pgq::Event;
use tokio_postgres::Client;

use crate::{consume, data, open_batch, setup_queue, tick};

/// A queue `q` with consumers `a` and `b`, three events `e0..e2` in one
/// batch; `a`'s batch is open, `b` has read and finished its own.
async fn two_consumers_one_batch() -> Result<(pgq_test_support::TestDb, Client, i64, Vec<Event>)> {
    let (db, c) = setup_queue("q", "a").await?;
    pgq::register_consumer(&c, "q", "b").await?;
    for i in 0..3 {
        pgq::insert_event(&c, "q", "t", &format!("e{i}")).await?;
    }
    tick(&c, "q").await?;
    assert_eq!(data(&consume(&c, "q", "b").await?), ["e0", "e1", "e2"]);
    let batch = open_batch(&c, "q", "a").await?;
    let events = pgq::get_batch_events(&c, batch).await?;
    Ok((db, c, batch, events))
}

/// Runs `maint_retry_events` until it has nothing more to move; returns the total.
async fn move_retries(c: &Client) -> Result<i32> {
    let mut total = 0;
    loop {
        let n = pgq::maint_retry_events(c).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// Moves due retries into the queue, ticks, and returns what `a` and `b` get.
async fn redeliver(c: &Client) -> Result<(i32, Vec<Event>, Vec<Event>)> {
    let moved = move_retries(c).await?;
    tick(c, "q").await?;
    Ok((moved, consume(c, "q", "a").await?, consume(c, "q", "b").await?))
}

#[tokio::test]
async fn event_retry_puts_one_event_back_for_this_consumer_only_with_ev_retry_1() -> Result<()> {
    let (_db, c, batch, events) = two_consumers_one_batch().await?;
    let e1 = &events[1];
    assert!(pgq::event_retry(&c, batch, e1.ev_id, 0).await?);
    assert!(!pgq::event_retry(&c, batch, e1.ev_id, 0).await?, "retried twice");
    assert!(pgq::finish_batch(&c, batch).await?);

    let (moved, a, b) = redeliver(&c).await?;
    assert_eq!(moved, 1);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].ev_id, e1.ev_id);
    assert_eq!(a[0].ev_retry, Some(1));
    assert_eq!((a[0].kind(), a[0].data()), ("t", "e1"));
    assert_eq!(a[0].ev_time, e1.ev_time);
    assert!(b.is_empty(), "the other consumer got the retry: {b:?}");
    Ok(())
}

#[tokio::test]
async fn event_retry_with_a_delay_is_held_back_until_its_time() -> Result<()> {
    let (_db, c, batch, events) = two_consumers_one_batch().await?;
    assert!(pgq::event_retry(&c, batch, events[0].ev_id, 3600).await?);
    pgq::finish_batch(&c, batch).await?;
    let due: DateTime<Utc> = c
        .query_one("select ev_retry_after from pgq.retry_queue", &[])
        .await?
        .get(0);
    let wait = due - Utc::now();
    assert!(
        wait > chrono::Duration::seconds(3500) && wait <= chrono::Duration::seconds(3600),
        "{wait}"
    );
    assert_eq!(pgq::maint_retry_events(&c).await?, 0);

    let err = pgq::event_retry(&c, batch, events[0].ev_id, 0)
        .await
        .expect_err("finished batch");
    assert!(
        err.to_string()
            .contains(&format!("batch {batch}, event {}", events[0].ev_id)),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn event_retry_at_comes_back_at_the_given_time_to_this_consumer_only() -> Result<()> {
    let (_db, c, batch, events) = two_consumers_one_batch().await?;
    let later = (Utc::now() + chrono::Duration::hours(1)).trunc_subsecs(6);
    assert!(pgq::event_retry_at(&c, batch, events[0].ev_id, later).await?);
    let past = Utc::now() - chrono::Duration::seconds(1);
    assert!(pgq::event_retry_at(&c, batch, events[2].ev_id, past).await?);
    pgq::finish_batch(&c, batch).await?;

    let stored: DateTime<Utc> = c
        .query_one(
            "select ev_retry_after from pgq.retry_queue where ev_id = $1",
            &[&events[0].ev_id],
        )
        .await?
        .get(0);
    assert_eq!(stored, later);

    let (moved, a, b) = redeliver(&c).await?;
    assert_eq!(moved, 1, "only the due event moves");
    assert_eq!(
        a.iter().map(|e| (e.ev_id, e.ev_retry)).collect::<Vec<_>>(),
        [(events[2].ev_id, Some(1))]
    );
    assert!(b.is_empty(), "{b:?}");
    Ok(())
}

#[tokio::test]
async fn batch_retry_puts_every_event_of_the_batch_back_once() -> Result<()> {
    let (_db, c, batch, events) = two_consumers_one_batch().await?;
    assert_eq!(pgq::batch_retry(&c, batch, 0).await?, 3);
    assert_eq!(pgq::batch_retry(&c, batch, 0).await?, 0, "events retried twice");
    pgq::finish_batch(&c, batch).await?;

    let (moved, a, b) = redeliver(&c).await?;
    assert_eq!(moved, 3);
    assert_eq!(data(&a), ["e0", "e1", "e2"]);
    assert!(a.iter().all(|e| e.ev_retry == Some(1)), "{a:?}");
    assert_eq!(
        a.iter().map(|e| e.ev_id).collect::<Vec<_>>(),
        events.iter().map(|e| e.ev_id).collect::<Vec<_>>()
    );
    assert!(b.is_empty(), "{b:?}");

    let err = pgq::batch_retry(&c, batch, 0).await.expect_err("finished batch");
    assert!(
        err.to_string()
            .contains(&format!("pgq.batch_retry failed for batch {batch}")),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn event_retry_raw_delivers_a_given_event_to_one_consumer_without_a_batch() -> Result<()> {
    let (_db, c) = setup_queue("q", "a").await?;
    pgq::register_consumer(&c, "q", "b").await?;
    let ev_time = DateTime::parse_from_rfc3339("2020-02-29T12:34:56.789012Z")?.with_timezone(&Utc);
    let event = Event {
        ev_id: 4242,
        ev_time,
        ev_txid: 0,
        ev_retry: Some(3),
        ev_type: Some("raw".into()),
        ev_data: Some("payload".into()),
        ev_extra1: Some("x1".into()),
        ev_extra2: None,
        ev_extra3: Some("x3".into()),
        ev_extra4: None,
    };
    let due = Utc::now() - chrono::Duration::seconds(1);
    assert_eq!(pgq::event_retry_raw(&c, "q", "a", due, &event).await?, 4242);

    let (moved, a, b) = redeliver(&c).await?;
    assert_eq!(moved, 1);
    ensure!(a.len() == 1, "a got {a:?}");
    let got = &a[0];
    assert_eq!(
        Event {
            ev_txid: event.ev_txid,
            ..got.clone()
        },
        event
    );
    assert!(b.is_empty(), "{b:?}");

    let err = pgq::event_retry_raw(&c, "q", "stranger", due, &event)
        .await
        .expect_err("unregistered consumer");
    assert!(
        err.to_string()
            .contains(r#"queue "q", consumer "stranger", event 4242"#),
        "{err}"
    );
    Ok(())
}
