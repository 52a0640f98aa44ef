//! A PostgreSQL cluster of one test's own, for faults that would disturb
//! every other test on the shared server (stopping it, restarting it) or
//! that need a setting of their own (password authentication).
//!
//! It runs the same major version as the shared test server (whose `pgq`
//! extension is installed), from `/usr/lib/postgresql/MAJOR/bin`, in a
//! temporary directory on a free port; as the `postgres` account when the
//! tests run as root, as `scripts/with-postgres.sh` does.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio_postgres::Client;

use crate::support::free_port;

pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    user: String,
    as_postgres: bool,
}

impl Cluster {
    /// initdb (trust for local connections, plus `hba` lines put first) and
    /// start; the cluster is stopped and removed when dropped.
    pub async fn start(name: &str, hba: &str) -> Cluster {
        let shared = pgq_test_support::connect(&pgq_test_support::server_dsn()).await;
        let version: String = shared
            .query_one("show server_version_num", &[])
            .await
            .expect("server_version_num")
            .get(0);
        let major = version.parse::<u32>().expect("a numeric server version") / 10000;
        let bindir = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
        assert!(
            bindir.join("initdb").exists(),
            "{} is missing: this test starts a PostgreSQL {major} cluster of its own, on the machine \
             the tests run on (install postgresql-{major} and postgresql-{major}-pgq3)",
            bindir.join("initdb").display()
        );
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("pgq-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        let user = if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&dir), "chown");
            "postgres".to_string()
        } else {
            String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id -un").stdout)
                .trim()
                .to_string()
        };
        let port = free_port();
        let cluster = Cluster {
            dir,
            bindir,
            port,
            user,
            as_postgres,
        };
        let data = cluster.data();
        cluster.pg(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                &cluster.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        if !hba.is_empty() {
            let path = Path::new(&data).join("pg_hba.conf");
            let old = std::fs::read_to_string(&path).expect("read pg_hba.conf");
            std::fs::write(&path, format!("{hba}\n{old}")).expect("write pg_hba.conf");
        }
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs a PostgreSQL program as the cluster's owner; panics with its output on failure.
    fn pg(&self, program: &str, args: &[&str]) {
        let exe = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args);
        run(&mut cmd, program);
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-o", &options, "start"],
        );
    }

    /// Starts the (stopped) server again.
    pub fn start_again(&self) {
        self.pg_ctl_start();
    }

    /// Stops the server (`fast`: clients are told and disconnected).
    pub fn stop(&self) {
        self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// A connection string for database `db`.
    pub fn dsn(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={} dbname={db}", self.port, self.user)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connects to database `db`.
    pub async fn connect(&self, db: &str) -> Client {
        pgq_test_support::connect(&self.dsn(db)).await
    }

    /// Creates database `db`, with the pgq extension when `pgq` is set.
    pub async fn create_db(&self, db: &str, pgq: bool) {
        let admin = self.connect("postgres").await;
        admin
            .batch_execute(&format!("create database {db}"))
            .await
            .expect("create database");
        if pgq {
            self.connect(db)
                .await
                .batch_execute("create extension pgq")
                .await
                .expect("create extension pgq");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let exe = self.bindir.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(exe)
                .args(args)
                .output()
        } else {
            Command::new(exe).args(args).output()
        };
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
