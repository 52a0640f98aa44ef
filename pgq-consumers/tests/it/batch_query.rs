//! The fast path's parameterized batch queries (`pgq::batch_events_query`,
//! by batch id, `pgq::tick_events_query`, by the batch's ticks, and
//! `pgq::large_events_query`, its parallel form for big batches) select
//! exactly what PgQ's own `pgq.batch_event_sql` does, in the same
//! order: for plain batches, batches whose start tick saw transactions still
//! in progress (near and far below the snapshot's xmax, so both the range and
//! the exact list of PgQ's query are used), retried events owned by one
//! consumer, batches spread over rotated event tables, and with filters.

use anyhow::{ensure, Context as _, Result};
use futures_util::TryStreamExt;
use pgq::{BatchReader, BatchTicks, EventFilter};
use tokio_postgres::Client;

use crate::common::{insert, maint_retry_events, next_batch, queue_db, register, tick, Q};

/// Reads the batch four ways (PgQ's own query, ours by batch id, by ticks,
/// and the large form) and checks they agree; returns its event ids.
async fn same_events(client: &Client, reader: &BatchReader, consumer: &str, b: &BatchTicks) -> Result<Vec<i64>> {
    let batch_id = b.batch_id;
    let ours = reader.events(client, batch_id, &EventFilter::default()).await?;
    let by_ticks: Vec<pgq::Event> = reader
        .stream_ticks(client, consumer, b, &EventFilter::default())
        .await?
        .try_collect()
        .await?;
    let large: Vec<pgq::Event> = reader
        .stream_ticks_large(client, consumer, b, &EventFilter::default())
        .await?
        .try_collect()
        .await?;
    let pgq_own = pgq::get_batch_events(client, batch_id).await?;
    let ids = |v: &[pgq::Event]| v.iter().map(|e| e.ev_id).collect::<Vec<_>>();
    ensure!(
        large == pgq_own,
        "batch {batch_id}: the large query read {:?}, pgq.batch_event_sql {:?}",
        ids(&large),
        ids(&pgq_own)
    );
    ensure!(
        ours == pgq_own,
        "batch {batch_id}: the batch query read {:?}, pgq.batch_event_sql {:?}",
        ids(&ours),
        ids(&pgq_own)
    );
    ensure!(
        by_ticks == pgq_own,
        "batch {batch_id}: the tick query read {:?}, pgq.batch_event_sql {:?}",
        ids(&by_ticks),
        ids(&pgq_own)
    );
    Ok(ids(&ours))
}

/// Takes the consumer's next batch, compares both reads, finishes it.
async fn consume_checked(client: &Client, reader: &BatchReader, consumer: &str) -> Result<Vec<i64>> {
    let b = next_batch(client, consumer).await?.context("a batch")?;
    let ids = same_events(client, reader, consumer, &b).await?;
    pgq::finish_batch(client, b.batch_id).await?;
    Ok(ids)
}

/// Burns `n` transaction ids, each in a committed transaction of its own.
async fn burn_txids(client: &Client, n: usize) -> Result<()> {
    for _ in 0..n {
        client.query_one("select txid_current()", &[]).await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_batch_query_equals_pgq_batch_event_sql() -> Result<()> {
    let (db, client) = queue_db().await?;
    register(&client, "a").await?;
    register(&client, "b").await?;
    let reader = BatchReader::prepare(&client, Q).await?;

    // A plain batch.
    let mut plain = Vec::new();
    for i in 0..5 {
        plain.push(insert(&client, "plain", &i.to_string()).await?);
    }
    tick(&client).await?;
    assert_eq!(consume_checked(&client, &reader, "a").await?, plain);
    assert_eq!(consume_checked(&client, &reader, "b").await?, plain);

    // Transactions in progress at a tick: one far below the tick's xmax
    // (PgQ's exact list), one just below it (PgQ's widened range). PgQ
    // widens its range down from the xmax through every transaction in
    // progress within 100 txids of the last one it took in: transactions of
    // other tests in the cluster, in progress at the tick, can bridge the
    // gap down to the far one. Then PgQ uses no list, and the case is made
    // again (ours must read the same events either way).
    for attempt in 1.. {
        let mut far = db.connect().await;
        let far_tx = far.transaction().await?;
        let far_ev = pgq::insert_event(&far_tx, Q, "far", "x").await?;
        burn_txids(&client, 150).await?;
        let mut near = db.connect().await;
        let near_tx = near.transaction().await?;
        let near_ev = pgq::insert_event(&near_tx, Q, "near", "x").await?;
        let before = insert(&client, "before", "x").await?;
        tick(&client).await?;
        assert_eq!(consume_checked(&client, &reader, "a").await?, vec![before]);
        far_tx.commit().await?;
        near_tx.commit().await?;
        let after = insert(&client, "after", "x").await?;
        tick(&client).await?;
        let mut expected = vec![far_ev, near_ev, after];
        expected.sort_unstable();
        let b = next_batch(&client, "a").await?.context("a batch")?;
        let sql = pgq::batch_event_sql(&client, b.batch_id).await?;
        assert_eq!(same_events(&client, &reader, "a", &b).await?, expected);
        pgq::finish_batch(&client, b.batch_id).await?;

        // Consumer b reads the same two batches.
        assert_eq!(consume_checked(&client, &reader, "b").await?, vec![before]);
        assert_eq!(consume_checked(&client, &reader, "b").await?, expected);
        if sql.contains("ev_txid in (") {
            break;
        }
        ensure!(
            attempt < 5,
            "PgQ's query used no exact list in {attempt} tries (other transactions in progress bridged the gap): {sql}"
        );
    }

    // A retried event comes back owned by its consumer only.
    let retried = insert(&client, "retry", "x").await?;
    tick(&client).await?;
    let ba = next_batch(&client, "a").await?.context("a batch for a")?;
    same_events(&client, &reader, "a", &ba).await?;
    pgq::event_retry(&client, ba.batch_id, retried, 0).await?;
    pgq::finish_batch(&client, ba.batch_id).await?;
    consume_checked(&client, &reader, "b").await?;
    ensure!(
        maint_retry_events(&client).await? == 1,
        "the retried event was moved back"
    );
    let other = insert(&client, "other", "x").await?;
    tick(&client).await?;
    assert_eq!(consume_checked(&client, &reader, "a").await?, vec![retried, other]);
    assert_eq!(consume_checked(&client, &reader, "b").await?, vec![other]);

    // Rotation: batches that lie in two event tables.
    client
        .execute(
            "update pgq.queue set queue_rotation_period = '0', queue_switch_time = now() - interval '1 day' where queue_name = $1",
            &[&Q],
        )
        .await?;
    // PgQ rotates only once no transaction anywhere in the cluster is older
    // than the last rotation (tests running alongside may hold one open for
    // a moment): rounds go on until two rotations happened, or time is up.
    let cur_table = || async {
        let row = client
            .query_one("select queue_cur_table from pgq.queue where queue_name = $1", &[&Q])
            .await?;
        anyhow::Ok(row.try_get::<_, i32>(0)?)
    };
    let mut rotations = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut round = 0;
    while rotations < 2 && std::time::Instant::now() < deadline {
        round += 1;
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(insert(&client, "rot", &format!("{round}.{i}")).await?);
        }
        // Rotate between a batch's events when PgQ allows it (once every
        // consumer has left the previous table).
        let before = cur_table().await?;
        let ops = pgq::maint_operations(&client).await?;
        for op in ops.iter().filter(|o| o.func_name.starts_with("pgq.maint_rotate")) {
            pgq::run_maint_operation(&client, op).await?;
        }
        if cur_table().await? != before {
            rotations += 1;
        }
        ids.push(insert(&client, "rot-late", &round.to_string()).await?);
        tick(&client).await?;
        assert_eq!(consume_checked(&client, &reader, "a").await?, ids, "round {round}");
        assert_eq!(
            consume_checked(&client, &reader, "b").await?,
            ids,
            "round {round}, consumer b"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ensure!(
        rotations >= 2,
        "PgQ rotated the event tables {rotations} time(s) in 30 s"
    );
    let tables: i64 = client
        .query_one(
            "select count(distinct tableoid) from pgq.event_template where ev_type like 'rot%'",
            &[],
        )
        .await?
        .try_get(0)?;
    ensure!(tables >= 2, "the events were spread over rotated tables ({tables})");
    Ok(())
}

#[tokio::test]
async fn the_batch_query_filters_as_pgq_s_cursor_where_does() -> Result<()> {
    let (_db, client) = queue_db().await?;
    register(&client, "a").await?;
    let reader = BatchReader::prepare(&client, Q).await?;
    for (ty, extra) in [("x", "t1"), ("y", "t2"), ("x", "t2"), ("z", "t1")] {
        let ev = pgq::NewEvent {
            ev_extra1: Some(extra.into()),
            ..pgq::NewEvent::new(ty, "d")
        };
        pgq::insert_event_full(&client, Q, &ev).await?;
    }
    tick(&client).await?;
    let b = next_batch(&client, "a").await?.context("a batch")?;
    let filter = EventFilter {
        ev_type: Some(vec!["x".into(), "z".into()]),
        ev_extra1: Some(vec!["t1".into()]),
    };
    let ours = reader.events(&client, b.batch_id, &filter).await?;
    let large: Vec<pgq::Event> = reader
        .stream_ticks_large(&client, "a", &b, &filter)
        .await?
        .try_collect()
        .await?;
    assert_eq!(large, ours);
    let tx_client = &client;
    tx_client.batch_execute("begin").await?;
    let theirs = pgq::get_batch_cursor_where(
        tx_client,
        b.batch_id,
        "c",
        100,
        "ev_type in ('x', 'z') and ev_extra1 in ('t1')",
    )
    .await?;
    tx_client.batch_execute("commit").await?;
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_batch_that_is_not_open_reads_as_empty() -> Result<()> {
    let (_db, client) = queue_db().await?;
    let reader = BatchReader::prepare(&client, Q).await?;
    assert!(reader
        .events(&client, 424242, &EventFilter::default())
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn finish_and_next_opens_the_next_batch_and_refuses_one_that_is_not_open() -> Result<()> {
    let (_db, mut client) = queue_db().await?;
    register(&client, "a").await?;
    let statements = pgq::BatchStatements::prepare(&client).await?;
    let first = insert(&client, "e", "1").await?;
    tick(&client).await?;
    let second = insert(&client, "e", "2").await?;
    tick(&client).await?;

    // Finishing the first batch opens the second, both at commit.
    let b1 = next_batch(&client, "a").await?.context("the first batch")?;
    let tx = client.transaction().await?;
    let b2 = statements
        .finish_and_next(&tx, b1.batch_id, Q, "a", &pgq::BatchLimits::default())
        .await?
        .context("the next batch")?;
    tx.commit().await?;
    assert_eq!(b2.prev_tick_id, b1.cur_tick_id);
    let open = pgq::get_batch_events(&client, b2.batch_id).await?;
    assert_eq!(open.iter().map(|e| e.ev_id).collect::<Vec<_>>(), vec![second]);
    ensure!(first < second);

    // The batch is finished behind the transaction's back: the work that
    // was to finish it cannot commit.
    pgq::finish_batch(&client, b2.batch_id).await?;
    let tx = client.transaction().await?;
    tx.batch_execute("create table work_done (x int)").await?;
    let refused = statements
        .finish_and_next(&tx, b2.batch_id, Q, "a", &pgq::BatchLimits::default())
        .await;
    assert!(
        matches!(refused, Err(pgq::Error::BatchNotOpen { batch_id, .. }) if batch_id == b2.batch_id),
        "{refused:?}"
    );
    // The transaction is aborted: its COMMIT rolls back.
    let _ = tx.commit().await;
    let kept: Option<String> = client
        .query_one("select to_regclass('work_done')::text", &[])
        .await?
        .try_get(0)?;
    assert_eq!(kept, None);
    Ok(())
}
