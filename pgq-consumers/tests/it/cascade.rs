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
