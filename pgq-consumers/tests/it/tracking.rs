//! Remote batch tracking: a batch applied in the remote database is
//! recognised when it is delivered again after a crash between the remote
//! COMMIT and the queue COMMIT.

use anyhow::Result;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use pgq::BatchTicks;
use pgq_consumers::{schema, tracking, Error};
use pgq_test_support::TestDb;
use tokio_postgres::Client;

use crate::common::{event_ids, finish, insert, next_batch, queue_db, register, tick, Q};

/// A remote database (no pgq) with the framework schema and a table the
/// consumer applies events to.
async fn remote_db() -> Result<(TestDb, Client)> {
    let db = TestDb::create_empty().await;
    let client = db.connect().await;
    schema::install(&client).await?;
    client
        .batch_execute("create table applied (ev_id bigint not null)")
        .await?;
    Ok((db, client))
}

/// Applies a batch's events to the remote table, in the remote transaction.
async fn apply(remote: &impl tokio_postgres::GenericClient, ids: &[i64]) -> Result<()> {
    for id in ids {
        remote.execute("insert into applied (ev_id) values ($1)", &[id]).await?;
    }
    Ok(())
}

async fn applied_rows(remote: &Client) -> Result<Vec<i64>> {
    let rows = remote.query("select ev_id from applied order by ev_id", &[]).await?;
    rows.iter().map(|r| Ok(r.try_get("ev_id")?)).collect()
}

/// A batch described by its ticks only, for the rules that need no queue.
fn ticks(batch_id: i64, prev: i64, cur: i64, cur_time: DateTime<Utc>) -> BatchTicks {
    BatchTicks {
        batch_id,
        cur_tick_id: cur,
        prev_tick_id: prev,
        cur_tick_time: cur_time,
        prev_tick_time: cur_time - TimeDelta::seconds(1),
        cur_tick_event_seq: 0,
        prev_tick_event_seq: 0,
    }
}

#[tokio::test]
async fn batch_applied_before_a_crash_is_recognised_when_delivered_again() -> Result<()> {
    let (_qdb, mut queue) = queue_db().await?;
    let (_rdb, mut remote) = remote_db().await?;
    register(&queue, "c").await?;
    let e1 = insert(&queue, "t", "one").await?;
    let e2 = insert(&queue, "t", "two").await?;
    tick(&queue).await?;

    // First attempt: remote COMMIT, then the process dies before the queue COMMIT.
    let batch = next_batch(&queue, "c").await?.expect("a batch");
    {
        let qtx = queue.transaction().await?;
        let rtx = remote.transaction().await?;
        assert_eq!(
            tracking::state(&rtx, Q, "c", None, &batch).await?,
            tracking::BatchState::New
        );
        apply(&rtx, &event_ids(&qtx, batch.batch_id).await?).await?;
        tracking::record(&rtx, Q, "c", None, &batch).await?;
        rtx.commit().await?;
        finish(&qtx, batch.batch_id).await?;
        // crash: the queue transaction never commits
        drop(qtx);
    }

    // The batch comes again; the remote database knows it.
    let again = next_batch(&queue, "c").await?.expect("the unfinished batch");
    assert_eq!(
        (again.prev_tick_id, again.cur_tick_id),
        (batch.prev_tick_id, batch.cur_tick_id)
    );
    {
        let qtx = queue.transaction().await?;
        let rtx = remote.transaction().await?;
        assert!(tracking::is_applied(&rtx, Q, "c", None, &again).await?);
        drop(rtx);
        finish(&qtx, again.batch_id).await?;
        qtx.commit().await?;
    }
    assert_eq!(applied_rows(&remote).await?, vec![e1, e2], "applied once");

    let last = tracking::last_applied(&remote, Q, "c", None).await?.expect("recorded");
    assert_eq!(
        (last.batch_id, last.prev_tick_id, last.tick_id),
        (batch.batch_id, batch.prev_tick_id, batch.cur_tick_id)
    );
    assert_eq!(last.tick_time, Some(batch.cur_tick_time));
    assert_eq!(last.subconsumer, None);

    // The next batch is new.
    insert(&queue, "t", "three").await?;
    tick(&queue).await?;
    let next = next_batch(&queue, "c").await?.expect("the next batch");
    assert_eq!(
        tracking::state(&remote, Q, "c", None, &next).await?,
        tracking::BatchState::New
    );
    assert!(!tracking::is_applied(&remote, Q, "c", None, &next).await?);
    Ok(())
}

#[tokio::test]
async fn batches_are_judged_by_their_ticks_against_the_last_applied_one() -> Result<()> {
    let (_rdb, remote) = remote_db().await?;
    let t = Utc::now();
    tracking::record(&remote, Q, "c", None, &ticks(10, 3, 5, t)).await?;

    let state = |prev, cur, time| {
        let b = ticks(99, prev, cur, time);
        let remote = &remote;
        async move { tracking::state(remote, Q, "c", None, &b).await }
    };
    assert_eq!(state(3, 5, t).await?, tracking::BatchState::Applied, "the same batch");
    assert_eq!(
        state(2, 4, t - TimeDelta::seconds(5)).await?,
        tracking::BatchState::Applied,
        "an older one"
    );
    assert_eq!(
        state(5, 6, t + TimeDelta::seconds(1)).await?,
        tracking::BatchState::New,
        "the next one"
    );
    assert_eq!(
        state(7, 9, t + TimeDelta::seconds(3)).await?,
        tracking::BatchState::New,
        "a later one"
    );
    assert_eq!(
        state(3, 7, t + TimeDelta::seconds(2)).await?,
        tracking::BatchState::Partial,
        "a replay cut longer"
    );
    assert_eq!(
        state(3, 5, t + TimeDelta::seconds(1)).await?,
        tracking::BatchState::Inconsistent,
        "same ticks, other time"
    );
    assert_eq!(
        state(1, 2, t + TimeDelta::hours(1)).await?,
        tracking::BatchState::Inconsistent,
        "old tick ids, new time: the queue was created again"
    );
    assert_eq!(
        tracking::state(&remote, Q, "other", None, &ticks(1, 1, 2, t)).await?,
        tracking::BatchState::New
    );

    match tracking::is_applied(&remote, Q, "c", None, &ticks(99, 3, 7, t)).await {
        Err(Error::BatchPartlyApplied {
            applied_tick_id: 5,
            tick_id: 7,
            ..
        }) => {}
        other => panic!("expected BatchPartlyApplied, got {other:?}"),
    }
    match tracking::is_applied(&remote, Q, "c", None, &ticks(99, 1, 2, t + TimeDelta::hours(1))).await {
        Err(Error::TrackingInconsistent { .. }) => {}
        other => panic!("expected TrackingInconsistent, got {other:?}"),
    }

    // A plain consumer's record never moves back.
    assert!(tracking::record(&remote, Q, "c", None, &ticks(11, 1, 2, t))
        .await
        .is_err());
    tracking::record(&remote, Q, "c", None, &ticks(12, 5, 6, t + TimeDelta::seconds(1))).await?;

    assert_eq!(tracking::forget(&remote, Q, "c").await?, 1);
    assert_eq!(state(3, 5, t).await?, tracking::BatchState::New, "forgotten");
    Ok(())
}

#[tokio::test]
async fn sub_consumer_recognises_a_batch_applied_by_the_one_it_took_over_from() -> Result<()> {
    let (_rdb, remote) = remote_db().await?;
    let t = Utc::now();
    // Sub-consumers apply batches out of order.
    tracking::record(&remote, Q, "grp", Some("a"), &ticks(20, 4, 5, t)).await?;
    tracking::record(
        &remote,
        Q,
        "grp",
        Some("b"),
        &ticks(21, 5, 6, t + TimeDelta::seconds(1)),
    )
    .await?;
    tracking::record(
        &remote,
        Q,
        "grp",
        Some("b"),
        &ticks(22, 3, 4, t - TimeDelta::seconds(1)),
    )
    .await?;

    // b took over a's batch (new id, same ticks) after a applied it and died.
    let taken = ticks(30, 4, 5, t);
    assert!(tracking::is_applied(&remote, Q, "grp", Some("b"), &taken).await?);
    assert_eq!(
        tracking::state(
            &remote,
            Q,
            "grp",
            Some("c"),
            &ticks(31, 6, 7, t + TimeDelta::seconds(2))
        )
        .await?,
        tracking::BatchState::New
    );
    // The plain consumer of the same name is another record.
    assert_eq!(
        tracking::state(&remote, Q, "grp", None, &taken).await?,
        tracking::BatchState::New
    );
    let a = tracking::last_applied(&remote, Q, "grp", Some("a"))
        .await?
        .expect("a's record");
    assert_eq!((a.batch_id, a.subconsumer.as_deref()), (20, Some("a")));
    // The group's record of each of the three.
    assert_eq!(tracking::forget(&remote, Q, "grp").await?, 3);
    Ok(())
}

/// Sub-consumer `sub` applies batch `batch` to the remote table and records
/// it, in a transaction of `remote`, left open.
async fn apply_as<'a>(
    remote: &'a mut Client,
    sub: &str,
    batch: &BatchTicks,
    ids: &[i64],
) -> Result<tokio_postgres::Transaction<'a>> {
    let tx = remote.transaction().await?;
    assert_eq!(
        tracking::state(&tx, Q, "grp", Some(sub), batch).await?,
        tracking::BatchState::New
    );
    apply(&tx, ids).await?;
    Ok(tx)
}

/// Sub-consumer b records `batch` while another transaction that recorded
/// it is open: the record waits until `end` (that transaction's commit or
/// rollback) is done, then returns.
async fn record_after(
    b: &tokio_postgres::Transaction<'_>,
    batch: &BatchTicks,
    end: impl std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>,
) -> Result<pgq_consumers::Result<()>> {
    let recording = tracking::record(b, Q, "grp", Some("b"), batch);
    tokio::pin!(recording);
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(300), &mut recording).await;
    assert!(waiting.is_err(), "b's record must wait for the other one: {waiting:?}");
    end.await?;
    Ok(recording.await)
}

#[tokio::test]
async fn a_group_records_a_batch_once_so_the_second_sub_consumer_to_apply_it_must_roll_back() -> Result<()> {
    let (rdb, mut first) = remote_db().await?;
    let mut second = rdb.connect().await;
    let t = Utc::now();
    // a took the batch, stalled, and b took it over: same ticks, new id.
    let (held, taken) = (ticks(40, 7, 8, t), ticks(41, 7, 8, t));

    // Both apply it at once; a records it first and commits.
    let a = apply_as(&mut first, "a", &held, &[1, 2]).await?;
    let b = apply_as(&mut second, "b", &taken, &[1, 2]).await?;
    tracking::record(&a, Q, "grp", Some("a"), &held).await?;
    // b's record waits for a's transaction to end.
    let recorded = record_after(&b, &taken, a.commit()).await?;
    match recorded {
        Err(Error::BatchAppliedByOther {
            subconsumer, batch_id, ..
        }) => assert_eq!((subconsumer.as_str(), batch_id), ("b", 41)),
        other => panic!("expected BatchAppliedByOther, got {other:?}"),
    }
    b.rollback().await?;
    assert_eq!(applied_rows(&first).await?, [1, 2], "applied once");
    assert!(
        tracking::is_applied(&second, Q, "grp", Some("b"), &taken).await?,
        "b sees it applied"
    );

    // When the first to record rolls back instead, the other one goes on.
    let next = ticks(42, 8, 9, t + TimeDelta::seconds(1));
    let next_taken = ticks(43, 8, 9, next.cur_tick_time);
    let a = apply_as(&mut first, "a", &next, &[3]).await?;
    tracking::record(&a, Q, "grp", Some("a"), &next).await?;
    let b = apply_as(&mut second, "b", &next_taken, &[3]).await?;
    record_after(&b, &next_taken, a.rollback()).await??;
    b.commit().await?;
    assert_eq!(applied_rows(&first).await?, [1, 2, 3]);

    // Records of batches the queue database reports finished are dropped.
    assert_eq!(tracking::prune_group(&first, Q, "grp", 8).await?, 1);
    assert!(!tracking::is_applied(&first, Q, "grp", Some("c"), &held).await?);
    assert!(tracking::is_applied(&first, Q, "grp", Some("c"), &ticks(44, 8, 9, next.cur_tick_time)).await?);
    Ok(())
}
