//! A producer call that fails says what failed first and leaves its
//! connection usable: a role with only `pgq_writer` copies through
//! `pgq.insert_event` instead of a COPY it may not run, a COPY refused at
//! its start (a lock not granted, a read-only transaction) or midway does
//! not end the connection, and over PgQ's per-transaction limit the error is
//! PgQ's refusal, not the ticker notification that the aborted transaction
//! refused after it.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use pgq::NewEvent;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::{consume, data, setup_queue};

const Q: &str = "q";

/// A role of its own for this test (roles are cluster-wide), member of
/// PgQ's role `member_of` only; dropped again by [`drop_role`].
async fn pgq_role(c: &Client, member_of: &str) -> Result<String> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
    let role = format!("{member_of}_test_{}_{nanos}", std::process::id());
    c.batch_execute(&format!("create role {role} nologin in role {member_of}"))
        .await?;
    Ok(role)
}

async fn drop_role(c: &Client, role: &str) -> Result<()> {
    c.batch_execute(&format!("reset role; drop role {role}")).await?;
    Ok(())
}

fn events(n: usize, tag: &str) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let mut e = NewEvent::new(tag, format!("{tag}{i}"));
            // Extra fields midway: a second COPY on the direct path.
            if i >= n / 2 {
                e.ev_extra2 = Some(format!("x{i}"));
            }
            e
        })
        .collect()
}

/// Proves that the connection still runs statements.
async fn usable(c: &Client, case: &str) -> Result<()> {
    let one: i32 = c
        .query_one("select 1", &[])
        .await
        .with_context(|| format!("{case}: the connection is gone"))?
        .try_get(0)?;
    anyhow::ensure!(one == 1);
    Ok(())
}

/// The SQLSTATE of the `pgq::Error` in `result`, which must be an error.
fn code_of<T>(result: pgq::Result<T>, case: &str) -> Result<SqlState> {
    let err = result.err().with_context(|| format!("{case}: succeeded"))?;
    err.code()
        .cloned()
        .with_context(|| format!("{case}: no SQLSTATE in {err:?}"))
}

#[tokio::test]
async fn a_pgq_writer_and_a_pgq_admin_both_copy_and_keep_their_connection() -> Result<()> {
    let (_db, mut c) = setup_queue(Q, "reader").await?;
    let mut want: Vec<String> = Vec::new();
    for member_of in ["pgq_writer", "pgq_admin"] {
        let role = pgq_role(&c, member_of).await?;
        let outcome = async {
            c.batch_execute(&format!("set role {role}")).await?;
            let mut producer = pgq::Producer::begin(&mut c, Q).await?;
            assert_eq!(producer.copy_in(&events(30, "p")).await?, 30);
            producer.commit().await?;
            usable(&c, &format!("{member_of}: after copy_in")).await?;

            let tx = c.transaction().await?;
            assert_eq!(pgq::insert_events_copy(&tx, Q, &events(30, "f")).await?, 30);
            tx.commit().await?;
            usable(&c, &format!("{member_of}: after insert_events_copy")).await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        drop_role(&c, &role).await?;
        outcome.with_context(|| member_of.to_string())?;
        want.extend((0..30).map(|i| format!("p{i}")));
        want.extend((0..30).map(|i| format!("f{i}")));
    }

    crate::tick(&c, Q).await?;
    let got = consume(&c, Q, "reader").await?;
    assert_eq!(data(&got), want);
    for (i, e) in got.iter().enumerate() {
        let extra = (i % 30 >= 15).then(|| format!("x{}", i % 30));
        assert_eq!(e.ev_extra2, extra, "event {i}");
    }
    Ok(())
}

/// Holds an exclusive lock on the queue's current event table from another
/// connection, so that nobody can insert into it.
async fn lock_event_table(db: &pgq_test_support::TestDb, c: &Client) -> Result<Client> {
    let table = pgq::current_event_table(c, Q).await?;
    let locker = db.connect().await;
    locker
        .batch_execute(&format!("begin; lock table {table} in access exclusive mode"))
        .await?;
    Ok(locker)
}

#[tokio::test]
async fn a_copy_whose_table_lock_times_out_fails_and_leaves_the_connection_usable() -> Result<()> {
    let (db, mut c) = setup_queue(Q, "reader").await?;
    let _locker = lock_event_table(&db, &c).await?;

    let mut producer = pgq::Producer::begin(&mut c, Q).await?;
    producer
        .transaction()
        .batch_execute("set local lock_timeout = '100ms'")
        .await?;
    let code = code_of(producer.copy_in(&events(5, "p")).await, "copy_in")?;
    assert_eq!(code, SqlState::LOCK_NOT_AVAILABLE);
    producer.rollback().await?;
    usable(&c, "copy_in").await?;

    let tx = c.transaction().await?;
    tx.batch_execute("set local lock_timeout = '100ms'").await?;
    let code = code_of(
        pgq::insert_events_copy(&tx, Q, &events(5, "f")).await,
        "insert_events_copy",
    )?;
    assert_eq!(code, SqlState::LOCK_NOT_AVAILABLE);
    tx.rollback().await?;
    usable(&c, "insert_events_copy").await?;
    Ok(())
}

#[tokio::test]
async fn a_copy_in_a_read_only_transaction_fails_and_leaves_the_connection_usable() -> Result<()> {
    let (_db, mut c) = setup_queue(Q, "reader").await?;
    let tx = c.build_transaction().read_only(true).start().await?;
    let mut producer = pgq::Producer::new(tx, Q);
    let code = code_of(producer.copy_in(&events(5, "p")).await, "copy_in")?;
    assert_eq!(code, SqlState::READ_ONLY_SQL_TRANSACTION);
    producer.rollback().await?;
    usable(&c, "copy_in").await?;

    let tx = c.build_transaction().read_only(true).start().await?;
    let code = code_of(
        pgq::insert_events_copy(&tx, Q, &events(5, "f")).await,
        "insert_events_copy",
    )?;
    assert_eq!(code, SqlState::READ_ONLY_SQL_TRANSACTION);
    tx.rollback().await?;
    usable(&c, "insert_events_copy").await?;
    Ok(())
}

#[tokio::test]
async fn a_copy_refused_midway_fails_and_leaves_the_connection_usable() -> Result<()> {
    let (_db, mut c) = setup_queue(Q, "reader").await?;
    // PostgreSQL's text holds no NUL: the server refuses the row mid-COPY.
    let mut bad = events(50, "p");
    bad[40].ev_data = Some("nul \0 inside".into());

    let mut producer = pgq::Producer::begin(&mut c, Q).await?;
    let code = code_of(producer.copy_in(&bad).await, "copy_in")?;
    assert_eq!(code, SqlState::CHARACTER_NOT_IN_REPERTOIRE);
    producer.rollback().await?;
    usable(&c, "copy_in").await?;

    let tx = c.transaction().await?;
    let code = code_of(pgq::insert_events_copy(&tx, Q, &bad).await, "insert_events_copy")?;
    assert_eq!(code, SqlState::CHARACTER_NOT_IN_REPERTOIRE);
    tx.rollback().await?;
    usable(&c, "insert_events_copy").await?;
    Ok(())
}

#[tokio::test]
async fn a_pgq_writer_over_the_per_transaction_limit_is_told_the_limit_not_the_aborted_notify() -> Result<()> {
    let (_db, mut c) = setup_queue(Q, "reader").await?;
    // A limit large enough that the server is still inserting when the
    // notification reaches it: its refusal follows the insert's at once.
    c.execute(
        "update pgq.queue set queue_per_tx_limit = 2000 where queue_name = $1",
        &[&Q],
    )
    .await?;
    let role = pgq_role(&c, "pgq_writer").await?;
    let outcome = async {
        c.batch_execute(&format!("set role {role}")).await?;
        // Several rounds: the two answers arrive together or apart, as it
        // happens.
        for round in 0..5 {
            let mut producer = pgq::Producer::begin(&mut c, Q).await?;
            for e in events(2001, "s") {
                producer.send(e).await?;
            }
            let err = producer
                .commit()
                .await
                .err()
                .context("2001 events committed, limit 2000")?;
            anyhow::ensure!(
                matches!(&err, pgq::Error::TooManyEvents { queue, .. } if queue == Q),
                "send, round {round}: {err:?}"
            );

            let mut producer = pgq::Producer::begin(&mut c, Q).await?;
            let err = producer
                .copy_in(&events(2001, "c"))
                .await
                .err()
                .context("2001 copied, limit 2000")?;
            anyhow::ensure!(
                matches!(&err, pgq::Error::TooManyEvents { queue, .. } if queue == Q),
                "copy_in, round {round}: {err:?}"
            );
            producer.rollback().await?;
        }
        usable(&c, "after the refusals").await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    drop_role(&c, &role).await?;
    outcome
}
