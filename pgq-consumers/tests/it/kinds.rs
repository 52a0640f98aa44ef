//! Every consumer kind through the batch loop: local (the handler's writes
//! commit with `finish_batch`), remote (remote COMMIT then queue COMMIT, the
//! batch recorded remotely), remote with a savepoint per event, and
//! cooperative sub-consumers.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use pgq_consumers::{coop, failed, tracking, BatchLoop, BatchReport, CommitMode, Round};
use pgq_test_support::wait_for;
use tokio::sync::Notify;

use crate::common::{maint_retry_events, tick, Q};
use crate::scripted::{
    batch_loop, call_ids, config, config_for, counts, done, done_counts, finished, insert_all, position, remote_config,
    remote_db, setup, Act, Gate, Scripted, CONSUMER,
};

#[tokio::test]
async fn local_batch_cut_short_rolls_back_and_is_done_exactly_once_when_delivered_again() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "ok", "ok", "ok"]).await?;
    tick(&client).await?;
    let stuck = Arc::new(Notify::new());
    let third = ids[2];
    let hang = Arc::clone(&stuck);
    let consumer = Scripted::new(move |ev, _| {
        if ev.ev_id == third {
            Act::Wait(Arc::clone(&hang))
        } else {
            Act::Ok
        }
    });
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config(&db, "")).await?;

    // The process stops in the middle of the batch (the round is dropped,
    // its connection closed), after two events wrote their rows.
    let cut = tokio::time::timeout(Duration::from_millis(300), lp.round()).await;
    assert!(cut.is_err(), "the round should hang on the third event");
    assert_eq!(call_ids(&calls), ids[..3]);
    drop(lp);
    let batch_id = position(&client, CONSUMER).await?.1.expect("the batch stays open");
    assert!(done(&client).await?.is_empty(), "nothing of the cut batch committed");

    // A new process gets the same batch and does it all, once.
    let mut lp = batch_loop(Scripted::by_type(), config(&db, "")).await?;
    let report = finished(lp.round().await?);
    assert_eq!(report.batch_id, batch_id);
    assert_eq!(counts(&report), (4, 4, 0, 0));
    assert_eq!(done_counts(&client).await?, ids.iter().map(|id| (*id, 1)).collect());
    assert_eq!(lp.round().await?, Round::Idle);
    Ok(())
}

#[tokio::test]
async fn remote_consumer_writes_in_the_remote_database_and_records_the_batch_there() -> Result<()> {
    let (db, mut client) = setup().await?;
    let (rdb, remote) = remote_db().await?;
    let ids = insert_all(&mut client, &["ok", "fail", "ok"]).await?;
    tick(&client).await?;
    let consumer = Scripted::by_type();
    let mut lp = batch_loop(consumer, remote_config(&db, &rdb, "remote")).await?;

    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (3, 2, 1, 0));
    assert_eq!(
        done(&remote).await?,
        [(ids[0], "ok".into()), (ids[1], "failed".into()), (ids[2], "ok".into())],
        "a plain remote consumer commits the whole batch's remote writes"
    );
    assert!(done(&client).await?.is_empty(), "nothing written in the queue database");
    let applied = tracking::last_applied(&remote, Q, CONSUMER, None)
        .await?
        .expect("the batch is recorded in the remote database");
    assert_eq!(applied.batch_id, report.batch_id);
    let failed = failed::list(&client, Q, CONSUMER).await?;
    assert_eq!(failed.len(), 1, "failed events are kept in the queue database");
    assert_eq!(
        position(&client, CONSUMER).await?,
        (Some(0), None),
        "finished in the queue"
    );
    Ok(())
}

#[tokio::test]
async fn remote_consumer_finishes_a_batch_already_applied_remotely_without_applying_it_again() -> Result<()> {
    let (db, mut client) = setup().await?;
    let (rdb, remote) = remote_db().await?;
    insert_all(&mut client, &["ok", "ok"]).await?;
    tick(&client).await?;
    // The state a crash between the two commits leaves: the batch is open
    // in the queue database, and recorded as applied in the remote one.
    let open = pgq::next_batch_info(&client, Q, CONSUMER).await?.expect("a batch");
    tracking::record(&remote, Q, CONSUMER, None, &open).await?;

    let consumer = Scripted::by_type();
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, remote_config(&db, &rdb, "remote")).await?;
    let report = finished(lp.round().await?);
    assert!(report.already_applied, "{report:?}");
    assert_eq!(report.batch_id, open.batch_id);
    assert!(call_ids(&calls).is_empty(), "the handler did not run");
    assert!(done(&remote).await?.is_empty());
    assert_eq!(
        position(&client, CONSUMER).await?,
        (Some(0), None),
        "the batch was finished"
    );

    // The next batch is applied as usual.
    let more = insert_all(&mut client, &["ok"]).await?;
    tick(&client).await?;
    let report = finished(lp.round().await?);
    assert!(!report.already_applied);
    assert_eq!(call_ids(&calls), more);
    assert_eq!(done(&remote).await?, [(more[0], "ok".into())]);
    Ok(())
}

#[tokio::test]
async fn remote_consumer_replaying_an_applied_batch_stores_and_retries_again_what_the_lost_attempt_did() -> Result<()> {
    let (db, mut client) = setup().await?;
    let (rdb, mut remote) = remote_db().await?;
    let ids = insert_all(&mut client, &["ok", "fail", "retry", "ok"]).await?;
    tick(&client).await?;

    // A first attempt applied the batch remotely and kept its queue-side
    // outcomes there; its queue transaction was lost in a crash.
    let open = pgq::next_batch_info(&client, Q, CONSUMER).await?.expect("a batch");
    let outcomes = [
        tracking::AppliedOutcome::Failed {
            ev_id: ids[1],
            reason: "first attempt: failed".into(),
        },
        tracking::AppliedOutcome::Retry {
            ev_id: ids[2],
            seconds: 0,
        },
    ];
    let tx = remote.transaction().await?;
    tracking::record(&tx, Q, CONSUMER, None, &open).await?;
    tracking::record_outcomes(&tx, Q, CONSUMER, None, open.batch_id, &outcomes).await?;
    tx.commit().await?;
    assert_eq!(
        tracking::applied_outcomes(&remote, Q, CONSUMER, None, &open).await?,
        outcomes
    );

    let consumer = Scripted::by_type();
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, remote_config(&db, &rdb, "remote")).await?;
    let report = finished(lp.round().await?);
    assert!(report.already_applied);
    assert_eq!((report.failed, report.retried), (1, 1));
    assert!(call_ids(&calls).is_empty(), "the handler did not run again");
    let failed = failed::list(&client, Q, CONSUMER).await?;
    assert_eq!(
        failed
            .iter()
            .map(|f| (f.event.ev_id, f.reason.as_str()))
            .collect::<Vec<_>>(),
        [(ids[1], "first attempt: failed")]
    );
    // The retried event comes back, to the handler this time.
    assert_eq!(maint_retry_events(&client).await?, 1);
    tick(&client).await?;
    let report = finished(lp.round().await?);
    assert!(!report.already_applied);
    assert_eq!(call_ids(&calls), [ids[2]]);

    // That batch had no failed or retried event: the kept outcomes are the
    // previous batch's, stale, and not handed out for it.
    let last = tracking::last_applied(&remote, Q, CONSUMER, None)
        .await?
        .expect("recorded");
    assert_eq!(last.batch_id, report.batch_id);
    let replayed = pgq::BatchTicks {
        batch_id: last.batch_id,
        prev_tick_id: last.prev_tick_id,
        cur_tick_id: last.tick_id,
        ..open
    };
    assert!(tracking::applied_outcomes(&remote, Q, CONSUMER, None, &replayed)
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn remote_consumer_keeps_the_queue_side_outcomes_with_the_batch_it_records() -> Result<()> {
    let (db, mut client) = setup().await?;
    let (rdb, remote) = remote_db().await?;
    let ids = insert_all(&mut client, &["ok", "fail", "retry", "panic"]).await?;
    tick(&client).await?;
    // The batch, as the loop will get it.
    let ticks = pgq::next_batch_info(&client, Q, CONSUMER).await?.expect("a batch");
    let mut lp = batch_loop(Scripted::by_type(), remote_config(&db, &rdb, "remote_event")).await?;
    let reports = lp.consume_available().await?;
    assert_eq!(reports.iter().map(|r| r.batch_id).collect::<Vec<_>>(), [ticks.batch_id]);
    assert_eq!(
        tracking::applied_outcomes(&remote, Q, CONSUMER, None, &ticks).await?,
        [
            tracking::AppliedOutcome::Failed {
                ev_id: ids[1],
                reason: format!("event {} failed", ids[1]),
            },
            tracking::AppliedOutcome::Retry {
                ev_id: ids[2],
                seconds: 0,
            },
            tracking::AppliedOutcome::Failed {
                ev_id: ids[3],
                reason: format!("panic: poisoned event {}", ids[3]),
            },
        ]
    );
    Ok(())
}

#[tokio::test]
async fn remote_consumer_rolls_back_its_remote_writes_when_the_batch_aborts() -> Result<()> {
    let (db, mut client) = setup().await?;
    let (rdb, remote) = remote_db().await?;
    let ids = insert_all(&mut client, &["ok", "abort", "ok"]).await?;
    tick(&client).await?;
    let mut lp = batch_loop(Scripted::by_type(), remote_config(&db, &rdb, "remote")).await?;

    assert!(matches!(lp.round().await?, Round::Aborted { .. }));
    assert!(done(&remote).await?.is_empty(), "remote writes rolled back");
    assert!(tracking::last_applied(&remote, Q, CONSUMER, None).await?.is_none());

    finished(lp.round().await?);
    assert_eq!(done_counts(&remote).await?, ids.iter().map(|id| (*id, 1)).collect());
    Ok(())
}

#[tokio::test]
async fn remote_event_consumer_keeps_ok_events_and_rolls_back_failed_and_retried_ones() -> Result<()> {
    let (db, mut client) = setup().await?;
    let (rdb, remote) = remote_db().await?;
    let ids = insert_all(&mut client, &["ok", "fail", "retry", "ok"]).await?;
    tick(&client).await?;
    let mut lp = batch_loop(Scripted::by_type(), remote_config(&db, &rdb, "remote_event")).await?;

    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (4, 2, 1, 1));
    assert_eq!(
        done(&remote).await?,
        [(ids[0], "ok".into()), (ids[3], "ok".into())],
        "the failed and the retried events' remote writes were rolled back to their savepoints"
    );
    let failed = failed::list(&client, Q, CONSUMER).await?;
    assert_eq!(failed.iter().map(|f| f.event.ev_id).collect::<Vec<_>>(), [ids[1]]);

    // The retried event comes back and is kept this time.
    maint_retry_events(&client).await?;
    tick(&client).await?;
    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (1, 1, 0, 0));
    assert_eq!(done(&remote).await?.last(), Some(&(ids[2], "ok".into())));
    assert_eq!(
        tracking::last_applied(&remote, Q, CONSUMER, None)
            .await?
            .map(|b| b.batch_id),
        Some(report.batch_id)
    );
    Ok(())
}

const GROUP: &str = "grp";

#[tokio::test]
async fn cooperative_sub_consumers_share_the_batches_each_event_exactly_once() -> Result<()> {
    let (db, mut client) = setup().await?;
    let subs = ["a", "b", "c"];
    for sub in subs {
        coop::register(&client, Q, GROUP, sub).await?;
    }
    let mut inserted = BTreeSet::new();
    for _ in 0..12 {
        inserted.extend(insert_all(&mut client, &["ok"; 4]).await?);
        tick(&client).await?;
    }
    let total = inserted.len() as u64;

    let processed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for sub in subs {
        let consumer = Scripted::new(|_, _| Act::Slow(Duration::from_millis(10))).tag(sub);
        let config = config_for(&db, GROUP, &format!("subconsumer = '{sub}'"));
        let mut lp = batch_loop(consumer, config).await?;
        let processed = Arc::clone(&processed);
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while processed.load(Ordering::SeqCst) < total {
                anyhow::ensure!(Instant::now() < deadline, "timed out");
                match lp.round().await? {
                    Round::Finished(report) => {
                        processed.fetch_add(report.ok, Ordering::SeqCst);
                    }
                    Round::Idle => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => anyhow::bail!("unexpected round {other:?}"),
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }

    let counts = done_counts(&client).await?;
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), inserted);
    assert!(counts.values().all(|n| *n == 1), "every event exactly once: {counts:?}");
    let rows = client.query("select distinct tag from done order by tag", &[]).await?;
    let workers: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(workers.len() >= 2, "the batches were shared: only {workers:?} worked");
    Ok(())
}

/// Runs sub-consumer `sub`'s batch loop on a thread and a current-thread
/// runtime of its own, as a process of its own: when its handler stalls
/// ([`Act::Stall`]), everything on that runtime stops, its heartbeat
/// included. Returns its first two rounds.
fn own_process(
    consumer: Scripted,
    config: pgq_consumers::Config,
) -> std::thread::JoinHandle<Result<(pgq_consumers::Result<Round>, pgq_consumers::Result<Round>)>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let mut lp = batch_loop(consumer, config).await?;
            let first = lp.round().await;
            let second = lp.round().await;
            Ok((first, second))
        })
    })
}

/// The calls of `lp`'s rounds until one finishes a batch, every round before
/// it idle; returns the report and how long that took.
async fn rounds_until_finished(lp: &mut BatchLoop<Scripted>, timeout: Duration) -> Result<(BatchReport, Duration)> {
    let started = Instant::now();
    loop {
        match lp.round().await? {
            Round::Finished(report) => return Ok((report, started.elapsed())),
            Round::Idle => {
                anyhow::ensure!(started.elapsed() < timeout, "no batch within {timeout:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => anyhow::bail!("unexpected round {other:?}"),
        }
    }
}

#[tokio::test]
async fn stalled_sub_consumers_batch_is_taken_over_after_dead_interval_and_the_stalled_one_gives_it_up_when_it_wakes(
) -> Result<()> {
    let (db, mut client) = setup().await?;
    for sub in ["a", "b"] {
        coop::register(&client, Q, GROUP, sub).await?;
    }
    let ids = insert_all(&mut client, &["ok", "ok", "ok"]).await?;
    tick(&client).await?;
    let extra = |sub: &str| format!("subconsumer = '{sub}'\ndead_interval = 1.0");

    // Sub-consumer a takes the batch and its process stalls in the middle
    // of it: no heartbeat either.
    let gate = Arc::new(Gate::default());
    let stall = Arc::clone(&gate);
    let first = ids[0];
    let a = Scripted::new(move |ev, seen| {
        if ev.ev_id == first && seen == 0 {
            Act::Stall(Arc::clone(&stall))
        } else {
            Act::Ok
        }
    })
    .tag("a");
    let a_calls = a.calls();
    let a_process = own_process(a, config_for(&db, GROUP, &extra("a")));
    let held = wait_for("a to hold the batch", Duration::from_secs(10), || async {
        let info = coop::info(&client, Q, GROUP).await.ok()?;
        let a = info.iter().find(|i| i.subconsumer == "a")?;
        (!call_ids(&a_calls).is_empty()).then_some(a.batch_id?)
    })
    .await;

    // b gets nothing while a is not yet dead, then a's batch.
    let b = Scripted::by_type().tag("b");
    let b_calls = b.calls();
    let mut lp_b: BatchLoop<Scripted> = batch_loop(b, config_for(&db, GROUP, &extra("b"))).await?;
    assert_eq!(lp_b.round().await?, Round::Idle, "a is not dead yet");
    let (report, waited) = rounds_until_finished(&mut lp_b, Duration::from_secs(10)).await?;
    assert!(
        waited >= Duration::from_millis(800),
        "taken over after the dead interval, not before (after {waited:?})"
    );
    assert_ne!(report.batch_id, held, "taken over under a new batch id");
    assert_eq!(counts(&report), (3, 3, 0, 0));
    assert_eq!(call_ids(&b_calls), ids);

    // a wakes up: it can no longer prove that it holds its batch (and it
    // does not), so it gives the batch up and its writes roll back.
    gate.open();
    let (a_first, a_second) = tokio::task::spawn_blocking(move || a_process.join())
        .await?
        .map_err(|_| anyhow::anyhow!("a's thread panicked"))??;
    match a_first {
        Ok(Round::Lost { batch_id }) => assert_eq!(batch_id, held),
        other => panic!("a should give its batch up, got {other:?}"),
    }
    let rows = client.query("select ev_id, tag from done order by ev_id", &[]).await?;
    let rows: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, ids.iter().map(|id| (*id, "b".to_string())).collect::<Vec<_>>());
    assert_eq!(a_second?, Round::Idle, "nothing left for a");
    assert_eq!(lp_b.round().await?, Round::Idle);
    Ok(())
}

#[tokio::test]
async fn sub_consumer_whose_batch_outlasts_the_dead_interval_keeps_it_thanks_to_its_heartbeat() -> Result<()> {
    let (db, mut client) = setup().await?;
    for sub in ["a", "b"] {
        coop::register(&client, Q, GROUP, sub).await?;
    }
    let ids = insert_all(&mut client, &["ok", "ok", "ok"]).await?;
    tick(&client).await?;
    // The batch takes 1.5 s, three dead intervals.
    let extra = |sub: &str| format!("subconsumer = '{sub}'\ndead_interval = 0.5");
    let a = Scripted::new(|_, _| Act::Slow(Duration::from_millis(500))).tag("a");
    let a_calls = a.calls();
    let mut lp_a = batch_loop(a, config_for(&db, GROUP, &extra("a"))).await?;
    let a_round = tokio::spawn(async move { lp_a.round().await });
    wait_for("a to start its batch", Duration::from_secs(10), || async {
        (!call_ids(&a_calls).is_empty()).then_some(())
    })
    .await;

    // b asks for work all along: a is never taken for dead.
    let b = Scripted::by_type().tag("b");
    let b_calls = b.calls();
    let mut lp_b: BatchLoop<Scripted> = batch_loop(b, config_for(&db, GROUP, &extra("b"))).await?;
    let mut seen = Vec::new();
    while !a_round.is_finished() {
        assert_eq!(
            lp_b.round().await?,
            Round::Idle,
            "b took a's batch while a worked on it"
        );
        let info = coop::info(&client, Q, GROUP).await?;
        if let Some(last_seen) = info.iter().find(|i| i.subconsumer == "a").and_then(|i| i.last_seen) {
            seen.push(last_seen);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = finished(a_round.await??);
    assert_eq!(counts(&report), (3, 3, 0, 0));
    assert_eq!(call_ids(&a_calls), ids, "the work was done once");
    assert!(call_ids(&b_calls).is_empty());
    let rows = client.query("select ev_id, tag from done order by ev_id", &[]).await?;
    let rows: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, ids.iter().map(|id| (*id, "a".to_string())).collect::<Vec<_>>());
    seen.dedup();
    assert!(seen.len() >= 3, "a was seen again and again while it worked: {seen:?}");
    assert_eq!(lp_b.round().await?, Round::Idle);
    Ok(())
}

#[tokio::test]
async fn killed_sub_consumers_heartbeat_stops_and_its_batch_is_taken_over_after_dead_interval() -> Result<()> {
    let (db, mut client) = setup().await?;
    for sub in ["a", "b"] {
        coop::register(&client, Q, GROUP, sub).await?;
    }
    let ids = insert_all(&mut client, &["ok", "ok", "ok"]).await?;
    tick(&client).await?;
    let extra = |sub: &str| format!("subconsumer = '{sub}'\ndead_interval = 0.6");

    // a waits in its handler, alive: its heartbeat keeps the batch its own.
    let wakeup = Arc::new(Notify::new());
    let wait = Arc::clone(&wakeup);
    let a = Scripted::new(move |_, _| Act::Wait(Arc::clone(&wait))).tag("a");
    let a_calls = a.calls();
    let mut lp_a = batch_loop(a, config_for(&db, GROUP, &extra("a"))).await?;
    let a_round = tokio::spawn(async move { lp_a.round().await });
    wait_for("a to start its batch", Duration::from_secs(10), || async {
        (!call_ids(&a_calls).is_empty()).then_some(())
    })
    .await;
    let b = Scripted::by_type().tag("b");
    let mut lp_b: BatchLoop<Scripted> = batch_loop(b, config_for(&db, GROUP, &extra("b"))).await?;
    let alive = Instant::now();
    while alive.elapsed() < Duration::from_millis(1500) {
        assert_eq!(lp_b.round().await?, Round::Idle, "a is alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // a is killed: its round, heartbeat and connections are gone.
    a_round.abort();
    assert!(a_round.await.is_err_and(|e| e.is_cancelled()));
    let (report, waited) = rounds_until_finished(&mut lp_b, Duration::from_secs(10)).await?;
    assert!(
        waited >= Duration::from_millis(300),
        "taken over once a was silent for the dead interval (after {waited:?})"
    );
    assert_eq!(counts(&report), (3, 3, 0, 0));
    let rows = client.query("select ev_id, tag from done order by ev_id", &[]).await?;
    let rows: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, ids.iter().map(|id| (*id, "b".to_string())).collect::<Vec<_>>());
    drop(wakeup);
    Ok(())
}

/// The order in which [`ReadAhead`] applies the outcomes of the events it
/// read.
#[derive(Clone, Copy)]
enum Order {
    /// Each event's outcome applied before the next event is read.
    OneByOne,
    /// Every event read (and written) first, then the outcomes in order.
    Forward,
    /// Every event read (and written) first, then the outcomes last first.
    Reverse,
}

/// A `process_batch` that writes a remote row for each event as it reads it
/// (`done(ev_id, 'read')`), and applies outcomes by type (`fail`: Failed,
/// `retry`: Retry, anything else: Ok) in the given order.
struct ReadAhead {
    order: Order,
}

#[async_trait::async_trait]
impl pgq_consumers::Consumer for ReadAhead {
    type Settings = crate::scripted::ScriptedSettings;

    async fn process_event(
        &mut self,
        _ev: &pgq_consumers::Event,
        _cx: &mut pgq_consumers::Context<'_>,
    ) -> Result<pgq_consumers::Outcome, pgq_consumers::BoxError> {
        Err("process_batch is overridden".into())
    }

    async fn process_batch(
        &mut self,
        batch: &mut pgq_consumers::Batch<'_>,
    ) -> Result<pgq_consumers::BatchEnd, pgq_consumers::BoxError> {
        let outcome = |ev: &pgq_consumers::Event| match ev.kind() {
            "fail" => pgq_consumers::Outcome::Failed("read ahead: failed".into()),
            "retry" => pgq_consumers::Outcome::Retry(Duration::from_secs(1)),
            _ => pgq_consumers::Outcome::Ok,
        };
        let mut read = Vec::new();
        while let Some(ev) = batch.next_event().await? {
            batch
                .context()
                .tx()
                .execute("insert into done (ev_id, outcome) values ($1, 'read')", &[&ev.ev_id])
                .await?;
            match self.order {
                Order::OneByOne => {
                    let _ = batch.apply(&ev, outcome(&ev)).await?;
                }
                Order::Forward | Order::Reverse => read.push(ev),
            }
        }
        if let Order::Reverse = self.order {
            read.reverse();
        }
        for ev in &read {
            let _ = batch.apply(ev, outcome(ev)).await?;
        }
        Ok(pgq_consumers::BatchEnd::Finish)
    }

    fn commit_mode(settings: &crate::scripted::ScriptedSettings) -> CommitMode {
        <crate::scripted::Scripted as pgq_consumers::Consumer>::commit_mode(settings)
    }
}

/// Runs [`ReadAhead`] in `mode` and `order` over one batch of
/// `ok, fail, retry, ok`; returns the round, the event ids, the remote rows,
/// the failed events and the queue database.
async fn read_ahead(
    mode: &str,
    order: Order,
) -> Result<(pgq_consumers::Result<Round>, Vec<i64>, Vec<(i64, String)>, Vec<i64>)> {
    let (db, mut client) = setup().await?;
    let (rdb, remote) = remote_db().await?;
    let ids = insert_all(&mut client, &["ok", "fail", "retry", "ok"]).await?;
    tick(&client).await?;
    let mut lp = BatchLoop::connect(ReadAhead { order }, remote_config(&db, &rdb, mode)).await?;
    let round = lp.round().await;
    let failed = failed::list(&client, Q, CONSUMER)
        .await?
        .into_iter()
        .map(|f| f.event.ev_id)
        .collect();
    Ok((round, ids, done(&remote).await?, failed))
}

#[tokio::test]
async fn remote_mode_events_read_together_keep_their_writes_and_get_their_outcomes_applied_in_order_or_in_reverse(
) -> Result<()> {
    for order in [Order::Forward, Order::Reverse] {
        let (round, ids, rows, failed) = read_ahead("remote", order).await?;
        let report = finished(round?);
        assert_eq!(counts(&report), (4, 2, 1, 1));
        assert_eq!(
            rows,
            ids.iter().map(|id| (*id, "read".to_string())).collect::<Vec<_>>(),
            "the remote mode commits the whole batch's writes"
        );
        assert_eq!(failed, [ids[1]]);
    }
    Ok(())
}

#[tokio::test]
async fn remote_event_mode_rolls_back_exactly_the_writes_of_each_failed_or_retried_event_applied_before_the_next_is_read(
) -> Result<()> {
    let (round, ids, rows, failed) = read_ahead("remote_event", Order::OneByOne).await?;
    assert_eq!(counts(&finished(round?)), (4, 2, 1, 1));
    assert_eq!(rows, [(ids[0], "read".into()), (ids[3], "read".into())]);
    assert_eq!(failed, [ids[1]]);
    Ok(())
}

#[tokio::test]
async fn remote_event_mode_refuses_to_read_the_next_event_before_the_last_ones_outcome_and_commits_nothing(
) -> Result<()> {
    for order in [Order::Forward, Order::Reverse] {
        let (round, ids, rows, failed) = read_ahead("remote_event", order).await?;
        match round {
            Err(pgq_consumers::Error::Handler { source, .. }) => {
                let refused = source.downcast_ref::<pgq_consumers::Error>().is_some_and(
                    |e| matches!(e, pgq_consumers::Error::EventNotApplied { ev_id, .. } if *ev_id == ids[0]),
                );
                assert!(refused, "refused for event {}: {source}", ids[0]);
                assert!(source.to_string().contains("before the next event is read"), "{source}");
            }
            other => panic!("expected the handler's error, got {other:?}"),
        }
        assert!(rows.is_empty(), "nothing committed: {rows:?}");
        assert!(failed.is_empty());
    }
    Ok(())
}

/// Applies an outcome to an event it never read, or twice to one it read.
struct Misapplies {
    twice: bool,
}

#[async_trait::async_trait]
impl pgq_consumers::Consumer for Misapplies {
    type Settings = pgq_consumers::NoSettings;

    async fn process_event(
        &mut self,
        _ev: &pgq_consumers::Event,
        _cx: &mut pgq_consumers::Context<'_>,
    ) -> Result<pgq_consumers::Outcome, pgq_consumers::BoxError> {
        Err("process_batch is overridden".into())
    }

    async fn process_batch(
        &mut self,
        batch: &mut pgq_consumers::Batch<'_>,
    ) -> Result<pgq_consumers::BatchEnd, pgq_consumers::BoxError> {
        let ev = batch.next_event().await?.ok_or("an event")?;
        if self.twice {
            let _ = batch.apply(&ev, pgq_consumers::Outcome::Ok).await?;
            let _ = batch.apply(&ev, pgq_consumers::Outcome::Ok).await?;
        } else {
            let mut other = ev.clone();
            other.ev_id += 1000;
            let _ = batch.apply(&other, pgq_consumers::Outcome::Ok).await?;
        }
        Ok(pgq_consumers::BatchEnd::Finish)
    }
}

#[tokio::test]
async fn an_outcome_applied_to_an_event_not_handed_out_or_applied_twice_is_an_error_and_the_batch_comes_again(
) -> Result<()> {
    for twice in [false, true] {
        let (db, mut client) = setup().await?;
        insert_all(&mut client, &["ok", "ok"]).await?;
        tick(&client).await?;
        let mut lp = BatchLoop::connect(Misapplies { twice }, config(&db, "")).await?;
        match lp.round().await {
            Err(pgq_consumers::Error::Handler { source, .. }) => assert!(
                matches!(
                    source.downcast_ref::<pgq_consumers::Error>(),
                    Some(pgq_consumers::Error::EventNotHandedOut { .. })
                ),
                "{source}"
            ),
            other => panic!("expected the handler's error, got {other:?}"),
        }
        assert!(
            position(&client, CONSUMER).await?.1.is_some(),
            "the batch is still open"
        );
    }
    Ok(())
}
