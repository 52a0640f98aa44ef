//! Faults a running consumer survives, with events flowing: repeated SIGKILL,
//! PostgreSQL restarted under the daemon, its backends terminated, the remote
//! database down for a while, and crashes at the crash points `crash.rs`
//! leaves out. After each, every event is in `testq_done` exactly once
//! (`testq_done` has no unique constraint: a duplicate would show).
//!
//! Not repeated here: `crash.rs` (crash points of `run --once` for remote,
//! remote_event and local), `coop.rs` (a sub-consumer killed while it holds a
//! batch), `daemon.rs` (`kill` mid-batch, a handler panic), `commands.rs` (a
//! handler error backing off).

use pgq_test_support::{Pgqd, TestDb};
use tokio_postgres::Client;

use super::cluster::Cluster;
use crate::support::process::alive;
use crate::support::queue::{current_batch, done, done_count, produce_plain_batch, tick, Producer};
use crate::support::testq::{Testq, CONSUMER, QUEUE};

/// The ERROR line that starts an outage, and the WARNING line that ends it.
const LOST: &str = "ERROR lost the connection to the ";
const BACK: &str = "WARNING reconnected after ";
/// The VERBOSE line of the third failed reconnect.
const THIRD_TRY: &str = "VERBOSE reconnect attempt 3 failed";

/// The consumer kinds testq can be.
const KINDS: [&str; 4] = ["local", "remote", "remote_event", "cooperative"];

/// testq as a consumer of `kind` (one of [`KINDS`]) on database `db`, with
/// `remote` as its remote database for the remote kinds; a cooperative one
/// is sub-consumer `w1`. Not installed.
fn consumer(test: &str, db: &str, kind: &str, remote: Option<&str>) -> Testq {
    let mut testq = Testq::new(test, db, QUEUE, CONSUMER);
    let mode = if kind.starts_with("remote") { kind } else { "local" };
    testq.setting("mode", mode);
    if let Some(remote) = remote {
        testq.set("remote_db", remote);
    }
    if kind == "cooperative" {
        testq.set("subconsumer", "w1");
    }
    testq
}

/// As [`consumer`], to run as a daemon: a cooperative one also heartbeats
/// (`dead_interval`), as the members of a group do.
fn daemon(test: &str, db: &str, kind: &str, remote: Option<&str>) -> Testq {
    let mut testq = consumer(test, db, kind, remote);
    if kind == "cooperative" {
        testq.set("dead_interval", 30);
    }
    testq
}

/// As [`consumer`], installed.
async fn installed(test: &str, db: &str, kind: &str, remote: Option<&str>) -> Testq {
    let testq = consumer(test, db, kind, remote);
    testq.ok(&["install"]).await;
    testq
}

/// Fresh databases for a consumer of `kind`: the queue database and, for the
/// remote kinds, an empty remote database.
struct Databases {
    queue: TestDb,
    remote: Option<TestDb>,
}

impl Databases {
    async fn for_kind(kind: &str) -> Databases {
        let queue = TestDb::create().await;
        let remote = if kind.starts_with("remote") {
            Some(TestDb::create_empty().await)
        } else {
            None
        };
        Databases { queue, remote }
    }

    /// The remote database's connection string, for the remote kinds.
    fn remote_dsn(&self) -> Option<&str> {
        self.remote.as_ref().map(TestDb::dsn)
    }

    /// A connection to the database the consumer writes `testq_done` in: the
    /// remote one, if there is one.
    async fn target(&self) -> Client {
        self.remote.as_ref().unwrap_or(&self.queue).connect().await
    }

    /// The names of the databases.
    fn names(&self) -> Vec<String> {
        std::iter::once(&self.queue)
            .chain(&self.remote)
            .map(|db| db.name().to_string())
            .collect()
    }
}

/// Makes pgqd tick the queue as soon as it has an event (not after 500
/// events or 3 s, PgQ's defaults).
async fn tick_promptly(client: &Client) {
    client
        .batch_execute(&format!(
            "select pgq.set_queue_config('{QUEUE}', 'ticker_max_count', '1'); \
             select pgq.set_queue_config('{QUEUE}', 'ticker_max_lag', '0.05 seconds');"
        ))
        .await
        .expect("set_queue_config");
}

/// Kills the daemon with SIGKILL four times while events flow, restarting
/// it each time; then lets it finish. testq writes its rows the way
/// `write` says (`execute`, `pipelined` or `copy`).
async fn sigkill_while_events_flow(mode: &str, write: &str) {
    let db = TestDb::create().await;
    let client = db.connect().await;
    let remote = TestDb::create_empty().await;
    let rclient = remote.connect().await;
    let remote_dsn = (mode != "local").then(|| remote.dsn());
    let mut testq = installed(&format!("sigkill_{mode}_{write}"), db.dsn(), mode, remote_dsn).await;
    testq.setting("sleep_ms", 5).setting("write", write);
    let target = if mode == "local" { &client } else { &rclient };
    tick_promptly(&client).await;
    let _pgqd = Pgqd::start(&db, 0.05);
    let producer = Producer::start(db.connect().await, QUEUE, 5);

    let mut killed_in_flight = 0;
    for _ in 0..4 {
        let pid = testq.start().await;
        let before = done_count(target).await;
        testq
            .wait_until("the new daemon has done more events", async || {
                done_count(target).await >= before + 10
            })
            .await;
        testq
            .wait_until("a batch is in flight", async || {
                current_batch(&client, QUEUE, CONSUMER).await.is_some()
            })
            .await;
        testq.kill9(pid).await;
        if current_batch(&client, QUEUE, CONSUMER).await.is_some() {
            killed_in_flight += 1;
        }
    }
    let ids = producer.stop().await;
    assert!(ids.len() > 40, "events flowed: {}", ids.len());
    assert!(killed_in_flight > 0, "at least one SIGKILL hit a batch in flight");

    // A stale pidfile left by SIGKILL does not stop the next start.
    testq.start().await;
    testq
        .wait_until("every event is done", async || done_count(target).await >= ids.len())
        .await;
    testq.ok(&["stop"]).await;
    assert_eq!(done(target).await, ids, "{mode} {write}: every event exactly once");
    if mode != "local" {
        assert_eq!(done_count(&client).await, 0, "nothing written in the queue database");
    }
}

#[tokio::test]
async fn repeated_sigkill_of_a_local_daemon_while_events_flow_loses_and_repeats_nothing() {
    sigkill_while_events_flow("local", "execute").await;
}

#[tokio::test]
async fn repeated_sigkill_of_a_remote_daemon_while_events_flow_loses_and_repeats_nothing() {
    sigkill_while_events_flow("remote", "execute").await;
}

#[tokio::test]
async fn repeated_sigkill_mid_pipeline_of_a_local_daemon_loses_and_repeats_nothing() {
    sigkill_while_events_flow("local", "pipelined").await;
}

#[tokio::test]
async fn repeated_sigkill_mid_pipeline_of_a_remote_event_daemon_loses_and_repeats_nothing() {
    sigkill_while_events_flow("remote_event", "pipelined").await;
}

#[tokio::test]
async fn repeated_sigkill_of_a_remote_daemon_buffering_rows_for_copy_loses_and_repeats_nothing() {
    sigkill_while_events_flow("remote", "copy").await;
}

#[tokio::test]
async fn repeated_sigkill_of_a_local_daemon_buffering_rows_for_one_insert_loses_and_repeats_nothing() {
    sigkill_while_events_flow("local", "insert").await;
}

/// The failed attempts the (first) end-of-outage line counts.
fn failed_attempts(log: &str) -> u32 {
    log.split(BACK)
        .nth(1)
        .and_then(|rest| rest.split(" and ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The log from the first line containing `text` on.
fn log_from(testq: &Testq, text: &str) -> String {
    let log = testq.log();
    match log.find(text) {
        Some(at) => log[at..].to_string(),
        None => String::new(),
    }
}

#[tokio::test]
async fn postgresql_restarted_under_running_daemons_they_stay_up_log_the_outage_once_and_lose_or_repeat_nothing() {
    let cluster = Cluster::start("restart", "").await;
    for (db, pgq) in [
        ("loc", true),
        ("coop", true),
        ("rq", true),
        ("rr", false),
        ("req", true),
        ("rer", false),
    ] {
        cluster.create_db(db, pgq).await;
    }
    // Every kind; the remote databases are on the same server: everything goes down.
    let mut daemons = Vec::new();
    for (kind, db, target) in [
        ("local", "loc", "loc"),
        ("cooperative", "coop", "coop"),
        ("remote", "rq", "rr"),
        ("remote_event", "req", "rer"),
    ] {
        let remote = (db != target).then(|| cluster.dsn(target));
        let mut testq = daemon(&format!("restart_{kind}"), &cluster.dsn(db), kind, remote.as_deref());
        testq.setting("sleep_ms", 20).set("loglevel", "debug");
        testq.ok(&["install"]).await;
        let pid = testq.start().await;
        daemons.push((kind, db, target, testq, pid));
    }
    let mut produced = Vec::new();
    for (_, db, _, _, _) in &daemons {
        let client = cluster.connect(db).await;
        let ids = produce_plain_batch(&client, QUEUE, 20).await;
        produced.push(ids);
    }
    // Down in the middle of a batch (20 events of 20 ms each).
    for (_, _, _, testq, _) in &daemons {
        testq.wait_for_log_n("done: event", 1).await;
    }
    cluster.stop();
    for (kind, _, _, testq, _) in &daemons {
        testq
            .wait_until(
                &format!("{kind}: the outage is logged and retried three times"),
                async || log_from(testq, LOST).contains(THIRD_TRY),
            )
            .await;
    }
    cluster.start_again();
    for (kind, db, target, testq, pid) in &daemons {
        testq.wait_for_log_n(BACK, 1).await;
        let client = cluster.connect(db).await;
        let more = produce_plain_batch(&client, QUEUE, 10).await;
        let ids: Vec<i64> = produced.remove(0).into_iter().chain(more).collect();
        let target = cluster.connect(target).await;
        testq
            .wait_until(&format!("{kind}: every event is done"), async || {
                done_count(&target).await >= ids.len()
            })
            .await;
        assert_eq!(done(&target).await, ids, "{kind}: every event exactly once");
        assert!(alive(*pid), "{kind}: the daemon stayed up");
        let log = testq.log();
        assert_eq!(
            log.matches(LOST).count(),
            1,
            "{kind}: the outage is logged once:\n{log}"
        );
        assert_eq!(log.matches(BACK).count(), 1, "{kind}:\n{log}");
        assert!(
            failed_attempts(&log) >= 3,
            "{kind}: the end of the outage counts the retries:\n{log}"
        );
        assert!(!log.contains("] FATAL "), "{kind}:\n{log}");
        testq.ok(&["stop"]).await;
    }
}

/// Terminates the backends named `app` (a consumer's application_name: its
/// name, NAME.SUB for a sub-consumer) in these databases; returns how many.
async fn terminate_app(admin: &Client, app: &str, dbs: &[&str]) -> i64 {
    let dbs: Vec<String> = dbs.iter().map(|d| d.to_string()).collect();
    admin
        .query_one(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity
              where application_name = $1 and datname = any($2)",
            &[&app, &dbs],
        )
        .await
        .expect("pg_terminate_backend")
        .get(0)
}

/// Terminates testq's backends in these databases.
async fn terminate(admin: &Client, dbs: &[&str]) -> i64 {
    terminate_app(admin, CONSUMER, dbs).await
}

#[tokio::test]
async fn backends_terminated_by_application_name_are_reconnected_once_each_time_and_lose_or_repeat_nothing() {
    let admin = pgq_test_support::connect(&pgq_test_support::server_dsn()).await;
    let mut running = Vec::new();
    for kind in KINDS {
        let dbs = Databases::for_kind(kind).await;
        let testq = daemon(&format!("terminate_{kind}"), dbs.queue.dsn(), kind, dbs.remote_dsn());
        testq.ok(&["install"]).await;
        let pid = testq.start().await;
        let client = dbs.queue.connect().await;
        let target = dbs.target().await;
        let names = dbs.names();
        running.push((kind, dbs, names, testq, pid, client, target, Vec::new()));
    }
    for round in 1..=3 {
        for (kind, _, dbs, testq, _, client, target, ids) in &mut running {
            ids.extend(produce_plain_batch(client, QUEUE, 10).await);
            let before = done_count(target).await;
            testq
                .wait_until(&format!("{kind}: the daemon has done more events"), async || {
                    done_count(target).await > before
                })
                .await;
            let dbs: Vec<&str> = dbs.iter().map(String::as_str).collect();
            let connections = if kind.starts_with("remote") { 2 } else { 1 };
            let app = if *kind == "cooperative" { "testq.w1" } else { CONSUMER };
            assert!(
                terminate_app(&admin, app, &dbs).await >= connections,
                "{kind}: the consumer's connections, by application_name"
            );
        }
        for (_, _, _, testq, ..) in &running {
            testq.wait_for_log_n(BACK, round).await;
        }
    }
    for (kind, _, _, testq, pid, _, target, ids) in &running {
        testq
            .wait_until(&format!("{kind}: every event is done"), async || {
                done_count(target).await >= ids.len()
            })
            .await;
        assert_eq!(&done(target).await, ids, "{kind}: every event exactly once");
        let log = testq.log();
        let (lost, back) = (log.matches(LOST).count(), log.matches(BACK).count());
        if kind.starts_with("remote") {
            // The two connections die a moment apart: the daemon may notice
            // the second only after it has reconnected the first, and that is
            // an outage of its own.
            assert!(
                (3..=6).contains(&lost) && lost == back,
                "{kind}: once per outage:\n{log}"
            );
        } else {
            assert_eq!((lost, back), (3, 3), "{kind}: once per outage:\n{log}");
        }
        assert!(
            !log.contains("trying again"),
            "{kind}: a lost connection is not a failed round:\n{log}"
        );
        assert!(alive(*pid), "{kind}: the same daemon all along");
        testq.ok(&["stop"]).await;
    }
}

#[tokio::test]
async fn the_remote_database_down_for_a_while_the_consumer_waits_logs_once_and_carries_on_exactly_once() {
    for mode in ["remote", "remote_event"] {
        remote_down_for_a_while(mode).await;
    }
}

async fn remote_down_for_a_while(mode: &str) {
    let admin = pgq_test_support::connect(&pgq_test_support::server_dsn()).await;
    let db = TestDb::create().await;
    let remote = TestDb::create_empty().await;
    let (client, rclient) = (db.connect().await, remote.connect().await);
    // At DEBUG (to see each reconnect attempt), without TLS's own debug lines.
    let plain = |dsn: &str| format!("{dsn} sslmode=disable");
    let mut testq = installed(
        &format!("remote_down_{mode}"),
        &plain(db.dsn()),
        mode,
        Some(&plain(remote.dsn())),
    )
    .await;
    testq.set("loglevel", "debug");
    let pid = testq.start().await;
    let first = produce_plain_batch(&client, QUEUE, 5).await;
    testq
        .wait_until("the first batch is done", async || done_count(&rclient).await == 5)
        .await;

    // The remote database refuses connections, and its sessions end.
    let name = remote.name();
    admin
        .batch_execute(&format!("alter database {name} allow_connections false"))
        .await
        .expect("alter database");
    assert!(terminate(&admin, &[name]).await >= 1);
    let second = produce_plain_batch(&client, QUEUE, 5).await;
    testq
        .wait_until("the outage is logged and retried three times", async || {
            log_from(&testq, LOST).contains(THIRD_TRY)
        })
        .await;
    assert_eq!(
        done_count(&rclient).await,
        5,
        "nothing applied while the remote is down"
    );
    assert!(
        current_batch(&client, QUEUE, CONSUMER).await.is_some() || {
            let pending: Option<i64> = client
                .query_one(
                    "select pending_events from pgq.get_consumer_info($1, $2)",
                    &[&QUEUE, &CONSUMER],
                )
                .await
                .expect("get_consumer_info")
                .get(0);
            pending.unwrap_or(0) > 0
        },
        "the queue did not move past the second batch"
    );

    admin
        .batch_execute(&format!("alter database {name} allow_connections true"))
        .await
        .expect("alter database");
    testq
        .wait_until("the second batch is done", async || done_count(&rclient).await >= 10)
        .await;
    assert_eq!(done(&rclient).await, [first, second].concat(), "exactly once");
    assert!(alive(pid));
    let log = testq.log();
    assert_eq!(log.matches(LOST).count(), 1, "logged once:\n{log}");
    assert!(
        log_from(&testq, LOST).contains("remote database"),
        "it says which:\n{log}"
    );
    assert_eq!(log.matches(BACK).count(), 1, "{log}");
    assert!(failed_attempts(&log) >= 3, "{log}");
    testq.ok(&["stop"]).await;
}

#[tokio::test]
async fn run_once_whose_connection_is_terminated_mid_batch_exits_1_and_the_next_run_applies_the_batch_once() {
    let admin = pgq_test_support::connect(&pgq_test_support::server_dsn()).await;
    let db = TestDb::create().await;
    let client = db.connect().await;
    let mut testq = installed("once_terminated", db.dsn(), "local", None).await;
    testq.setting("sleep_ms", 100);
    let ids = produce_plain_batch(&client, QUEUE, 20).await;

    let mut run = testq.spawn(&["run", "--once"], "run-once.out", &[]);
    testq.wait_for_log_n("done: event", 1).await;
    assert!(terminate(&admin, &[db.name()]).await >= 1);
    assert_eq!(run.wait().await, Some(1), "cron hears of it: {}", testq.log());
    assert!(
        testq.log().contains("connection closed"),
        "it says why: {}",
        testq.log()
    );
    assert!(done(&client).await.is_empty(), "the batch was rolled back");

    testq.setting("sleep_ms", 0);
    testq.ok(&["run", "--once"]).await;
    assert_eq!(done(&client).await, ids, "every event exactly once");
}

/// The crash points `crash.rs` does not cover, for the kinds it covers and
/// the cooperative one; what each leaves committed in the target database.
#[tokio::test]
async fn a_crash_at_any_point_of_a_local_remote_event_or_cooperative_consumer_loses_nothing_and_repeats_nothing() {
    // (kind, crash point, the first batch is committed in the target when it crashes)
    let cases = [
        ("local", "batch-read", false),
        ("local", "after-remote-commit", false),
        ("remote", "after-queue-commit", true),
        ("remote_event", "batch-read", false),
        ("remote_event", "before-remote-commit", false),
        ("remote_event", "after-queue-commit", true),
        ("cooperative", "batch-read", false),
        ("cooperative", "before-remote-commit", false),
        ("cooperative", "after-remote-commit", false),
        ("cooperative", "after-queue-commit", true),
    ];
    for (kind, point, committed) in cases {
        let dbs = Databases::for_kind(kind).await;
        let (client, target) = (dbs.queue.connect().await, dbs.target().await);
        let test = format!("crash_{kind}_{point}");
        let testq = installed(&test, dbs.queue.dsn(), kind, dbs.remote_dsn()).await;
        let first = produce_plain_batch(&client, QUEUE, 3).await;
        let second = produce_plain_batch(&client, QUEUE, 2).await;

        let crashed = testq
            .run_with(&["run", "--once"], &[("PGQ_CONSUMERS_CRASH_AT", point)])
            .await;
        assert_eq!(crashed.signal, Some(6), "{kind} {point}: aborts: {crashed:?}");
        let expected = if committed { first.clone() } else { Vec::new() };
        assert_eq!(done(&target).await, expected, "{kind} {point}: committed at the crash");

        testq.ok(&["run", "--once"]).await;
        assert_eq!(
            done(&target).await,
            [first, second].concat(),
            "{kind} {point}: every event exactly once"
        );
    }
}

#[tokio::test]
async fn a_handler_panic_or_error_in_every_kind_fails_that_event_only_or_rolls_the_batch_back_and_run_once_goes_on() {
    for kind in KINDS {
        let dbs = Databases::for_kind(kind).await;
        let (client, target) = (dbs.queue.connect().await, dbs.target().await);
        let testq = installed(&format!("handler_{kind}"), dbs.queue.dsn(), kind, dbs.remote_dsn()).await;

        // A panic fails its event; the others are done once.
        let row = client
            .query_one(
                "select pgq.insert_event($1, 'plain', 'a'), pgq.insert_event($1, 'panic', 'b'),
                        pgq.insert_event($1, 'plain', 'c')",
                &[&QUEUE],
            )
            .await
            .expect("insert events");
        let (a, panicked, c): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        tick(&client, QUEUE).await;
        testq.ok(&["run", "--once"]).await;
        assert_eq!(done(&target).await, [a, c], "{kind}");
        let failed = testq.ok(&["failed"]).await;
        assert!(
            failed.stdout.starts_with(&format!("{panicked}\t")),
            "{kind}: {failed:?}"
        );
        assert!(testq.log().contains("ERROR panic caught"), "{kind}: {}", testq.log());

        // An error (its table is gone) rolls the batch back: run --once exits 1.
        target
            .batch_execute("alter table testq_done rename to gone")
            .await
            .expect("rename");
        let more = produce_plain_batch(&client, QUEUE, 2).await;
        let failing = testq.run(&["run", "--once"]).await;
        assert_eq!(failing.code, Some(1), "{kind}: {failing:?}");
        target
            .batch_execute("alter table gone rename to testq_done")
            .await
            .expect("rename");
        testq.ok(&["run", "--once"]).await;
        assert_eq!(
            done(&target).await,
            [a, c, more[0], more[1]],
            "{kind}: the batch came again, once"
        );
    }
}

#[tokio::test]
async fn run_once_with_the_remote_database_down_exits_3_and_the_next_run_carries_on_exactly_once() {
    let admin = pgq_test_support::connect(&pgq_test_support::server_dsn()).await;
    let db = TestDb::create().await;
    let remote = TestDb::create_empty().await;
    let (client, rclient) = (db.connect().await, remote.connect().await);
    let testq = installed("once_remote_down", db.dsn(), "remote", Some(remote.dsn())).await;
    let ids = produce_plain_batch(&client, QUEUE, 3).await;
    admin
        .batch_execute(&format!("alter database {} allow_connections false", remote.name()))
        .await
        .expect("alter database");
    let down = testq.run(&["run", "--once"]).await;
    admin
        .batch_execute(&format!("alter database {} allow_connections true", remote.name()))
        .await
        .expect("alter database");
    assert_eq!(down.code, Some(3), "{down:?}");
    assert!(
        down.stderr.contains("cannot connect to the remote database"),
        "{down:?}"
    );
    testq.ok(&["run", "--once"]).await;
    assert_eq!(done(&rclient).await, ids);
}
