//! Batches: opening them (plain and custom), describing them, reading their
//! events in every way PgQ offers, finishing them.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use pgq::{BatchLimits, Event, Interval, NewEvent};
use tokio_postgres::error::SqlState;

use crate::{data, open_batch, setup, setup_queue, tick};

#[tokio::test]
async fn next_batch_is_none_without_a_tick_and_returns_the_open_batch_until_it_is_finished() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    assert_eq!(pgq::next_batch(&c, "q", "reader").await?, None);

    pgq::insert_event(&c, "q", "t", "x").await?;
    tick(&c, "q").await?;
    let batch = open_batch(&c, "q", "reader").await?;
    assert_eq!(pgq::next_batch(&c, "q", "reader").await?, Some(batch));

    assert!(pgq::finish_batch(&c, batch).await?);
    assert!(!pgq::finish_batch(&c, batch).await?, "finished twice");
    assert_eq!(pgq::next_batch(&c, "q", "reader").await?, None);
    Ok(())
}

#[tokio::test]
async fn next_batch_for_an_unregistered_consumer_is_an_error_naming_queue_and_consumer() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let err = pgq::next_batch(&c, "q", "stranger").await.expect_err("not registered");
    assert!(
        err.to_string()
            .contains(r#"pgq.next_batch failed for queue "q", consumer "stranger""#),
        "{err}"
    );
    assert_eq!(err.code(), Some(&SqlState::RAISE_EXCEPTION));
    Ok(())
}

#[tokio::test]
async fn next_batch_info_reports_the_ticks_that_bound_the_batch() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    assert_eq!(pgq::next_batch_info(&c, "q", "reader").await?, None);
    let start = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    pgq::insert_event(&c, "q", "t", "x").await?;
    let t = tick(&c, "q").await?;

    let b = pgq::next_batch_info(&c, "q", "reader").await?.context("batch")?;
    assert_eq!(Some(b.prev_tick_id), start.last_tick);
    assert_eq!(b.cur_tick_id, t);
    assert!(b.prev_tick_time <= b.cur_tick_time);
    assert!(b.cur_tick_event_seq > b.prev_tick_event_seq);
    assert_eq!(b.event_estimate(), b.cur_tick_event_seq - b.prev_tick_event_seq);
    // The same batch again while it is open.
    assert_eq!(pgq::next_batch_info(&c, "q", "reader").await?, Some(b.clone()));
    assert_eq!(pgq::next_batch(&c, "q", "reader").await?, Some(b.batch_id));
    Ok(())
}

#[tokio::test]
async fn next_batch_custom_min_count_holds_the_batch_back_until_enough_events() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    let start = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    // Tick after every event (no force_tick), so ticks carry exact event counts.
    pgq::set_queue_config(&c, "q", "ticker_max_count", "1").await?;
    let at_least = |n| BatchLimits {
        min_count: Some(n),
        ..BatchLimits::default()
    };
    for i in 0..3 {
        pgq::insert_event(&c, "q", "t", &format!("a{i}")).await?;
    }
    let t1 = pgq::ticker_queue(&c, "q").await?.context("no tick")?;
    assert_eq!(pgq::next_batch_custom(&c, "q", "reader", &at_least(4)).await?, None);
    let info = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    assert_eq!(info.current_batch, None, "a held-back batch was opened");

    for i in 0..3 {
        pgq::insert_event(&c, "q", "t", &format!("b{i}")).await?;
    }
    let t2 = pgq::ticker_queue(&c, "q").await?.context("no tick")?;
    assert!(t2 > t1);
    let b = pgq::next_batch_custom(&c, "q", "reader", &at_least(4))
        .await?
        .context("enough events, yet no batch")?;
    assert_eq!((Some(b.prev_tick_id), b.cur_tick_id), (start.last_tick, t2));
    assert_eq!(
        data(&pgq::get_batch_events(&c, b.batch_id).await?),
        ["a0", "a1", "a2", "b0", "b1", "b2"]
    );
    Ok(())
}

#[tokio::test]
async fn next_batch_custom_with_a_small_min_count_stops_at_the_first_tick_with_enough_events() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    pgq::set_queue_config(&c, "q", "ticker_max_count", "1").await?;
    for round in 0..3 {
        for i in 0..3 {
            pgq::insert_event(&c, "q", "t", &format!("{round}.{i}")).await?;
        }
        pgq::ticker_queue(&c, "q").await?.context("no tick")?;
    }
    let first = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    let limits = BatchLimits {
        min_count: Some(1),
        ..BatchLimits::default()
    };
    let b = pgq::next_batch_custom(&c, "q", "reader", &limits)
        .await?
        .context("no batch")?;
    // The last tick is far more than twice min_count away: PgQ takes the
    // first tick that satisfies it instead.
    assert_eq!(Some(b.prev_tick_id), first.last_tick);
    assert_eq!(
        data(&pgq::get_batch_events(&c, b.batch_id).await?),
        ["0.0", "0.1", "0.2"]
    );
    Ok(())
}

#[tokio::test]
async fn next_batch_custom_min_lag_skips_a_tick_younger_than_the_lag() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    pgq::insert_event(&c, "q", "t", "x").await?;
    let t = tick(&c, "q").await?;
    let lag = |d: Duration| BatchLimits {
        min_lag: Some(Interval::from(d)),
        ..BatchLimits::default()
    };
    assert_eq!(
        pgq::next_batch_custom(&c, "q", "reader", &lag(Duration::from_secs(3600))).await?,
        None
    );
    let info = pgq::get_consumer_info(&c, "q", "reader").await?.context("info")?;
    assert_eq!(info.current_batch, None);

    let b = pgq::next_batch_custom(&c, "q", "reader", &lag(Duration::ZERO))
        .await?
        .context("a tick older than zero, yet no batch")?;
    assert_eq!(b.cur_tick_id, t);
    assert_eq!(data(&pgq::get_batch_events(&c, b.batch_id).await?), ["x"]);
    Ok(())
}

#[tokio::test]
async fn next_batch_custom_min_interval_waits_for_a_batch_spanning_that_long() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    pgq::insert_event(&c, "q", "t", "x").await?;
    let t = tick(&c, "q").await?;
    let span = |d: Duration| BatchLimits {
        min_interval: Some(Interval::from(d)),
        ..BatchLimits::default()
    };
    assert_eq!(
        pgq::next_batch_custom(&c, "q", "reader", &span(Duration::from_secs(3600))).await?,
        None
    );
    let b = pgq::next_batch_custom(&c, "q", "reader", &span(Duration::ZERO))
        .await?
        .context("no batch")?;
    assert_eq!(b.cur_tick_id, t);
    Ok(())
}

#[tokio::test]
async fn get_batch_info_describes_an_open_batch_and_none_once_finished() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    pgq::insert_event(&c, "q", "t", "x").await?;
    tick(&c, "q").await?;
    let b = pgq::next_batch_info(&c, "q", "reader").await?.context("batch")?;

    let info = pgq::get_batch_info(&c, b.batch_id).await?.context("batch info")?;
    assert_eq!(info.queue_name, "q");
    assert_eq!(info.consumer_name, "reader");
    assert_eq!((info.prev_tick_id, info.tick_id), (b.prev_tick_id, b.cur_tick_id));
    assert_eq!((info.batch_start, info.batch_end), (b.prev_tick_time, b.cur_tick_time));
    assert_eq!(
        (info.seq_start, info.seq_end),
        (b.prev_tick_event_seq, b.cur_tick_event_seq)
    );
    assert!(info.lag.as_duration() < Duration::from_secs(60), "{:?}", info.lag);

    pgq::finish_batch(&c, b.batch_id).await?;
    assert_eq!(pgq::get_batch_info(&c, b.batch_id).await?, None);
    assert_eq!(pgq::get_batch_info(&c, 987_654).await?, None);
    Ok(())
}

#[tokio::test]
async fn get_batch_events_returns_every_field_of_the_events_in_id_order() -> Result<()> {
    let (_db, mut c) = setup_queue("q", "reader").await?;
    let before = Utc::now();
    let tx = c.transaction().await?;
    let txid: i64 = tx.query_one("select txid_current()", &[]).await?.get(0);
    let plain = pgq::insert_event(&tx, "q", "plain", "data 1").await?;
    let full = pgq::insert_event_full(
        &tx,
        "q",
        &NewEvent {
            ev_type: Some("full".into()),
            ev_data: Some("data 2 \u{e9}\u{1f600}".into()),
            ev_extra1: Some("x1".into()),
            ev_extra2: Some("x2".into()),
            ev_extra3: None,
            ev_extra4: Some("x4".into()),
        },
    )
    .await?;
    let nulls = pgq::insert_event_full(&tx, "q", &NewEvent::default()).await?;
    tx.commit().await?;
    let after = Utc::now();
    tick(&c, "q").await?;

    let batch = open_batch(&c, "q", "reader").await?;
    let events = pgq::get_batch_events(&c, batch).await?;
    let ids: Vec<i64> = events.iter().map(|e| e.ev_id).collect();
    assert_eq!(ids, [plain, full, nulls]);
    for e in &events {
        assert_eq!(e.ev_txid, txid);
        assert_eq!(e.ev_retry, None);
        assert!(
            e.ev_time >= before - chrono::Duration::seconds(5) && e.ev_time <= after,
            "{e:?}"
        );
    }
    let (p, f, n) = (&events[0], &events[1], &events[2]);
    assert_eq!((p.kind(), p.data()), ("plain", "data 1"));
    assert_eq!((p.ev_extra1.as_deref(), p.ev_extra4.as_deref()), (None, None));
    assert_eq!(f.kind(), "full");
    assert_eq!(f.data(), "data 2 \u{e9}\u{1f600}");
    assert_eq!(
        [&f.ev_extra1, &f.ev_extra2, &f.ev_extra3, &f.ev_extra4].map(|x| x.as_deref()),
        [Some("x1"), Some("x2"), None, Some("x4")]
    );
    assert_eq!((n.ev_type.as_deref(), n.ev_data.as_deref()), (None, None));
    assert_eq!((n.kind(), n.data()), ("", ""));
    Ok(())
}

async fn five_events(c: &tokio_postgres::Client) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    for (i, ty) in ["a", "b", "a", "b", "a"].iter().enumerate() {
        ids.push(pgq::insert_event(c, "q", ty, &i.to_string()).await?);
    }
    tick(c, "q").await?;
    Ok(ids)
}

fn ids(events: &[Event]) -> Vec<i64> {
    events.iter().map(|e| e.ev_id).collect()
}

#[tokio::test]
async fn get_batch_cursor_returns_the_first_events_and_fetch_batch_cursor_the_rest() -> Result<()> {
    let (_db, mut c) = setup_queue("q", "reader").await?;
    let all = five_events(&c).await?;
    let tx = c.transaction().await?;
    let batch = open_batch_tx(&tx).await?;
    // A name that needs quoting: PgQ's quote_ident and the crate's must agree.
    let cursor = "Batch Cursor";
    assert_eq!(ids(&pgq::get_batch_cursor(&tx, batch, cursor, 2).await?), all[..2]);
    assert!(pgq::fetch_batch_cursor(&tx, cursor, 0).await?.is_empty());
    assert_eq!(ids(&pgq::fetch_batch_cursor(&tx, cursor, 2).await?), all[2..4]);
    assert_eq!(ids(&pgq::fetch_batch_cursor(&tx, cursor, 10).await?), all[4..]);
    assert!(pgq::fetch_batch_cursor(&tx, cursor, 10).await?.is_empty());
    assert!(pgq::finish_batch(&tx, batch).await?);
    tx.commit().await?;
    Ok(())
}

async fn open_batch_tx(tx: &tokio_postgres::Transaction<'_>) -> Result<i64> {
    pgq::next_batch(tx, "q", "reader").await?.context("no batch")
}

#[tokio::test]
async fn get_batch_cursor_where_keeps_only_matching_events() -> Result<()> {
    let (_db, mut c) = setup_queue("q", "reader").await?;
    let all = five_events(&c).await?;
    let tx = c.transaction().await?;
    let batch = open_batch_tx(&tx).await?;
    let bs = pgq::get_batch_cursor_where(&tx, batch, "only_b", 10, "ev_type = 'b'").await?;
    assert_eq!(ids(&bs), [all[1], all[3]]);
    // A quick limit of 0 opens the cursor without reading from it.
    let none = pgq::get_batch_cursor_where(&tx, batch, "only_a", 0, "ev_type = 'a'").await?;
    assert!(none.is_empty());
    assert_eq!(
        ids(&pgq::fetch_batch_cursor(&tx, "only_a", 100).await?),
        [all[0], all[2], all[4]]
    );
    Ok(())
}

#[tokio::test]
async fn fetch_batch_cursor_on_an_unknown_cursor_is_an_error_naming_it() -> Result<()> {
    let (_db, mut c) = setup().await;
    let tx = c.transaction().await?;
    let err = pgq::fetch_batch_cursor(&tx, "nope", 5)
        .await
        .expect_err("unknown cursor");
    assert_eq!(err.code(), Some(&SqlState::INVALID_CURSOR_NAME));
    assert!(err.to_string().contains(r#"cursor "nope""#), "{err}");
    Ok(())
}

#[tokio::test]
async fn batch_event_sql_is_a_query_returning_the_batch_events() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    five_events(&c).await?;
    let batch = open_batch(&c, "q", "reader").await?;
    let sql = pgq::batch_event_sql(&c, batch).await?;
    assert!(sql.ends_with(" order by 1"), "{sql}");
    for table in pgq::batch_event_tables(&c, batch).await? {
        assert!(sql.contains(&table), "{table} not read by {sql}");
    }
    let rows = c.query(&sql, &[]).await?;
    let events: Vec<Event> = rows.iter().map(Event::from_row).collect::<Result<_, _>>()?;
    assert_eq!(events, pgq::get_batch_events(&c, batch).await?);
    assert_eq!(events.len(), 5);

    let err = pgq::batch_event_sql(&c, 424_242).await.expect_err("unknown batch");
    assert!(err.to_string().contains("batch 424242"), "{err}");
    Ok(())
}

#[tokio::test]
async fn batch_event_tables_lists_the_event_tables_a_batch_may_lie_in() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    five_events(&c).await?;
    let batch = open_batch(&c, "q", "reader").await?;
    let id = crate::queue_id(&c, "q").await?;
    // The first batch starts at the tick taken when the queue was created,
    // before the last rotation was known to everyone: PgQ looks in the
    // previous table (the last of three) as well as the current one.
    assert_eq!(
        pgq::batch_event_tables(&c, batch).await?,
        [format!("pgq.event_{id}_2"), format!("pgq.event_{id}_0")]
    );
    assert!(pgq::batch_event_tables(&c, batch)
        .await?
        .contains(&pgq::current_event_table(&c, "q").await?));
    Ok(())
}
