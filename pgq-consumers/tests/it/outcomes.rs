//! The batch loop acting on every outcome of `process_event`, the hooks
//! around it, a custom `process_batch`, and the batch tuning keys (filter,
//! min_count, fetch_size), with ticks driven explicitly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use pgq::NewEvent;
use pgq_consumers::{async_trait, failed, Batch, BatchEnd, BoxError, Consumer, Context, Error, Event, Outcome, Round};

use crate::common::{consume, insert, maint_retry_events, register, tick, Q};
use crate::scripted::{
    batch_loop, call_ids, calls_of, config, counts, done, done_counts, finished, insert_all, position, setup, Act,
    Call, Scripted, CONSUMER,
};

fn rows(ids: &[i64], outcome: &str) -> Vec<(i64, String)> {
    ids.iter().map(|id| (*id, outcome.to_string())).collect()
}

#[tokio::test]
async fn ok_events_are_handled_once_and_their_writes_commit_with_the_batch() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "ok", "ok"]).await?;
    tick(&client).await?;
    let consumer = Scripted::by_type();
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config(&db, "")).await?;

    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (3, 3, 0, 0));
    assert!(!report.already_applied);
    assert_eq!(call_ids(&calls), ids);
    assert_eq!(done(&client).await?, rows(&ids, "ok"));
    assert_eq!(lp.round().await?, Round::Idle, "the batch was finished");
    assert_eq!(position(&client, CONSUMER).await?, (Some(0), None));
    assert_eq!(done(&client).await?, rows(&ids, "ok"), "nothing handled twice");
    Ok(())
}

#[tokio::test]
async fn failed_event_is_stored_with_its_reason_and_the_batch_goes_on() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "fail", "ok"]).await?;
    tick(&client).await?;
    let mut lp = batch_loop(Scripted::by_type(), config(&db, "")).await?;

    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (3, 2, 1, 0));
    let failed = failed::list(&client, Q, CONSUMER).await?;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event.ev_id, ids[1]);
    assert_eq!(failed[0].event.kind(), "fail");
    assert_eq!(failed[0].event.data(), "payload 1", "the whole event is kept");
    assert_eq!(failed[0].reason, format!("event {} failed", ids[1]));
    assert_eq!(lp.round().await?, Round::Idle, "a failed event is not delivered again");
    Ok(())
}

#[tokio::test]
async fn failed_event_is_not_stored_when_its_batch_aborts_and_stored_once_when_it_finishes() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["fail", "abort"]).await?;
    tick(&client).await?;
    let mut lp = batch_loop(Scripted::by_type(), config(&db, "")).await?;

    let round = lp.round().await?;
    assert!(matches!(round, Round::Aborted { .. }), "{round:?}");
    assert!(
        failed::list(&client, Q, CONSUMER).await?.is_empty(),
        "the failed event was stored in the batch's transaction, which rolled back"
    );
    assert!(done(&client).await?.is_empty());

    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (2, 1, 1, 0));
    let failed = failed::list(&client, Q, CONSUMER).await?;
    assert_eq!(failed.iter().map(|f| f.event.ev_id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(done(&client).await?, [(ids[0], "failed".into()), (ids[1], "ok".into())]);
    Ok(())
}

#[tokio::test]
async fn retry_redelivers_the_event_after_its_delay_with_ev_retry_1_to_this_consumer_only() -> Result<()> {
    let (db, mut client) = setup().await?;
    register(&client, "other").await?;
    let ids = insert_all(&mut client, &["ok", "retry"]).await?;
    let retried = ids[1];
    tick(&client).await?;
    let consumer = Scripted::new(|ev, _| match (ev.kind(), ev.ev_retry) {
        ("retry", None) => Act::Retry(Duration::from_secs(60)),
        _ => Act::Ok,
    });
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config(&db, "")).await?;

    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (2, 1, 0, 1));
    assert_eq!(done(&client).await?, [(ids[0], "ok".into()), (retried, "retry".into())]);

    // Not before its delay: the retry queue keeps it for about 60 s.
    assert_eq!(maint_retry_events(&client).await?, 0);
    let row = client
        .query_one(
            "select ev_id, ev_retry, extract(epoch from ev_retry_after - now())::float8 as wait \
               from pgq.retry_queue",
            &[],
        )
        .await?;
    assert_eq!(row.try_get::<_, i64>("ev_id")?, retried);
    assert_eq!(row.try_get::<_, Option<i32>>("ev_retry")?, Some(1));
    let wait: f64 = row.try_get("wait")?;
    assert!((50.0..=60.0).contains(&wait), "retry due in {wait} s");
    tick(&client).await?;
    assert_eq!(
        counts(&finished(lp.round().await?)).0,
        0,
        "not delivered before its time"
    );

    // Once due, the ticker's maintenance puts it back, and the next tick delivers it.
    client
        .execute(
            "update pgq.retry_queue set ev_retry_after = now() - interval '1 second'",
            &[],
        )
        .await?;
    assert_eq!(maint_retry_events(&client).await?, 1);
    tick(&client).await?;
    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (1, 1, 0, 0));
    assert_eq!(
        calls_of(&calls)
            .into_iter()
            .filter(|c| c.ev_id == retried)
            .collect::<Vec<_>>(),
        [
            Call {
                ev_id: retried,
                ev_type: "retry".into(),
                ev_retry: None
            },
            Call {
                ev_id: retried,
                ev_type: "retry".into(),
                ev_retry: Some(1)
            },
        ]
    );
    assert_eq!(done_counts(&client).await?.get(&retried), Some(&2));

    // The other consumer saw the event once, not again when it was retried.
    let mut seen_by_other = Vec::new();
    while let Some(batch) = consume(&client, "other").await? {
        seen_by_other.extend(batch);
    }
    assert_eq!(seen_by_other, ids);
    Ok(())
}

#[tokio::test]
async fn retry_past_max_retries_is_stored_as_failed_with_gave_up_reason() -> Result<()> {
    let (db, client) = setup().await?;
    let id = insert(&client, "again", "x").await?;
    tick(&client).await?;
    let consumer = Scripted::new(|_, _| Act::Retry(Duration::ZERO));
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config(&db, "max_retries = 2")).await?;

    let mut failed = Vec::new();
    for _ in 0..5 {
        lp.consume_available().await?;
        failed = failed::list(&client, Q, CONSUMER).await?;
        if !failed.is_empty() {
            break;
        }
        maint_retry_events(&client).await?;
        tick(&client).await?;
    }
    assert_eq!(
        calls_of(&calls).iter().map(|c| c.ev_retry).collect::<Vec<_>>(),
        [None, Some(1), Some(2)],
        "delivered once and retried twice"
    );
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].event.ev_id, id);
    assert_eq!(failed[0].event.ev_retry, Some(2));
    assert!(
        failed[0].reason.starts_with("gave up after 2 retries"),
        "{}",
        failed[0].reason
    );
    maint_retry_events(&client).await?;
    tick(&client).await?;
    lp.consume_available().await?;
    assert_eq!(calls_of(&calls).len(), 3, "not retried again");
    Ok(())
}

#[tokio::test]
async fn abort_batch_rolls_back_the_handlers_writes_and_the_same_batch_comes_again() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "abort", "ok"]).await?;
    tick(&client).await?;
    let consumer = Scripted::by_type();
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config(&db, "")).await?;

    let Round::Aborted { batch_id } = lp.round().await? else {
        panic!("the batch should abort");
    };
    assert!(done(&client).await?.is_empty(), "the handler's writes rolled back");
    assert_eq!(
        call_ids(&calls),
        ids[..2],
        "the events after the abort were not handled"
    );

    let report = finished(lp.round().await?);
    assert_eq!(report.batch_id, batch_id, "the same batch again");
    assert_eq!(counts(&report), (3, 3, 0, 0));
    assert_eq!(call_ids(&calls), [ids[0], ids[1], ids[0], ids[1], ids[2]]);
    assert_eq!(done(&client).await?, rows(&ids, "ok"));
    Ok(())
}

#[tokio::test]
async fn handler_error_rolls_back_the_batch_and_it_comes_again() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "error", "ok"]).await?;
    tick(&client).await?;
    let mut lp = batch_loop(Scripted::by_type(), config(&db, "")).await?;

    let err = match lp.round().await {
        Err(e) => e,
        Ok(round) => panic!("the handler's error should fail the round, got {round:?}"),
    };
    let Error::Handler { batch_id, .. } = &err else {
        panic!("expected Error::Handler, got {err:?}");
    };
    let batch_id = *batch_id;
    let source = std::error::Error::source(&err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert_eq!(source, format!("handler error on event {}", ids[1]));
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert!(done(&client).await?.is_empty(), "the handler's writes rolled back");
    assert_eq!(
        position(&client, CONSUMER).await?.1,
        Some(batch_id),
        "the batch is still open"
    );

    let report = finished(lp.round().await?);
    assert_eq!(report.batch_id, batch_id);
    assert_eq!(done(&client).await?, rows(&ids, "ok"));
    Ok(())
}

#[tokio::test]
async fn panic_replays_the_batch_with_that_event_failed_and_the_others_done_exactly_once() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "panic", "ok", "ok"]).await?;
    tick(&client).await?;
    let consumer = Scripted::by_type();
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config(&db, "")).await?;

    let reports = lp.consume_available().await?;
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(counts(&reports[0]), (4, 3, 1, 0));
    assert_eq!(
        call_ids(&calls),
        [ids[0], ids[1], ids[0], ids[2], ids[3]],
        "the batch was replayed without handing the panicking event out again"
    );
    let ok: Vec<i64> = ids.iter().copied().filter(|id| *id != ids[1]).collect();
    assert_eq!(done(&client).await?, rows(&ok, "ok"));
    let failed = failed::list(&client, Q, CONSUMER).await?;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event.ev_id, ids[1]);
    assert_eq!(failed[0].reason, format!("panic: poisoned event {}", ids[1]));

    // The loop survives, and round by round says what happened.
    let more = insert_all(&mut client, &["panic", "ok"]).await?;
    tick(&client).await?;
    assert_eq!(
        lp.round().await?,
        Round::Panicked {
            batch_id: reports[0].batch_id + 1,
            ev_id: more[0],
            message: format!("poisoned event {}", more[0]),
        }
    );
    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (2, 1, 1, 0));
    assert_eq!(failed::list(&client, Q, CONSUMER).await?.len(), 2);
    assert_eq!(done_counts(&client).await?.get(&more[1]), Some(&1));
    Ok(())
}

/// Records the hooks' calls; `skip` is failed by preprocess, `stop` aborts the
/// batch in preprocess the first time, `post` is failed by postprocess.
#[derive(Default)]
struct Hooked {
    log: Arc<Mutex<Vec<String>>>,
    stopped: bool,
}

impl Hooked {
    fn note(&self, line: String) {
        if let Ok(mut log) = self.log.lock() {
            log.push(line);
        }
    }
}

#[async_trait]
impl Consumer for Hooked {
    type Settings = pgq_consumers::NoSettings;

    async fn preprocess_event(&mut self, ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        self.note(format!("pre {}", ev.kind()));
        Ok(match ev.kind() {
            "skip" => Outcome::Failed("skipped by preprocess".into()),
            "stop" if !self.stopped => {
                self.stopped = true;
                Outcome::AbortBatch
            }
            _ => Outcome::Ok,
        })
    }

    async fn process_event(&mut self, ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        self.note(format!("process {}", ev.kind()));
        Ok(Outcome::Ok)
    }

    async fn postprocess_event(
        &mut self,
        ev: &Event,
        outcome: Outcome,
        _cx: &mut Context<'_>,
    ) -> Result<Outcome, BoxError> {
        self.note(format!("post {} {outcome:?}", ev.kind()));
        Ok(match ev.kind() {
            "post" => Outcome::Failed("failed by postprocess".into()),
            _ => outcome,
        })
    }
}

#[tokio::test]
async fn preprocess_and_postprocess_run_around_each_event_and_their_outcomes_apply() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "skip", "post"]).await?;
    tick(&client).await?;
    let consumer = Hooked::default();
    let log = Arc::clone(&consumer.log);
    let mut lp = BatchLoopOf::connect(consumer, config(&db, "")).await?;

    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (3, 1, 2, 0));
    assert_eq!(
        take(&log),
        [
            "pre ok",
            "process ok",
            "post ok Ok",
            "pre skip",
            "post skip Failed(\"skipped by preprocess\")",
            "pre post",
            "process post",
            "post post Ok",
        ],
        "process_event is not called when preprocess decides"
    );
    let failed = failed::list(&client, Q, CONSUMER).await?;
    assert_eq!(
        failed
            .iter()
            .map(|f| (f.event.ev_id, f.reason.as_str()))
            .collect::<Vec<_>>(),
        [(ids[1], "skipped by preprocess"), (ids[2], "failed by postprocess")]
    );

    // Preprocess aborting the batch: nothing after it runs, the batch comes again.
    insert_all(&mut client, &["ok", "stop", "ok"]).await?;
    tick(&client).await?;
    assert!(matches!(lp.round().await?, Round::Aborted { .. }));
    assert_eq!(
        take(&log),
        ["pre ok", "process ok", "post ok Ok", "pre stop", "post stop AbortBatch"]
    );
    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (3, 3, 0, 0));
    assert_eq!(take(&log).len(), 9);
    Ok(())
}

type BatchLoopOf<C> = pgq_consumers::BatchLoop<C>;

fn take(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    log.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default()
}

/// Handles the whole batch at once: one multi-row insert for the good
/// events, `fail` events failed.
struct Bulk {
    batch_sizes: Arc<Mutex<Vec<usize>>>,
}

#[async_trait]
impl Consumer for Bulk {
    type Settings = pgq_consumers::NoSettings;

    async fn process_event(&mut self, _ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        Err("process_batch is overridden; process_event must not be called".into())
    }

    async fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<BatchEnd, BoxError> {
        let mut events = Vec::new();
        while let Some(ev) = batch.next_event().await? {
            events.push(ev);
        }
        if let Ok(mut sizes) = self.batch_sizes.lock() {
            sizes.push(events.len());
        }
        let good: Vec<i64> = events.iter().filter(|e| e.kind() != "fail").map(|e| e.ev_id).collect();
        batch
            .context()
            .db()
            .execute(
                "insert into done (ev_id, outcome) select id, 'bulk' from unnest($1::bigint[]) as id",
                &[&good],
            )
            .await?;
        for ev in &events {
            let outcome = match ev.kind() {
                "fail" => Outcome::Failed("bulk: failed".into()),
                _ => Outcome::Ok,
            };
            if batch.apply(ev, outcome).await? == BatchEnd::Abort {
                return Ok(BatchEnd::Abort);
            }
        }
        Ok(BatchEnd::Finish)
    }
}

#[tokio::test]
async fn custom_process_batch_gets_every_event_and_applies_their_outcomes() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "fail", "ok", "ok", "fail"]).await?;
    tick(&client).await?;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let consumer = Bulk {
        batch_sizes: Arc::clone(&sizes),
    };
    let mut lp = BatchLoopOf::connect(consumer, config(&db, "fetch_size = 2")).await?;

    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (5, 3, 2, 0));
    assert_eq!(sizes.lock().map(|s| s.clone()).unwrap_or_default(), [5]);
    assert_eq!(done(&client).await?, rows(&[ids[0], ids[2], ids[3]], "bulk"));
    let failed = failed::list(&client, Q, CONSUMER).await?;
    assert_eq!(
        failed.iter().map(|f| f.event.ev_id).collect::<Vec<_>>(),
        [ids[1], ids[4]]
    );
    assert_eq!(lp.round().await?, Round::Idle);
    Ok(())
}

#[tokio::test]
async fn filter_lets_only_matching_ev_type_and_ev_extra1_reach_the_handler() -> Result<()> {
    let (db, client) = setup().await?;
    let mut ids = Vec::new();
    for (t, extra1) in [
        ("a", Some("t1")),
        ("b", Some("t1")),
        ("c", Some("t1")),
        ("a", Some("t2")),
        ("a", None),
        ("b", Some("t'1")),
        ("b", Some("t1")),
    ] {
        let ev = NewEvent {
            ev_extra1: extra1.map(String::from),
            ..NewEvent::new(t, "x")
        };
        ids.push(pgq::insert_event_full(&client, Q, &ev).await?);
    }
    tick(&client).await?;
    let consumer = Scripted::by_type();
    let calls = consumer.calls();
    let filter = "[filter]\nev_type = ['a', 'b']\nev_extra1 = ['t1', \"t'1\"]";
    let mut lp = batch_loop(consumer, config(&db, filter)).await?;

    let report = finished(lp.round().await?);
    assert_eq!(call_ids(&calls), [ids[0], ids[1], ids[5], ids[6]]);
    assert_eq!(counts(&report), (4, 4, 0, 0), "events are counted after the filter");
    assert_eq!(lp.round().await?, Round::Idle, "the others were skipped, not kept");
    Ok(())
}

/// Ticks [`Q`] without moving its event sequence (unlike `pgq.force_tick`);
/// needs `ticker_max_count` 1 and an event since the last tick.
async fn tick_counting(client: &tokio_postgres::Client) -> Result<()> {
    let row = client.query_one("select pgq.ticker($1) as t", &[&Q]).await?;
    let t: Option<i64> = row.try_get("t")?;
    anyhow::ensure!(t.is_some(), "pgq.ticker did not tick");
    Ok(())
}

#[tokio::test]
async fn min_count_waits_for_a_batch_with_enough_events() -> Result<()> {
    let (db, mut client) = setup().await?;
    // `pgq.force_tick` moves the event sequence on by thousands, which would
    // look like thousands of events: tick on every event instead, so the
    // sequence counts the events themselves.
    pgq::set_queue_config(&client, Q, "ticker_max_count", "1").await?;
    // A fresh queue's first tick counts one event too many (its sequence
    // starts at 1, not yet called): move past it with one event.
    insert(&client, "warm-up", "").await?;
    tick_counting(&client).await?;
    consume(&client, CONSUMER).await?;
    let first = insert_all(&mut client, &["ok", "ok"]).await?;
    tick_counting(&client).await?;
    let consumer = Scripted::by_type();
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config(&db, "min_count = 3")).await?;

    assert_eq!(lp.round().await?, Round::Idle, "two events are not enough");
    let second = insert_all(&mut client, &["ok"]).await?;
    tick_counting(&client).await?;
    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (3, 3, 0, 0), "one batch over both ticks");
    assert_eq!(call_ids(&calls), [first, second].concat());
    Ok(())
}

#[tokio::test]
async fn fetch_size_smaller_than_the_batch_delivers_every_event_in_order() -> Result<()> {
    let (db, mut client) = setup().await?;
    let types = vec!["ok"; 10];
    let ids = insert_all(&mut client, &types).await?;
    tick(&client).await?;
    // 10 events: 3 at a time (a short last fetch), 5 at a time (an empty last fetch), 1 at a time.
    for (consumer, fetch_size) in [(CONSUMER, 3), ("five", 5), ("one", 1)] {
        if consumer != CONSUMER {
            // Registered at the queue's position before the events.
            client
                .execute(
                    "select pgq.register_consumer_at($1, $2, (select min(tick_id) from pgq.tick))",
                    &[&Q, &consumer],
                )
                .await?;
        }
        let scripted = Scripted::by_type();
        let calls = scripted.calls();
        let config = crate::scripted::config_for(&db, consumer, &format!("fetch_size = {fetch_size}"));
        let mut lp = batch_loop(scripted, config).await?;
        let report = finished(lp.round().await?);
        assert_eq!(counts(&report), (10, 10, 0, 0), "fetch_size {fetch_size}");
        assert_eq!(call_ids(&calls), ids, "fetch_size {fetch_size}");
        assert_eq!(lp.round().await?, Round::Idle);
    }
    Ok(())
}

/// Moves every tick of the queue this far into the past.
async fn age_ticks(client: &tokio_postgres::Client, seconds: f64) -> Result<()> {
    client
        .execute(
            "update pgq.tick set tick_time = tick_time - make_interval(secs => $1)",
            &[&seconds],
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn min_lag_waits_until_the_batch_is_old_enough() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "ok"]).await?;
    tick(&client).await?;
    let consumer = Scripted::by_type();
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config(&db, "min_lag = 30")).await?;

    assert_eq!(lp.round().await?, Round::Idle, "the tick is younger than 30 s");
    age_ticks(&client, 60.0).await?;
    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (2, 2, 0, 0));
    assert_eq!(call_ids(&calls), ids);
    Ok(())
}

#[tokio::test]
async fn min_interval_waits_for_a_batch_spanning_enough_time() -> Result<()> {
    let (db, mut client) = setup().await?;
    let first = insert_all(&mut client, &["ok"]).await?;
    tick(&client).await?;
    let consumer = Scripted::by_type();
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config(&db, "min_interval = 30")).await?;

    assert_eq!(lp.round().await?, Round::Idle, "the ticks are less than 30 s apart");
    // The consumer's last tick is now a minute old; the next tick closes a
    // batch spanning more than 30 s, holding both transactions' events.
    age_ticks(&client, 60.0).await?;
    let second = insert_all(&mut client, &["ok"]).await?;
    tick(&client).await?;
    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (2, 2, 0, 0));
    assert_eq!(call_ids(&calls), [first, second].concat());
    Ok(())
}
