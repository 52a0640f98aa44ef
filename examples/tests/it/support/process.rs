//! Processes and their pidfiles: whether a daemon is alive, which pid holds a
//! pidfile, and signals sent as a user (or systemd) sends them.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

/// Whether a live process holds this pidfile locked, as `pgq-daemon` does
/// for as long as the daemon runs.
pub fn locked(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// The pid in a pidfile that a live process holds locked; `None` when no
/// process holds it (a stale pidfile, or none).
pub fn locked_pid(path: &Path) -> Option<u32> {
    if !locked(path) {
        return None;
    }
    // The daemon writes its pid right after it takes the lock.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            return Some(pid);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process with this pid exists and has not yet exited (a zombie,
/// exited but not yet reaped by whoever adopted the daemon, counts as gone).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) STATE ...`: the state follows the last parenthesis.
    match stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()) {
        Some('Z') | None => false,
        Some(_) => true,
    }
}

/// Sends a signal (`TERM`, `KILL`, ...) with the shell's `kill`, as systemd's
/// `ExecReload=/bin/kill -HUP $MAINPID` does; it must be delivered.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{name} {pid}"))
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}: {status}");
}
