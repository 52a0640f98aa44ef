//! Cascades over two PostgreSQL clusters: the root on the test server, the
//! branch (and leaf) on a second cluster (another server process and port).

use anyhow::{ensure, Result};
use pgq::node::NodeType;
use pgq_consumers::cascade::{Admin, Worker, WorkerConfig, WorkerRound};
use pgq_test_support::{Cluster, TestDb};
use tokio_postgres::Client;

pub const CQ: &str = "cq";

/// A root on the test server and a branch reading from it on the second
/// cluster, made with the admin commands.
pub struct Cascade {
    pub root: TestDb,
    pub branch: TestDb,
    pub rc: Client,
    pub bc: Client,
}

pub async fn root_and_branch() -> Result<Cascade> {
    let root = TestDb::create_node().await;
    let branch = TestDb::create_node_on(Cluster::shared().dsn()).await;
    Admin::connect(CQ, &root.dsn().into())
        .await?
        .create_root("root", root.dsn(), "root_w")
        .await?;
    Admin::connect(CQ, &branch.dsn().into())
        .await?
        .create_node(NodeType::Branch, "branch", branch.dsn(), "branch_w", root.dsn())
        .await?;
    let (rc, bc) = (root.connect().await, branch.connect().await);
    Ok(Cascade { root, branch, rc, bc })
}

pub async fn tick(c: &Client) -> Result<i64> {
    pgq::force_tick(c, CQ).await?;
    Ok(pgq::ticker_queue(c, CQ).await?.expect("a tick"))
}

/// The queue's events (id, type, data) in id order, from every event table.
pub async fn events(c: &Client) -> Result<Vec<(i64, String, String)>> {
    let table: String = c
        .query_one("select queue_data_pfx from pgq.queue where queue_name = $1", &[&CQ])
        .await?
        .try_get(0)?;
    let table = pgq::quote_qualified(&table)?;
    let rows = c
        .query(
            &format!("select ev_id, ev_type, coalesce(ev_data, '') from {table} where ev_type not like 'pgq.%' order by ev_id"),
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// The queue's ticks (id, event sequence), in order, from `from` on.
pub async fn ticks(c: &Client, from: i64) -> Result<Vec<(i64, i64)>> {
    let rows = c
        .query(
            "select t.tick_id, t.tick_event_seq from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
             where q.queue_name = $1 and t.tick_id >= $2 order by 1",
            &[&CQ, &from],
        )
        .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

#[tokio::test]
async fn a_branch_worker_copies_the_roots_batches_with_the_same_event_and_tick_ids() -> Result<()> {
    let c = root_and_branch().await?;
    let first = tick(&c.rc).await?;
    for tx in 0..3 {
        for i in 0..5 {
            pgq::insert_event(&c.rc, CQ, "t", &format!("{tx}.{i}")).await?;
        }
        tick(&c.rc).await?;
    }
    let mut worker = Worker::connect(WorkerConfig::new(CQ, c.branch.dsn())).await?;
    let copied = worker.catch_up().await?;
    ensure!(copied >= 4, "copied {copied} batches");
    assert_eq!(worker.round().await?, WorkerRound::Idle);

    let (root_events, branch_events) = (events(&c.rc).await?, events(&c.bc).await?);
    assert_eq!(root_events.len(), 15);
    assert_eq!(branch_events, root_events, "the same events with the same ids");
    assert_eq!(ticks(&c.bc, first).await?, ticks(&c.rc, first).await?, "the same ticks");

    // A consumer of the branch reads the root's batches, as batches.
    pgq::register_consumer(&c.bc, CQ, "reader").await?;
    pgq::insert_event(&c.rc, CQ, "t", "late").await?;
    let t = tick(&c.rc).await?;
    worker.catch_up().await?;
    let batch = pgq::next_batch_info(&c.bc, CQ, "reader")
        .await?
        .expect("a batch on the branch");
    assert_eq!(batch.cur_tick_id, t);
    let evs = pgq::get_batch_events(&c.bc, batch.batch_id).await?;
    let data: Vec<&str> = evs
        .iter()
        .filter(|e| !e.kind().starts_with("pgq."))
        .map(|e| e.data())
        .collect();
    assert_eq!(data, ["late"]);

    // The node's state and the provider's view of it.
    let st = pgq::node::get_worker_state(&c.bc, CQ).await?;
    assert_eq!(st.completed_tick, t);
    let info = pgq::get_consumer_info(&c.rc, CQ, "branch_w").await?;
    assert_eq!(
        info.and_then(|i| i.last_tick),
        Some(t),
        "the batch was finished on the root"
    );
    Ok(())
}

#[tokio::test]
async fn the_branch_learns_new_members_and_the_global_watermark_through_the_cascade() -> Result<()> {
    let c = root_and_branch().await?;
    let first = tick(&c.rc).await?;
    pgq::node::register_location(&c.rc, CQ, "other", "dbname=nowhere", false).await?;
    tick(&c.rc).await?;
    let mut config = WorkerConfig::new(CQ, c.branch.dsn());
    config.local_wm_period = std::time::Duration::ZERO;
    let mut worker = Worker::connect(config).await?;
    // The branch reports its position to the root after every batch.
    worker.catch_up().await?;
    let mut root_worker = Worker::connect(WorkerConfig::new(CQ, c.root.dsn())).await?;
    assert_eq!(root_worker.round().await?, WorkerRound::Root);
    let published = pgq::node::get_node_info(&c.rc, CQ).await?.global_watermark;
    assert!(published > Some(first), "{published:?}");
    tick(&c.rc).await?;
    worker.catch_up().await?;
    let locs = pgq::node::get_queue_locations(&c.bc, CQ).await?;
    assert!(locs
        .iter()
        .any(|l| l.node_name == "other" && l.node_location == "dbname=nowhere"));
    let info = pgq::node::get_node_info(&c.bc, CQ).await?;
    assert_eq!(info.global_watermark, published, "{info:?}");
    Ok(())
}

#[tokio::test]
async fn a_paused_worker_copies_nothing_until_resumed() -> Result<()> {
    let c = root_and_branch().await?;
    tick(&c.rc).await?;
    pgq::insert_event(&c.rc, CQ, "t", "x").await?;
    tick(&c.rc).await?;
    let admin = Admin::connect(CQ, &c.root.dsn().into()).await?;
    admin.set_paused("branch", None, true, None).await?;
    let mut worker = Worker::connect(WorkerConfig::new(CQ, c.branch.dsn())).await?;
    assert_eq!(worker.round().await?, WorkerRound::Paused);
    assert!(events(&c.bc).await?.is_empty());
    admin.set_paused("branch", None, false, None).await?;
    worker.catch_up().await?;
    assert_eq!(events(&c.bc).await?.len(), 1);
    Ok(())
}

/// Root (test server), branch (second cluster), leaf (test server).
pub async fn three_nodes() -> Result<(Cascade, TestDb, Client)> {
    let c = root_and_branch().await?;
    let leaf = TestDb::create_node().await;
    Admin::connect(CQ, &leaf.dsn().into())
        .await?
        .create_node(NodeType::Leaf, "leaf", leaf.dsn(), "leaf_w", c.branch.dsn())
        .await?;
    let lc = leaf.connect().await;
    lc.batch_execute("create table seen (ev_id bigint, data text)").await?;
    Ok((c, leaf, lc))
}

/// Writes every event it gets into `seen` on its target node.
pub struct Recorder;

#[pgq_consumers::async_trait]
impl pgq_consumers::Consumer for Recorder {
    type Settings = pgq_consumers::NoSettings;

    async fn process_event(
        &mut self,
        ev: &pgq::Event,
        cx: &mut pgq_consumers::Context<'_>,
    ) -> Result<pgq_consumers::Outcome, pgq_consumers::BoxError> {
        if ev.kind().starts_with("pgq.") {
            return Ok(pgq_consumers::Outcome::Ok);
        }
        cx.tx()
            .execute("insert into seen values ($1, $2)", &[&ev.ev_id, &ev.data()])
            .await?;
        Ok(pgq_consumers::Outcome::Ok)
    }
}

pub fn consumer_config(leaf: &TestDb) -> pgq_consumers::Config {
    let mut config = pgq_consumers::Config::new(leaf.dsn(), CQ, "rec");
    config.cascade = true;
    config
}

/// `(ev_id, data)` the recorder saw, in order.
pub async fn seen(lc: &Client) -> Result<Vec<(i64, String)>> {
    let rows = lc.query("select ev_id, data from seen order by ev_id", &[]).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

#[tokio::test]
async fn a_cascaded_consumer_on_a_leaf_gets_every_root_event_once_through_the_branch() -> Result<()> {
    let (c, leaf, lc) = three_nodes().await?;
    let config = consumer_config(&leaf);
    pgq_consumers::cascade::install_consumer(&config, "test").await?;
    let st = pgq::node::get_consumer_state(&lc, CQ, "rec").await?;
    assert_eq!(
        st.provider_node, "branch",
        "a leaf's consumer reads from the leaf's provider"
    );

    let mut worker = Worker::connect(WorkerConfig::new(CQ, c.branch.dsn())).await?;
    let mut consumer = pgq_consumers::BatchLoop::connect(Recorder, config).await?;
    let mut expected = Vec::new();
    for round in 0..3 {
        for i in 0..4 {
            let data = format!("{round}.{i}");
            let id = pgq::insert_event(&c.rc, CQ, "t", &data).await?;
            expected.push((id, data));
        }
        tick(&c.rc).await?;
        worker.catch_up().await?;
        consumer.consume_available().await?;
    }
    assert_eq!(seen(&lc).await?, expected, "every event once, in order");
    let st = pgq::node::get_consumer_state(&lc, CQ, "rec").await?;
    let last = pgq::node::get_worker_state(&c.bc, CQ).await?.completed_tick;
    assert_eq!(st.completed_tick, last, "the position is on the leaf");

    // Paused on its node, it takes nothing; resumed, it goes on.
    let admin = Admin::connect(CQ, &leaf.dsn().into()).await?;
    admin.set_paused("leaf", Some("rec"), true, None).await?;
    pgq::insert_event(&c.rc, CQ, "t", "after pause").await?;
    tick(&c.rc).await?;
    worker.catch_up().await?;
    assert!(consumer.consume_available().await?.is_empty());
    assert_eq!(seen(&lc).await?.len(), 12);
    admin.set_paused("leaf", Some("rec"), false, None).await?;
    consumer.consume_available().await?;
    assert_eq!(seen(&lc).await?.len(), 13);
    Ok(())
}

#[tokio::test]
async fn a_cascaded_consumer_follows_a_provider_change_losing_and_repeating_nothing() -> Result<()> {
    let (c, leaf, lc) = three_nodes().await?;
    let config = consumer_config(&leaf);
    pgq_consumers::cascade::install_consumer(&config, "test").await?;
    let mut worker = Worker::connect(WorkerConfig::new(CQ, c.branch.dsn())).await?;
    let mut consumer = pgq_consumers::BatchLoop::connect(Recorder, config).await?;
    for i in 0..3 {
        pgq::insert_event(&c.rc, CQ, "t", &format!("a{i}")).await?;
        tick(&c.rc).await?;
    }
    worker.catch_up().await?;
    consumer.round().await?;
    // Half way: the consumer now reads from the root.
    let admin = Admin::connect(CQ, &leaf.dsn().into()).await?;
    admin.change_provider("leaf", Some("rec"), "root", None).await?;
    for i in 0..3 {
        pgq::insert_event(&c.rc, CQ, "t", &format!("b{i}")).await?;
        tick(&c.rc).await?;
    }
    consumer.consume_available().await?;
    let got: Vec<String> = seen(&lc).await?.into_iter().map(|(_, d)| d).collect();
    assert_eq!(got, ["a0", "a1", "a2", "b0", "b1", "b2"]);
    assert_eq!(
        pgq::node::get_consumer_state(&lc, CQ, "rec").await?.provider_node,
        "root"
    );
    Ok(())
}

/// Runs a node's worker in the background until dropped.
pub struct Running(tokio::task::JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn run_worker(dsn: &str) -> Running {
    let mut config = WorkerConfig::new(CQ, dsn);
    config.local_wm_period = std::time::Duration::from_millis(200);
    config.global_wm_period = std::time::Duration::from_millis(200);
    Running(tokio::spawn(async move {
        let mut worker = None;
        loop {
            if worker.as_ref().is_none_or(Worker::is_broken) {
                worker = Worker::connect(config.clone()).await.ok();
            }
            if let Some(w) = &mut worker {
                if !matches!(w.round().await, Ok(WorkerRound::Copied { .. })) {
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                }
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }))
}

/// Ticks whatever queue of these nodes takes ticks, every 50 ms.
pub fn run_ticker(dsns: Vec<String>) -> Running {
    Running(tokio::spawn(async move {
        loop {
            for dsn in &dsns {
                if let Ok((c, conn)) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = pgq::force_tick(&c, CQ).await;
                    let _ = pgq::ticker(&c).await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }))
}

/// Runs the leaf's cascaded consumer in the background.
pub fn run_consumer(config: pgq_consumers::Config) -> Running {
    Running(tokio::spawn(async move {
        let mut consumer = None;
        loop {
            if consumer.is_none() {
                consumer = pgq_consumers::BatchLoop::connect(Recorder, config.clone()).await.ok();
            }
            if let Some(c) = &mut consumer {
                if c.consume_available().await.is_err() && c.is_broken() {
                    let _ = c.reconnect().await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    }))
}

pub async fn wait_seen(lc: &Client, expected: &[(i64, String)]) -> Vec<(i64, String)> {
    let want = expected.len();
    pgq_test_support::wait_for(
        "the leaf's consumer to catch up",
        std::time::Duration::from_secs(60),
        || async {
            let s = seen(lc).await.ok()?;
            (s.len() >= want).then_some(s)
        },
    )
    .await
}

#[tokio::test]
async fn switchover_with_events_flowing_moves_the_root_and_the_leaf_sees_every_event_once() -> Result<()> {
    let (c, leaf, lc) = three_nodes().await?;
    let config = consumer_config(&leaf);
    pgq_consumers::cascade::install_consumer(&config, "test").await?;
    let _workers = (run_worker(c.root.dsn()), run_worker(c.branch.dsn()));
    let _ticker = run_ticker(vec![c.root.dsn().to_string(), c.branch.dsn().to_string()]);
    let _consumer = run_consumer(config);

    // A producer writing to whichever node takes events.
    let producer = {
        let (r, b) = (c.root.connect().await, c.branch.connect().await);
        tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..200 {
                let data = format!("e{i}");
                loop {
                    if let Ok(id) = pgq::insert_event(&r, CQ, "t", &data).await {
                        done.push((id, data));
                        break;
                    }
                    if let Ok(id) = pgq::insert_event(&b, CQ, "t", &data).await {
                        done.push((id, data));
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            done
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let admin = Admin::connect(CQ, &c.root.dsn().into()).await?;
    admin.switchover("branch", std::time::Duration::from_secs(30)).await?;
    assert!(pgq::node::is_root_node(&c.bc, CQ).await?);
    assert!(!pgq::node::is_root_node(&c.rc, CQ).await?);
    let mut produced = producer.await?;
    produced.sort();
    assert_eq!(produced.len(), 200);
    let got = wait_seen(&lc, &produced).await;
    assert_eq!(got, produced, "every event once, whichever root took it");
    Ok(())
}

#[tokio::test]
async fn takeover_after_the_roots_cluster_stops_keeps_what_was_copied_and_loses_the_rest() -> Result<()> {
    let dead_cluster = Cluster::start();
    let root = TestDb::create_node_on(dead_cluster.dsn()).await;
    let branch = TestDb::create_node().await;
    let leaf = TestDb::create_node().await;
    Admin::connect(CQ, &root.dsn().into())
        .await?
        .create_root("root", root.dsn(), "root_w")
        .await?;
    Admin::connect(CQ, &branch.dsn().into())
        .await?
        .create_node(NodeType::Branch, "branch", branch.dsn(), "branch_w", root.dsn())
        .await?;
    Admin::connect(CQ, &leaf.dsn().into())
        .await?
        .create_node(NodeType::Leaf, "leaf", leaf.dsn(), "leaf_w", branch.dsn())
        .await?;
    let (rc, bc, lc) = (root.connect().await, branch.connect().await, leaf.connect().await);
    lc.batch_execute("create table seen (ev_id bigint, data text)").await?;
    let config = consumer_config(&leaf);
    pgq_consumers::cascade::install_consumer(&config, "test").await?;

    let mut copied = Vec::new();
    for i in 0..5 {
        let data = format!("copied{i}");
        copied.push((pgq::insert_event(&rc, CQ, "t", &data).await?, data));
    }
    tick(&rc).await?;
    let mut worker = Worker::connect(WorkerConfig::new(CQ, branch.dsn())).await?;
    worker.catch_up().await?;
    drop(worker);
    // Committed on the root, ticked, never copied: lost with the root.
    for i in 0..3 {
        pgq::insert_event(&rc, CQ, "t", &format!("lost{i}")).await?;
    }
    tick(&rc).await?;
    dead_cluster.stop();

    let _worker = run_worker(branch.dsn());
    let admin = Admin::connect(CQ, &branch.dsn().into()).await?;
    admin
        .takeover("root", "branch", std::time::Duration::from_secs(30))
        .await?;
    assert!(pgq::node::is_root_node(&bc, CQ).await?);
    let dead: Vec<bool> = pgq::node::get_queue_locations(&lc, CQ)
        .await?
        .into_iter()
        .filter(|l| l.node_name == "root")
        .map(|l| l.dead)
        .collect();
    assert_eq!(dead, [true], "the leaf knows the root is dead");

    let mut expected = copied;
    for i in 0..3 {
        let data = format!("new{i}");
        expected.push((pgq::insert_event(&bc, CQ, "t", &data).await?, data));
    }
    let _ticker = run_ticker(vec![branch.dsn().to_string()]);
    let _consumer = run_consumer(config);
    let got = wait_seen(&lc, &expected).await;
    assert_eq!(
        got, expected,
        "what was copied, once, then the new root's events; the rest is lost"
    );
    Ok(())
}
