//! Drives the real `testq` binary in a scratch directory, against a database of
//! its own, with the queue ticked by hand (so a test knows which events make a
//! batch).

use std::path::PathBuf;

use pgq_test_support::TestDb;
use tokio_postgres::Client;

pub use crate::support::process::{alive, locked_pid, signal};
use crate::support::program::Program;
pub use crate::support::PATIENCE;
pub use crate::support::TESTQ;
use crate::support::{poll, queue, Scratch};

/// The queue, and the consumer (so the daemon's name in its messages).
pub const QUEUE: &str = "testq";
pub const CONSUMER: &str = "testq";

/// testq's config, pidfile and log in a scratch directory, and its database.
pub struct Testq {
    pub dir: Scratch,
    program: Program,
    config: toml::Table,
    db: TestDb,
    client: Client,
}

impl std::ops::Deref for Testq {
    type Target = Program;

    fn deref(&self) -> &Program {
        &self.program
    }
}

impl Testq {
    /// A fresh database and scratch directory named after the test, and a config
    /// for quick polls. Nothing is installed yet.
    pub async fn new(test: &str) -> Testq {
        let dir = Scratch::new(test);
        let db = TestDb::create().await;
        let client = db.connect().await;
        let program = Program::new(TESTQ, dir.path(), "testq", "");
        let mut testq = Testq {
            dir,
            program,
            config: toml::Table::new(),
            db,
            client,
        };
        let dsn = testq.db.dsn().to_string();
        let (pidfile, logfile) = (testq.pidfile(), testq.logfile());
        testq
            .set("db", dsn)
            .set("queue", QUEUE)
            .set("consumer", CONSUMER)
            .set("pidfile", pidfile.display().to_string())
            .set("logfile", logfile.display().to_string())
            .set("loglevel", "notice")
            .set("delay", 0.05);
        testq
    }

    /// As [`Testq::new`], then `testq install`.
    pub async fn installed(test: &str) -> Testq {
        let testq = Testq::new(test).await;
        testq.ok(&["install"]).await;
        testq
    }

    /// Sets a top-level config key and rewrites the config file.
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        self.config.insert(key.to_string(), value.into());
        self.write_config();
        self
    }

    /// Sets a key of `[settings]` (what testq's `config` gets) and rewrites the file.
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

    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("testq.pid")
    }

    /// `testq start`, which must say `testq started, pid N` with the pid now
    /// holding the pidfile. Returns the pid.
    pub async fn start(&self) -> u32 {
        let ran = self.ok(&["start"]).await;
        let pid = self.pid().expect("a started daemon holds its pidfile");
        assert_eq!(ran.stdout.trim(), format!("{CONSUMER} started, pid {pid}"), "{ran:?}");
        assert!(alive(pid), "pid {pid} runs");
        pid
    }

    /// The pid of the daemon holding (locking) the pidfile, if any.
    pub fn pid(&self) -> Option<u32> {
        locked_pid(&self.pidfile())
    }

    /// Polls `condition` until it holds; fails the test, showing the log, after
    /// [`PATIENCE`].
    pub async fn wait_until(&self, what: &str, mut condition: impl AsyncFnMut() -> bool) {
        let log = || format!("\n--- log:\n{}", self.log());
        poll(what, log, async || condition().await.then_some(())).await
    }

    /// Waits until the log has a line containing `text`.
    pub async fn wait_for_log(&self, text: &str) {
        self.wait_until(&format!("the log says `{text}`"), async || self.log().contains(text))
            .await;
    }

    /// Inserts events of the given types (data `payload N`), then ticks, so
    /// that they make one batch. Returns their ids.
    pub async fn produce(&self, types: &[&str]) -> Vec<i64> {
        let ids = queue::produce(&self.client, QUEUE, types).await;
        queue::tick(&self.client, QUEUE).await;
        ids
    }

    /// `n` plain events in one batch.
    pub async fn produce_plain(&self, n: usize) -> Vec<i64> {
        self.produce(&vec!["plain"; n]).await
    }

    /// The event ids in `testq_done`, in order, repeats included.
    pub async fn done(&self) -> Vec<i64> {
        queue::done(&self.client).await
    }

    /// The consumer's batch in flight (`pgq.get_consumer_info`'s `current_batch`).
    pub async fn current_batch(&self) -> Option<i64> {
        queue::current_batch(&self.client, QUEUE, CONSUMER).await
    }

    /// Waits until testq has processed at least one event of the batch in
    /// flight (its NOTICE `done: event N` line) and returns the batch.
    pub async fn batch_in_flight(&self, first_event: i64) -> i64 {
        self.wait_for_log(&format!("done: event {first_event} ")).await;
        self.current_batch().await.expect("a batch is in flight")
    }
}
