//! Startup failures reach the terminal, with their exit codes.

use super::harness::Demo;

#[test]
fn a_startup_failure_is_printed_with_its_exit_code() {
    let mut demo = Demo::new("fail_start");
    demo.set("fail_start", "3");
    let ran = demo.run(&["start"]);
    assert_eq!(ran.code, Some(3), "{ran:?}");
    assert_eq!(
        ran.stderr.trim(),
        "demo: cannot start: cannot connect to the demo's imaginary server"
    );
    assert!(ran.stdout.is_empty(), "{ran:?}");
    // Reported once the failed daemon has exited: nothing of it is left.
    assert!(!demo.pidfile().exists(), "the failed daemon's pidfile is gone already");
    assert_eq!(demo.run(&["status"]).code, Some(4));
    assert!(
        demo.log().contains("FATAL cannot start: cannot connect"),
        "{}",
        demo.log()
    );
}

#[test]
fn a_bad_config_at_start_exits_1_naming_the_valid_levels() {
    let mut demo = Demo::new("bad_level");
    demo.set("loglevel", "loud");
    let ran = demo.run(&["start"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr
            .contains("unknown log level `loud`: valid levels are debug, verbose, notice, warning, error, fatal"),
        "{ran:?}"
    );
    assert_eq!(demo.run(&["status"]).code, Some(4));
}

#[test]
fn start_without_a_logfile_or_a_pidfile_is_refused() {
    let mut demo = Demo::new("no_files");
    demo.unset("logfile");
    let ran = demo.run(&["start"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr
            .contains("a daemon has no terminal: set logfile, or use `run` to log to stderr"),
        "{ran:?}"
    );
    demo.unset("pidfile");
    let ran = demo.run(&["start"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("without a pidfile"), "{ran:?}");
}

#[test]
fn start_finds_its_files_from_relative_paths() {
    let mut demo = Demo::new("relative_paths");
    demo.set("pidfile", "demo.pid")
        .set("logfile", "demo.log")
        .set("work", "work.txt");
    let pid = demo.start();
    demo.wait_until("rounds run", || demo.work().len() >= 2);
    demo.ok(&["reload"]);
    demo.wait_for_log("reloaded");
    let ran = demo.ok(&["stop"]);
    assert_eq!(ran.stdout.trim(), format!("demo stopped, pid {pid}"));
}
