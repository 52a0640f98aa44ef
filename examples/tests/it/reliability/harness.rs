//! Drives the real `testq` against any connection string (the shared test
//! server or a cluster of the test's own), as a daemon or a command, and
//! produces events into its queue.

use std::path::PathBuf;

pub use crate::support::process::alive;
use crate::support::process::locked;
use crate::support::program::Program;
use crate::support::{poll, Scratch, TESTQ};

/// testq's config, pidfile and log in a scratch directory.
pub struct Testq {
    pub dir: Scratch,
    program: Program,
    config: toml::Table,
}

impl std::ops::Deref for Testq {
    type Target = Program;

    fn deref(&self) -> &Program {
        &self.program
    }
}

impl Testq {
    /// A config for `queue` and `consumer` in database `db`, logging at
    /// NOTICE to `testq.log`, polling every 50 ms.
    pub fn new(test: &str, db: &str, queue: &str, consumer: &str) -> Testq {
        let dir = Scratch::new(test);
        let program = Program::new(TESTQ, dir.path(), "testq", "");
        let mut testq = Testq {
            dir,
            program,
            config: toml::Table::new(),
        };
        let (pidfile, logfile) = (testq.path("testq.pid"), testq.logfile());
        testq
            .set("db", db)
            .set("queue", queue)
            .set("consumer", consumer)
            .set("pidfile", pidfile.display().to_string())
            .set("logfile", logfile.display().to_string())
            .set("loglevel", "notice")
            .set("delay", 0.05);
        testq
    }

    /// Sets a top-level config key and rewrites the config file.
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        self.config.insert(key.to_string(), value.into());
        self.write_config();
        self
    }

    /// Sets a key of `[settings]` (testq's `mode`, `sleep_ms`) and rewrites the file.
    pub fn setting(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        let settings = self
            .config
            .entry("settings")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(table) = settings {
            table.insert(key.to_string(), value.into());
        }
        self.write_config();
        self
    }

    fn write_config(&self) {
        let text = toml::to_string(&self.config).expect("serialize the config");
        self.program.write_config(&text);
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `testq start`; returns the daemon's pid.
    pub async fn start(&self) -> u32 {
        let ran = self.ok(&["start"]).await;
        ran.stdout
            .trim()
            .rsplit_once("pid ")
            .and_then(|(_, pid)| pid.parse().ok())
            .unwrap_or_else(|| panic!("`start` names the pid: {ran:?}"))
    }

    /// Polls `condition` every 25 ms until it holds; fails the test, showing
    /// the log, after [`PATIENCE`].
    pub async fn wait_until(&self, what: &str, mut condition: impl AsyncFnMut() -> bool) {
        let log = || format!("\n--- log:\n{}", self.log());
        poll(what, log, async || condition().await.then_some(())).await
    }

    /// Waits until the log has `text` at least `n` times.
    pub async fn wait_for_log_n(&self, text: &str, n: usize) {
        self.wait_until(&format!("the log says `{text}` {n} time(s)"), async || {
            self.log().matches(text).count() >= n
        })
        .await;
    }
}

/// Sends SIGKILL to a daemon and waits until it is gone: its pidfile is no
/// longer locked (a dying process's other threads may still hold the lock
/// for a moment after its main thread is a zombie).
pub async fn kill9(testq: &Testq, pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid}: {status}");
    let pidfile = testq.path("testq.pid");
    testq
        .wait_until(&format!("pid {pid} is gone"), async || !alive(pid) && !locked(&pidfile))
        .await;
}
