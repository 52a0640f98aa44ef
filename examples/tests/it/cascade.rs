//! `pgq-cascade` as a user runs it: the admin commands make a cascade and
//! report on it, and the node's worker, aborted at each step of copying a
//! batch (`PGQ_CONSUMERS_CRASH_AT`, as sudden as `kill -9`), leaves the
//! branch holding every event once, with the root's ids and ticks, after a
//! normal run.

use anyhow::{Context, Result};
use pgq_test_support::{Cluster, TestDb};
use tokio_postgres::Client;

use crate::support::program::{Program, Ran};
use crate::support::Scratch;

const CASCADE: &str = env!("CARGO_BIN_EXE_pgq-cascade");
const CQ: &str = "cq";
const SIGABRT: i32 = 6;

/// `pgq-cascade` with the config of node `name` (its database `db`, its
/// worker `NAME_w`).
fn node(dir: &Scratch, name: &str, db: &TestDb) -> Program {
    let toml = format!(
        "queue = {CQ:?}\ndb = {:?}\nworker = \"{name}_w\"\ndelay = 0.05\n",
        db.dsn()
    );
    Program::new(CASCADE, dir.path(), name, &toml)
}

/// The queue's events (id, data) in id order, from every event table, the
/// cascade's own left out.
async fn events(c: &Client) -> Result<Vec<(i64, String)>> {
    let table: String = c
        .query_one("select queue_data_pfx from pgq.queue where queue_name = $1", &[&CQ])
        .await?
        .try_get(0)?;
    let table = pgq::quote_qualified(&table)?;
    let sql = format!("select ev_id, ev_data from {table} where ev_type not like 'pgq.%' order by ev_id");
    let rows = c.query(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?)
}

/// The queue's ticks (id, event sequence), in order.
async fn ticks(c: &Client) -> Result<Vec<(i64, i64)>> {
    let rows = c
        .query(
            "select t.tick_id, t.tick_event_seq from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
             where q.queue_name = $1 order by 1",
            &[&CQ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?)
}

/// `n` events produced at the root and ticked: one batch.
async fn batch(rc: &Client, n: usize, tag: &str) -> Result<Vec<(i64, String)>> {
    let mut made = Vec::new();
    for i in 0..n {
        let data = format!("{tag}{i}");
        made.push((pgq::insert_event(rc, CQ, "t", &data).await?, data));
    }
    pgq::force_tick(rc, CQ).await?;
    pgq::ticker_queue(rc, CQ).await?;
    Ok(made)
}

/// The root's ticks from the branch's first one on.
async fn root_ticks_from(rc: &Client, from: i64) -> Result<Vec<(i64, i64)>> {
    Ok(ticks(rc).await?.into_iter().filter(|t| t.0 >= from).collect())
}

/// The tick the branch's worker last finished on the root.
async fn finished_on_root(rc: &Client) -> Result<Option<i64>> {
    Ok(pgq::get_consumer_info(rc, CQ, "branch_w")
        .await?
        .and_then(|i| i.last_tick))
}

fn ok(ran: &Ran, what: &str) {
    assert_eq!(ran.code, Some(0), "{what}: {ran:?}");
}

#[tokio::test]
async fn a_branch_worker_aborted_at_any_step_of_a_batch_holds_every_event_once_with_the_roots_ids_and_ticks_after_a_normal_run(
) -> Result<()> {
    let dir = Scratch::new("cascade_crash");
    let root = TestDb::create_node().await;
    let branch = TestDb::create_node_on(Cluster::shared().dsn()).await;
    let (rp, bp) = (node(&dir, "root", &root), node(&dir, "branch", &branch));
    ok(&rp.run(&["create-root", "root", root.dsn()]).await, "create-root");
    ok(
        &bp.run(&["create-branch", "branch", branch.dsn(), "--provider", root.dsn()])
            .await,
        "create-branch",
    );
    let (rc, bc) = (root.connect().await, branch.connect().await);
    let first = ticks(&bc)
        .await?
        .first()
        .map(|t| t.0)
        .context("the branch's first tick")?;
    let mut produced = Vec::new();

    for point in [
        "cascade-before-node-commit",
        "cascade-after-node-commit",
        "cascade-after-tick",
    ] {
        // Two batches waiting; the worker aborts in the first.
        let one = batch(&rc, 4, &format!("{point}-a")).await?;
        let two = batch(&rc, 3, &format!("{point}-b")).await?;
        let before = events(&bc).await?;
        let finished = finished_on_root(&rc).await?;
        let ran = bp
            .run_with(&["worker", "run", "--once"], &[("PGQ_CONSUMERS_CRASH_AT", point)])
            .await;
        assert_eq!(ran.signal, Some(SIGABRT), "{point}: the worker aborts: {ran:?}");
        assert!(ran.stderr.contains(&format!("crash point {point} reached")), "{ran:?}");

        // What the abort left behind.
        let after = events(&bc).await?;
        let tick_ids: Vec<i64> = ticks(&bc).await?.into_iter().map(|t| t.0).collect();
        let root_ids: Vec<i64> = root_ticks_from(&rc, first).await?.into_iter().map(|t| t.0).collect();
        assert_eq!(
            finished_on_root(&rc).await?,
            finished,
            "{point}: the batch is open on the root"
        );
        match point {
            "cascade-before-node-commit" => {
                assert_eq!(after, before, "{point}: nothing of the batch on the branch");
            }
            "cascade-after-node-commit" => {
                assert_eq!(
                    after,
                    [before.clone(), one.clone()].concat(),
                    "{point}: the events are there"
                );
                assert_eq!(
                    tick_ids.len() + 2,
                    root_ids.len(),
                    "{point}: the batch's tick is not: {tick_ids:?} {root_ids:?}"
                );
            }
            _ => {
                assert_eq!(
                    after,
                    [before.clone(), one.clone()].concat(),
                    "{point}: the events are there"
                );
                assert_eq!(
                    tick_ids.len() + 1,
                    root_ids.len(),
                    "{point}: and the batch's tick: {tick_ids:?} {root_ids:?}"
                );
            }
        }

        // A normal run makes it good, and copies the second batch too.
        ok(&bp.run(&["worker", "run", "--once"]).await, point);
        produced.extend(one);
        produced.extend(two);
        assert_eq!(
            events(&bc).await?,
            produced,
            "{point}: every event once, with the root's ids"
        );
        assert_eq!(events(&rc).await?, produced);
        assert_eq!(
            ticks(&bc).await?,
            root_ticks_from(&rc, first).await?,
            "{point}: the root's ticks, with the same ids and event sequences"
        );
        assert_eq!(
            finished_on_root(&rc).await?,
            ticks(&rc).await?.last().map(|t| t.0),
            "{point}: both batches finished on the root"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_admin_commands_make_a_root_branch_and_leaf_and_report_members_and_status() -> Result<()> {
    let dir = Scratch::new("cascade_admin");
    let root = TestDb::create_node().await;
    let branch = TestDb::create_node_on(Cluster::shared().dsn()).await;
    let leaf = TestDb::create_node().await;
    let (rp, bp, lp) = (
        node(&dir, "root", &root),
        node(&dir, "branch", &branch),
        node(&dir, "leaf", &leaf),
    );
    ok(&rp.run(&["create-root", "root", root.dsn()]).await, "create-root");
    ok(
        &bp.run(&["create-branch", "branch", branch.dsn(), "--provider", root.dsn()])
            .await,
        "create-branch",
    );
    ok(
        &lp.run(&["create-leaf", "leaf", leaf.dsn(), "--provider", branch.dsn()])
            .await,
        "create-leaf",
    );
    // A second create on a node is refused with the documented exit code.
    let again = rp.run(&["create-root", "root", root.dsn()]).await;
    assert_eq!(again.code, Some(1), "{again:?}");

    // Every node knows every member.
    for p in [&rp, &bp, &lp] {
        let ran = p.run(&["members"]).await;
        ok(&ran, "members");
        assert_eq!(ran.stdout, "branch\nleaf\nroot\n");
    }

    // Events flow root -> branch -> leaf with both workers run once.
    batch(&root.connect().await, 5, "e").await?;
    ok(&bp.run(&["worker", "run", "--once"]).await, "branch worker");
    ok(&lp.run(&["worker", "run", "--once"]).await, "leaf worker");
    let t = ticks(&root.connect().await)
        .await?
        .last()
        .map(|t| t.0)
        .context("a tick on the root")?;

    let ran = lp.run(&["status"]).await;
    ok(&ran, "status");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{ran:?}");
    assert!(
        lines[0].starts_with(&format!(
            "branch (branch): provider root, worker branch_w at tick {t}, lag "
        )),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "leaf (leaf): provider branch, worker leaf_w at tick {t}, lag "
        )),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("root (root): provider root, worker root_w at tick "),
        "{lines:?}"
    );

    // Paused, the status says so; resumed, it does not.
    ok(&rp.run(&["pause", "--node", "leaf", "--no-wait"]).await, "pause");
    let ran = rp.run(&["status"]).await;
    assert!(
        ran.stdout.lines().nth(1).is_some_and(|l| l.contains("paused")),
        "{ran:?}"
    );
    ok(&rp.run(&["resume", "--node", "leaf", "--no-wait"]).await, "resume");
    let ran = rp.run(&["status"]).await;
    assert!(!ran.stdout.contains("paused"), "{ran:?}");

    // Tagged dead, every member lists it so.
    ok(&rp.run(&["tag-dead", "leaf"]).await, "tag-dead");
    let ran = rp.run(&["members"]).await;
    assert_eq!(ran.stdout, "branch\nleaf (dead)\nroot\n");
    Ok(())
}
