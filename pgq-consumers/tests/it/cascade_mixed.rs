//! Mixed cascades: Skytools' own Python parts (python3-pgq's CascadeAdmin,
//! CascadedWorker and CascadedConsumer, run by `py/cascade.py`) and ours on
//! nodes of one cascade.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{ensure, Context, Result};
use pgq_test_support::{Cluster, TestDb};
use tokio_postgres::Client;

use crate::cascade::{consumer_config, events, run_consumer, run_ticker, run_worker, seen, three_nodes, CQ};

/// Debian's Python, which has python3-pgq; `-I` keeps the repository's
/// `pgq/` folder from shadowing Debian's module.
const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/py/cascade.py");

/// A scratch directory for the Python parts' configs, logs and pidfiles.
struct Py {
    dir: PathBuf,
}

/// A Python daemon, killed when dropped.
struct PyDaemon(Child);

impl Drop for PyDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Py {
    fn new(test: &str) -> Result<Py> {
        let dir = std::env::temp_dir().join(format!("pgq-cascade-py-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Py { dir })
    }

    /// `cascade.py ROLE INI ARGS...` with the config of job `job` on `db`.
    fn command(&self, role: &str, job: &str, db: &TestDb, args: &[&str]) -> Result<Command> {
        let ini = self.dir.join(format!("{job}.ini"));
        std::fs::write(
            &ini,
            format!(
                "[cascade_{role}]\njob_name = {job}\ndb = {dsn}\nqueue_name = {CQ}\n\
                 logfile = {log}\npidfile = {pid}\nloop_delay = 0.05\n\
                 local_wm_publish_period = 1\nglobal_wm_publish_period = 1\n",
                dsn = db.dsn(),
                log = self.dir.join(format!("{job}.log")).display(),
                pid = self.dir.join(format!("{job}.pid")).display(),
            ),
        )?;
        let mut c = Command::new(PYTHON);
        c.args(["-I", SCRIPT, role]).arg(&ini).args(args).stdin(Stdio::null());
        Ok(c)
    }

    /// Runs a command to its end; fails unless it succeeds.
    fn run(&self, role: &str, job: &str, db: &TestDb, args: &[&str]) -> Result<()> {
        let out = self
            .command(role, job, db, args)?
            .output()
            .context("cannot run Python (scripts/with-postgres.sh installs python3-pgq)")?;
        ensure!(
            out.status.success(),
            "cascade.py {role} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Starts a worker or consumer in the background.
    fn spawn(&self, role: &str, job: &str, db: &TestDb) -> Result<PyDaemon> {
        let child = self
            .command(role, job, db, &[])?
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start Python (scripts/with-postgres.sh installs python3-pgq)")?;
        Ok(PyDaemon(child))
    }

    /// The log of job `job`, to show when a test fails.
    fn log(&self, job: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{job}.log"))).unwrap_or_default()
    }
}

/// Produces `n` events at the root, a few per transaction, while the
/// cascade runs; returns `(ev_id, data)` of each.
async fn produce(rc: &Client, n: usize) -> Result<Vec<(i64, String)>> {
    let mut produced = Vec::new();
    for i in 0..n {
        let data = format!("e{i}");
        produced.push((pgq::insert_event(rc, CQ, "t", &data).await?, data));
        if i % 10 == 9 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(produced)
}

/// Waits until `seen` has `want` rows (60 s at most), and returns them; on
/// timeout, fails showing `log()` (a Python part's log).
async fn wait_all(c: &Client, want: usize, log: impl Fn() -> String) -> Result<Vec<(i64, String)>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let s = seen(c).await?;
        if s.len() >= want {
            return Ok(s);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "after 60 s, {} of {want} events seen; the Python part's log:\n{}",
            s.len(),
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The queue's tick ids on a node.
async fn tick_ids(c: &Client) -> Result<Vec<i64>> {
    Ok(crate::cascade::ticks(c, 0)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// The root's tick ids over the span of a branch's ticks equal the branch's.
async fn same_ticks(root: &Client, branch: &Client, what: &str) -> Result<()> {
    let b = tick_ids(branch).await?;
    let (lo, hi) = (b[0], b[b.len() - 1]);
    let r: Vec<i64> = tick_ids(root)
        .await?
        .into_iter()
        .filter(|t| (lo..=hi).contains(t))
        .collect();
    ensure!(r == b, "{what}: the root's ticks {r:?}, the branch's {b:?}");
    Ok(())
}

#[tokio::test]
async fn a_cascade_made_by_skytools_admin_carries_events_through_a_python_branch_and_ours_to_our_consumer_once(
) -> Result<()> {
    let root = TestDb::create_node().await;
    let pybranch = TestDb::create_node_on(Cluster::shared().dsn()).await;
    let branch = TestDb::create_node().await;
    let py = Py::new("skytools_made")?;
    // Skytools' CascadeAdmin makes every node: root, its Python branch on
    // the second cluster, and our branch below that.
    py.run(
        "admin",
        "admin_root",
        &root,
        &["create-root", "root", root.dsn(), "--worker=root_w"],
    )?;
    let provider = format!("--provider={}", root.dsn());
    py.run(
        "admin",
        "admin_pybranch",
        &pybranch,
        &[
            "create-branch",
            "pybranch",
            pybranch.dsn(),
            "--worker=pybranch_w",
            &provider,
        ],
    )?;
    let provider = format!("--provider={}", pybranch.dsn());
    py.run(
        "admin",
        "admin_branch",
        &branch,
        &["create-branch", "branch", branch.dsn(), "--worker=branch_w", &provider],
    )?;
    let (rc, pc, bc) = (root.connect().await, pybranch.connect().await, branch.connect().await);
    bc.batch_execute("create table seen (ev_id bigint, data text)").await?;
    let config = consumer_config(&branch);
    pgq_consumers::cascade::install_consumer(&config, "test").await?;

    // Skytools' worker keeps the root and the Python branch; ours keeps our
    // branch, where our cascaded consumer reads.
    let _py_root = py.spawn("worker", "root_w", &root)?;
    let _py_branch = py.spawn("worker", "pybranch_w", &pybranch)?;
    let _worker = run_worker(branch.dsn());
    let _consumer = run_consumer(config);
    let _ticker = run_ticker(vec![root.dsn().to_string()]);

    let produced = produce(&rc, 300).await?;
    let got = wait_all(&bc, produced.len(), || py.log("pybranch_w")).await?;
    assert_eq!(got, produced, "every event once, in order");
    assert_eq!(seen(&bc).await?.len(), 300);

    // Both branches hold the root's events with the same ids, and its ticks.
    let root_events = events(&rc).await?;
    assert_eq!(root_events.len(), 300);
    assert_eq!(events(&pc).await?, root_events, "the Python branch");
    assert_eq!(events(&bc).await?, root_events, "our branch");
    same_ticks(&rc, &pc, "the Python branch").await?;
    same_ticks(&rc, &bc, "our branch").await?;
    // Our worker reports its position to the Python branch, like Skytools' does.
    let st = pgq::node::get_worker_state(&bc, CQ).await?;
    assert_eq!(st.provider_node, "pybranch");
    assert!(pgq::get_consumer_info(&pc, CQ, "branch_w").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn a_cascade_made_by_ours_feeds_a_skytools_cascaded_consumer_on_a_leaf_each_event_once() -> Result<()> {
    // Ours makes root, branch (second cluster) and leaf, and keeps them.
    let (c, leaf, lc) = three_nodes().await?;
    let py = Py::new("ours_made")?;
    // Skytools' CascadedConsumer on the leaf reads from the leaf's provider.
    let provider = format!("--provider={}", c.branch.dsn());
    py.run("consumer", "pyrec", &leaf, &["--register", &provider])?;
    let st = pgq::node::get_consumer_state(&lc, CQ, "pyrec").await?;
    assert_eq!(st.provider_node, "branch");
    let _py_consumer = py.spawn("consumer", "pyrec", &leaf)?;
    let _workers = (
        run_worker(c.root.dsn()),
        run_worker(c.branch.dsn()),
        run_worker(leaf.dsn()),
    );
    let _ticker = run_ticker(vec![c.root.dsn().to_string()]);

    let produced = produce(&c.rc, 300).await?;
    let got = wait_all(&lc, produced.len(), || py.log("pyrec")).await?;
    assert_eq!(got, produced, "every event once, in order");
    // Its position is kept on the leaf, at a tick our branch copied.
    let last = pgq::node::get_consumer_state(&lc, CQ, "pyrec").await?.completed_tick;
    let copied = crate::cascade::ticks(&c.bc, last).await?;
    assert_eq!(copied.first().map(|t| t.0), Some(last));
    Ok(())
}
