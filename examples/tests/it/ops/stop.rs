//! The stop deadline: a batch still in flight `stop_timeout` after SIGTERM
//! (or `stop --timeout SECS` after `stop`) is rolled back, the daemon exits
//! within a second of it, its pidfile removed, and the batch comes back
//! exactly once to the next daemon.

use std::time::{Duration, Instant};

use crate::support::testq::TestqDb;

/// Starts testq with a handler that sleeps 30 s per event (or blocks its
/// thread that long: `how` is `sleep_ms` or `block_ms`), gives it a batch of
/// three events and waits until it holds it; the events.
async fn stuck(testq: &mut TestqDb, how: &str) -> Vec<i64> {
    testq.setting(how, 30_000);
    testq.start().await;
    let ids = testq.produce_batch(&["plain", "plain", "plain"]).await;
    testq
        .wait_until("the batch is in flight", async || testq.current_batch().await.is_some())
        .await;
    ids
}

/// Starts testq again at full speed: the abandoned batch is done, once.
async fn done_once_by_the_next_daemon(testq: &mut TestqDb, ids: &[i64]) {
    assert!(
        testq.done().await.is_empty(),
        "nothing of the abandoned batch committed"
    );
    testq.setting("sleep_ms", 0).setting("block_ms", 0);
    testq.start().await;
    testq
        .wait_until("the batch is done", async || testq.done().await.len() >= ids.len())
        .await;
    assert_eq!(testq.done().await, ids, "each event exactly once");
}

#[tokio::test]
async fn a_handler_stuck_past_stop_timeout_is_abandoned_the_daemon_exits_within_a_second_and_its_batch_comes_back_once()
{
    let mut testq = TestqDb::installed("stop_deadline").await;
    testq.set("stop_timeout", 2.0);
    let ids = stuck(&mut testq, "sleep_ms").await;
    let pid = testq.pid().expect("running");

    let asked = Instant::now();
    let stopped = testq.ok(&["stop"]).await;
    let took = asked.elapsed();
    assert_eq!(
        stopped.stdout.trim(),
        format!("testq stopped, pid {pid}"),
        "{stopped:?}"
    );
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_secs(3),
        "stopped after {took:?}, not within stop_timeout + 1 s\n{}",
        testq.log()
    );
    assert!(!testq.pidfile().exists(), "the pidfile is removed");
    let log = testq.log();
    assert!(
        log.contains("the stop deadline (2.0s after the stop was asked for) has passed"),
        "{log}"
    );
    assert!(log.contains("rolled back, and will be delivered again"), "{log}");
    assert!(log.contains(&format!("testq stopped, pid {pid}")), "{log}");

    done_once_by_the_next_daemon(&mut testq, &ids).await;
}

#[tokio::test]
async fn stop_with_a_timeout_abandons_the_batch_in_flight_after_that_long_and_it_comes_back_once() {
    let mut testq = TestqDb::installed("stop_timeout_option").await;
    // The config's deadline is far; the command's is one second.
    testq.set("stop_timeout", 600.0);
    let ids = stuck(&mut testq, "sleep_ms").await;
    let pid = testq.pid().expect("running");

    let asked = Instant::now();
    let stopped = testq.ok(&["stop", "--timeout", "1"]).await;
    let took = asked.elapsed();
    assert!(
        took <= Duration::from_secs(2),
        "stopped after {took:?}\n{}",
        testq.log()
    );
    assert!(
        stopped.stdout.contains(&format!("testq stopped, pid {pid}")),
        "{stopped:?}"
    );
    assert!(stopped.stderr.contains("abandoning its round in flight"), "{stopped:?}");
    assert!(!testq.pidfile().exists(), "the pidfile is removed");
    assert!(
        testq.log().contains("rolled back, and will be delivered again"),
        "{}",
        testq.log()
    );

    done_once_by_the_next_daemon(&mut testq, &ids).await;
}

#[tokio::test]
async fn a_handler_blocking_its_thread_past_stop_timeout_is_cut_off_within_a_second_and_its_batch_comes_back_once() {
    let mut testq = TestqDb::installed("stop_blocked").await;
    testq.set("stop_timeout", 2.0);
    let ids = stuck(&mut testq, "block_ms").await;
    let pid = testq.pid().expect("running");

    let asked = Instant::now();
    let stopped = testq.ok(&["stop"]).await;
    let took = asked.elapsed();
    assert_eq!(
        stopped.stdout.trim(),
        format!("testq stopped, pid {pid}"),
        "{stopped:?}"
    );
    assert!(
        took <= Duration::from_secs(3),
        "stopped after {took:?}, not within stop_timeout + 1 s\n{}",
        testq.log()
    );
    assert!(!testq.pidfile().exists(), "the pidfile is removed");
    let log = testq.log();
    assert!(
        log.contains("the stop deadline (2.0s after the stop was asked for) has passed"),
        "{log}"
    );
    assert!(log.contains("its thread is blocked"), "{log}");

    done_once_by_the_next_daemon(&mut testq, &ids).await;
}

#[tokio::test]
async fn stop_timeout_and_stop_timeout_option_out_of_range_are_refused() {
    let mut testq = TestqDb::installed("stop_timeout_range").await;
    testq.set("stop_timeout", 1e300);
    let refused = testq.run(&["check"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("`stop_timeout`"), "{refused:?}");
    testq.set("stop_timeout", 5.0);
    let refused = testq.run(&["stop", "--timeout", "soon"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("not a number of seconds"), "{refused:?}");
}
