//! Ticking and maintenance: what pgqd does, driven from the tests.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use pgq::{Error, MaintOperation};
use pgq_test_support::wait_for;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::{consume, setup, setup_queue, tick};

#[tokio::test]
async fn ticker_queue_ticks_only_when_max_count_is_reached_or_a_tick_is_forced() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    // Only the event count may make the queue due, however slow the machine.
    pgq::set_queue_config(&c, "q", "ticker_max_lag", "1 hour").await?;
    pgq::set_queue_config(&c, "q", "ticker_idle_period", "1 hour").await?;
    let t1 = tick(&c, "q").await?;
    assert_eq!(pgq::ticker_queue(&c, "q").await?, None, "ticked an idle queue");

    pgq::insert_event(&c, "q", "t", "1").await?;
    pgq::insert_event(&c, "q", "t", "2").await?;
    assert_eq!(
        pgq::ticker_queue(&c, "q").await?,
        None,
        "ticked below max_count and max_lag"
    );

    pgq::set_queue_config(&c, "q", "ticker_max_count", "2").await?;
    assert_eq!(pgq::ticker_queue(&c, "q").await?, Some(t1 + 1));
    assert_eq!(pgq::ticker_queue(&c, "q").await?, None);

    assert_eq!(pgq::force_tick(&c, "q").await?, Some(t1 + 1));
    assert_eq!(pgq::ticker_queue(&c, "q").await?, Some(t1 + 2));

    let err = pgq::ticker_queue(&c, "nosuch").await.expect_err("missing queue");
    assert!(
        err.to_string().contains(r#"pgq.ticker failed for queue "nosuch""#),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn ticker_queue_ticks_once_events_are_older_than_max_lag() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let t1 = tick(&c, "q").await?;
    pgq::set_queue_config(&c, "q", "ticker_max_lag", "200 milliseconds").await?;
    pgq::insert_event(&c, "q", "t", "1").await?;
    pgq::insert_event(&c, "q", "t", "2").await?;
    let t2 = wait_for("a tick after max_lag", Duration::from_secs(10), || async {
        pgq::ticker_queue(&c, "q").await.ok().flatten()
    })
    .await;
    assert_eq!(t2, t1 + 1);
    Ok(())
}

#[tokio::test]
async fn ticker_ticks_every_due_queue_and_returns_how_many_it_ticked() -> Result<()> {
    let (_db, c) = setup().await;
    for q in ["a", "b", "paused"] {
        pgq::create_queue(&c, q).await?;
        pgq::set_queue_config(&c, q, "ticker_max_lag", "1 hour").await?;
        pgq::set_queue_config(&c, q, "ticker_idle_period", "1 hour").await?;
        tick(&c, q).await?;
    }
    pgq::set_queue_config(&c, "paused", "ticker_paused", "true").await?;
    assert_eq!(pgq::ticker(&c).await?, 0, "idle queues ticked");

    let before = pgq::get_queue_info(&c, "paused").await?.context("info")?.last_tick_id;
    for q in ["a", "b", "paused"] {
        pgq::force_tick(&c, q).await?;
    }
    assert_eq!(pgq::ticker(&c).await?, 2);
    assert_eq!(pgq::ticker(&c).await?, 0);
    let after = pgq::get_queue_info(&c, "paused").await?.context("info")?.last_tick_id;
    assert_eq!(before, after, "a paused queue was ticked");
    let err = pgq::ticker_queue(&c, "paused")
        .await
        .expect_err("ticked a paused queue");
    assert_eq!(err.code(), Some(&SqlState::RAISE_EXCEPTION));
    Ok(())
}

#[tokio::test]
async fn force_tick_returns_the_last_tick_and_none_for_a_missing_queue() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let last = pgq::get_queue_info(&c, "q").await?.context("info")?.last_tick_id;
    assert_eq!(pgq::force_tick(&c, "q").await?, last);
    assert_eq!(pgq::force_tick(&c, "nosuch").await?, None);
    Ok(())
}

#[tokio::test]
async fn ticker_external_inserts_the_given_tick_on_a_queue_with_an_external_ticker() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    pgq::set_queue_config(&c, "q", "external_ticker", "true").await?;
    let err = pgq::ticker_queue(&c, "q")
        .await
        .expect_err("local tick on an external queue");
    let msg = err.as_db_error().context("db error")?.message();
    assert!(msg.contains("external tick source"), "{msg}");
    pgq::force_tick(&c, "q").await?;
    assert_eq!(pgq::ticker(&c).await?, 0, "pgq.ticker() ticked an external queue");

    let when = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.678901Z")?.with_timezone(&Utc);
    assert_eq!(pgq::ticker_external(&c, "q", 50, when, 1_000).await?, Some(50));
    let info = pgq::get_queue_info(&c, "q").await?.context("info")?;
    assert_eq!(info.last_tick_id, Some(50));

    let b = pgq::next_batch_info(&c, "q", "reader").await?.context("no batch")?;
    assert_eq!(
        (b.cur_tick_id, b.cur_tick_time, b.cur_tick_event_seq),
        (50, when, 1_000)
    );
    let queue_id = crate::queue_id(&c, "q").await?;
    let tick_seq = pgq::seq_getval(&c, &format!("pgq.event_{queue_id}_tick_seq")).await?;
    assert_eq!(tick_seq, 50, "the tick sequence was not moved up to the external tick");

    pgq::create_queue(&c, "local").await?;
    let err = pgq::ticker_external(&c, "local", 9, when, 9)
        .await
        .expect_err("external tick on a local queue");
    assert!(err.to_string().contains(r#"queue "local""#), "{err}");
    Ok(())
}

#[tokio::test]
async fn maint_retry_events_moves_only_due_retries_ten_at_a_time() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    for i in 0..12 {
        pgq::insert_event(&c, "q", "t", &i.to_string()).await?;
    }
    tick(&c, "q").await?;
    let batch = crate::open_batch(&c, "q", "reader").await?;
    assert_eq!(pgq::batch_retry(&c, batch, 0).await?, 12);
    pgq::finish_batch(&c, batch).await?;
    assert_eq!(pgq::maint_retry_events(&c).await?, 10);
    assert_eq!(pgq::maint_retry_events(&c).await?, 2);
    assert_eq!(pgq::maint_retry_events(&c).await?, 0);
    tick(&c, "q").await?;
    assert_eq!(consume(&c, "q", "reader").await?.len(), 12);
    Ok(())
}

/// The maintenance steps due now, without the vacuum steps (listed only
/// when the server runs without autovacuum).
async fn maint_functions(c: &Client) -> Result<Vec<MaintOperation>> {
    let mut ops = pgq::maint_operations(c).await?;
    ops.retain(|op| op.func_name != "vacuum");
    Ok(ops)
}

fn step1(queue: &str) -> MaintOperation {
    MaintOperation {
        func_name: "pgq.maint_rotate_tables_step1".into(),
        func_arg: Some(queue.into()),
    }
}

fn step2() -> MaintOperation {
    MaintOperation {
        func_name: "pgq.maint_rotate_tables_step2".into(),
        func_arg: None,
    }
}

async fn cur_table(c: &Client, queue: &str) -> Result<i32> {
    Ok(pgq::get_queue_info(c, queue).await?.context("info")?.queue_cur_table)
}

/// Sets a tiny rotation period and waits until PgQ says rotation is due.
async fn rotation_due(c: &Client, queue: &str) -> Result<()> {
    pgq::set_queue_config(c, queue, "rotation_period", "1 millisecond").await?;
    let step1 = step1(queue);
    wait_for("rotation to be due", Duration::from_secs(10), || async {
        pgq::maint_operations(c)
            .await
            .ok()
            .filter(|ops| ops.contains(&step1))
            .map(|_| ())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn maint_operations_run_one_transaction_each_rotate_a_queue_with_a_short_rotation_period() -> Result<()> {
    let (_db, mut c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    pgq::create_queue(&c, "steady").await?;
    let before = pgq::get_queue_info(&c, "q").await?.context("info")?;
    let id = crate::queue_id(&c, "q").await?;
    assert_eq!(pgq::current_event_table(&c, "q").await?, format!("pgq.event_{id}_0"));
    assert_eq!(maint_functions(&c).await?, [], "maintenance due on new queues");
    rotation_due(&c, "q").await?;

    // Step 1 and step 2, each to run in a transaction of its own.
    let ops = pgq::maint_operations(&c).await?;
    assert_eq!(maint_functions(&c).await?, [step1("q"), step2()]);
    for op in &ops {
        if op.func_name == "vacuum" {
            assert!(!pgq::run_maint_operation(&c, op).await?);
            continue;
        }
        let tx = c.transaction().await?;
        while pgq::run_maint_operation(&tx, op).await? {}
        tx.commit().await?;
    }

    let after = pgq::get_queue_info(&c, "q").await?.context("info")?;
    assert_eq!(after.queue_cur_table, 1);
    assert!(after.queue_switch_time > before.queue_switch_time);
    assert_eq!(pgq::current_event_table(&c, "q").await?, format!("pgq.event_{id}_1"));
    assert_eq!(cur_table(&c, "steady").await?, 0);
    let switch_step2: Option<i64> = c
        .query_one("select queue_switch_step2 from pgq.queue where queue_name = 'q'", &[])
        .await?
        .get(0);
    assert!(switch_step2.is_some(), "step 2 did not run");
    Ok(())
}

#[tokio::test]
async fn maint_rotate_tables_step1_rotates_and_step2_completes_it_in_a_later_transaction() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    rotation_due(&c, "q").await?;
    // Keep it from being due again right after.
    assert_eq!(pgq::maint_rotate_tables_step1(&c, "q").await?, 0);
    pgq::set_queue_config(&c, "q", "rotation_period", "1 hour").await?;
    assert_eq!(cur_table(&c, "q").await?, 1);
    assert_eq!(maint_functions(&c).await?, [step2()]);
    assert_eq!(pgq::maint_rotate_tables_step2(&c).await?, 0);
    assert_eq!(maint_functions(&c).await?, []);
    // Not due: a second step 1 does nothing.
    assert_eq!(pgq::maint_rotate_tables_step1(&c, "q").await?, 0);
    assert_eq!(cur_table(&c, "q").await?, 1);
    Ok(())
}

#[tokio::test]
async fn maint_rotate_tables_step1_waits_for_a_consumer_still_reading_the_old_table() -> Result<()> {
    let (_db, c) = setup_queue("q", "slow").await?;
    rotation_due(&c, "q").await?;
    pgq::maint_rotate_tables_step1(&c, "q").await?;
    assert_eq!(cur_table(&c, "q").await?, 0, "rotated under a consumer's feet");

    pgq::unregister_consumer(&c, "q", "slow").await?;
    pgq::maint_rotate_tables_step1(&c, "q").await?;
    assert_eq!(cur_table(&c, "q").await?, 1);
    Ok(())
}

#[tokio::test]
async fn maint_tables_to_vacuum_lists_pgq_tables_only_when_autovacuum_is_off() -> Result<()> {
    let (_db, c) = setup().await;
    let autovacuum: String = c.query_one("select current_setting('autovacuum')", &[]).await?.get(0);
    let tables = pgq::maint_tables_to_vacuum(&c).await?;
    if autovacuum == "on" {
        assert!(tables.is_empty(), "{tables:?}");
    } else {
        for t in [
            "pgq.subscription",
            "pgq.consumer",
            "pgq.queue",
            "pgq.tick",
            "pgq.retry_queue",
        ] {
            assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn run_maint_operation_vacuums_outside_a_transaction_and_refuses_inside_one() -> Result<()> {
    let (_db, mut c) = setup().await;
    let vacuum = MaintOperation {
        func_name: "vacuum".into(),
        func_arg: Some("pgq.tick".into()),
    };
    assert!(!pgq::run_maint_operation(&c, &vacuum).await?);
    let vacuumed: Option<DateTime<Utc>> = c
        .query_one(
            "select last_vacuum from pg_stat_user_tables where schemaname = 'pgq' and relname = 'tick'",
            &[],
        )
        .await?
        .get(0);
    assert!(vacuumed.is_some(), "pgq.tick was not vacuumed");

    let tx = c.transaction().await?;
    let err = pgq::run_maint_operation(&tx, &vacuum)
        .await
        .expect_err("vacuum in a transaction");
    assert_eq!(err.code(), Some(&SqlState::ACTIVE_SQL_TRANSACTION));
    assert!(err.to_string().contains(r#"table "pgq.tick""#), "{err}");
    tx.rollback().await?;

    let bad = MaintOperation {
        func_name: "vacuum".into(),
        func_arg: None,
    };
    let err = pgq::run_maint_operation(&c, &bad)
        .await
        .expect_err("vacuum without a table");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    Ok(())
}

/// Tick ids, times and event sequence values of a queue, oldest first.
async fn ticks(c: &Client, queue_id: i32) -> Result<Vec<(i64, DateTime<Utc>, i64)>> {
    let rows = c
        .query(
            "select tick_id, tick_time, tick_event_seq from pgq.tick where tick_queue = $1 order by tick_id",
            &[&queue_id],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

#[tokio::test]
async fn find_tick_helper_finds_the_tick_that_ends_a_big_enough_batch() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    pgq::set_queue_config(&c, "q", "ticker_max_count", "1").await?;
    for round in 0..3 {
        for i in 0..3 {
            pgq::insert_event(&c, "q", "t", &format!("{round}.{i}")).await?;
        }
        pgq::ticker_queue(&c, "q").await?.context("no tick")?;
    }
    let qid = crate::queue_id(&c, "q").await?;
    let t = ticks(&c, qid).await?;
    assert_eq!(t.len(), 4);
    let (id0, time0, seq0) = t[0];
    let find = |min_count: Option<i64>, min_interval: Option<pgq::Interval>| {
        pgq::find_tick_helper(&c, qid, id0, time0, seq0, min_count, min_interval)
    };

    // The last tick is within twice min_count: take it.
    let last = find(Some(t[3].2 - seq0 - 1), None).await?.context("nothing found")?;
    assert_eq!((last.next_tick_id, last.next_tick_time, last.next_tick_seq), t[3]);
    // The last tick is much further: take the first one with enough events.
    let first = find(Some(1), None).await?.context("nothing found")?;
    assert_eq!(first.next_tick_id, t[1].0);
    // Not enough events anywhere yet.
    assert_eq!(find(Some(1_000), None).await?, None);
    assert_eq!(find(None, Some(Duration::from_secs(3600).into())).await?, None);
    // Nothing after the last tick.
    let (id3, time3, seq3) = t[3];
    assert_eq!(
        pgq::find_tick_helper(&c, qid, id3, time3, seq3, Some(1), None).await?,
        None
    );
    Ok(())
}
