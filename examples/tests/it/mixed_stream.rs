//! The whole job, as a user runs it: `testq start` as a daemon, the stock
//! `pgqd` as ticker, a mixed stream of plain, fail, retry, abort and panic
//! events; then `failed`, `retry all` and `delete all` as a user would use
//! them, and `stop`.

use std::collections::BTreeSet;

use pgq_test_support::Pgqd;
use serde_json::Value;

use crate::support::testq::{TestqDb, CONSUMER, QUEUE};

/// One producer transaction's worth of events.
const MIX: [&str; 8] = ["plain", "fail", "plain", "retry", "abort", "plain", "panic", "plain"];

/// The failed events as `failed --json` lists them: (ev_id, ev_retry, reason).
async fn failed_json(testq: &TestqDb) -> Vec<(i64, Option<i64>, String)> {
    let out = testq.ok(&["failed", "--json"]).await;
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .map(|v| {
            (
                v["ev_id"].as_i64().unwrap_or(-1),
                v["ev_retry"].as_i64(),
                v["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The newest tick of the queue.
async fn last_tick(testq: &TestqDb) -> i64 {
    testq
        .client
        .query_one(
            "select coalesce(max(t.tick_id), 0) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
              where q.queue_name = $1",
            &[&QUEUE],
        )
        .await
        .expect("last tick")
        .get(0)
}

/// Waits for pgqd to tick the queue and opens testq's batches (the daemon
/// being stopped) until one holds event `ev_id`; returns that batch's id.
async fn wait_for_batch_with(testq: &TestqDb, ev_id: i64) -> i64 {
    let found = std::cell::Cell::new(None);
    testq
        .wait_until("a batch has the event", async || {
            let Some(batch) = pgq::next_batch(&testq.client, QUEUE, CONSUMER)
                .await
                .expect("next_batch")
            else {
                return false;
            };
            let events = pgq::get_batch_events(&testq.client, batch).await.expect("events");
            if events.iter().any(|e| e.ev_id == ev_id) {
                found.set(Some(batch));
                return true;
            }
            pgq::finish_batch(&testq.client, batch).await.expect("finish");
            false
        })
        .await;
    found.get().unwrap_or_default()
}

#[tokio::test]
async fn testq_daemon_ticked_by_pgqd_processes_a_mixed_stream_exactly_once_and_failed_retry_delete_work() {
    let testq = TestqDb::installed("mixed_stream").await;
    pgq::set_queue_config(&testq.client, QUEUE, "ticker_max_lag", "0.2 seconds")
        .await
        .expect("ticker_max_lag");
    let _pgqd = Pgqd::start(&testq.db, 0.2);
    let started = testq.ok(&["start"]).await;
    assert!(started.stdout.contains("started"), "{started:?}");

    // Five producer transactions, each waiting for pgqd to tick after it,
    // so the stream comes as several batches.
    let mut ids = Vec::new();
    for _ in 0..5 {
        let before = last_tick(&testq).await;
        ids.extend(MIX.iter().copied().zip(testq.produce(&MIX).await));
        testq
            .wait_until("pgqd has ticked", async || last_tick(&testq).await > before)
            .await;
    }
    let of = |kinds: &[&str]| -> Vec<i64> {
        ids.iter()
            .filter(|(t, _)| kinds.contains(t))
            .map(|(_, id)| *id)
            .collect()
    };
    let done_expected = of(&["plain", "retry", "abort"]);
    let failed_expected = of(&["fail", "panic"]);
    assert_eq!((done_expected.len(), failed_expected.len()), (30, 10));

    testq
        .wait_until("every event is done or failed", async || {
            testq.done().await.len() >= done_expected.len() && testq.failed().await.len() >= failed_expected.len()
        })
        .await;
    assert_eq!(
        testq.done().await,
        done_expected,
        "every event that can be done, exactly once"
    );
    let reason = |id: i64| {
        let kind = ids.iter().find(|(_, i)| *i == id).map(|(t, _)| *t).unwrap_or_default();
        match kind {
            "fail" => format!("testq: event {id} has type fail"),
            _ => format!("panic: testq: event {id} has type panic"),
        }
    };
    let listed = testq.ok(&["failed"]).await;
    let lines: Vec<Vec<&str>> = listed.stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 10, "{listed:?}");
    for (line, id) in lines.iter().zip(&failed_expected) {
        assert_eq!(line[0], id.to_string(), "{listed:?}");
        assert_eq!(line[5], reason(*id), "{listed:?}");
    }
    let status = testq.ok(&["status"]).await;
    assert!(status.stdout.contains("failed events: 10"), "{status:?}");

    // retry all: the events go back to the queue for testq, come round
    // again (pgqd's maintenance and ticks), fail again, and are listed
    // again with one retry more; nothing is done twice.
    let retried = testq.ok(&["retry", "all"]).await;
    assert_eq!(
        retried.stdout.trim(),
        "10 failed event(s) put back into queue \"testq\" for consumer \"testq\""
    );
    testq
        .wait_until("the retried events have failed again", async || {
            let failed = failed_json(&testq).await;
            failed.len() == 10 && failed.iter().all(|(_, retry, _)| *retry == Some(1))
        })
        .await;
    let again = failed_json(&testq).await;
    assert_eq!(
        again.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(),
        failed_expected,
        "the same events"
    );
    for (id, _, why) in &again {
        assert_eq!(*why, reason(*id));
    }
    assert_eq!(testq.done().await, done_expected, "nothing done twice");

    // retry of one event, then delete all.
    let one = failed_expected[0];
    testq.ok(&["retry", &one.to_string()]).await;
    testq
        .wait_until("the one retried event has failed again", async || {
            failed_json(&testq)
                .await
                .iter()
                .any(|(id, retry, _)| *id == one && *retry == Some(2))
        })
        .await;
    let deleted = testq.ok(&["delete", "all"]).await;
    assert_eq!(deleted.stdout.trim(), "10 failed event(s) deleted");
    let empty = testq.ok(&["failed"]).await;
    assert_eq!(
        empty.stdout.trim(),
        "no failed events for consumer \"testq\" on queue \"testq\""
    );

    // An event that failed for a reason since gone (stored by hand here, as
    // the handler would have when the disk was full): `retry` puts it back,
    // and with pgqd ticking it lands in testq_done.
    testq.ok(&["stop"]).await;
    let late = testq.produce(&["plain"]).await[0];
    let batch = wait_for_batch_with(&testq, late).await;
    pgq_consumers::failed::add_from_batch(&testq.client, batch, late, "the disk was full")
        .await
        .expect("store the failed event");
    pgq::finish_batch(&testq.client, batch).await.expect("finish");
    testq.ok(&["start"]).await;
    assert_eq!(testq.failed().await, [(late, "the disk was full".to_string())]);
    testq.ok(&["retry", &late.to_string()]).await;
    testq
        .wait_until("the retried event is done", async || testq.done().await.contains(&late))
        .await;
    assert!(testq.failed().await.is_empty());
    let mut all_done = done_expected.clone();
    all_done.push(late);

    let stopped = testq.ok(&["stop"]).await;
    assert!(stopped.stdout.contains("stopped"), "{stopped:?}");
    assert_eq!(testq.run(&["status"]).await.code, Some(4));
    assert_eq!(testq.done().await, all_done, "still exactly once");

    // The log shows every event done, and the panics caught, not fatal.
    let log = std::fs::read_to_string(testq.path("testq.log")).expect("read the log");
    let logged: BTreeSet<i64> = log
        .lines()
        .filter_map(|l| l.split("NOTICE done: event ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(logged, all_done.iter().copied().collect(), "{log}");
    assert!(!log.contains(" FATAL "), "a handler panic is not fatal: {log}");
}
