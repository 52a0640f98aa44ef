//! `pgq_node`: every wrapper against the real extension, on databases of a
//! cascade (a root and a branch in two databases of the test server).

use anyhow::{ensure, Result};
use pgq::node::{self, NodeType};
use pgq_test_support::TestDb;
use tokio_postgres::Client;

use crate::tick;

const Q: &str = "cq";

struct Node {
    db: TestDb,
    c: Client,
}

async fn node_db() -> Node {
    let db = TestDb::create_node().await;
    let c = db.connect().await;
    Node { db, c }
}

/// A root `r` and a branch `b` reading from it, both with both locations.
async fn root_and_branch() -> Result<(Node, Node)> {
    let (root, branch) = (node_db().await, node_db().await);
    for n in [&root, &branch] {
        node::register_location(&n.c, Q, "r", root.db.dsn(), false).await?;
        node::register_location(&n.c, Q, "b", branch.db.dsn(), false).await?;
    }
    node::create_node(&root.c, Q, NodeType::Root, "r", "r_w", None, None, None).await?;
    let (reply, wm) = node::register_subscriber(&root.c, Q, "b", "b_w", None).await?;
    ensure!(reply.code == 200, "{reply:?}");
    let wm = wm.expect("a global watermark");
    node::create_node(&branch.c, Q, NodeType::Branch, "b", "b_w", Some("r"), Some(wm), None).await?;
    Ok((root, branch))
}

#[tokio::test]
async fn a_root_node_is_created_described_and_refused_twice() -> Result<()> {
    let n = node_db().await;
    assert_eq!(node::version(&n.c).await?, "3.5");
    assert_eq!(node::upgrade_schema(&n.c).await?, 0);
    let err = node::get_node_info(&n.c, Q).await.expect_err("no node yet");
    assert_eq!(err.node_code(), Some(404), "{err}");
    assert!(
        err.to_string()
            .contains("pgq_node.get_node_info refused for queue \"cq\": 404"),
        "{err}"
    );

    let reply = node::register_location(&n.c, Q, "r", "dbname=x", false).await?;
    assert_eq!(reply.code, 200);
    let reply = node::create_node(&n.c, Q, NodeType::Root, "r", "r_w", None, None, None).await?;
    assert_eq!(reply.code, 200, "{reply:?}");
    let err = node::create_node(&n.c, Q, NodeType::Root, "r", "r_w", None, None, None)
        .await
        .expect_err("created twice");
    assert_eq!(err.node_code(), Some(401));

    let info = node::get_node_info(&n.c, Q).await?;
    assert_eq!(info.node_type, NodeType::Root);
    assert_eq!(info.node_name, "r");
    assert_eq!(info.worker_name.as_deref(), Some("r_w"));
    assert_eq!(info.provider_node.as_deref(), Some("r"));
    assert_eq!(info.provider_location.as_deref(), Some("dbname=x"));
    assert!(info.global_watermark.is_some() && info.worker_last_tick.is_some());
    assert!(node::is_root_node(&n.c, Q).await?);
    assert!(!node::is_leaf_node(&n.c, Q).await?);

    let ws = node::get_worker_state(&n.c, Q).await?;
    assert_eq!((ws.node_type, ws.worker_name.as_str()), (NodeType::Root, "r_w"));
    assert_eq!(ws.provider_location, "dbname=x");
    assert!(ws.local_queue_top.is_some());

    node::set_node_attrs(&n.c, Q, "sync_watermark=a").await?;
    assert_eq!(
        node::get_node_info(&n.c, Q).await?.node_attrs.as_deref(),
        Some("sync_watermark=a")
    );

    // The root sends its members' locations down the cascade as events.
    let before: i64 = n.c.query_one("select count(*) from pgq.event_1", &[]).await?.get(0);
    assert_eq!(before, 0, "the location was registered before the root existed");
    node::register_location(&n.c, Q, "b", "dbname=y", false).await?;
    let n_events: i64 = n
        .c
        .query_one(
            "select count(*) from pgq.event_1 where ev_type = 'pgq.location-info' and ev_data = 'b' and ev_extra2 = 'dbname=y'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(n_events, 1);
    let mut locs = node::get_queue_locations(&n.c, Q).await?;
    locs.sort_by(|a, b| a.node_name.cmp(&b.node_name));
    assert_eq!(
        locs.iter().map(|l| (l.node_name.as_str(), l.dead)).collect::<Vec<_>>(),
        [("b", false), ("r", false)]
    );
    node::set_location_dead(&n.c, Q, "b", true).await?;
    let locs = node::get_queue_locations(&n.c, Q).await?;
    assert!(locs
        .iter()
        .any(|l| l.node_name == "b" && l.dead && l.node_location == "dbname=y"));
    let err = node::unregister_location(&n.c, Q, "r").await.expect_err("own location");
    assert_eq!(err.node_code(), Some(403));
    assert_eq!(node::unregister_location(&n.c, Q, "b").await?.code, 200);
    assert_eq!(node::get_queue_locations(&n.c, Q).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_branch_subscribes_to_the_root_and_watermarks_move_between_them() -> Result<()> {
    let (root, branch) = root_and_branch().await?;
    let subs = node::get_subscriber_info(&root.c, Q).await?;
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].node_name.as_str(), subs[0].worker_name.as_str()), ("b", "b_w"));

    // The branch's queue takes ticks from outside and no events of its own.
    let (ext, disabled): (bool, bool) = {
        let r = branch
            .c
            .query_one(
                "select queue_external_ticker, queue_disable_insert from pgq.queue where queue_name = $1",
                &[&Q],
            )
            .await?;
        (r.get(0), r.get(1))
    };
    assert!(ext && disabled);
    let ws = node::get_worker_state(&branch.c, Q).await?;
    assert_eq!((ws.node_type, ws.provider_node.as_str()), (NodeType::Branch, "r"));
    assert_eq!(ws.provider_location, root.db.dsn());
    let info = node::get_node_info(&branch.c, Q).await?;
    assert_eq!(info.global_watermark, Some(ws.completed_tick));

    let t1 = tick(&root.c, Q).await?;
    let t2 = tick(&root.c, Q).await?;
    assert_eq!(node::set_subscriber_watermark(&root.c, Q, "b", t2).await?.code, 200);
    assert_eq!(node::set_subscriber_watermark(&root.c, Q, "b", t2).await?.code, 100);
    let err = node::set_subscriber_watermark(&root.c, Q, "b", t1)
        .await
        .expect_err("backwards");
    assert_eq!(err.node_code(), Some(405));
    assert_eq!(node::get_subscriber_info(&root.c, Q).await?[0].node_watermark, Some(t2));

    // The root publishes its local watermark, as an event too.
    let reply = node::set_global_watermark(&root.c, Q, None).await?;
    assert_eq!(reply.code, 200, "{reply:?}");
    let n: i64 = root
        .c
        .query_one(
            "select count(*) from pgq.event_1 where ev_type = 'pgq.global-watermark'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(n, 1);
    assert_eq!(node::maint_watermark(&root.c, Q).await?, 0);
    // A branch skips a watermark whose tick it does not have.
    let reply = node::set_global_watermark(&branch.c, Q, Some(t2 + 100)).await?;
    assert!(reply.note.starts_with("Skipping"), "{reply:?}");
    let err = node::set_global_watermark(&branch.c, Q, None)
        .await
        .expect_err("null on a branch");
    assert_eq!(err.node_code(), Some(500));
    // No combined queue here.
    assert_eq!(node::set_partition_watermark(&branch.c, "comb", Q, t1).await?.code, 201);

    assert_eq!(node::unregister_subscriber(&root.c, Q, "b").await?.code, 200);
    assert!(node::get_subscriber_info(&root.c, Q).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_cascaded_consumers_state_is_kept_paused_completed_and_moved_on_its_target_node() -> Result<()> {
    let (_root, branch) = root_and_branch().await?;
    let c = &branch.c;
    let err = node::get_consumer_state(c, Q, "cons").await.expect_err("unknown");
    assert_eq!(err.node_code(), Some(404));
    assert_eq!(node::register_consumer(c, Q, "cons", "r", 5).await?.code, 200);
    assert_eq!(node::register_consumer(c, Q, "cons", "r", 5).await?.code, 201);
    let st = node::get_consumer_state(c, Q, "cons").await?;
    assert_eq!((st.completed_tick, st.provider_node.as_str()), (5, "r"));
    assert_eq!((st.node_type, st.node_name.as_str()), (NodeType::Branch, "b"));
    assert!(!st.paused && !st.uptodate && st.cur_error.is_none());

    node::set_consumer_paused(c, Q, "cons", true).await?;
    node::set_consumer_uptodate(c, Q, "cons", true).await?;
    node::set_consumer_error(c, Q, "cons", Some("boom")).await?;
    let st = node::get_consumer_state(c, Q, "cons").await?;
    assert!(st.paused && st.uptodate);
    assert_eq!(st.cur_error.as_deref(), Some("boom"));
    assert_eq!(node::set_consumer_error(c, Q, "nobody", Some("x")).await?.code, 101);

    assert_eq!(node::set_consumer_completed(c, Q, "cons", 7).await?.code, 100);
    let st = node::get_consumer_state(c, Q, "cons").await?;
    assert_eq!(st.completed_tick, 7);
    assert!(st.cur_error.is_none(), "completing clears the error");
    let err = node::set_consumer_completed(c, Q, "nobody", 7)
        .await
        .expect_err("unknown");
    assert_eq!(err.node_code(), Some(404));

    let err = node::change_consumer_provider(c, Q, "cons", "nowhere")
        .await
        .expect_err("no such node");
    assert_eq!(err.node_code(), Some(404));
    node::change_consumer_provider(c, Q, "cons", "b").await?;
    let infos = node::get_consumer_info(c, Q).await?;
    let cons = infos.iter().find(|i| i.consumer_name == "cons").expect("listed");
    assert_eq!((cons.provider_node.as_str(), cons.last_tick_id), ("b", 7));
    assert!(cons.paused && !cons.uptodate);
    assert!(
        infos.iter().any(|i| i.consumer_name == "b_w"),
        "the worker is listed too"
    );

    assert_eq!(node::unregister_consumer(c, Q, "cons").await?.code, 200);
    assert!(node::get_consumer_state(c, Q, "cons").await.is_err());
    Ok(())
}

#[tokio::test]
async fn the_root_is_demoted_in_three_steps_and_a_branch_promoted() -> Result<()> {
    let (root, branch) = root_and_branch().await?;
    let err = node::promote_branch(&root.c, Q).await.expect_err("root is no branch");
    assert_eq!(err.node_code(), Some(301));
    let err = node::demote_root(&branch.c, Q, 1, "r")
        .await
        .expect_err("branch is no root");
    assert_eq!(err.node_code(), Some(301));

    let (reply, _) = node::demote_root(&root.c, Q, 1, "b").await?;
    assert_eq!(reply.code, 200);
    let err = pgq::insert_event(&root.c, Q, "t", "x")
        .await
        .expect_err("writing disabled");
    assert!(matches!(err, pgq::Error::InsertDisabled { .. }), "{err}");
    let (_, last) = node::demote_root(&root.c, Q, 2, "b").await?;
    let last = last.expect("a last tick");
    let (_, last3) = node::demote_root(&root.c, Q, 3, "b").await?;
    assert_eq!(last3, Some(last));
    let info = node::get_node_info(&root.c, Q).await?;
    assert_eq!(
        (info.node_type, info.provider_node.as_deref()),
        (NodeType::Branch, Some("b"))
    );

    assert_eq!(node::promote_branch(&branch.c, Q).await?.code, 200);
    assert!(node::is_root_node(&branch.c, Q).await?);
    pgq::insert_event(&branch.c, Q, "t", "x").await?;
    Ok(())
}

#[tokio::test]
async fn drop_node_removes_a_node_here_and_its_subscription_on_the_provider() -> Result<()> {
    let (root, branch) = root_and_branch().await?;
    let err = node::drop_node(&branch.c, Q, "r").await.expect_err("the provider");
    assert_eq!(err.node_code(), Some(405));
    assert_eq!(node::drop_node(&root.c, Q, "b").await?.code, 200);
    assert!(node::get_subscriber_info(&root.c, Q).await?.is_empty());
    assert_eq!(node::drop_node(&branch.c, Q, "b").await?.code, 200);
    assert_eq!(
        node::get_node_info(&branch.c, Q).await.expect_err("gone").node_code(),
        Some(404)
    );
    let queues = pgq::get_queue_info_all(&branch.c).await?;
    assert!(
        queues.iter().all(|q| q.queue_name != Q),
        "the branch's queue is dropped"
    );
    Ok(())
}
