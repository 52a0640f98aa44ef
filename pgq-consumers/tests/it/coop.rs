//! Cooperative sub-consumers: several processes share one consumer's
//! batches, each batch to exactly one of them.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use pgq::BatchLimits;
use pgq_consumers::{coop, failed, Error};
use tokio_postgres::Client;

use crate::common::{consume, event_ids, events, insert, maint_retry_events, queue_db, register, tick, Q};

const GROUP: &str = "grp";

/// A sub-consumer's next batch with no dead interval and no limits.
async fn next(client: &Client, sub: &str) -> Result<Option<pgq::BatchTicks>> {
    Ok(coop::next_batch(client, Q, GROUP, sub, None, &BatchLimits::default()).await?)
}

#[tokio::test]
async fn sub_consumers_holding_batches_at_once_get_different_batches() -> Result<()> {
    let (_db, client) = queue_db().await?;
    for sub in ["a", "b", "c"] {
        assert!(coop::register(&client, Q, GROUP, sub).await?);
    }
    assert!(
        !coop::register(&client, Q, GROUP, "a").await?,
        "registering again is a no-op"
    );
    let mut inserted = Vec::new();
    for i in 0..3 {
        inserted.push(insert(&client, "t", &i.to_string()).await?);
        tick(&client).await?;
    }

    let mut batches = Vec::new();
    for sub in ["a", "b", "c"] {
        batches.push(next(&client, sub).await?.expect("a batch for every sub-consumer"));
    }
    // An unregistered sub-consumer gets nothing, and the error says which
    // of the two is missing.
    match next(&client, "d").await.map_err(|e| e.downcast::<Error>()) {
        Err(Ok(Error::NotRegistered { subconsumer, .. })) => assert_eq!(subconsumer.as_deref(), Some("d")),
        other => panic!("expected NotRegistered for sub-consumer d, got {other:?}"),
    }
    match coop::next_batch(&client, Q, "nogroup", "a", None, &BatchLimits::default()).await {
        Err(Error::NotRegistered {
            consumer, subconsumer, ..
        }) => {
            assert_eq!((consumer.as_str(), subconsumer), ("nogroup", None));
        }
        other => panic!("expected NotRegistered for the group, got {other:?}"),
    }

    let ids: HashSet<i64> = batches.iter().map(|b| b.batch_id).collect();
    assert_eq!(ids.len(), 3, "three different batches: {batches:?}");
    // They are consecutive slices of the group's stream.
    assert_eq!(batches[0].cur_tick_id, batches[1].prev_tick_id);
    assert_eq!(batches[1].cur_tick_id, batches[2].prev_tick_id);
    let mut seen = Vec::new();
    for b in &batches {
        seen.extend(event_ids(&client, b.batch_id).await?);
    }
    assert_eq!(seen, inserted);

    // Asking again before finishing returns the batch already held.
    let again = next(&client, "b").await?.expect("b's batch");
    assert_eq!(again, batches[1]);
    for b in &batches {
        coop::finish_batch(&client, b.batch_id).await?;
    }
    assert!(next(&client, "a").await?.is_none(), "nothing left");
    let info = coop::info(&client, Q, GROUP).await?;
    assert_eq!(
        info.iter().map(|i| i.subconsumer.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert!(info
        .iter()
        .all(|i| i.batch_id.is_none() && i.prev_tick_id.is_none() && !i.handed_back));
    Ok(())
}

#[tokio::test]
async fn sub_consumers_registering_at_once_all_succeed() -> Result<()> {
    let (db, client) = queue_db().await?;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let c = db.connect().await;
        tasks.push(tokio::spawn(async move {
            coop::register(&c, Q, GROUP, &format!("s{i}")).await
        }));
    }
    for t in tasks {
        assert!(t.await??, "newly registered");
    }
    assert_eq!(coop::info(&client, Q, GROUP).await?.len(), 6);
    Ok(())
}

#[tokio::test]
async fn every_event_is_delivered_exactly_once_across_parallel_sub_consumers() -> Result<()> {
    let (db, client) = queue_db().await?;
    let subs = ["a", "b", "c"];
    for sub in subs {
        coop::register(&client, Q, GROUP, sub).await?;
    }
    let mut inserted = BTreeSet::new();
    for round in 0..12 {
        for i in 0..4 {
            inserted.insert(insert(&client, "t", &format!("{round}.{i}")).await?);
        }
        tick(&client).await?;
    }
    let total = inserted.len();

    let seen = Arc::new(Mutex::new(Vec::<(String, i64, i64)>::new()));
    let mut tasks = Vec::new();
    for sub in subs {
        let mut c = db.connect().await;
        let seen = Arc::clone(&seen);
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(b) = coop::next_batch(&c, Q, GROUP, sub, None, &BatchLimits::default()).await? else {
                    let done = seen.lock().map_or(0, |s| s.len()) >= total;
                    if done {
                        return anyhow::Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let tx = c.transaction().await?;
                let ids = event_ids(&tx, b.batch_id).await?;
                // Hold the batch a little, so the others must take other batches.
                tokio::time::sleep(Duration::from_millis(30)).await;
                coop::finish_batch(&tx, b.batch_id).await?;
                tx.commit().await?;
                if let Ok(mut s) = seen.lock() {
                    s.extend(ids.into_iter().map(|id| (sub.to_string(), b.batch_id, id)));
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })
    .await??;

    let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let ids: Vec<i64> = seen.iter().map(|(_, _, id)| *id).collect();
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "no event delivered twice");
    assert_eq!(unique, inserted, "every event delivered");
    let workers: HashSet<&str> = seen.iter().map(|(s, _, _)| s.as_str()).collect();
    assert!(workers.len() >= 2, "the batches were shared: {workers:?}");
    // Each batch went to exactly one sub-consumer.
    let mut owner = std::collections::HashMap::new();
    for (sub, batch, _) in &seen {
        assert_eq!(
            owner.entry(*batch).or_insert(sub.as_str()),
            sub,
            "batch {batch} went to two sub-consumers"
        );
    }
    Ok(())
}

/// Waits until sub-consumer `sub` of [`GROUP`] was last seen at least `quiet`
/// ago, by the database's clock (the one the dead interval is judged by).
async fn silent_for(client: &Client, sub: &str, quiet: Duration) -> Result<()> {
    let quiet = pgq::Interval::from_duration(quiet);
    let silent = || async {
        let row = client
            .query_one(
                "select i.last_seen < now() - $3::interval from pgq_consumer.get_subconsumer_info($1, $2) i \
                  where i.subconsumer_name = $4",
                &[&Q, &GROUP, &quiet, &sub],
            )
            .await
            .ok()?;
        row.try_get::<_, bool>(0).ok().filter(|silent| *silent)
    };
    pgq_test_support::wait_for(
        &format!("{sub} to be silent for {quiet:?}"),
        Duration::from_secs(30),
        silent,
    )
    .await;
    Ok(())
}

#[tokio::test]
async fn dead_sub_consumers_batch_is_taken_over_after_the_dead_interval() -> Result<()> {
    let (_db, client) = queue_db().await?;
    coop::register(&client, Q, GROUP, "a").await?;
    coop::register(&client, Q, GROUP, "b").await?;
    let e1 = insert(&client, "t", "one").await?;
    tick(&client).await?;
    let dead_interval = Duration::from_secs(2);
    let dead = Some(dead_interval);
    let none = BatchLimits::default();

    let held = next(&client, "a").await?.expect("a's batch");
    // a was just seen: b does not take its batch, and there is no other.
    assert!(coop::next_batch_info(&client, Q, GROUP, "b", dead, &none)
        .await?
        .is_none());
    // Touching keeps a alive past the interval: once a has been silent for
    // most of it, a touch makes b find nothing to take again.
    silent_for(&client, "a", dead_interval * 3 / 4).await?;
    assert!(coop::touch(&client, Q, GROUP, "a").await?);
    assert!(coop::next_batch_info(&client, Q, GROUP, "b", dead, &none)
        .await?
        .is_none());

    // Silent for longer than the interval: b takes its batch over.
    silent_for(&client, "a", dead_interval).await?;
    let taken = coop::next_batch_info(&client, Q, GROUP, "b", dead, &none)
        .await?
        .expect("b takes a's batch");
    assert_eq!(taken.taken_from.as_deref(), Some("a"));
    assert_ne!(taken.ticks.batch_id, held.batch_id, "a new batch id");
    assert_eq!(
        (taken.ticks.prev_tick_id, taken.ticks.cur_tick_id),
        (held.prev_tick_id, held.cur_tick_id)
    );
    assert_eq!(event_ids(&client, taken.ticks.batch_id).await?, vec![e1]);

    // The old holder comes back: its heartbeat learns the batch is gone...
    assert!(!coop::touch_batch(&client, Q, GROUP, "a", held.batch_id).await?);
    assert!(coop::touch_batch(&client, Q, GROUP, "b", taken.ticks.batch_id).await?);
    assert_eq!(
        coop::group_finished_tick(&client, Q, GROUP).await?,
        Some(held.prev_tick_id),
        "the batch held by b is not finished"
    );
    // ... and its work must roll back.
    match coop::finish_batch(&client, held.batch_id).await {
        Err(Error::BatchNotActive { batch_id, .. }) => assert_eq!(batch_id, held.batch_id),
        other => panic!("expected BatchNotActive, got {other:?}"),
    }
    assert!(
        event_ids(&client, held.batch_id).await.is_err(),
        "the old batch id reads nothing"
    );
    coop::finish_batch(&client, taken.ticks.batch_id).await?;
    assert_eq!(
        coop::group_finished_tick(&client, Q, GROUP).await?,
        Some(held.cur_tick_id)
    );
    assert!(
        !coop::touch_batch(&client, Q, GROUP, "b", taken.ticks.batch_id).await?,
        "finished"
    );
    assert!(next(&client, "a").await?.is_none(), "a is still registered and idle");
    Ok(())
}

#[tokio::test]
async fn unregistering_a_sub_consumer_that_holds_a_batch_hands_it_back() -> Result<()> {
    let (_db, client) = queue_db().await?;
    coop::register(&client, Q, GROUP, "a").await?;
    coop::register(&client, Q, GROUP, "b").await?;
    let e1 = insert(&client, "t", "one").await?;
    tick(&client).await?;
    let held = next(&client, "a").await?.expect("a's batch");

    match coop::unregister_with(&client, Q, GROUP, "a", coop::BatchHandling::Refuse).await {
        Err(Error::BatchHeld { subconsumer, .. }) => assert_eq!(subconsumer.as_deref(), Some("a")),
        other => panic!("expected BatchHeld, got {other:?}"),
    }
    assert!(coop::unregister(&client, Q, GROUP, "a").await?);
    assert!(!coop::unregister(&client, Q, GROUP, "a").await?, "already unregistered");
    let info = coop::info(&client, Q, GROUP).await?;
    let a = info.iter().find(|i| i.subconsumer == "a").expect("a's batch waits");
    assert!(a.handed_back && a.batch_id == Some(held.batch_id) && a.last_seen.is_none());
    assert!(next(&client, "a").await.is_err(), "a no longer takes batches");

    // No dead interval needed: the handed-back batch goes to the next caller.
    let taken = coop::next_batch_info(&client, Q, GROUP, "b", None, &BatchLimits::default())
        .await?
        .expect("b gets the batch");
    assert_eq!(taken.taken_from.as_deref(), Some("a"));
    assert_eq!(event_ids(&client, taken.ticks.batch_id).await?, vec![e1]);
    coop::finish_batch(&client, taken.ticks.batch_id).await?;
    let info = coop::info(&client, Q, GROUP).await?;
    assert_eq!(info.iter().map(|i| i.subconsumer.as_str()).collect::<Vec<_>>(), ["b"]);
    let leftover: i64 = client
        .query_one("select count(*) as n from pgq.consumer where co_name = 'grp.a'", &[])
        .await?
        .try_get("n")?;
    assert_eq!(leftover, 0, "the unregistered sub-consumer's pgq consumer is gone");
    Ok(())
}

#[tokio::test]
async fn unregistering_with_drop_loses_the_held_batch_and_nothing_else() -> Result<()> {
    let (_db, client) = queue_db().await?;
    coop::register(&client, Q, GROUP, "a").await?;
    coop::register(&client, Q, GROUP, "b").await?;
    insert(&client, "t", "dropped").await?;
    tick(&client).await?;
    let e2 = insert(&client, "t", "kept").await?;
    tick(&client).await?;

    next(&client, "a").await?.expect("a's batch");
    assert!(coop::unregister_with(&client, Q, GROUP, "a", coop::BatchHandling::Drop).await?);
    let b = next(&client, "b").await?.expect("b's batch");
    assert_eq!(event_ids(&client, b.batch_id).await?, vec![e2]);
    coop::finish_batch(&client, b.batch_id).await?;
    assert!(next(&client, "b").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn event_retried_by_a_sub_consumer_comes_back_to_the_group_only() -> Result<()> {
    let (_db, client) = queue_db().await?;
    coop::register(&client, Q, GROUP, "a").await?;
    coop::register(&client, Q, GROUP, "b").await?;
    register(&client, "other").await?;
    let e1 = insert(&client, "t", "again").await?;
    tick(&client).await?;

    let held = next(&client, "a").await?.expect("a's batch");
    client
        .execute("select pgq.event_retry($1, $2, 0)", &[&held.batch_id, &e1])
        .await?;
    coop::finish_batch(&client, held.batch_id).await?;
    assert_eq!(consume(&client, "other").await?, Some(vec![e1]));

    maint_retry_events(&client).await?;
    tick(&client).await?;
    let b = next(&client, "b").await?.expect("the group's next batch");
    let evs = events(&client, b.batch_id).await?;
    assert_eq!(
        evs.iter().map(|e| (e.ev_id, e.ev_retry)).collect::<Vec<_>>(),
        vec![(e1, Some(1))]
    );
    coop::finish_batch(&client, b.batch_id).await?;
    assert_eq!(
        consume(&client, "other").await?,
        Some(vec![]),
        "the other consumer does not see it again"
    );
    Ok(())
}

#[tokio::test]
async fn sub_consumers_failed_event_is_stored_and_retried_for_the_group() -> Result<()> {
    let (_db, client) = queue_db().await?;
    coop::register(&client, Q, GROUP, "a").await?;
    coop::register(&client, Q, GROUP, "b").await?;
    let e1 = insert(&client, "t", "bad").await?;
    tick(&client).await?;

    let held = next(&client, "a").await?.expect("a's batch");
    failed::add_from_batch(&client, held.batch_id, e1, "broken").await?;
    coop::finish_batch(&client, held.batch_id).await?;
    let failed = failed::list(&client, Q, GROUP).await?;
    assert_eq!(
        failed.iter().map(|f| f.event.ev_id).collect::<Vec<_>>(),
        vec![e1],
        "stored under the group"
    );

    assert_eq!(failed::retry(&client, Q, GROUP, &[e1]).await?, 1);
    maint_retry_events(&client).await?;
    tick(&client).await?;
    let b = next(&client, "b").await?.expect("the retried event");
    assert_eq!(event_ids(&client, b.batch_id).await?, vec![e1]);
    Ok(())
}

async fn cur_table(c: &Client) -> Result<i32> {
    let r = c
        .query_one("select queue_cur_table from pgq.queue where queue_name = $1", &[&Q])
        .await?;
    Ok(r.try_get("queue_cur_table")?)
}

/// One round of PgQ's table rotation, as pgqd's maintenance runs it.
async fn rotate(c: &Client) -> Result<()> {
    c.execute("select pgq.maint_rotate_tables_step1($1)", &[&Q]).await?;
    c.execute("select pgq.maint_rotate_tables_step2()", &[]).await?;
    Ok(())
}

#[tokio::test]
async fn batch_held_by_a_sub_consumer_survives_table_rotation() -> Result<()> {
    let (_db, client) = queue_db().await?;
    client
        .execute("select pgq.set_queue_config($1, 'rotation_period', '0 seconds')", &[&Q])
        .await?;
    coop::register(&client, Q, GROUP, "a").await?;
    coop::register(&client, Q, GROUP, "b").await?;
    let e1 = insert(&client, "t", "held").await?;
    tick(&client).await?;
    let held = next(&client, "a").await?.expect("a's batch");

    // The group moves on while a holds its batch; rotation must wait for a.
    let start = cur_table(&client).await?;
    for i in 0..6 {
        insert(&client, "t", &format!("later {i}")).await?;
        tick(&client).await?;
        let b = next(&client, "b").await?.expect("b's batch");
        coop::finish_batch(&client, b.batch_id).await?;
        rotate(&client).await?;
    }
    assert_eq!(cur_table(&client).await?, start, "rotation waited for the held batch");
    assert_eq!(
        event_ids(&client, held.batch_id).await?,
        vec![e1],
        "a's events are still there"
    );
    coop::finish_batch(&client, held.batch_id).await?;

    // Once a has finished (idle sub-consumers hold nothing back), rotation
    // goes round the tables.
    let mut rotations = 0;
    for _ in 0..40 {
        insert(&client, "t", "after").await?;
        tick(&client).await?;
        if let Some(b) = next(&client, "b").await? {
            coop::finish_batch(&client, b.batch_id).await?;
        }
        let before = cur_table(&client).await?;
        rotate(&client).await?;
        if cur_table(&client).await? != before {
            rotations += 1;
            if rotations == 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rotations, 3, "rotation resumed once the batch was finished");
    Ok(())
}

#[tokio::test]
async fn group_consumer_holding_its_own_batch_blocks_sub_consumers() -> Result<()> {
    let (_db, client) = queue_db().await?;
    register(&client, GROUP).await?;
    insert(&client, "t", "x").await?;
    tick(&client).await?;
    client.execute("select pgq.next_batch($1, $2)", &[&Q, &GROUP]).await?;
    match coop::register(&client, Q, GROUP, "a").await {
        Err(Error::BatchHeld {
            subconsumer: None,
            consumer,
            ..
        }) => assert_eq!(consumer, GROUP),
        other => panic!("expected BatchHeld for the group's consumer, got {other:?}"),
    }
    Ok(())
}

/// The group's subscription row, locked as `pgq_consumer.next_batch_custom`
/// locks it first.
const LOCK_GROUP_ROW: &str = "select 1 from pgq.subscription s \
       join pgq.queue q on q.queue_id = s.sub_queue \
       join pgq.consumer c on c.co_id = s.sub_consumer \
      where q.queue_name = $1 and c.co_name = $2 \
        for update of s";

/// Waits until the backend `pid` waits for a lock.
async fn waiting_for_a_lock(client: &Client, pid: i32) -> Result<()> {
    for _ in 0..500 {
        let row = client
            .query_one(
                "select exists (select 1 from pg_locks where pid = $1 and not granted) as w",
                &[&pid],
            )
            .await?;
        if row.try_get::<_, bool>("w")? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("backend {pid} never waited for a lock")
}

#[tokio::test]
async fn registering_takes_the_groups_locks_in_the_order_batch_takers_take_them() -> Result<()> {
    let (db, client) = queue_db().await?;
    coop::register(&client, Q, GROUP, "a").await?;

    // A batch taker in the middle of pgq_consumer.next_batch_custom: it
    // holds the group's subscription row ...
    let mut taker = db.connect().await;
    let tx = taker.transaction().await?;
    tx.execute(LOCK_GROUP_ROW, &[&Q, &GROUP]).await?;

    // ... while a sub-consumer registers, and must wait for that row.
    let registrar = db.connect().await;
    let pid: i32 = registrar
        .query_one("select pg_backend_pid() as p", &[])
        .await?
        .try_get("p")?;
    let registration = tokio::spawn(async move {
        registrar
            .query_one(
                "select pgq_consumer.register_subconsumer($1, $2, 'b') as n",
                &[&Q, &GROUP],
            )
            .await
            .and_then(|r| r.try_get::<_, i32>("n"))
    });
    waiting_for_a_lock(&client, pid).await?;

    // The taker's second update of that row re-checks its foreign key: a
    // key-share lock on the group's pgq.consumer row. Before version 4, the
    // waiting registration held that row (pgq.register_consumer locks it for
    // update), and one of the two died of a deadlock.
    let key_share = tx.execute("select 1 from pgq.consumer where co_name = $1 for key share", &[&GROUP]);
    tokio::time::timeout(Duration::from_secs(5), key_share)
        .await
        .map_err(|_| anyhow::anyhow!("the batch taker waits for the registration: lock order inverted"))??;
    tx.commit().await?;
    assert_eq!(registration.await??, 1, "b registered once the taker committed");
    Ok(())
}

#[tokio::test]
async fn sub_consumers_registering_while_others_take_batches_never_deadlock() -> Result<()> {
    const TAKERS: usize = 3;
    const REGISTRARS: usize = 4;
    const ROUNDS: usize = 40;
    let (db, client) = queue_db().await?;
    for i in 0..TAKERS {
        coop::register(&client, Q, GROUP, &format!("t{i}")).await?;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A deadlock is detected after deadlock_timeout (1 s by default): faster
    // where the test may change it.
    let fast_detection = |c: Client| async move {
        let _ = c.batch_execute("set deadlock_timeout = '20ms'").await;
        c
    };

    // Ticks all the time, so batch takers cut new batches (the path that
    // updates the group's row twice).
    let ticker = {
        let c = fast_detection(db.connect().await).await;
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                insert(&c, "t", "x").await?;
                tick(&c).await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            anyhow::Ok(())
        })
    };
    // The SQL functions themselves, in autocommit as the batch loop calls
    // them: no retry anywhere.
    let mut takers = Vec::new();
    for i in 0..TAKERS {
        let c = fast_detection(db.connect().await).await;
        let stop = Arc::clone(&stop);
        takers.push(tokio::spawn(async move {
            let sub = format!("t{i}");
            let mut batches = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let row = c
                    .query_one(
                        "select batch_id from pgq_consumer.next_batch_custom($1, $2, $3, null, null, null, null)",
                        &[&Q, &GROUP, &sub],
                    )
                    .await?;
                if let Some(id) = row.try_get::<_, Option<i64>>("batch_id")? {
                    c.execute("select pgq_consumer.finish_batch($1)", &[&id]).await?;
                    batches += 1;
                }
            }
            anyhow::Ok(batches)
        }));
    }
    let mut registrars = Vec::new();
    for _ in 0..REGISTRARS {
        registrars.push(Arc::new(fast_detection(db.connect().await).await));
    }

    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let calls: Vec<_> = registrars
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = Arc::clone(c);
                tokio::spawn(async move {
                    c.query_one(
                        "select pgq_consumer.register_subconsumer($1, $2, $3) as n",
                        &[&Q, &GROUP, &format!("r{round}.{i}")],
                    )
                    .await
                    .and_then(|r| r.try_get::<_, i32>("n"))
                })
            })
            .collect();
        for call in calls {
            match call.await? {
                Ok(1) => {}
                Ok(n) => failures.push(format!("round {round}: registration returned {n}")),
                Err(e) => failures.push(format!("round {round}: {e:?}")),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    ticker.await??;
    let mut batches = 0;
    for t in takers {
        match t.await? {
            Ok(n) => batches += n,
            Err(e) => failures.push(format!("batch taker: {e:?}")),
        }
    }
    assert!(failures.is_empty(), "no deadlock, no error: {failures:#?}");
    assert!(batches > 0, "the takers took batches while the others registered");
    assert_eq!(coop::info(&client, Q, GROUP).await?.len(), TAKERS + REGISTRARS * ROUNDS);
    Ok(())
}
