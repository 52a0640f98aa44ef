//! Fixtures shared by the workspace's integration tests.
//!
//! Besides the databases: [`Proxy`], a TCP proxy that can freeze (a silent
//! network), and [`Pgqd`], the stock ticker.
//!
//! The server comes from one environment variable, `PGQ_TEST_DSN`; the
//! project's `scripts/test.sh` starts a throwaway PostgreSQL with the pgq
//! extension and sets it. Every test gets a database of its own with the
//! extension created, dropped again when the fixture goes out of scope.
//!
//! ```no_run
//! # async fn demo() {
//! let db = pgq_test_support::TestDb::create().await;
//! let client = db.connect().await;
//! client.execute("select pgq.create_queue('q')", &[]).await.unwrap();
//! # }
//! ```
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};

mod cluster;
mod proxy;
pub use cluster::Cluster;
pub use proxy::Proxy;

/// The environment variable naming the test server.
pub const DSN_VAR: &str = "PGQ_TEST_DSN";

/// The test server's connection string; panics with directions when unset.
pub fn server_dsn() -> String {
    match std::env::var(DSN_VAR) {
        Ok(dsn) if !dsn.trim().is_empty() => dsn,
        _ => panic!(
            "{DSN_VAR} is not set, so there is no PostgreSQL to test against.\n\
             Run the tests with `bash scripts/test.sh`, which starts a throwaway PostgreSQL \
             with the pgq extension, or set {DSN_VAR} to a libpq connection string of a \
             server where the pgq extension is installed (the tests create databases there)."
        ),
    }
}

/// Connects to `dsn`, driving the connection on a spawned task.
pub async fn connect(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server ({dsn}): {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database created for one test, with the pgq extension installed.
pub struct TestDb {
    name: String,
    dsn: String,
    /// The server's connection string (its `postgres` database).
    server: String,
}

impl TestDb {
    /// Creates a fresh database with the pgq extension.
    pub async fn create() -> TestDb {
        let db = Self::create_empty().await;
        db.install_pgq().await;
        db
    }

    /// Creates a fresh database with the pgq extension whose encoding is
    /// `SQL_ASCII`, as legacy PgQ installations have: it stores text as bytes,
    /// whether they are UTF-8 or not.
    pub async fn create_sql_ascii() -> TestDb {
        let db = Self::new_database("encoding 'SQL_ASCII' template template0 lc_collate 'C' lc_ctype 'C'").await;
        db.install_pgq().await;
        db
    }

    /// Creates a fresh database with the pgq and pgq_node extensions (a
    /// node of a cascade) on the test server.
    pub async fn create_node() -> TestDb {
        Self::create_node_on(&server_dsn()).await
    }

    /// Creates a fresh database with the pgq and pgq_node extensions on
    /// the server of `server_dsn` (a [`Cluster`]'s, say).
    pub async fn create_node_on(server_dsn: &str) -> TestDb {
        let db = Self::new_database_on(server_dsn, "").await;
        db.install_pgq().await;
        db.install("pgq_node").await;
        db
    }

    async fn install(&self, extension: &str) {
        let client = self.connect().await;
        client
            .batch_execute(&format!("create extension if not exists {extension}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create the {extension} extension in {} (is postgresql-<major>-pgq-node installed?): {e:?}",
                    self.name
                )
            });
    }

    async fn install_pgq(&self) {
        let client = self.connect().await;
        // PgQ creates its roles (pgq_reader, ...) cluster-wide on first install;
        // databases created in parallel race on them, and the loser of the race
        // sees a unique violation. Once the roles exist, a retry succeeds.
        let mut attempt = 0;
        loop {
            match client.batch_execute("create extension if not exists pgq").await {
                Ok(()) => break,
                Err(e) if attempt < 5 && e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    attempt += 1;
                }
                Err(e) => panic!("cannot create the pgq extension in {}: {e:?}", self.name),
            }
        }
    }

    /// Creates a fresh database without any extension (a remote database, say).
    pub async fn create_empty() -> TestDb {
        Self::new_database("").await
    }

    /// Creates a fresh database, with `options` for `create database`.
    async fn new_database(options: &str) -> TestDb {
        Self::new_database_on(&server_dsn(), options).await
    }

    async fn new_database_on(server: &str, options: &str) -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "pgq_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let admin = connect(server).await;
        admin
            .batch_execute(&format!("create database {name} {options}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e:?}"));
        let dsn = format!("{server} dbname={name}");
        TestDb {
            name,
            dsn,
            server: server.to_string(),
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection string for this database.
    pub fn dsn(&self) -> &str {
        &self.dsn
    }

    /// A new connection to this database.
    pub async fn connect(&self) -> Client {
        connect(&self.dsn).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = self.server.clone();
        // A blocking client on a thread of its own: Drop cannot await, and the
        // test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&server, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("drop database if exists {name} with (force)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Polls `check` every 50 ms until it yields `Some`, panicking with `what`
/// once `timeout` has passed.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stock PgQ ticker, `pgqd`, running for one database until dropped.
pub struct Pgqd {
    child: Child,
    dir: PathBuf,
}

impl Pgqd {
    /// Starts pgqd for `db`, ticking every `ticker_period` seconds.
    pub fn start(db: &TestDb, ticker_period: f64) -> Pgqd {
        let dir = std::env::temp_dir().join(format!("pgqd-{}", db.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = server_dsn()
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect::<Vec<_>>()
            .join(" ");
        let conf = format!(
            "[pgqd]\nbase_connstr = {base}\ninitial_database = {db}\ndatabase_list = {db}\n\
             logfile = {log}\npidfile = {pid}\nticker_period = {ticker_period}\n\
             retry_period = 1\nmaint_period = 2\ncheck_period = 1\n",
            db = db.name(),
            log = dir.join("pgqd.log").display(),
            pid = dir.join("pgqd.pid").display(),
        );
        let conf_path = dir.join("pgqd.ini");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("pgqd")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pgqd ({e}): install it with `apt-get install pgqd`"));
        Pgqd { child, dir }
    }

    /// The folder holding pgqd's config, log and pidfile.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Pgqd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
