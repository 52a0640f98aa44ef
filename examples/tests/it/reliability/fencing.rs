//! Cooperative remote consumers whose sub-consumer stalls, or is cut off from
//! the queue database, while it holds a batch: another sub-consumer takes the
//! batch over, and the batch is applied to the remote database once.
//!
//! Two sub-consumers `a` and `b` of one group, in `remote` and
//! `remote_event` modes, through the real `testq` binary; `testq_done` in the
//! remote database has no unique constraint, so a batch applied twice shows.

use pgq_test_support::TestDb;
use tokio_postgres::Client;

use crate::support::process::{locked_pid, signal};
use crate::support::queue::{count, produce_plain_batch};
use crate::support::testq::{Testq, CONSUMER, QUEUE};

/// Rows in the remote `testq_done`, and how many distinct events they hold.
async fn remote_rows(remote: &Client) -> (i64, i64) {
    let row = remote
        .query_one("select count(*), count(distinct ev_id) from testq_done", &[])
        .await
        .expect("count testq_done");
    (row.get(0), row.get(1))
}

/// A cooperative group of two sub-consumers, `a` and `b`, of a remote testq
/// in `mode`, each event taking `sleep_ms`; installed, not started.
struct Group {
    testq: Testq,
    queue: TestDb,
    client: Client,
    remote: TestDb,
    rclient: Client,
}

impl Group {
    async fn new(test: &str, mode: &str, dead_interval: f64, sleep_ms: i64) -> Group {
        let queue = TestDb::create().await;
        let remote = TestDb::create_empty().await;
        let mut testq = Testq::new(test, queue.dsn(), QUEUE, CONSUMER);
        testq
            .set("remote_db", remote.dsn())
            .set("dead_interval", dead_interval)
            .setting("mode", mode)
            .setting("sleep_ms", sleep_ms);
        testq.ok(&["install", "--subconsumer", "a"]).await;
        testq.ok(&["register", "--subconsumer", "b"]).await;
        let (client, rclient) = (queue.connect().await, remote.connect().await);
        Group {
            testq,
            queue,
            client,
            remote,
            rclient,
        }
    }

    /// Starts sub-consumer `sub` as a daemon; returns its pid.
    async fn start(&self, sub: &str) -> u32 {
        self.testq.ok(&["start", "--subconsumer", sub]).await;
        locked_pid(&self.testq.path(&format!("testq.{sub}.pid"))).expect("the sub-consumer's own pidfile")
    }

    fn log(&self, sub: &str) -> String {
        std::fs::read_to_string(self.testq.path(&format!("testq.{sub}.log"))).unwrap_or_default()
    }

    async fn wait_for_log(&self, sub: &str, text: &str) {
        self.testq
            .wait_until(&format!("{sub}'s log says `{text}`"), async || {
                self.log(sub).contains(text)
            })
            .await;
    }

    /// The batch `sub` holds, if any.
    async fn holds(&self, sub: &str) -> Option<i64> {
        pgq_consumers::coop::info(&self.client, QUEUE, CONSUMER)
            .await
            .expect("subconsumer_info")
            .into_iter()
            .find(|i| i.subconsumer == sub)
            .and_then(|i| i.batch_id)
    }

    /// Waits until every event is in the remote database, once; then stops
    /// both daemons and checks again.
    async fn expect_each_once(&self, ids: &[i64]) {
        let n = i64::try_from(ids.len()).expect("a few events");
        self.testq
            .wait_until("every event is in the remote database", async || {
                remote_rows(&self.rclient).await.0 >= n
            })
            .await;
        for sub in ["a", "b"] {
            self.testq.ok(&["stop", "--subconsumer", sub]).await;
        }
        assert_eq!(
            remote_rows(&self.rclient).await,
            (n, n),
            "each event once in the remote database\n--- a:\n{}\n--- b:\n{}",
            self.log("a"),
            self.log("b")
        );
        assert_eq!(
            count(&self.client, "testq_done").await,
            0,
            "nothing in the queue database"
        );
        let _ = &self.queue;
        let _ = &self.remote;
    }
}

/// `a` is stopped (SIGSTOP) while it holds a batch, for longer than the dead
/// interval; `b` takes the batch over; `a` is resumed while `b` works on it.
async fn stalled_holder(mode: &str) {
    let group = Group::new(&format!("fencing_stalled_{mode}"), mode, 1.5, 150).await;
    let ids = produce_plain_batch(&group.client, QUEUE, 20).await;
    let a = group.start("a").await;
    group.wait_for_log("a", &format!("done: event {} ", ids[0])).await;
    signal(a, "STOP");
    let b = group.start("b").await;
    group
        .wait_for_log("b", "took over the batch of sub-consumer \"a\"")
        .await;
    group.wait_for_log("b", &format!("done: event {} ", ids[0])).await;
    // `a` wakes up in the middle of `b`'s work on the same events.
    signal(a, "CONT");
    // a's attempt ends, one way or another (it must give the batch up).
    group
        .testq
        .wait_until("a's attempt at the batch ends", async || {
            let log = group.log("a");
            log.contains("gives up batch") || log.contains("is not active")
        })
        .await;
    group.expect_each_once(&ids).await;
    assert!(group.log("a").contains("gives up batch"), "{}", group.log("a"));
    assert!(group.holds("a").await.is_none() && group.holds("b").await.is_none());
    let _ = b;
}

#[tokio::test]
async fn a_remote_sub_consumer_stopped_while_holding_a_batch_gives_it_up_when_resumed_and_the_batch_is_applied_once() {
    stalled_holder("remote").await;
}

#[tokio::test]
async fn a_remote_event_sub_consumer_stopped_while_holding_a_batch_gives_it_up_when_resumed_and_the_batch_is_applied_once(
) {
    stalled_holder("remote_event").await;
}

/// `a` loses its heartbeat connection while it holds a batch and cannot open
/// another one (the queue database takes no new connections for a while):
/// it warns, gives the batch up once its hold on it can no longer be
/// confirmed, and nothing is applied twice.
async fn heartbeat_cut_off(mode: &str) {
    let group = Group::new(&format!("fencing_cut_off_{mode}"), mode, 1.5, 100).await;
    let ids = produce_plain_batch(&group.client, QUEUE, 30).await;
    let admin = pgq_test_support::connect(&pgq_test_support::server_dsn()).await;
    group.start("a").await;
    group.wait_for_log("a", &format!("done: event {} ", ids[0])).await;
    group.start("b").await;
    // a's heartbeat has a connection of its own, opened at its first beat.
    let heartbeats = "select pid from pg_stat_activity where application_name = 'testq.a heartbeat' and datname = $1";
    group
        .testq
        .wait_until("a's heartbeat has a connection", async || {
            !admin
                .query(heartbeats, &[&group.queue.name()])
                .await
                .expect("pg_stat_activity")
                .is_empty()
        })
        .await;
    let name = pgq::quote_ident(group.queue.name()).expect("a database name");
    admin
        .batch_execute(&format!("alter database {name} allow_connections false"))
        .await
        .expect("refuse new connections");
    let terminated: i64 = admin
        .query_one(
            &format!("select count(pg_terminate_backend(pid)) from ({heartbeats}) h"),
            &[&group.queue.name()],
        )
        .await
        .expect("terminate a's heartbeat")
        .get(0);
    assert_eq!(terminated, 1, "a's heartbeat connection");
    group
        .wait_for_log("a", "WARNING sub-consumer \"a\" of \"testq\": heartbeat failed")
        .await;
    group.wait_for_log("a", "gives up batch").await;
    admin
        .batch_execute(&format!("alter database {name} allow_connections true"))
        .await
        .expect("take connections again");
    group.expect_each_once(&ids).await;
}

#[tokio::test]
async fn a_remote_sub_consumer_cut_off_from_its_heartbeat_warns_gives_its_batch_up_and_nothing_is_applied_twice() {
    heartbeat_cut_off("remote").await;
}

#[tokio::test]
async fn a_remote_event_sub_consumer_cut_off_from_its_heartbeat_warns_gives_its_batch_up_and_nothing_is_applied_twice()
{
    heartbeat_cut_off("remote_event").await;
}
