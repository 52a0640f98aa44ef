//! The log: line format, levels, reload, logrotate, logmore and logless.

use pgq_daemon::Level;

use super::harness::Demo;

/// The six-level name of a log line `DATE TIME TZ [PID] LEVEL message`, checking the
/// rest of its shape.
fn level_of(line: &str, pid: u32) -> Level {
    let fields: Vec<&str> = line.splitn(6, ' ').collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!(fields[0].len(), 10, "date in {line}");
    assert_eq!(fields[1].len(), 12, "time in {line}");
    assert_eq!(fields[3], format!("[{pid}]"), "pid in {line}");
    fields[4].parse().unwrap_or_else(|e| panic!("{e} in {line}"))
}

/// The lines that start a log record (a panic's backtrace continues on more lines).
fn records(log: &str) -> impl Iterator<Item = &str> {
    log.lines().filter(|l| l.starts_with("20"))
}

#[test]
fn every_line_has_timestamp_pid_and_level() {
    let mut demo = Demo::new("line_format");
    demo.set("loglevel", "debug");
    let pid = demo.start();
    demo.wait_for_log("VERBOSE round 2 done");
    demo.ok(&["stop"]);
    let log = demo.log();
    let levels: Vec<Level> = records(&log).map(|l| level_of(l, pid)).collect();
    assert!(levels.contains(&Level::Debug), "{log}");
    assert!(levels.contains(&Level::Verbose), "{log}");
    assert!(levels.contains(&Level::Notice), "{log}");
}

#[test]
fn reload_applies_a_changed_log_level() {
    let mut demo = Demo::new("reload_level");
    demo.start();
    demo.wait_until("rounds run", || demo.work().len() >= 4);
    assert!(!demo.log().contains("DEBUG"), "{}", demo.log());
    demo.set("loglevel", "debug");
    demo.ok(&["reload"]);
    demo.wait_for_log("NOTICE log level is now DEBUG");
    demo.wait_for_log("DEBUG round");
    demo.wait_for_log("NOTICE reloaded: log level DEBUG");
    demo.ok(&["stop"]);
}

#[test]
fn a_failed_reload_keeps_the_previous_settings() {
    let mut demo = Demo::new("reload_fails");
    demo.set("loglevel", "verbose");
    demo.start();
    demo.set("loglevel", "loud");
    demo.ok(&["reload"]);
    demo.wait_for_log("ERROR reload failed, keeping the previous settings: unknown log level `loud`");
    let before = demo.log().matches("VERBOSE round").count();
    demo.wait_until("rounds still log at VERBOSE", || {
        demo.log().matches("VERBOSE round").count() > before
    });
    demo.ok(&["stop"]);
}

#[test]
fn reload_reopens_the_log_after_logrotate_renamed_it() {
    let demo = Demo::new("logrotate");
    demo.start();
    let rotated = demo.dir.join("demo.log.1");
    std::fs::rename(demo.logfile(), &rotated).expect("rotate the log");
    demo.ok(&["reload"]);
    // The reload's own lines already go to the new file.
    demo.wait_for_log("reloaded: log level NOTICE");
    let old = std::fs::read_to_string(&rotated).expect("the rotated log");
    assert!(old.contains("demo started"), "{old}");
    assert!(old.contains("received SIGHUP"), "{old}");
    assert!(!old.contains("reloaded"), "{old}");
    demo.ok(&["stop"]);
    assert!(demo.log().contains("demo stopped"), "{}", demo.log());
}

#[test]
fn logmore_and_logless_step_the_level_and_say_so() {
    let demo = Demo::new("logmore_logless");
    demo.start();
    demo.ok(&["logmore"]);
    demo.wait_for_log("NOTICE log level is now VERBOSE");
    demo.wait_for_log("VERBOSE round");
    demo.ok(&["logmore"]);
    demo.wait_for_log("NOTICE log level is now DEBUG");
    demo.ok(&["logmore"]);
    demo.wait_for_log("log level is already DEBUG");
    for level in ["VERBOSE", "NOTICE", "WARNING", "ERROR", "FATAL"] {
        let seen = demo.log().matches(&format!("log level is now {level}")).count();
        demo.ok(&["logless"]);
        // Announced even when the new level hides NOTICE lines.
        demo.wait_until(&format!("the level is {level}"), || {
            demo.log().matches(&format!("log level is now {level}")).count() > seen
        });
    }
    demo.ok(&["logless"]);
    demo.wait_for_log("log level is already FATAL");
    demo.ok(&["stop"]);
}

#[test]
fn level_fatal_hides_errors_and_shows_a_panic_with_its_location() {
    let mut demo = Demo::new("fatal_level");
    demo.set("loglevel", "fatal")
        .set("fail_round", "1")
        .set("panic_round", "3");
    let pid = demo.start();
    demo.wait_until("the daemon died of its panic", || demo.pid().is_none());
    let log = demo.log();
    let levels: Vec<Level> = records(&log).map(|l| level_of(l, pid)).collect();
    assert_eq!(levels, [Level::Fatal], "only the panic: {log}");
    assert!(
        log.contains("FATAL panic in thread 'main' at examples/src/bin/pgq-daemon-demo.rs:"),
        "{log}"
    );
    assert!(log.contains("round 3 was told to panic"), "{log}");
}

#[test]
fn a_panic_inside_catching_is_logged_at_error_and_the_daemon_goes_on() {
    let mut demo = Demo::new("caught_panic");
    demo.set("caught_panic_round", "2");
    let pid = demo.start();
    demo.wait_until("round 4 runs", || demo.work().iter().any(|l| l == "end 4"));
    assert_eq!(demo.pid(), Some(pid), "the daemon survived the panic");
    let log = demo.log();
    assert!(
        log.contains("ERROR panic caught in thread '") && log.contains("the task of round 2 was told to panic"),
        "{log}"
    );
    assert!(
        log.contains("examples/src/bin/pgq-daemon-demo.rs:"),
        "with its location: {log}"
    );
    assert!(!log.contains("FATAL"), "a survived panic is not fatal: {log}");
    demo.ok(&["stop"]);
}

#[test]
fn a_failing_round_is_logged_and_the_daemon_goes_on() {
    let mut demo = Demo::new("round_fails");
    demo.set("fail_round", "2");
    demo.start();
    demo.wait_for_log("ERROR round failed: round 2 was told to fail; next round in 50ms");
    demo.wait_until("round 4 runs", || demo.work().iter().any(|l| l == "end 4"));
    demo.ok(&["stop"]);
}
