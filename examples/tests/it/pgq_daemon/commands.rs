//! start, status, restart, and the commands against a stopped daemon.

use super::harness::{alive, wait_gone, Demo};

#[test]
fn start_returns_once_the_daemon_is_up_and_status_tells_its_pid() {
    let demo = Demo::new("start_status");
    let pid = demo.start();
    assert!(alive(pid));
    let pidfile = std::fs::read_to_string(demo.pidfile()).expect("pidfile");
    assert_eq!(pidfile.trim(), pid.to_string());
    // Up means configured and serving: the start line is already in the log.
    assert!(
        demo.log().contains(&format!("NOTICE demo started, pid {pid}")),
        "{}",
        demo.log()
    );
    demo.wait_until("rounds run", || demo.work().len() >= 4);
    let status = demo.ok(&["status"]);
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert_eq!(lines[0], format!("demo is running, pid {pid}"), "{status:?}");
    // The binary's own details follow the daemon's line.
    assert!(lines[1].starts_with("rounds begun: "), "{status:?}");

    demo.ok(&["stop"]);
    let status = demo.run(&["status"]);
    assert_eq!(status.code, Some(4), "{status:?}");
    assert!(status.stdout.starts_with("demo is not running\n"), "{status:?}");
    assert!(!demo.pidfile().exists(), "a clean stop removes the pidfile");
}

#[test]
fn a_second_start_exits_4_naming_the_running_pid() {
    let demo = Demo::new("double_start");
    let pid = demo.start();
    let again = demo.run(&["start"]);
    assert_eq!(again.code, Some(4), "{again:?}");
    assert!(again.stderr.contains(&format!("pid {pid}")), "{again:?}");
    assert_eq!(demo.pid(), Some(pid), "the first daemon still holds the pidfile");
    demo.ok(&["stop"]);
}

#[test]
fn restart_replaces_the_daemon_with_a_new_pid() {
    let demo = Demo::new("restart");
    let old = demo.start();
    let ran = demo.ok(&["restart"]);
    let new = demo.pid().expect("a daemon runs after restart");
    assert_ne!(new, old);
    wait_gone(&demo, old);
    assert!(ran.stdout.contains(&format!("demo stopped, pid {old}")), "{ran:?}");
    assert!(ran.stdout.contains(&format!("demo started, pid {new}")), "{ran:?}");
    demo.ok(&["stop"]);
}

#[test]
fn a_stale_pidfile_with_a_dead_or_foreign_pid_does_not_block_start() {
    let demo = Demo::new("stale_pidfile");
    let mut gone = std::process::Command::new("true").spawn().expect("spawn true");
    let dead = gone.id();
    gone.wait().expect("wait for true");
    for stale in [dead, std::process::id()] {
        std::fs::write(demo.pidfile(), format!("{stale}\n")).expect("write a stale pidfile");
        assert_eq!(demo.run(&["status"]).code, Some(4));
        let pid = demo.start();
        assert_ne!(pid, stale);
        demo.ok(&["stop"]);
    }
}

#[test]
fn commands_against_a_stopped_daemon_exit_4() {
    let demo = Demo::new("stopped");
    for command in ["stop", "kill", "reload", "restart", "status", "logmore", "logless"] {
        let ran = demo.run(&[command]);
        assert_eq!(ran.code, Some(4), "`{command}`: {ran:?}");
        assert!(
            format!("{}{}", ran.stdout, ran.stderr).contains("demo is not running"),
            "`{command}`: {ran:?}"
        );
    }
    assert!(!demo.logfile().exists(), "nothing was started");
}

#[test]
fn the_rest_between_rounds_ends_when_wait_for_work_completes() {
    let mut demo = Demo::new("wait_for_work");
    let poke = demo.dir.join("poke");
    demo.set("delay", "60").set("poke", poke.display());
    demo.start();
    demo.wait_until("the first round ends", || demo.work().len() == 2);
    std::fs::write(&poke, "").expect("poke");
    demo.wait_until("a second round runs, long before the 60 s delay", || {
        demo.work().len() >= 4
    });
    demo.ok(&["stop"]);
}

#[test]
fn of_several_starts_at_once_exactly_one_wins() {
    let demo = Demo::new("racing_starts");
    let racers: Vec<_> = (0..3)
        .map(|_| {
            let config = demo.config();
            std::thread::spawn(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_pgq-daemon-demo"))
                    .arg("-c")
                    .arg(config)
                    .arg("start")
                    .output()
                    .expect("run start")
            })
        })
        .collect();
    let mut codes: Vec<Option<i32>> = racers
        .into_iter()
        .map(|racer| racer.join().expect("join").status.code())
        .collect();
    codes.sort();
    assert_eq!(codes, [Some(0), Some(4), Some(4)]);
    assert!(demo.pid().is_some());
    demo.ok(&["stop"]);
}
