//! The real `testq` binary, driven as a user drives it: a config file (a TOML
//! table, rewritten on every change) in a scratch directory, commands run to
//! their end, daemons started, signalled and killed. [`Testq`] works against
//! any database; [`TestqDb`] brings a fresh database of its own, where the
//! queue is ticked by hand (so a test knows which events make a batch) unless
//! a test starts pgqd.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;

use pgq_test_support::TestDb;
use tokio_postgres::Client;

use super::process::{alive, locked_pid, signal};
use super::program::Program;
use super::{poll, queue, Scratch};

/// The `testq` binary Cargo built for these tests.
pub const TESTQ: &str = env!("CARGO_BIN_EXE_testq");
/// The queue of [`TestqDb`] (and of most tests).
pub const QUEUE: &str = "testq";
/// The consumer of [`TestqDb`] (and of most tests): the daemon's name in its
/// messages.
pub const CONSUMER: &str = "testq";

/// testq with its config file, pidfile and log in a scratch directory of
/// its own; runs as [`Program`] does (`run`, `ok`, `spawn`, `log`, ...).
pub struct Testq {
    dir: Scratch,
    program: Program,
    config: toml::Table,
}

impl Deref for Testq {
    type Target = Program;

    fn deref(&self) -> &Program {
        &self.program
    }
}

impl Testq {
    /// A config (`testq.toml`) for `queue` and `consumer` in database `db`,
    /// with its pidfile (`testq.pid`) in the scratch directory, logging at
    /// NOTICE to `testq.log` there, polling every 50 ms.
    pub fn new(test: &str, db: &str, queue: &str, consumer: &str) -> Testq {
        let dir = Scratch::new(test);
        let program = Program::new(TESTQ, dir.path(), "testq", "");
        let mut testq = Testq {
            dir,
            program,
            config: toml::Table::new(),
        };
        let (pidfile, logfile) = (testq.pidfile(), testq.logfile());
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
        self.rewrite_config();
        self
    }

    /// Sets a key of `[settings]` (testq's settings: `mode`,
    /// `sleep_ms`) and rewrites the config file.
    pub fn setting(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        let settings = self
            .config
            .entry("settings")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(table) = settings {
            table.insert(key.to_string(), value.into());
        }
        self.rewrite_config();
        self
    }

    /// Removes a top-level config key and rewrites the config file.
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.config.remove(key);
        self.rewrite_config();
        self
    }

    /// Removes a key of `[settings]` and rewrites the config file.
    pub fn unset_setting(&mut self, key: &str) -> &mut Self {
        if let Some(toml::Value::Table(settings)) = self.config.get_mut("settings") {
            settings.remove(key);
        }
        self.rewrite_config();
        self
    }

    /// Removes `logfile` from the config: `run` then logs to its standard
    /// error, as when cron runs `run --once` (and `start` refuses).
    pub fn log_to_stderr(&mut self) -> &mut Self {
        self.unset("logfile")
    }

    fn rewrite_config(&self) {
        let text = toml::to_string(&self.config).expect("serialize the config");
        self.program.write_config(&text);
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pidfile of the config (a daemon started with `--subconsumer SUB`
    /// has `testq.SUB.pid` instead).
    pub fn pidfile(&self) -> PathBuf {
        self.path("testq.pid")
    }

    /// The pid of the daemon holding (locking) [`Testq::pidfile`], if any.
    pub fn pid(&self) -> Option<u32> {
        locked_pid(&self.pidfile())
    }

    /// The daemon's name in its messages: the consumer, `CONSUMER.SUB` for a
    /// sub-consumer of the config.
    fn name(&self) -> String {
        let key = |k: &str| self.config.get(k).and_then(toml::Value::as_str);
        let consumer = key("consumer").unwrap_or_default();
        match key("subconsumer") {
            Some(sub) => format!("{consumer}.{sub}"),
            None => consumer.to_string(),
        }
    }

    /// `testq start`, which must say `NAME started, pid N` with N alive and
    /// holding the pidfile. Returns N.
    pub async fn start(&self) -> u32 {
        let ran = self.ok(&["start"]).await;
        let pid = self.pid().expect("a started daemon holds its pidfile");
        assert_eq!(
            ran.stdout.trim(),
            format!("{} started, pid {pid}", self.name()),
            "{ran:?}"
        );
        assert!(alive(pid), "pid {pid} runs");
        pid
    }

    /// Sends SIGKILL to a daemon and waits until it is gone: dead, and no
    /// longer holding a pidfile locked (a dying process's other threads may
    /// hold the lock for a moment after its main thread is a zombie).
    pub async fn kill9(&self, pid: u32) {
        signal(pid, "KILL");
        self.wait_until(&format!("pid {pid} is gone"), async || {
            !alive(pid) && self.dir.daemons().iter().all(|(_, holder)| *holder != pid)
        })
        .await;
    }

    /// Polls `condition` until it holds; fails the test, showing the log,
    /// after [`super::PATIENCE`].
    pub async fn wait_until(&self, what: &str, mut condition: impl AsyncFnMut() -> bool) {
        let log = || format!("\n--- log:\n{}", self.log());
        poll(what, log, async || condition().await.then_some(())).await
    }

    /// Waits until the log has `text`.
    pub async fn wait_for_log(&self, text: &str) {
        self.wait_for_log_n(text, 1).await;
    }

    /// Waits until the log has `text` at least `n` times.
    pub async fn wait_for_log_n(&self, text: &str, n: usize) {
        self.wait_until(&format!("the log says `{text}` {n} time(s)"), async || {
            self.log().matches(text).count() >= n
        })
        .await;
    }
}

/// [`Testq`] on a fresh database of its own, for queue [`QUEUE`] and consumer
/// [`CONSUMER`], with a connection to it.
pub struct TestqDb {
    /// testq (first, so that its daemons are killed before the database goes).
    testq: Testq,
    /// The queue database.
    pub db: TestDb,
    /// A connection to it.
    pub client: Client,
}

impl Deref for TestqDb {
    type Target = Testq;

    fn deref(&self) -> &Testq {
        &self.testq
    }
}

impl DerefMut for TestqDb {
    fn deref_mut(&mut self) -> &mut Testq {
        &mut self.testq
    }
}

impl TestqDb {
    /// A fresh database and scratch directory named after the test, and the
    /// config of [`Testq::new`]. Nothing is installed yet.
    pub async fn new(test: &str) -> TestqDb {
        let db = TestDb::create().await;
        let client = db.connect().await;
        let testq = Testq::new(test, db.dsn(), QUEUE, CONSUMER);
        TestqDb { testq, db, client }
    }

    /// As [`TestqDb::new`], then `testq install`, which must succeed.
    pub async fn installed(test: &str) -> TestqDb {
        let testq = TestqDb::new(test).await;
        testq.ok(&["install"]).await;
        testq
    }

    /// The same, with no log file: see [`Testq::log_to_stderr`].
    pub fn logging_to_stderr(mut self) -> TestqDb {
        self.log_to_stderr();
        self
    }

    /// Inserts events of these types (data `payload N`), in one transaction;
    /// returns their ids.
    pub async fn produce(&self, types: &[&str]) -> Vec<i64> {
        queue::produce(&self.client, QUEUE, types).await
    }

    /// Inserts events of these types, then ticks, so that they make one
    /// batch; returns their ids.
    pub async fn produce_batch(&self, types: &[&str]) -> Vec<i64> {
        let ids = self.produce(types).await;
        self.tick().await;
        ids
    }

    /// `n` plain events in one batch.
    pub async fn produce_plain_batch(&self, n: usize) -> Vec<i64> {
        queue::produce_plain_batch(&self.client, QUEUE, n).await
    }

    /// Makes the queue tick now (no pgqd).
    pub async fn tick(&self) {
        queue::tick(&self.client, QUEUE).await
    }

    /// Puts due retried events back into the queue, as pgqd's maintenance does.
    pub async fn maint_retry_events(&self) -> i32 {
        queue::maint_retry_events(&self.client).await
    }

    /// Waits until `n` retried events are due and puts them back into the
    /// queue, then ticks: what pgqd's maintenance and ticker would do.
    pub async fn requeue_due_retries(&self, n: i32) {
        let mut requeued = 0;
        self.wait_until(&format!("{n} retried event(s) are due"), async || {
            requeued += self.maint_retry_events().await;
            requeued >= n
        })
        .await;
        assert_eq!(requeued, n, "retried events put back");
        self.tick().await;
    }

    /// The ids in `testq_done`, in id order (a duplicate shows twice).
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

    /// Waits until testq has processed at least one event of the batch in
    /// flight (its NOTICE `done: event N` line) and returns the batch.
    pub async fn batch_in_flight(&self, first_event: i64) -> i64 {
        self.wait_for_log(&format!("done: event {first_event} ")).await;
        self.current_batch().await.expect("a batch is in flight")
    }

    /// Whether the queue exists and `consumer` is registered on it.
    pub async fn registered(&self, consumer: &str) -> bool {
        self.client
            .query_one(
                "select exists (select 1 from pgq.get_consumer_info() where queue_name = $1 and consumer_name = $2)",
                &[&QUEUE, &consumer],
            )
            .await
            .expect("get_consumer_info")
            .get(0)
    }

    /// Whether the queue exists.
    pub async fn queue_exists(&self) -> bool {
        pgq::get_queue_info(&self.client, QUEUE)
            .await
            .expect("get_queue_info")
            .is_some()
    }
}
