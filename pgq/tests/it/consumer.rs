//! Consumers: register, reposition, inspect, unregister.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_postgres::error::SqlState;

use crate::{open_batch, setup, setup_queue, tick};

#[tokio::test]
async fn register_consumer_returns_true_then_false_and_starts_at_the_last_tick() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let t = tick(&c, "q").await?;
    assert!(pgq::register_consumer(&c, "q", "reader").await?);
    assert!(!pgq::register_consumer(&c, "q", "reader").await?);

    let info = pgq::get_consumer_info(&c, "q", "reader")
        .await?
        .context("consumer info")?;
    assert_eq!(info.queue_name, "q");
    assert_eq!(info.consumer_name, "reader");
    assert_eq!(info.last_tick, Some(t));
    assert_eq!(info.current_batch, None);
    assert_eq!(info.next_tick, None);
    assert_eq!(info.pending_events, Some(0));

    let err = pgq::register_consumer(&c, "nosuch", "reader")
        .await
        .expect_err("missing queue");
    assert!(
        err.to_string()
            .contains(r#"pgq.register_consumer failed for queue "nosuch", consumer "reader""#),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn register_consumer_at_positions_a_new_consumer_and_moves_an_existing_one() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let t1 = tick(&c, "q").await?;
    pgq::insert_event(&c, "q", "t", "after t1").await?;
    let t2 = tick(&c, "q").await?;

    assert!(pgq::register_consumer_at(&c, "q", "reader", t1).await?);
    let info = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    assert_eq!(info.last_tick, Some(t1));
    let b = pgq::next_batch_info(&c, "q", "reader").await?.context("batch")?;
    assert_eq!((b.prev_tick_id, b.cur_tick_id), (t1, t2));
    assert_eq!(crate::data(&pgq::get_batch_events(&c, b.batch_id).await?), ["after t1"]);

    // Moving an existing consumer says false, and drops its open batch.
    assert!(!pgq::register_consumer_at(&c, "q", "reader", t2).await?);
    let info = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    assert_eq!(info.last_tick, Some(t2));
    assert_eq!(info.current_batch, None);
    assert_eq!(pgq::get_batch_info(&c, b.batch_id).await?, None);

    let err = pgq::register_consumer_at(&c, "q", "reader", 9_999)
        .await
        .expect_err("repositioned to a tick that does not exist");
    assert_eq!(err.code(), Some(&SqlState::RAISE_EXCEPTION));
    let msg = err.as_db_error().context("db error")?.message();
    assert!(msg.contains("tick not found: 9999"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn unregister_consumer_returns_how_many_were_unregistered_and_drops_their_retries() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    pgq::insert_event(&c, "q", "t", "x").await?;
    tick(&c, "q").await?;
    let batch = open_batch(&c, "q", "reader").await?;
    let ev = pgq::get_batch_events(&c, batch).await?;
    assert!(pgq::event_retry(&c, batch, ev[0].ev_id, 3600).await?);
    let queued: i64 = c.query_one("select count(*) from pgq.retry_queue", &[]).await?.get(0);
    assert_eq!(queued, 1);

    assert_eq!(pgq::unregister_consumer(&c, "q", "reader").await?, 1);
    assert_eq!(pgq::get_consumer_info(&c, "q", "reader").await?, None);
    let left: i64 = c.query_one("select count(*) from pgq.retry_queue", &[]).await?.get(0);
    assert_eq!(left, 0, "retry events of the unregistered consumer remain");
    assert_eq!(pgq::unregister_consumer(&c, "q", "reader").await?, 0);
    Ok(())
}

#[tokio::test]
async fn get_consumer_info_reports_lag_pending_events_and_the_open_batch() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    // One event per tick is enough: ticks follow the events, no force_tick,
    // so the event sequence counts exactly the events inserted.
    pgq::set_queue_config(&c, "q", "ticker_max_count", "1").await?;
    pgq::insert_event(&c, "q", "t", "before").await?;
    pgq::ticker_queue(&c, "q").await?;
    pgq::register_consumer(&c, "q", "reader").await?;
    let start = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    assert_eq!(start.pending_events, Some(0));

    for i in 0..3 {
        pgq::insert_event(&c, "q", "t", &i.to_string()).await?;
    }
    let t = pgq::ticker_queue(&c, "q").await?.context("ticker_queue did not tick")?;
    let info = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    assert_eq!(info.pending_events, Some(3));
    assert_eq!(info.last_tick, start.last_tick);
    let lag = info.lag.context("lag")?.as_duration();
    assert!(lag < Duration::from_secs(60), "{lag:?}");
    assert!(info.last_seen.context("last_seen")?.as_duration() < Duration::from_secs(60));

    let batch = open_batch(&c, "q", "reader").await?;
    let info = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    assert_eq!(info.current_batch, Some(batch));
    assert_eq!(info.next_tick, Some(t));

    pgq::finish_batch(&c, batch).await?;
    let info = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    assert_eq!(info.last_tick, Some(t));
    assert_eq!((info.current_batch, info.next_tick), (None, None));
    assert_eq!(info.pending_events, Some(0));
    Ok(())
}

#[tokio::test]
async fn get_consumer_info_queue_and_all_list_consumers_by_queue_then_name() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "qa").await?;
    pgq::create_queue(&c, "qb").await?;
    pgq::register_consumer(&c, "qa", "c2").await?;
    pgq::register_consumer(&c, "qa", "c1").await?;
    pgq::register_consumer(&c, "qb", "c1").await?;

    let names = |v: Vec<pgq::ConsumerInfo>| -> Vec<(String, String)> {
        v.into_iter().map(|i| (i.queue_name, i.consumer_name)).collect()
    };
    let pair = |q: &str, c: &str| (q.to_string(), c.to_string());
    assert_eq!(
        names(pgq::get_consumer_info_queue(&c, "qa").await?),
        [pair("qa", "c1"), pair("qa", "c2")]
    );
    assert_eq!(
        names(pgq::get_consumer_info_all(&c).await?),
        [pair("qa", "c1"), pair("qa", "c2"), pair("qb", "c1")]
    );
    assert!(pgq::get_consumer_info_queue(&c, "nosuch").await?.is_empty());
    assert_eq!(pgq::get_consumer_info(&c, "qb", "c2").await?, None);
    Ok(())
}
