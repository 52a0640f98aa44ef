//! More PostgreSQL clusters for tests that need "another machine": another
//! server process on another port (cascades: a root on one, a branch on the
//! other; a takeover stops one).
//!
//! `scripts/with-postgres.sh` exports where its server's binaries are
//! (`PGQ_TEST_PGBIN`), a folder to put more clusters in (`PGQ_TEST_WORKDIR`),
//! and who owns them (`PGQ_TEST_PGUSER`, and `PGQ_TEST_RUNAS` when the tests
//! run as root, which PostgreSQL refuses to run as). A cluster is started
//! only when a test asks for one; the script stops every cluster in its
//! folder when the run ends, whatever happened. With a server of your own in
//! `PGQ_TEST_DSN`, set `PGQ_TEST_DSN2` to a second one for
//! [`Cluster::shared`].

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A PostgreSQL cluster of its own, started for tests.
pub struct Cluster {
    /// Its data directory, when this process started it.
    data: Option<PathBuf>,
    dsn: String,
    port: u16,
    /// Stopped by [`Cluster::stop`] or, for an owned one, when dropped.
    owned: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn missing(name: &str) -> ! {
    panic!(
        "{name} is not set, so this test cannot start a second PostgreSQL cluster. Run the \
         tests with `bash scripts/test.sh` (scripts/with-postgres.sh), which sets it, or set \
         PGQ_TEST_DSN2 to the connection string of a second server with pgq and pgq_node."
    )
}

/// Runs one of the server's programs, as the cluster's owner.
fn pg_command(program: &str) -> Command {
    let bindir = var("PGQ_TEST_PGBIN").unwrap_or_else(|| missing("PGQ_TEST_PGBIN"));
    let path = format!("{bindir}/{program}");
    match var("PGQ_TEST_RUNAS") {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", &user, "--", &path]);
            c
        }
        None => Command::new(path),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Cluster {
    /// Starts a new cluster (initdb, then the server on a free port), owned
    /// by the caller: it is stopped when dropped. Takes a few seconds.
    pub fn start() -> Cluster {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let workdir = var("PGQ_TEST_WORKDIR").unwrap_or_else(|| missing("PGQ_TEST_WORKDIR"));
        let user = var("PGQ_TEST_PGUSER").unwrap_or_else(|| missing("PGQ_TEST_PGUSER"));
        let dir = PathBuf::from(workdir).join(format!(
            "cluster-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let data = dir.join("data");
        let run = |mut c: Command, what: &str| {
            let out = c
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                out.status.success(),
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let mut initdb = pg_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", &user, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        // The folder must belong to the owner: made by initdb itself, in the
        // script's folder (which the owner may write).
        run(initdb, "initdb");
        let port = free_port();
        let mut start = pg_command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-w", "-o"])
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=100",
                data.display()
            ))
            .arg("start")
            .stdout(Stdio::null());
        run(start, "pg_ctl start");
        Cluster {
            data: Some(data),
            dsn: format!("host=127.0.0.1 port={port} user={user} dbname=postgres"),
            port,
            owned: true,
        }
    }

    /// The second cluster every test of this process shares (started on
    /// first use; `PGQ_TEST_DSN2` when set). Stopped by the script at the
    /// end of the run, never by a test.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| match var("PGQ_TEST_DSN2") {
            Some(dsn) => Cluster {
                data: None,
                port: 0,
                dsn,
                owned: false,
            },
            None => {
                let mut c = Cluster::start();
                c.owned = false;
                c
            }
        })
    }

    /// A connection string to the cluster's `postgres` database (append
    /// ` dbname=...` for another).
    pub fn dsn(&self) -> &str {
        &self.dsn
    }

    /// The port it listens on (0 when given by `PGQ_TEST_DSN2`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a machine
    /// that dies: connections break, nothing is shut down cleanly.
    pub fn stop(&self) {
        if let Some(data) = &self.data {
            let mut c = pg_command("pg_ctl");
            c.arg("-D")
                .arg(data)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = c.status();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            self.stop();
            if let Some(dir) = self.data.as_ref().and_then(|d| d.parent()) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
