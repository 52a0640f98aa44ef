//! systemd's notify protocol, against a real `NOTIFY_SOCKET`: a datagram
//! socket the test listens on, as systemd does for `Type=notify`. `testq run`
//! says READY=1 once consuming, RELOADING=1 then READY=1 around a reload,
//! WATCHDOG=1 every half of `WATCHDOG_USEC` while its loop makes progress
//! (and none while a batch runs past `stuck_after`), STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::process::signal;
use crate::support::testq::{TestqDb, TESTQ};
use crate::support::PATIENCE;

/// The socket systemd would listen on; removed when dropped.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(test: &str) -> NotifySocket {
        // Short: a socket's path has at most 107 bytes.
        let path = std::env::temp_dir().join(format!("pgq-{test}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        NotifySocket { path, socket }
    }

    /// The next message, waiting at most `within`.
    fn next(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Waits for a message with the line `line`; returns it. Other messages
    /// before it are skipped (WATCHDOG=1 ones come all the time).
    fn expect(&self, line: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self
                .next(left)
                .unwrap_or_else(|| panic!("no message with {line} within {PATIENCE:?}"));
            if message.lines().any(|l| l == line) {
                return message;
            }
        }
    }

    /// Every message that comes within `window`.
    fn during(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut all = Vec::new();
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            all.push(m);
        }
        all
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn run_notifies_ready_reloading_stopping_and_the_watchdog_on_a_real_notify_socket() {
    let mut testq = TestqDb::installed("systemd_notify").await;
    testq.set("stuck_after", 1.0);
    let notify = NotifySocket::bind("notify");
    let socket = notify.path.display().to_string();
    // As systemd starts it: WATCHDOG_PID is the process's own pid.
    let config = testq.config_path().display().to_string();
    let mut run = tokio::process::Command::new("sh")
        .args(["-c", r#"WATCHDOG_PID=$$ exec "$0" "$@""#, TESTQ, "-c", &config, "run"])
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("PGQ_DB")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start testq run");

    let ready = notify.expect("READY=1");
    let pid: u32 = ready
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("READY=1 with MAINPID: {ready:?}"));
    assert!(ready.lines().any(|l| l == "STATUS=running"), "{ready:?}");
    // Every 0.1 s while the loop makes progress.
    let fed = notify.during(Duration::from_secs(1));
    let pings = fed.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
    assert!((5..=15).contains(&pings), "{pings} WATCHDOG=1 in a second: {fed:?}");

    signal(pid, "HUP");
    let reloading = notify.expect("RELOADING=1");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    notify.expect("READY=1");

    // A batch past stuck_after: the watchdog goes hungry, so systemd would restart it.
    testq.setting("sleep_ms", 4000);
    signal(pid, "HUP");
    notify.expect("READY=1");
    let ids = testq.produce_batch(&["plain"]).await;
    testq.wait_for_log("no longer notifying the systemd watchdog").await;
    let _ = notify.during(Duration::from_millis(150));
    let hungry = notify.during(Duration::from_secs(1));
    assert!(
        !hungry.iter().any(|m| m.trim() == "WATCHDOG=1"),
        "fed while stuck: {hungry:?}"
    );
    testq
        .wait_until("the batch is done", async || testq.done().await == ids)
        .await;
    notify.expect("WATCHDOG=1");

    signal(pid, "TERM");
    notify.expect("STOPPING=1");
    let exited = tokio::time::timeout(PATIENCE, run.wait())
        .await
        .expect("testq exits")
        .expect("wait");
    assert_eq!(exited.code(), Some(0), "{}", testq.log());
}
