//! Durations far out of range (`1e300` seconds) in every key that holds one:
//! refused when the config is read, naming the key, by `check`, `start`,
//! `run --once` and `reload` alike; never a panic, and a reload never kills
//! the daemon.

use crate::support::process::{alive, signal};
use crate::support::testq::{Testq, TestqDb};

/// Every duration key of a consumer's config, as `(table, key)`.
const KEYS: [(Option<&str>, &str); 9] = [
    (None, "delay"),
    (None, "dead_interval"),
    (None, "min_interval"),
    (None, "min_lag"),
    (Some("ticker"), "ticker_period"),
    (Some("ticker"), "retry_period"),
    (Some("ticker"), "maint_period"),
    (Some("ticker"), "coalesce"),
    (Some("ticker"), "leader_check_period"),
];

/// How the message names a key.
fn named(table: Option<&str>, key: &str) -> String {
    match table {
        Some(t) => format!("`{t}.{key}`"),
        None => format!("`{key}`"),
    }
}

/// Sets `key` (in `table`) to 1e300, with `subconsumer` set for `dead_interval`
/// (where it matters) and the ticker enabled for the ticker's keys.
fn set_huge(testq: &mut Testq, table: Option<&str>, key: &str) {
    match table {
        None => {
            testq.set(key, 1e300);
        }
        Some(t) => {
            let mut ticker = toml::Table::new();
            ticker.insert("enabled".into(), true.into());
            ticker.insert(key.into(), 1e300.into());
            testq.set(t, ticker);
        }
    }
    if key == "dead_interval" {
        testq.set("subconsumer", "w1");
    }
}

/// Fails unless the command exited 1 naming the key, without a panic.
fn assert_refused(what: &str, ran: &crate::support::program::Ran, table: Option<&str>, key: &str) {
    assert_eq!(ran.code, Some(1), "{what}: {ran:?}");
    assert!(
        ran.stderr.contains(&named(table, key)),
        "{what}: names the key: {ran:?}"
    );
    assert!(ran.stderr.contains("a year"), "{what}: says the range: {ran:?}");
    for sign in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!ran.stderr.contains(sign), "{what}: {ran:?}");
    }
}

#[tokio::test]
async fn a_duration_of_1e300_seconds_in_any_key_makes_check_start_and_run_once_exit_1_naming_the_key() {
    let db = pgq_test_support::TestDb::create().await;
    for (table, key) in KEYS {
        let mut testq = Testq::new(&format!("overflow_{key}"), db.dsn(), "testq", "testq");
        testq.ok(&["install"]).await;
        set_huge(&mut testq, table, key);
        for command in [&["check"][..], &["start"], &["run", "--once"], &["run"]] {
            let ran = testq.run(command).await;
            assert_refused(&format!("{key}: {command:?}"), &ran, table, key);
            assert_eq!(testq.pid(), None, "{key}: {command:?}: no daemon runs");
        }
    }
}

#[tokio::test]
async fn a_reload_with_a_duration_of_1e300_seconds_keeps_the_daemon_running_on_its_old_config_and_says_why() {
    let mut testq = TestqDb::installed("overflow_reload").await;
    let pid = testq.start().await;
    let mut reloads = 0;
    for (table, key) in KEYS {
        set_huge(&mut testq, table, key);
        // The command asks the daemon all the same (it reopens its log), and fails saying why.
        let ran = testq.run(&["reload"]).await;
        assert_refused(&format!("{key}: reload"), &ran, table, key);
        assert!(ran.stderr.contains("keeps its previous settings"), "{key}: {ran:?}");
        reloads += 1;
        testq
            .wait_for_log_n("ERROR reload failed, keeping the previous settings", reloads)
            .await;
        let log = testq.log();
        let last = log.lines().rfind(|l| l.contains("reload failed")).unwrap_or_default();
        assert!(
            last.contains(&named(table, key)),
            "{key}: the log names the key: {last}"
        );
        assert!(alive(pid), "{key}: the daemon is still there\n{log}");
        // The old config goes on: events are still processed.
        let ids = testq.produce_plain_batch(1).await;
        testq
            .wait_until(&format!("{key}: event {} is done", ids[0]), async || {
                testq.done().await.contains(&ids[0])
            })
            .await;
        match table {
            None => testq.unset(key),
            Some(t) => testq.unset(t),
        };
        testq.unset("subconsumer");
    }

    // SIGHUP straight to the daemon (systemd's `ExecReload`), and a stop
    // with the bad value still in the file: the daemon can always be stopped.
    testq.set("delay", 1e300);
    signal(pid, "HUP");
    testq
        .wait_for_log_n("ERROR reload failed, keeping the previous settings", reloads + 1)
        .await;
    assert!(alive(pid), "{}", testq.log());
    let status = testq.ok(&["status"]).await;
    assert!(
        status.stderr.contains("warning: ") && status.stderr.contains("`delay`"),
        "{status:?}"
    );
    let stop = testq.ok(&["stop"]).await;
    assert!(stop.stdout.contains("stopped"), "{stop:?}");
    assert!(!alive(pid));
    let log = testq.log();
    assert!(!log.contains("FATAL") && !log.contains("panic"), "{log}");
}
