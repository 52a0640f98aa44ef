//! PgQ's queue limits, `queue_per_tx_limit` and `queue_disable_insert`, hold
//! for every way this crate produces events (`Producer::send`,
//! `Producer::copy_in`, `insert_events_copy`), alone or mixed with
//! `pgq.insert_event` calls in the same transaction, and give the same
//! errors as PgQ's own `pgq.insert_event`.

use anyhow::{Context, Result};
use pgq::NewEvent;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::{queue_id, setup_queue};

const Q: &str = "q";

/// A way of producing events.
#[derive(Clone, Copy, Debug)]
enum Path {
    Send,
    CopyIn,
    InsertEventsCopy,
}

const PATHS: [Path; 3] = [Path::Send, Path::CopyIn, Path::InsertEventsCopy];

/// One transaction on [`Q`]: `before` events by `pgq.insert_event`, then
/// `n` through `path`, then `after` by `pgq.insert_event`; committed.
/// Returns how many `path` reported.
async fn produce(c: &mut Client, path: Path, before: usize, n: usize, after: usize) -> Result<u64> {
    let events: Vec<NewEvent> = (0..n).map(|i| NewEvent::new("path", i.to_string())).collect();
    let tx = c.transaction().await?;
    for i in 0..before {
        pgq::insert_event(&tx, Q, "before", &i.to_string()).await?;
    }
    let sent = match path {
        Path::Send | Path::CopyIn => {
            let mut producer = pgq::Producer::new(tx, Q);
            let sent = match path {
                Path::Send => {
                    for e in events {
                        producer.send(e).await?;
                    }
                    // Without events after them, the commit sends them.
                    if after > 0 {
                        producer.flush().await?;
                    }
                    n as u64
                }
                _ => producer.copy_in(&events).await?,
            };
            for i in 0..after {
                pgq::insert_event(producer.transaction(), Q, "after", &i.to_string()).await?;
            }
            producer.commit().await?;
            sent
        }
        Path::InsertEventsCopy => {
            let sent = pgq::insert_events_copy(&tx, Q, &events).await?;
            for i in 0..after {
                pgq::insert_event(&tx, Q, "after", &i.to_string()).await?;
            }
            tx.commit().await?;
            sent
        }
    };
    Ok(sent)
}

async fn set_limit(c: &Client, limit: Option<i32>) -> Result<()> {
    c.execute(
        "update pgq.queue set queue_per_tx_limit = $2 where queue_name = $1",
        &[&Q, &limit],
    )
    .await?;
    Ok(())
}

async fn disable_insert(c: &Client, disabled: bool) -> Result<()> {
    c.execute(
        "update pgq.queue set queue_disable_insert = $2 where queue_name = $1",
        &[&Q, &disabled],
    )
    .await?;
    Ok(())
}

/// How many events the queue's tables hold.
async fn stored(c: &Client) -> Result<i64> {
    let id = queue_id(c, Q).await?;
    let n = c
        .query_one(&format!("select count(*) from pgq.event_{id}"), &[])
        .await?
        .try_get(0)?;
    Ok(n)
}

/// The `pgq::Error` in `err`, checked to be PgQ's refusal `expected` of the
/// queue [`Q`], with PgQ's SQLSTATE.
fn assert_refusal(err: &anyhow::Error, expected: &str, case: &str) -> Result<()> {
    let e = err
        .downcast_ref::<pgq::Error>()
        .with_context(|| format!("{case}: not a pgq::Error: {err:#}"))?;
    let (kind, queue) = match e {
        pgq::Error::TooManyEvents { queue, .. } => ("TooManyEvents", queue),
        pgq::Error::InsertDisabled { queue, .. } => ("InsertDisabled", queue),
        other => anyhow::bail!("{case}: expected {expected}, got {other:?}"),
    };
    anyhow::ensure!(kind == expected, "{case}: expected {expected}, got {e:?}");
    anyhow::ensure!(queue == Q, "{case}: names queue {queue:?}");
    anyhow::ensure!(
        e.code() == Some(&SqlState::INTERNAL_ERROR),
        "{case}: SQLSTATE {:?}, not PgQ's XX000",
        e.code()
    );
    anyhow::ensure!(
        e.to_string().contains(&format!("queue {Q:?}")),
        "{case}: message does not name the queue: {e}"
    );
    Ok(())
}

/// The splits of a transaction's events: (by `pgq.insert_event` before,
/// through the path, by `pgq.insert_event` after), adding up to `total`.
fn splits(total: usize) -> [(usize, usize, usize); 3] {
    [(0, total, 0), (4, total - 4, 0), (0, total - 4, 4)]
}

#[tokio::test]
async fn every_producer_path_commits_exactly_the_per_transaction_limit() -> Result<()> {
    let (_db, mut c) = setup_queue(Q, "reader").await?;
    set_limit(&c, Some(10)).await?;
    for path in PATHS {
        for (before, n, after) in splits(10) {
            let sent = produce(&mut c, path, before, n, after)
                .await
                .with_context(|| format!("{path:?} {before}+{n}+{after}"))?;
            assert_eq!(sent, n as u64, "{path:?}");
        }
    }
    assert_eq!(stored(&c).await?, 9 * 10);
    Ok(())
}

#[tokio::test]
async fn every_producer_path_refuses_one_event_over_the_per_transaction_limit() -> Result<()> {
    let (_db, mut c) = setup_queue(Q, "reader").await?;
    set_limit(&c, Some(10)).await?;
    for path in PATHS {
        for (before, n, after) in splits(11) {
            let case = format!("{path:?} {before}+{n}+{after}");
            let err = produce(&mut c, path, before, n, after)
                .await
                .err()
                .with_context(|| format!("{case}: 11 events committed with a limit of 10"))?;
            assert_refusal(&err, "TooManyEvents", &case)?;
            // The same client goes on.
            c.query_one("select 1", &[]).await.with_context(|| case.clone())?;
        }
    }
    assert_eq!(stored(&c).await?, 0);
    // Without the limit, the same transactions go through.
    set_limit(&c, None).await?;
    for path in PATHS {
        produce(&mut c, path, 4, 7, 4).await?;
    }
    assert_eq!(stored(&c).await?, 3 * 15);
    Ok(())
}

#[tokio::test]
async fn every_producer_path_is_refused_while_inserts_are_disabled() -> Result<()> {
    let (_db, mut c) = setup_queue(Q, "reader").await?;
    disable_insert(&c, true).await?;
    for path in PATHS {
        let case = format!("{path:?}");
        let err = produce(&mut c, path, 0, 3, 0)
            .await
            .err()
            .with_context(|| format!("{case}: inserted into a queue with inserts disabled"))?;
        assert_refusal(&err, "InsertDisabled", &case)?;
        c.query_one("select 1", &[]).await?;
    }
    assert_eq!(stored(&c).await?, 0);
    disable_insert(&c, false).await?;
    for path in PATHS {
        produce(&mut c, path, 0, 3, 0).await?;
    }
    assert_eq!(stored(&c).await?, 9);
    Ok(())
}

#[tokio::test]
async fn a_replica_session_produces_into_a_queue_with_inserts_disabled() -> Result<()> {
    let (_db, mut c) = setup_queue(Q, "reader").await?;
    disable_insert(&c, true).await?;
    c.batch_execute("set session_replication_role = replica").await?;
    for path in PATHS {
        let sent = produce(&mut c, path, 1, 3, 1)
            .await
            .with_context(|| format!("{path:?}"))?;
        assert_eq!(sent, 3);
    }
    c.batch_execute("reset session_replication_role").await?;
    assert_eq!(stored(&c).await?, 3 * 5);
    Ok(())
}

#[tokio::test]
async fn the_pgq_insert_event_wrappers_report_the_same_refusals() -> Result<()> {
    let (_db, mut c) = setup_queue(Q, "reader").await?;
    let event = NewEvent::new("t", "d");
    let raw = pgq::RawEvent {
        ev_id: None,
        ev_time: chrono::Utc::now(),
        ev_owner: None,
        ev_retry: None,
        fields: event.clone(),
    };
    for (setting, expected) in [("limit", "TooManyEvents"), ("disabled", "InsertDisabled")] {
        if setting == "limit" {
            set_limit(&c, Some(0)).await?;
        } else {
            set_limit(&c, None).await?;
            disable_insert(&c, true).await?;
        }
        let tx = c.transaction().await?;
        let err = pgq::insert_event(&tx, Q, "t", "d")
            .await
            .err()
            .context("insert_event")?;
        assert_refusal(&err.into(), expected, &format!("insert_event, {setting}"))?;
        drop(tx);
        let tx = c.transaction().await?;
        let err = pgq::insert_event_full(&tx, Q, &event).await.err().context("full")?;
        assert_refusal(&err.into(), expected, &format!("insert_event_full, {setting}"))?;
        drop(tx);
        let tx = c.transaction().await?;
        let err = pgq::insert_events(&tx, Q, std::slice::from_ref(&event))
            .await
            .err()
            .context("events")?;
        assert_refusal(&err.into(), expected, &format!("insert_events, {setting}"))?;
        drop(tx);
        let tx = c.transaction().await?;
        let err = pgq::insert_event_raw(&tx, Q, &raw).await.err().context("raw")?;
        assert_refusal(&err.into(), expected, &format!("insert_event_raw, {setting}"))?;
        drop(tx);
    }
    Ok(())
}
