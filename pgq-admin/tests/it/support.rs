//! What the tests share: a database with the framework's schema and queues,
//! a consumer of ours running in the test, a Skytools Python consumer, pgqd,
//! and the `pgq-admin` binary.

use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use pgq_consumers::{async_trait, BatchLoop, BoxError, Config, Consumer, Context, Event, Outcome};
use pgq_test_support::TestDb;
use tokio_postgres::Client;

/// A database with PgQ and the framework's schema.
pub async fn framework_db() -> Result<(TestDb, Client)> {
    let db = TestDb::create().await;
    let client = db.connect().await;
    pgq_consumers::schema::install(&client).await?;
    Ok((db, client))
}

/// Creates `queue`, ticked promptly (events wait at most 0.1 s for a tick).
pub async fn queue(client: &Client, queue: &str) -> Result<()> {
    pgq::create_queue(client, queue).await?;
    pgq::set_queue_config(client, queue, "ticker_max_lag", "0.1 seconds").await?;
    Ok(())
}

/// Inserts an event and returns its id.
pub async fn insert(client: &Client, queue: &str, ev_type: &str, data: &str) -> Result<i64> {
    Ok(pgq::insert_event(client, queue, ev_type, data).await?)
}

/// What a consumer of ours saw: `(ev_id, ev_retry, ev_data)`.
pub type Seen = Arc<Mutex<Vec<(i64, i32, String)>>>;

/// A consumer of ours: events of type `bad` fail on their first delivery
/// and succeed when retried; every delivery is recorded.
struct Recorder(Seen);

#[async_trait]
impl Consumer for Recorder {
    type Settings = pgq_consumers::NoSettings;

    async fn process_event(&mut self, ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let retry = ev.ev_retry.unwrap_or(0);
        self.0.lock().unwrap().push((ev.ev_id, retry, ev.data().to_string()));
        if ev.kind() == "bad" && retry == 0 {
            return Ok(Outcome::Failed(format!("cannot handle {}", ev.data())));
        }
        Ok(Outcome::Ok)
    }
}

/// A consumer of ours running in the test until dropped.
pub struct Ours {
    task: tokio::task::JoinHandle<()>,
    /// Every delivery it saw.
    pub seen: Seen,
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Registers `consumer` on `queue` and runs it.
pub async fn ours(db: &TestDb, client: &Client, queue: &str, consumer: &str) -> Result<Ours> {
    pgq::register_consumer(client, queue, consumer).await?;
    let seen: Seen = Arc::default();
    let config = Config::new(db.dsn(), queue, consumer).with_delay(Duration::from_millis(100));
    let mut lp = BatchLoop::connect(Recorder(seen.clone()), config).await?;
    let task = tokio::spawn(async move {
        loop {
            if lp.consume_available().await.is_err() {
                let _ = lp.reconnect().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Ok(Ours { task, seen })
}

/// A child process killed when dropped.
pub struct Running(Child);

impl Running {
    /// Keeps `child` until dropped.
    pub fn new(child: Child) -> Running {
        Running(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Python, which has python3-pgq (not whatever python3 comes first in PATH).
const PYTHON: &str = "/usr/bin/python3";

/// A Skytools Python consumer (`pgq.Consumer` of python3-pgq) named
/// `consumer` on `queue`, registered first, running until dropped.
pub async fn python_consumer(db: &TestDb, client: &Client, queue: &str, consumer: &str) -> Result<Running> {
    pgq::register_consumer(client, queue, consumer).await?;
    let dir = std::env::temp_dir().join(format!("pgq-admin-py-{}-{consumer}", db.name()));
    std::fs::create_dir_all(&dir)?;
    let ini = dir.join("consumer.ini");
    std::fs::write(
        &ini,
        format!(
            "[{consumer}]\njob_name = {consumer}\ndb = {dsn}\nqueue_name = {queue}\nconsumer_name = {consumer}\n\
             logfile = {log}\npidfile = {pid}\nloop_delay = 0.1\n",
            dsn = db.dsn(),
            log = dir.join("consumer.log").display(),
            pid = dir.join("consumer.pid").display(),
        ),
    )?;
    let script = dir.join("consumer.py");
    std::fs::write(
        &script,
        "import sys, pgq\n\
         class C(pgq.Consumer):\n    def process_event(self, db, ev):\n        ev.tag_done()\n\
         C(sys.argv[1], 'db', sys.argv[2:]).start()\n",
    )?;
    let child = Command::new(PYTHON)
        .arg(&script)
        .arg(consumer)
        .arg(&ini)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the Python consumer (scripts/with-postgres.sh installs python3-pgq)")?;
    Ok(Running(child))
}

/// Runs `pgq-admin` with `args`, the environment's `PGQ_DB` removed.
pub fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgq-admin"))
        .args(args)
        .env_remove("PGQ_DB")
        .output()
        .unwrap()
}

/// `pgq-admin -d DSN --json ARGS...`'s JSON; panics unless it exits 0.
pub fn admin_json(dsn: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-d", dsn, "--json"];
    all.extend_from_slice(args);
    let out = admin(&all);
    assert!(
        out.status.success(),
        "pgq-admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The consumer `name` of `queue` in a `--json consumers` answer.
pub fn consumer<'a>(list: &'a serde_json::Value, queue: &str, name: &str) -> Option<&'a serde_json::Value> {
    list.as_array()?
        .iter()
        .find(|c| c["queue"] == queue && c["name"] == name)
}
