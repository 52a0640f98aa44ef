//! Helpers shared by every test of this binary: scratch directories, waiting
//! for something to happen, and, in modules of their own, processes and their
//! pidfiles (`process`), the example binaries run with a config file
//! (`program`), the real `testq` with a config it rewrites (`testq`), and the
//! queue side: producing, ticking, reading what a consumer did (`queue`).

pub mod process;
pub mod program;
pub mod queue;
pub mod testq;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The longest a test waits for something that should take a moment.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A scratch directory of one test, named after it. When it goes, the
/// daemons still running from it are killed, and the directory is removed
/// if the test passed (kept to look at when it failed).
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty directory named after the test (unique within the run).
    pub fn new(test: &str) -> Scratch {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("it")
            .join(format!("{test}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path in it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The daemons running from it: each pidfile (`*.pid`) in it that a live
    /// process holds locked, with that process's pid.
    pub fn daemons(&self) -> Vec<(PathBuf, u32)> {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "pid"))
            .filter_map(|path| process::locked_pid(&path).map(|pid| (path, pid)))
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A failed test must not leave a daemon behind (before its database goes).
        for (_, pid) in self.daemons() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 25 ms until it yields `Some`, and returns that; after
/// [`PATIENCE`], fails the test saying what it waited for, then `detail()`
/// (a log, say).
pub async fn poll<T>(what: &str, detail: impl Fn() -> String, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting until {what}{}",
            detail()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `check` until it yields `Some`, and returns that; fails the test
/// after [`PATIENCE`].
pub async fn wait_for<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    poll(what, String::new, check).await
}
