//! A silent network: the queue (or the remote) database behind a TCP proxy
//! on loopback that stops forwarding while keeping every socket open, as a
//! dead host, a firewall that drops packets or a network partition look to
//! the daemon (no reset, no end of stream). With `net_timeout = 3`, the
//! daemon gives the connection up within that bound (plus slack), logs one
//! ERROR, reconnects once the network is back and loses or repeats nothing
//! (`testq_done` has no unique constraint: a duplicate would show);
//! meanwhile `status` and `check` answer within seconds (exit 3), and `stop`
//! meets its deadline.

use std::time::{Duration, Instant};

use pgq_test_support::{Proxy, TestDb};

use crate::support::process::alive;
use crate::support::queue::{done, done_count, produce_plain_batch};
use crate::support::testq::{Testq, CONSUMER, QUEUE};

/// The `net_timeout` of these tests, in seconds.
const NET_TIMEOUT: u64 = 3;
/// What noticing may take beyond `net_timeout` on a busy machine.
const SLACK: Duration = Duration::from_secs(4);
/// How long a control command may take with its database silent: at most
/// its own five seconds, and the time to start a process.
const CONTROL_ANSWERS_WITHIN: Duration = Duration::from_secs(8);

/// The ERROR line that starts an outage, and the WARNING line that ends it.
const LOST: &str = "ERROR lost the connection to the ";
const BACK: &str = "WARNING reconnected after ";
/// The WARNING saying why a connection was given up.
const SILENT: &str = "WARNING no answer from the queue database at 127.0.0.1:";

/// testq with `net_timeout = 3`, 100 ms per event, on `db` (and `remote`),
/// installed.
async fn testq(test: &str, db: &str, remote: Option<&str>) -> Testq {
    let mut testq = Testq::new(test, db, QUEUE, CONSUMER);
    testq.set("net_timeout", NET_TIMEOUT as i64).setting("sleep_ms", 100);
    if let Some(remote) = remote {
        testq.set("remote_db", remote).setting("mode", "remote");
    }
    testq.ok(&["install"]).await;
    testq
}

/// The ERROR lines of a log.
fn errors(log: &str) -> usize {
    log.matches("] ERROR ").count()
}

/// Waits until the outage is logged; says how long after `since` it was.
async fn noticed(testq: &Testq, since: Instant) -> Duration {
    testq.wait_for_log(LOST).await;
    let took = since.elapsed();
    let bound = Duration::from_secs(NET_TIMEOUT) + SLACK;
    assert!(
        took <= bound,
        "noticed {took:?} after the network froze, more than net_timeout and slack ({bound:?}):\n{}",
        testq.log()
    );
    assert!(
        took >= Duration::from_secs(NET_TIMEOUT - 1),
        "noticed {took:?} after the network froze, well before net_timeout:\n{}",
        testq.log()
    );
    took
}

#[tokio::test]
async fn a_silent_queue_database_is_given_up_within_net_timeout_with_one_error_status_answers_meanwhile_and_nothing_is_lost_or_doubled(
) {
    let db = TestDb::create().await;
    let client = db.connect().await;
    let proxy = Proxy::start(db.dsn()).await;
    let testq = testq("silent_queue", proxy.dsn(), None).await;
    let pid = testq.start().await;
    let ids = produce_plain_batch(&client, QUEUE, 20).await;
    testq.wait_for_log(&format!("done: event {} ", ids[0])).await;

    proxy.freeze();
    noticed(&testq, Instant::now()).await;
    let log = testq.log();
    let (warned, lost) = (log.find(SILENT), log.find(LOST));
    assert!(
        warned.is_some_and(|w| lost.is_some_and(|l| w < l)) && log.contains(" for 3.0s"),
        "it says why, first:\n{log}"
    );

    // Control commands answer, whatever the database does.
    let asked = Instant::now();
    let status = testq.run(&["status"]).await;
    assert!(
        asked.elapsed() < CONTROL_ANSWERS_WITHIN,
        "status took {:?}",
        asked.elapsed()
    );
    assert_eq!(status.code, Some(3), "{status:?}");
    assert!(
        status
            .stdout
            .starts_with(&format!("{CONSUMER} is running, pid {pid}\n")),
        "{status:?}"
    );
    // Connecting gives up first: after net_timeout, shorter than a control
    // command's own 5 s.
    assert!(
        status
            .stdout
            .contains("cannot read the queue state: cannot connect to the queue database at 127.0.0.1:")
            && status.stdout.contains("no working connection within 3.0s"),
        "{status:?}"
    );
    let asked = Instant::now();
    let check = testq.run(&["check"]).await;
    assert!(
        asked.elapsed() < CONTROL_ANSWERS_WITHIN,
        "check took {:?}",
        asked.elapsed()
    );
    assert_eq!(check.code, Some(3), "{check:?}");
    assert!(
        check.stderr.contains("cannot connect to the queue database") && check.stderr.contains("within 3.0s"),
        "{check:?}"
    );

    proxy.resume();
    testq.wait_for_log(BACK).await;
    testq
        .wait_until("every event is done", async || done_count(&client).await >= ids.len())
        .await;
    let more = produce_plain_batch(&client, QUEUE, 5).await;
    testq
        .wait_until("the events after it are done", async || {
            done_count(&client).await >= ids.len() + more.len()
        })
        .await;
    assert_eq!(done(&client).await, [ids, more].concat(), "every event exactly once");
    let log = testq.log();
    assert_eq!(errors(&log), 1, "one ERROR for the outage, however long:\n{log}");
    assert_eq!(log.matches(BACK).count(), 1, "{log}");
    assert!(alive(pid), "the same daemon all along");
    testq.ok(&["stop"]).await;
}

#[tokio::test]
async fn stop_meets_its_deadline_while_the_queue_database_is_silent_and_the_next_start_does_the_batch_once() {
    let db = TestDb::create().await;
    let client = db.connect().await;
    let proxy = Proxy::start(db.dsn()).await;
    let mut testq = testq("silent_stop", proxy.dsn(), None).await;
    // Each reconnect attempt would show.
    testq.set("loglevel", "verbose");
    let pid = testq.start().await;
    let ids = produce_plain_batch(&client, QUEUE, 20).await;
    testq.wait_for_log(&format!("done: event {} ", ids[0])).await;

    proxy.freeze();
    let frozen = Instant::now();
    let stop = testq.run(&["stop"]).await;
    let took = frozen.elapsed();
    assert_eq!(stop.code, Some(0), "{stop:?}\n{}", testq.log());
    assert_eq!(stop.stdout.trim(), format!("{CONSUMER} stopped, pid {pid}"), "{stop:?}");
    assert!(
        took <= Duration::from_secs(NET_TIMEOUT) + SLACK,
        "stop took {took:?}: the round should have ended once the connection was given up:\n{}",
        testq.log()
    );
    assert!(!alive(pid));
    let log = testq.log();
    assert_eq!(errors(&log), 1, "{log}");
    assert!(log.contains(LOST), "{log}");
    assert!(
        !log.contains("reconnect attempt"),
        "stopping, it did not try to reconnect:\n{log}"
    );

    proxy.resume();
    testq.start().await;
    testq
        .wait_until("every event is done", async || done_count(&client).await >= ids.len())
        .await;
    assert_eq!(done(&client).await, ids, "every event exactly once");
    testq.ok(&["stop"]).await;
}

#[tokio::test]
async fn a_silent_remote_database_is_given_up_within_net_timeout_with_one_error_and_its_batch_is_applied_once() {
    let db = TestDb::create().await;
    let remote = TestDb::create_empty().await;
    let (client, rclient) = (db.connect().await, remote.connect().await);
    let proxy = Proxy::start(remote.dsn()).await;
    let testq = testq("silent_remote", db.dsn(), Some(proxy.dsn())).await;
    let pid = testq.start().await;
    let ids = produce_plain_batch(&client, QUEUE, 20).await;
    testq.wait_for_log(&format!("done: event {} ", ids[0])).await;

    proxy.freeze();
    noticed(&testq, Instant::now()).await;
    let log = testq.log();
    assert!(log.contains(&format!("{LOST}remote database")), "it says which:\n{log}");
    assert_eq!(
        done_count(&rclient).await,
        0,
        "nothing applied while the remote is silent"
    );

    proxy.resume();
    testq.wait_for_log(BACK).await;
    testq
        .wait_until("every event is done", async || done_count(&rclient).await >= ids.len())
        .await;
    assert_eq!(done(&rclient).await, ids, "every event exactly once");
    assert_eq!(done_count(&client).await, 0, "nothing written in the queue database");
    let log = testq.log();
    assert_eq!(errors(&log), 1, "{log}");
    assert!(alive(pid));
    testq.ok(&["stop"]).await;
}
