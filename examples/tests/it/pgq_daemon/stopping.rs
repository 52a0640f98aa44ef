//! stop, kill, and the round in flight.

use super::harness::{alive, unfinished, wait_gone, Demo};

#[test]
fn stop_lets_the_round_in_flight_finish() {
    let mut demo = Demo::new("stop_in_flight");
    demo.set("round_ms", "500");
    let pid = demo.start();
    demo.wait_until("a round is in flight", || demo.round_in_flight());
    let ran = demo.ok(&["stop"]);
    assert_eq!(ran.stdout.trim(), format!("demo stopped, pid {pid}"));
    assert!(!alive(pid), "stop says stopped only once the process has exited");
    assert!(!demo.pidfile().exists());
    wait_gone(&demo, pid);
    let work = demo.work();
    assert!(unfinished(&work).is_empty(), "every begin has its end: {work:?}");
    let log = demo.log();
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(log.contains("demo shutting down"), "{log}");
    assert!(log.contains(&format!("demo stopped, pid {pid}")), "{log}");
}

#[test]
fn kill_abandons_the_round_in_flight() {
    let mut demo = Demo::new("kill_in_flight");
    demo.set("round_ms", "5000");
    let pid = demo.start();
    demo.wait_until("a round is in flight", || demo.round_in_flight());
    let ran = demo.ok(&["kill"]);
    assert_eq!(ran.stdout.trim(), format!("demo killed, pid {pid}"));
    assert!(!alive(pid), "kill says killed only once the process has exited");
    assert!(!demo.pidfile().exists());
    wait_gone(&demo, pid);
    let work = demo.work();
    assert_eq!(unfinished(&work), ["1"], "round 1 was dropped: {work:?}");
    let log = demo.log();
    assert!(log.contains("received SIGQUIT"), "{log}");
    assert!(log.contains("demo shutting down after 1 rounds"), "{log}");
}

#[test]
fn kill_escalates_to_sigkill_when_the_daemon_does_not_quit() {
    let mut demo = Demo::new("kill_escalates");
    // `kill` waits `stop_timeout` (at most 5 s) after SIGQUIT.
    demo.set("shutdown_hangs", "true").set("stop_timeout", "0.5");
    let pid = demo.start();
    let ran = demo.ok(&["kill"]);
    assert!(ran.stderr.contains("sending SIGKILL"), "{ran:?}");
    assert_eq!(ran.stdout.trim(), format!("demo killed with SIGKILL, pid {pid}"));
    assert!(!alive(pid), "kill says killed only once the process has exited");
    wait_gone(&demo, pid);
    assert_eq!(demo.run(&["status"]).code, Some(4));
}

/// Freezes a process (SIGSTOP): it handles no signal until SIGCONT or SIGKILL.
fn freeze(pid: u32) {
    let sent = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill -STOP");
    assert!(sent.success());
}

#[test]
fn stop_gives_up_after_stop_timeout_and_suggests_kill() {
    let mut demo = Demo::new("stop_timeout");
    demo.set("stop_timeout", "0.3");
    let pid = demo.start();
    // A frozen process does not even hear SIGTERM.
    freeze(pid);
    let ran = demo.run(&["stop"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("use `kill`"), "{ran:?}");
    assert_eq!(demo.pid(), Some(pid));
    demo.ok(&["kill"]);
}

#[test]
fn a_daemon_hanging_in_shutdown_past_its_stop_deadline_is_ended_and_its_pidfile_removed() {
    let mut demo = Demo::new("stop_backstop");
    demo.set("shutdown_hangs", "true").set("stop_timeout", "0.3");
    let pid = demo.start();
    let asked = std::time::Instant::now();
    let ran = demo.ok(&["stop"]);
    assert_eq!(ran.stdout.trim(), format!("demo stopped, pid {pid}"));
    assert!(
        asked.elapsed() < std::time::Duration::from_millis(1300),
        "{:?}",
        asked.elapsed()
    );
    assert!(!demo.pidfile().exists());
    let log = demo.log();
    assert!(
        log.contains("the stop deadline (0.3s after the stop was asked for) has passed"),
        "{log}"
    );
    assert!(log.contains("exiting now"), "{log}");
}

#[test]
fn restart_escalates_to_kill_when_the_daemon_does_not_stop() {
    let mut demo = Demo::new("restart_escalates");
    demo.set("stop_timeout", "0.3");
    let old = demo.start();
    freeze(old);
    let ran = demo.ok(&["restart"]);
    assert!(ran.stderr.contains("killing it"), "{ran:?}");
    let new = demo.pid().expect("a daemon runs after restart");
    assert_ne!(new, old);
    wait_gone(&demo, old);
    demo.ok(&["kill"]);
}
