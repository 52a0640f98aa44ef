//! Drives the real `testq` against any connection string (the shared test
//! server or a cluster of the test's own), as a daemon or a command, and
//! produces events into its queue.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::Client;

pub use crate::support::process::alive;
use crate::support::process::locked;
use crate::support::program::Program;
pub use crate::support::program::Ran;
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

/// Inserts `n` plain events into `queue` in one transaction; returns their ids.
pub async fn produce(client: &Client, queue: &str, n: usize) -> Vec<i64> {
    let types = vec!["plain".to_string(); n];
    client
        .query(
            "select pgq.insert_event($1, t, 'payload ' || n) as id
               from unnest($2::text[]) with ordinality as e(t, n) order by n",
            &[&queue, &types],
        )
        .await
        .expect("insert events")
        .iter()
        .map(|r| r.get::<_, i64>("id"))
        .collect()
}

/// Makes `queue` tick now.
pub async fn tick(client: &Client, queue: &str) {
    client
        .execute("select pgq.force_tick($1)", &[&queue])
        .await
        .expect("force_tick");
    client
        .execute("select pgq.ticker($1)", &[&queue])
        .await
        .expect("ticker");
}

/// The ids in `testq_done`, sorted (a duplicate shows twice).
pub async fn done(client: &Client) -> Vec<i64> {
    client
        .query("select ev_id from testq_done order by ev_id", &[])
        .await
        .expect("read testq_done")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// How many rows `testq_done` has.
pub async fn done_count(client: &Client) -> usize {
    let n: i64 = client
        .query_one("select count(*) from testq_done", &[])
        .await
        .expect("count testq_done")
        .get(0);
    usize::try_from(n).unwrap_or(0)
}

/// The batch a consumer holds, if any.
pub async fn current_batch(client: &Client, queue: &str, consumer: &str) -> Option<i64> {
    client
        .query_one(
            "select current_batch from pgq.get_consumer_info($1, $2)",
            &[&queue, &consumer],
        )
        .await
        .expect("get_consumer_info")
        .get(0)
}

/// A producer on a task of its own: `per_round` plain events in one
/// transaction every 20 ms until stopped (the ticker is someone else's job).
pub struct Producer {
    stop: Arc<AtomicBool>,
    ids: Arc<Mutex<Vec<i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    pub fn start(client: Client, queue: &str, per_round: usize) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (stop, ids, queue) = (Arc::clone(&stop), Arc::clone(&ids), queue.to_string());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let new = produce(&client, &queue, per_round).await;
                    ids.lock().expect("producer ids").extend(new);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Producer { stop, ids, task }
    }

    /// Stops producing; returns the ids of every event produced, sorted.
    pub async fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the producer task");
        let mut ids = self.ids.lock().expect("producer ids").clone();
        ids.sort_unstable();
        ids
    }
}
