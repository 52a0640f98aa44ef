//! Queues: create, configure, inspect, drop.

use std::time::Duration;

use anyhow::{Context, Result};
use pgq::{Error, Interval};
use tokio_postgres::error::SqlState;

use crate::{setup, setup_queue, tick};

fn secs(s: u64) -> Interval {
    Interval::from(Duration::from_secs(s))
}

#[tokio::test]
async fn create_queue_returns_true_then_false_and_the_queue_has_pgq_defaults() -> Result<()> {
    let (_db, c) = setup().await;
    assert!(pgq::create_queue(&c, "orders").await?);
    assert!(!pgq::create_queue(&c, "orders").await?);

    let info = pgq::get_queue_info(&c, "orders").await?.context("queue info")?;
    assert_eq!(info.queue_name, "orders");
    assert_eq!(info.queue_ntables, 3);
    assert_eq!(info.queue_cur_table, 0);
    assert_eq!(info.queue_rotation_period, secs(2 * 3600));
    assert!(!info.queue_external_ticker);
    assert!(!info.queue_ticker_paused);
    assert_eq!(info.queue_ticker_max_count, 500);
    assert_eq!(info.queue_ticker_max_lag, secs(3));
    assert_eq!(info.queue_ticker_idle_period, secs(60));
    // create_queue ticks once, so a consumer has somewhere to start.
    assert_eq!(info.last_tick_id, Some(1));
    assert_eq!(info.ev_new, Some(0));
    let lag = info.ticker_lag.context("ticker_lag")?;
    assert!(lag.as_duration() < Duration::from_secs(60), "{lag:?}");
    Ok(())
}

#[tokio::test]
async fn get_queue_info_counts_new_events_since_the_last_tick() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let t = tick(&c, "q").await?;
    for i in 0..3 {
        pgq::insert_event(&c, "q", "t", &i.to_string()).await?;
    }
    let info = pgq::get_queue_info(&c, "q").await?.context("queue info")?;
    assert_eq!(info.last_tick_id, Some(t));
    assert_eq!(info.ev_new, Some(3));
    // Two ticks at different times: a rate can be computed.
    assert!(info.ev_per_sec.is_some_and(|r| r > 0.0), "{:?}", info.ev_per_sec);
    Ok(())
}

#[tokio::test]
async fn get_queue_info_all_lists_every_queue_by_name_and_a_missing_queue_is_none() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "zeta").await?;
    pgq::create_queue(&c, "alpha").await?;
    let all = pgq::get_queue_info_all(&c).await?;
    let names: Vec<_> = all.iter().map(|q| q.queue_name.as_str()).collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert_eq!(all[1].last_tick_id, Some(1));
    assert_eq!(pgq::get_queue_info(&c, "missing").await?, None);
    Ok(())
}

#[tokio::test]
async fn set_queue_config_changes_are_visible_in_get_queue_info() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    pgq::set_queue_config(&c, "q", "ticker_max_count", "7").await?;
    pgq::set_queue_config(&c, "q", "ticker_max_lag", "5 seconds").await?;
    pgq::set_queue_config(&c, "q", "ticker_idle_period", "2 minutes").await?;
    pgq::set_queue_config(&c, "q", "rotation_period", "1 day").await?;
    pgq::set_queue_config(&c, "q", "ticker_paused", "true").await?;
    pgq::set_queue_config(&c, "q", "external_ticker", "true").await?;

    let info = pgq::get_queue_info(&c, "q").await?.context("queue info")?;
    assert_eq!(info.queue_ticker_max_count, 7);
    assert_eq!(info.queue_ticker_max_lag, secs(5));
    assert_eq!(info.queue_ticker_idle_period, secs(120));
    assert_eq!(
        info.queue_rotation_period,
        Interval {
            months: 0,
            days: 1,
            microseconds: 0
        }
    );
    assert!(info.queue_ticker_paused);
    assert!(info.queue_external_ticker);
    Ok(())
}

#[tokio::test]
async fn set_queue_config_with_a_bad_parameter_is_an_error_naming_function_and_queue_with_its_sqlstate() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "orders").await?;

    let err = pgq::set_queue_config(&c, "orders", "bogus", "1")
        .await
        .expect_err("bogus parameter accepted");
    assert!(
        matches!(
            err,
            Error::Sql {
                function: "pgq.set_queue_config",
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("pgq.set_queue_config"), "{msg}");
    assert!(msg.contains(r#"queue "orders""#), "{msg}");
    assert!(msg.contains("bogus"), "{msg}");
    assert_eq!(err.code(), Some(&SqlState::RAISE_EXCEPTION));
    let db = err.as_db_error().context("a database error")?;
    assert!(db.message().contains("cannot change parameter"), "{}", db.message());
    assert!(!err.is_connection_error());

    // A bad value is refused by PostgreSQL's own type input.
    let err = pgq::set_queue_config(&c, "orders", "ticker_max_count", "many")
        .await
        .expect_err("bad value accepted");
    assert_eq!(err.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION));

    let err = pgq::set_queue_config(&c, "nosuch", "ticker_max_count", "1")
        .await
        .expect_err("missing queue accepted");
    assert!(err.to_string().contains(r#"queue "nosuch""#), "{err}");
    Ok(())
}

#[tokio::test]
async fn current_event_table_names_the_table_new_events_go_into() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let id = crate::queue_id(&c, "q").await?;
    let table = pgq::current_event_table(&c, "q").await?;
    assert_eq!(table, format!("pgq.event_{id}_0"));

    let ev = pgq::insert_event(&c, "q", "t", "d").await?;
    let sql = format!("select ev_id from {}", pgq::quote_qualified(&table)?);
    let ids: Vec<i64> = c.query(&sql, &[]).await?.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [ev]);

    let err = pgq::current_event_table(&c, "nosuch").await.expect_err("missing queue");
    assert!(err.to_string().contains("pgq.current_event_table"), "{err}");
    Ok(())
}

async fn reader_can_select(c: &tokio_postgres::Client, table: &str) -> Result<bool> {
    Ok(
        c.query_one("select has_table_privilege('pgq_reader', $1, 'select')", &[&table])
            .await?
            .get(0),
    )
}

#[tokio::test]
async fn grant_perms_gives_the_pgq_roles_their_rights_on_every_event_table() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let id = crate::queue_id(&c, "q").await?;
    let tables: Vec<String> = std::iter::once(format!("pgq.event_{id}"))
        .chain((0..3).map(|n| format!("pgq.event_{id}_{n}")))
        .collect();
    for t in &tables {
        c.batch_execute(&format!("revoke all on {t} from pgq_reader")).await?;
        assert!(!reader_can_select(&c, t).await?, "{t}");
    }

    pgq::grant_perms(&c, "q").await?;
    for t in &tables {
        assert!(reader_can_select(&c, t).await?, "{t}");
    }

    let err = pgq::grant_perms(&c, "nosuch").await.expect_err("missing queue");
    assert!(
        err.to_string().contains(r#"pgq.grant_perms failed for queue "nosuch""#),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn tune_storage_sets_fillfactor_and_turns_autovacuum_off_on_the_event_tables() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let id = crate::queue_id(&c, "q").await?;
    let reloptions = |t: String| {
        let c = &c;
        async move {
            let row = c
                .query_one(
                    "select coalesce(reloptions, '{}') from pg_class where oid = $1::text::regclass",
                    &[&t],
                )
                .await?;
            anyhow::Ok(row.get::<_, Vec<String>>(0))
        }
    };
    for n in 0..3 {
        c.batch_execute(&format!(
            "alter table pgq.event_{id}_{n} reset (fillfactor, autovacuum_enabled, toast.autovacuum_enabled)"
        ))
        .await?;
        assert_eq!(reloptions(format!("pgq.event_{id}_{n}")).await?, Vec::<String>::new());
    }

    assert!(pgq::tune_storage(&c, "q").await?);
    for n in 0..3 {
        let opts = reloptions(format!("pgq.event_{id}_{n}")).await?;
        assert!(opts.contains(&"fillfactor=100".to_string()), "{opts:?}");
        assert!(opts.contains(&"autovacuum_enabled=off".to_string()), "{opts:?}");
    }
    assert!(!pgq::tune_storage(&c, "nosuch").await?, "a missing queue was tuned");
    Ok(())
}

#[tokio::test]
async fn drop_queue_removes_an_unused_queue_with_its_tables() -> Result<()> {
    let (_db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let table = pgq::current_event_table(&c, "q").await?;
    pgq::drop_queue(&c, "q").await?;
    assert_eq!(pgq::get_queue_info(&c, "q").await?, None);
    let exists: Option<String> = c.query_one("select to_regclass($1)::text", &[&table]).await?.get(0);
    assert_eq!(exists, None, "event table {table} survived");

    let err = pgq::drop_queue(&c, "q").await.expect_err("dropped twice");
    assert!(
        err.to_string().contains(r#"pgq.drop_queue failed for queue "q""#),
        "{err}"
    );
    assert_eq!(err.code(), Some(&SqlState::RAISE_EXCEPTION));
    Ok(())
}

#[tokio::test]
async fn drop_queue_refuses_a_queue_with_consumers_unless_forced() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;

    let err = pgq::drop_queue(&c, "q").await.expect_err("dropped with a consumer");
    let db = err.as_db_error().context("a database error")?;
    assert!(db.message().contains("consumers still attached"), "{}", db.message());
    pgq::drop_queue_forced(&c, "q", false)
        .await
        .expect_err("dropped with a consumer, force = false");
    assert!(pgq::get_queue_info(&c, "q").await?.is_some());

    pgq::drop_queue_forced(&c, "q", true).await?;
    assert_eq!(pgq::get_queue_info(&c, "q").await?, None);
    assert!(pgq::get_consumer_info_all(&c).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_call_on_a_lost_connection_is_a_connection_error() -> Result<()> {
    let (db, c) = setup().await;
    let pid: i32 = c.query_one("select pg_backend_pid()", &[]).await?.get(0);
    let admin = db.connect().await;
    admin.execute("select pg_terminate_backend($1)", &[&pid]).await?;
    pgq_test_support::wait_for("the connection to close", Duration::from_secs(10), || async {
        c.is_closed().then_some(())
    })
    .await;
    let err = pgq::get_queue_info_all(&c)
        .await
        .expect_err("a closed connection answered");
    assert!(err.is_connection_error(), "{err:?}");
    assert_eq!(err.code(), None);
    Ok(())
}

#[tokio::test]
async fn a_call_whose_backend_is_terminated_mid_statement_is_a_connection_error() -> Result<()> {
    let (db, c) = setup().await;
    pgq::create_queue(&c, "q").await?;
    let pid: i32 = c.query_one("select pg_backend_pid()", &[]).await?.get(0);
    // Hold a lock the call needs, so it is in flight when its backend goes.
    let mut admin = db.connect().await;
    let lock = admin.transaction().await?;
    lock.batch_execute("lock table pgq.queue in access exclusive mode")
        .await?;
    let call = tokio::spawn(async move {
        let result = pgq::get_queue_info(&c, "q").await;
        drop(c);
        result
    });
    let killer = db.connect().await;
    pgq_test_support::wait_for("the call to wait for the lock", Duration::from_secs(10), || async {
        let waiting: bool = killer
            .query_one(
                "select wait_event_type = 'Lock' from pg_stat_activity where pid = $1",
                &[&pid],
            )
            .await
            .ok()?
            .get(0);
        waiting.then_some(())
    })
    .await;
    killer.execute("select pg_terminate_backend($1)", &[&pid]).await?;
    let err = call.await?.expect_err("a terminated backend answered");
    assert!(err.is_connection_error(), "{err:?}");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN));
    lock.rollback().await?;
    Ok(())
}
