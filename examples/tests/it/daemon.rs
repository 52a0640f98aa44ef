//! The `testq` example consumer as a daemon, through the real binary: every
//! command and signal, start-up failures, and the batch in flight when the
//! daemon is stopped or killed. The shipped systemd unit and logrotate file are
//! tested in `daemon/dist.rs`.

mod dist;

use std::time::Duration;

use crate::support::process::{alive, signal};
use crate::support::testq::{TestqDb, CONSUMER};

#[tokio::test]
async fn start_returns_once_the_daemon_is_up_and_a_second_start_exits_4() {
    let testq = TestqDb::installed("start_twice").await;
    let pid = testq.start().await;
    // Up means started and logged so before `start` returned.
    let log = testq.log();
    assert!(
        log.contains(&format!("[{pid}] NOTICE {CONSUMER} started, pid {pid}")),
        "{log}"
    );

    let again = testq.run(&["start"]).await;
    assert_eq!(again.code, Some(4), "{again:?}");
    assert_eq!(again.stderr.trim(), format!("{CONSUMER} is already running, pid {pid}"));
    assert_eq!(testq.pid(), Some(pid), "the first daemon keeps running");

    let stopped = testq.ok(&["stop"]).await;
    assert_eq!(stopped.stdout.trim(), format!("{CONSUMER} stopped, pid {pid}"));
    assert!(!testq.pidfile().exists(), "the pidfile goes with the daemon");
    assert!(!alive(pid));
}

#[tokio::test]
async fn status_shows_the_queue_position_and_failed_count_and_exits_0_running_4_stopped() {
    let testq = TestqDb::installed("status").await;
    let pid = testq.start().await;
    let ids = testq.produce_batch(&["plain", "fail", "plain"]).await;
    testq
        .wait_until("the batch is finished", async || {
            testq.done().await.len() == 2 && testq.current_batch().await.is_none()
        })
        .await;

    let running = testq.ok(&["status"]).await;
    let lines: Vec<&str> = running.stdout.lines().collect();
    assert_eq!(lines[0], format!("{CONSUMER} is running, pid {pid}"), "{running:?}");
    assert_eq!(lines[1], "queue: testq", "{running:?}");
    assert_eq!(lines[2], "consumer: testq", "{running:?}");
    for (line, start) in lines[3..]
        .iter()
        .zip(["last tick: ", "lag: ", "pending events: ", "last seen: "])
    {
        assert!(line.starts_with(start), "`{start}` expected: {running:?}");
    }
    assert!(!lines[3].contains("overdue"), "{running:?}");
    assert_eq!(lines[7..], ["batch in flight: none", "failed events: 1"], "{running:?}");
    assert_eq!(testq.done().await, [ids[0], ids[2]]);

    testq.ok(&["stop"]).await;
    let stopped = testq.run(&["status"]).await;
    assert_eq!(stopped.code, Some(4), "{stopped:?}");
    assert_eq!(
        stopped.stdout.lines().next(),
        Some(format!("{CONSUMER} is not running").as_str()),
        "{stopped:?}"
    );
    // The queue position is told even with no daemon.
    assert!(stopped.stdout.contains("failed events: 1"), "{stopped:?}");
}

#[tokio::test]
async fn reload_applies_a_changed_loglevel_and_hands_changed_settings_to_the_consumer() {
    let mut testq = TestqDb::installed("reload").await;
    testq.start().await;
    testq.wait_for_log("NOTICE settings: mode local, sleep_ms 0").await;
    assert!(!testq.log().contains(" DEBUG "), "{}", testq.log());

    testq.set("loglevel", "debug").setting("sleep_ms", 5);
    testq.ok(&["reload"]).await;
    testq.wait_for_log("NOTICE reloaded: log level DEBUG").await;
    let log = testq.log();
    assert!(log.contains("NOTICE received SIGHUP: reloading"), "{log}");
    assert!(log.contains("NOTICE log level is now DEBUG"), "{log}");
    assert!(log.contains("NOTICE settings: mode local, sleep_ms 5"), "{log}");
    // The loop's own DEBUG lines now show.
    testq.wait_for_log(" DEBUG resting for").await;

    // The consumer works on with the new settings.
    let ids = testq.produce_plain_batch(2).await;
    testq
        .wait_until("the events are done", async || testq.done().await == ids)
        .await;
    testq.ok(&["stop"]).await;
}

#[tokio::test]
async fn a_reload_that_changes_the_commit_mode_or_the_queue_is_refused_naming_it_and_the_daemon_goes_on_as_it_was() {
    let mut testq = TestqDb::installed("reload_refused").await;
    testq.start().await;
    testq.wait_for_log("NOTICE settings: mode local, sleep_ms 0").await;

    testq.setting("mode", "remote_event").setting("sleep_ms", 5);
    testq.ok(&["reload"]).await;
    testq
        .wait_for_log("ERROR reload failed, keeping the previous settings: config file")
        .await;
    let log = testq.log();
    assert!(
        log.contains("the commit mode (which [settings] gives) changed"),
        "{log}"
    );
    assert!(log.contains("restart it to apply the change"), "{log}");
    assert!(
        !log.contains("sleep_ms 5"),
        "nothing of the refused settings applied: {log}"
    );

    testq.setting("mode", "local").set("queue", "elsewhere");
    testq.ok(&["reload"]).await;
    testq.wait_for_log("`queue` changed; it is read at start only").await;

    // Still the local consumer of its queue.
    let ids = testq.produce_plain_batch(2).await;
    testq
        .wait_until("the events are done locally", async || testq.done().await == ids)
        .await;
    testq.ok(&["stop"]).await;
}

#[tokio::test]
async fn reload_after_the_log_was_renamed_makes_the_daemon_write_a_new_log_file() {
    let testq = TestqDb::installed("log_reopen").await;
    testq.start().await;
    // What logrotate does first: rename the log. The daemon still writes there.
    let rotated = testq.path("testq.log.1");
    std::fs::rename(testq.logfile(), &rotated).expect("rotate the log");
    assert!(!testq.logfile().exists());

    testq.ok(&["reload"]).await;
    testq.wait_for_log("NOTICE reloaded: log level NOTICE").await;
    let ids = testq.produce_plain_batch(1).await;
    testq.wait_for_log(&format!("NOTICE done: event {} ", ids[0])).await;

    let old = std::fs::read_to_string(&rotated).expect("the rotated log");
    assert!(old.contains(&format!("{CONSUMER} started")), "{old}");
    assert!(!old.contains("reloaded"), "{old}");
    assert!(!old.contains("done: event"), "{old}");
    testq.ok(&["stop"]).await;
    assert!(testq.log().contains(&format!("{CONSUMER} stopped")), "{}", testq.log());
}

/// Sends `logmore` or `logless`, then waits until the daemon announces
/// `announcement` once more than before (one step at a time: two signals sent
/// at once may be received as one).
async fn step_level(testq: &TestqDb, command: &str, announcement: &str) {
    let before = testq.log().matches(announcement).count();
    testq.ok(&[command]).await;
    testq
        .wait_until(&format!("`{command}` says `{announcement}`"), async || {
            testq.log().matches(announcement).count() > before
        })
        .await;
}

#[tokio::test]
async fn logmore_and_logless_step_the_level_visibly_in_the_log() {
    let testq = TestqDb::installed("logmore_logless").await;
    testq.start().await;

    step_level(&testq, "logmore", "NOTICE log level is now VERBOSE").await;
    step_level(&testq, "logmore", "NOTICE log level is now DEBUG").await;
    testq.wait_for_log(" DEBUG resting for").await;
    step_level(&testq, "logmore", "NOTICE log level is already DEBUG, the most verbose").await;

    step_level(&testq, "logless", "NOTICE log level is now VERBOSE").await;
    step_level(&testq, "logless", "NOTICE log level is now NOTICE").await;
    step_level(&testq, "logless", "NOTICE log level is now WARNING").await;

    // At WARNING, testq's NOTICE lines are gone, its work is not.
    let ids = testq.produce_plain_batch(1).await;
    testq
        .wait_until("the event is done", async || testq.done().await == ids)
        .await;
    assert!(!testq.log().contains("done: event"), "{}", testq.log());
    step_level(&testq, "logmore", "NOTICE log level is now NOTICE").await;
    testq.ok(&["stop"]).await;
}

#[tokio::test]
async fn stop_finishes_the_batch_in_flight_before_the_daemon_exits() {
    let mut testq = TestqDb::installed("stop_in_flight").await;
    testq.setting("sleep_ms", 100);
    let pid = testq.start().await;
    let ids = testq.produce_plain_batch(20).await;
    let batch = testq.batch_in_flight(ids[0]).await;
    assert!(testq.done().await.is_empty(), "nothing is committed yet");
    let status = testq.ok(&["status"]).await;
    assert!(
        status
            .stdout
            .contains(&format!("batch in flight: {batch} ({CONSUMER})")),
        "{status:?}"
    );

    let stopped = testq.ok(&["stop"]).await;
    assert_eq!(stopped.stdout.trim(), format!("{CONSUMER} stopped, pid {pid}"));
    assert_eq!(testq.done().await, ids, "the whole batch, once");
    assert_eq!(testq.current_batch().await, None, "the batch is finished");
    let log = testq.log();
    assert!(
        log.contains("NOTICE received SIGTERM: stopping after the round in flight"),
        "{log}"
    );
    let term = log.find("received SIGTERM").unwrap_or_default();
    let last = log.find(&format!("done: event {} ", ids[19])).unwrap_or_default();
    assert!(term < last, "the batch went on after SIGTERM: {log}");
}

#[tokio::test]
async fn sigint_stops_the_daemon_like_term_after_the_batch_in_flight() {
    let mut testq = TestqDb::installed("sigint").await;
    testq.setting("sleep_ms", 50);
    let pid = testq.start().await;
    let ids = testq.produce_plain_batch(10).await;
    testq.batch_in_flight(ids[0]).await;
    signal(pid, "INT");
    testq
        .wait_until("the daemon has exited", async || !alive(pid) && testq.pid().is_none())
        .await;
    assert_eq!(testq.done().await, ids, "the whole batch, once");
    assert_eq!(testq.current_batch().await, None);
    let log = testq.log();
    assert!(
        log.contains("NOTICE received SIGINT: stopping after the round in flight"),
        "{log}"
    );
    assert!(log.contains(&format!("{CONSUMER} stopped, pid {pid}")), "{log}");
}

#[tokio::test]
async fn kill_rolls_back_the_batch_in_flight_and_the_next_start_processes_it_exactly_once() {
    let mut testq = TestqDb::installed("kill_in_flight").await;
    testq.setting("sleep_ms", 100);
    let pid = testq.start().await;
    let ids = testq.produce_plain_batch(20).await;
    let batch = testq.batch_in_flight(ids[0]).await;

    let killed = testq.ok(&["kill"]).await;
    assert_eq!(killed.stdout.trim(), format!("{CONSUMER} killed, pid {pid}"));
    assert!(!alive(pid));
    let log = testq.log();
    assert!(log.contains("NOTICE received SIGQUIT"), "{log}");
    assert!(
        !log.contains(&format!("done: event {} ", ids[19])),
        "it did not finish: {log}"
    );
    assert!(
        testq.done().await.is_empty(),
        "none of the batch's rows: {:?}",
        testq.done().await
    );
    assert_eq!(testq.current_batch().await, Some(batch), "the batch is not finished");

    testq.setting("sleep_ms", 0);
    testq.start().await;
    testq
        .wait_until("the batch is processed again", async || {
            testq.current_batch().await.is_none() && !testq.done().await.is_empty()
        })
        .await;
    assert_eq!(testq.done().await, ids, "every event exactly once");
    testq.ok(&["stop"]).await;
}

#[tokio::test]
async fn restart_replaces_the_daemon_with_a_new_pid_that_goes_on_consuming() {
    let testq = TestqDb::installed("restart").await;
    let old = testq.start().await;
    let restarted = testq.ok(&["restart"]).await;
    let new = testq.pid().expect("a daemon after restart");
    assert_ne!(new, old);
    assert_eq!(
        restarted.stdout.lines().collect::<Vec<_>>(),
        [
            format!("{CONSUMER} stopped, pid {old}"),
            format!("{CONSUMER} started, pid {new}")
        ],
        "{restarted:?}"
    );
    assert!(!alive(old));
    let ids = testq.produce_plain_batch(2).await;
    testq
        .wait_until("the new daemon consumes", async || testq.done().await == ids)
        .await;
    assert!(
        testq.log().contains(&format!("[{new}] NOTICE done: event")),
        "{}",
        testq.log()
    );
    testq.ok(&["stop"]).await;
}

#[tokio::test]
async fn a_stale_pidfile_naming_a_dead_or_foreign_pid_does_not_block_start() {
    let testq = TestqDb::installed("stale_pidfile").await;
    let mut gone = std::process::Command::new("true").spawn().expect("run true");
    let dead = gone.id();
    gone.wait().expect("wait for true");
    // A dead pid, then a live one that is not testq (this test process): neither
    // holds the lock.
    for stale in [dead, std::process::id()] {
        std::fs::write(testq.pidfile(), format!("{stale}\n")).expect("write a stale pidfile");
        let status = testq.run(&["status"]).await;
        assert_eq!(status.code, Some(4), "{status:?}");
        let pid = testq.start().await;
        assert_ne!(pid, stale);
        let text = std::fs::read_to_string(testq.pidfile()).expect("the pidfile");
        assert_eq!(text.trim(), pid.to_string());
        testq.ok(&["stop"]).await;
    }
}

#[tokio::test]
async fn every_control_command_against_a_stopped_daemon_exits_4() {
    let testq = TestqDb::installed("stopped").await;
    for command in ["stop", "kill", "reload", "restart", "status", "logmore", "logless"] {
        let ran = testq.run(&[command]).await;
        assert_eq!(ran.code, Some(4), "`{command}`: {ran:?}");
        let said = format!("{}{}", ran.stdout, ran.stderr);
        assert!(
            said.contains(&format!("{CONSUMER} is not running")),
            "`{command}`: {ran:?}"
        );
    }
    assert_eq!(testq.pid(), None, "restart did not start one");
    assert!(!testq.logfile().exists(), "nothing was started");
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_reported_on_the_terminal_with_exit_3() {
    let mut testq = TestqDb::new("unreachable").await;
    // Port 1: nothing listens there, the connection is refused at once.
    testq.set(
        "db",
        "host=127.0.0.1 port=1 user=postgres dbname=nowhere connect_timeout=5",
    );
    let started = std::time::Instant::now();
    let ran = testq.run(&["start"]).await;
    assert_eq!(ran.code, Some(3), "{ran:?}");
    assert!(
        ran.stderr.starts_with(&format!(
            "{CONSUMER}: cannot start: cannot connect to the queue database"
        )),
        "{ran:?}"
    );
    assert!(ran.stderr.contains("127.0.0.1"), "it names the server: {ran:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert_eq!(testq.pid(), None, "no daemon is left");
    assert!(
        testq.log().contains("FATAL cannot start: cannot connect"),
        "{}",
        testq.log()
    );
}

#[tokio::test]
async fn a_queue_not_installed_at_start_exits_1_saying_to_run_install() {
    let testq = TestqDb::new("not_installed").await;
    let ran = testq.run(&["start"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stderr.trim(),
        format!(
            "{CONSUMER}: cannot start: the queue does not exist (queue \"testq\", consumer \"testq\"): \
             run the `install` command first"
        ),
        "{ran:?}"
    );
    assert_eq!(testq.pid(), None, "no daemon is left");
}

#[tokio::test]
async fn a_handler_panic_is_logged_at_error_not_fatal_and_the_daemon_goes_on() {
    let testq = TestqDb::installed("panic").await;
    let pid = testq.start().await;
    let ids = testq.produce_batch(&["plain", "panic", "plain"]).await;
    testq
        .wait_until("the batch is finished", async || {
            testq.current_batch().await.is_none() && testq.done().await.len() == 2
        })
        .await;
    assert_eq!(testq.done().await, [ids[0], ids[2]]);
    let log = testq.log();
    assert!(
        log.contains("ERROR panic caught in thread '")
            && log.contains(&format!("testq: event {} has type panic", ids[1])),
        "{log}"
    );
    assert!(
        log.contains("examples/src/bin/testq.rs:"),
        "the panic's location: {log}"
    );
    assert!(!log.contains("FATAL"), "the daemon survived it: {log}");
    assert_eq!(testq.pid(), Some(pid));
    let status = testq.ok(&["status"]).await;
    assert!(status.stdout.contains("failed events: 1"), "{status:?}");
    testq.ok(&["stop"]).await;
}
