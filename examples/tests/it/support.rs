//! Helpers shared by every test of this binary: scratch directories, waiting
//! for something to happen, processes and their pidfiles (`process`), the
//! example binaries run with a config file (`program`), and the real `testq` binary with a config file in a scratch directory, against
//! a database of its own; ticks by hand unless a test starts pgqd.

pub mod process;
pub mod program;
pub mod queue;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgq_test_support::TestDb;
use tokio_postgres::Client;

use program::Program;

/// The `testq` binary Cargo built for these tests.
pub const TESTQ: &str = env!("CARGO_BIN_EXE_testq");
/// The queue and consumer of every config written here.
pub const QUEUE: &str = "testq";
/// The consumer.
pub const CONSUMER: &str = "testq";
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

/// Polls `check` until it holds; fails the test after [`PATIENCE`].
pub async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    poll(what, String::new, async || check().await.then_some(())).await
}

/// testq's database, scratch directory and config file.
pub struct Testq {
    /// The scratch directory holding the config, pidfiles and logs (first, so
    /// that its daemons are killed before the database goes).
    pub dir: Scratch,
    /// testq with its config file.
    program: Program,
    /// The queue database.
    pub db: TestDb,
    /// A connection to it.
    pub client: Client,
}

impl std::ops::Deref for Testq {
    type Target = Program;

    fn deref(&self) -> &Program {
        &self.program
    }
}

impl Testq {
    /// A fresh database, and a config (`testq.toml`) with its pidfile in
    /// the scratch directory, a 0.1 s delay, and `extra` appended.
    pub async fn new(test: &str, extra: &str) -> Testq {
        let db = TestDb::create().await;
        let client = db.connect().await;
        let dir = Scratch::new(test);
        let program = Program::new(TESTQ, dir.path(), "testq", "");
        let testq = Testq {
            dir,
            program,
            db,
            client,
        };
        testq.write_config(extra);
        testq
    }

    /// As [`Testq::new`], then `install`, which must succeed.
    pub async fn installed(test: &str, extra: &str) -> Testq {
        let testq = Testq::new(test, extra).await;
        testq.ok(&["install"]).await;
        testq
    }

    /// (Re)writes the config file: the common keys, then `extra`.
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "db = \"{}\"\nqueue = \"{QUEUE}\"\nconsumer = \"{CONSUMER}\"\npidfile = \"{}\"\ndelay = 0.1\n{extra}\n",
            self.db.dsn(),
            self.path("testq.pid").display()
        );
        self.program.write_config(&text);
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Inserts events of these types, in one transaction; returns their ids.
    pub async fn produce(&self, types: &[&str]) -> Vec<i64> {
        queue::produce(&self.client, QUEUE, types).await
    }

    /// Makes the queue tick now (no pgqd).
    pub async fn tick(&self) {
        queue::tick(&self.client, QUEUE).await
    }

    /// Puts due retried events back into the queue, as pgqd's maintenance does.
    pub async fn maint_retry_events(&self) -> i32 {
        queue::maint_retry_events(&self.client).await
    }

    /// The ids in `testq_done` of the queue database, in id order (a
    /// duplicate shows twice).
    pub async fn done(&self) -> Vec<i64> {
        queue::done(&self.client).await
    }

    /// The ids of the consumer's failed events, with their reasons.
    pub async fn failed(&self) -> Vec<(i64, String)> {
        queue::failed(&self.client, QUEUE, CONSUMER).await
    }

    /// The consumer's batch in flight, if any.
    pub async fn current_batch(&self) -> Option<i64> {
        queue::current_batch(&self.client, QUEUE, CONSUMER).await
    }

    /// Whether the queue exists and the consumer is registered on it.
    pub async fn registered(&self, consumer: &str) -> bool {
        let row = self
            .client
            .query_one(
                "select exists (select 1 from pgq.get_consumer_info() where queue_name = $1 and consumer_name = $2)",
                &[&QUEUE, &consumer],
            )
            .await
            .expect("get_consumer_info");
        row.get(0)
    }

    /// Whether the queue exists.
    pub async fn queue_exists(&self) -> bool {
        pgq::get_queue_info(&self.client, QUEUE)
            .await
            .expect("get_queue_info")
            .is_some()
    }

    /// The daemon's pid from its pidfile, if there is one.
    pub fn pid(&self, pidfile: &str) -> Option<u32> {
        std::fs::read_to_string(self.path(pidfile))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}
