//! `run` and `run --once`.

use std::time::Duration;

use super::harness::{Demo, PATIENCE};

#[test]
fn run_once_works_until_idle_then_exits_0_logging_to_stderr() {
    let mut demo = Demo::new("run_once");
    demo.unset("logfile").unset("pidfile").set("busy_rounds", "3");
    let ran = demo.ok(&["run", "--once"]);
    assert_eq!(
        demo.work(),
        ["begin 1", "end 1", "begin 2", "end 2", "begin 3", "end 3", "begin 4", "end 4"]
    );
    assert!(ran.stderr.contains("NOTICE demo started"), "{ran:?}");
    assert!(ran.stderr.contains("NOTICE demo stopped"), "{ran:?}");
    assert!(!demo.logfile().exists());
}

#[test]
fn run_once_exits_1_when_a_round_fails() {
    let mut demo = Demo::new("run_once_fails");
    demo.unset("logfile").set("fail_round", "1");
    let ran = demo.run(&["run", "--once"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("ERROR round failed: round 1 was told to fail"),
        "{ran:?}"
    );
}

#[test]
fn run_holds_the_pidfile_so_status_and_stop_work_and_no_second_daemon_starts() {
    let mut demo = Demo::new("run_pidfile");
    demo.unset("logfile");
    let mut child = demo.spawn(&["run"]);
    demo.wait_until("run holds the pidfile", || demo.pid() == Some(child.id()));
    for second in [&["start"][..], &["run"][..]] {
        let ran = demo.run(second);
        assert_eq!(ran.code, Some(4), "{second:?}: {ran:?}");
        assert!(
            ran.stderr.contains(&format!("already running, pid {}", child.id())),
            "{ran:?}"
        );
    }
    demo.ok(&["stop"]);
    let status = child.wait().expect("wait for run");
    assert_eq!(status.code(), Some(0));
    let stderr = std::fs::read_to_string(demo.dir.join("stderr.txt")).unwrap_or_default();
    assert!(stderr.contains("received SIGTERM"), "{stderr}");
}

#[test]
fn run_stops_gracefully_on_sigint() {
    let mut demo = Demo::new("run_sigint");
    demo.unset("logfile").unset("pidfile").set("round_ms", "300");
    let mut child = demo.spawn(&["run"]);
    demo.wait_until("a round is in flight", || demo.round_in_flight());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("send SIGINT");
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll run") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "run did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(super::harness::unfinished(&demo.work()).is_empty(), "{:?}", demo.work());
}
