//! Cooperative testq through the real binary: sub-consumers started from
//! one config with `--subconsumer NAME` (each its own pidfile and log)
//! share the batches; one is killed with SIGKILL while it holds a batch,
//! and another takes the batch over after the dead interval (the timing of
//! the take-over is tested in pgq-consumers' `kinds` tests). Every event is
//! done exactly once.

use crate::support::process::locked_pid;
use crate::support::testq::{TestqDb, CONSUMER, QUEUE};

/// The sub-consumers of the group and the batch each holds.
async fn holders(testq: &TestqDb) -> Vec<(String, Option<i64>)> {
    pgq_consumers::coop::info(&testq.client, QUEUE, CONSUMER)
        .await
        .expect("subconsumer_info")
        .into_iter()
        .map(|i| (i.subconsumer, i.batch_id))
        .collect()
}

#[tokio::test]
async fn sub_consumers_share_the_batches_and_a_killed_ones_batch_is_taken_over_after_the_dead_interval() {
    let mut testq = TestqDb::new("coop").await;
    // a is slow: it will be killed in the middle of its first batch.
    testq.set("dead_interval", 1.0).setting("sleep_ms", 60_000);
    let install = testq.ok(&["install", "--subconsumer", "a"]).await;
    assert!(install.stdout.contains("sub-consumer \"a\""), "{install:?}");
    for sub in ["b", "c"] {
        testq.ok(&["register", "--subconsumer", sub]).await;
    }
    let check = testq.ok(&["check"]).await;
    assert!(check.stdout.contains("is registered"), "{check:?}");

    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.extend(testq.produce_batch(&["plain"; 5]).await);
    }

    testq.ok(&["start", "--subconsumer", "a"]).await;
    let a_pid = locked_pid(&testq.path("testq.a.pid")).expect("a's own pidfile");
    assert!(!testq.pidfile().exists(), "not the group's pidfile");
    testq
        .wait_until("a holds a batch", async || {
            holders(&testq).await.iter().any(|(s, b)| s == "a" && b.is_some())
        })
        .await;
    testq.kill9(a_pid).await;
    let a_batch = holders(&testq)
        .await
        .into_iter()
        .find(|(s, _)| s == "a")
        .and_then(|(_, b)| b);
    assert!(a_batch.is_some(), "a died holding its batch");
    assert!(testq.done().await.is_empty(), "a committed nothing");

    // b and c, quick ones, from the same config file.
    testq.setting("sleep_ms", 0);
    for sub in ["b", "c"] {
        testq.ok(&["start", "--subconsumer", sub]).await;
    }
    assert!(locked_pid(&testq.path("testq.b.pid")).is_some() && locked_pid(&testq.path("testq.c.pid")).is_some());
    testq
        .wait_until("every event is done", async || testq.done().await.len() >= ids.len())
        .await;
    assert_eq!(testq.done().await, ids, "every event exactly once");
    assert!(
        holders(&testq).await.iter().all(|(_, b)| b.is_none()),
        "no batch left held: {:?}",
        holders(&testq).await
    );
    let took_over = ["b", "c"].iter().any(|sub| {
        std::fs::read_to_string(testq.path(&format!("testq.{sub}.log")))
            .unwrap_or_default()
            .contains("took over the batch of sub-consumer \"a\"")
    });
    assert!(took_over, "the take-over is logged");

    // A running sub-consumer is found by its own pidfile.
    for command in [
        &["unregister", "--subconsumer", "b"][..],
        &["install", "--subconsumer", "b"],
    ] {
        let refused = testq.run(command).await;
        assert_eq!(refused.code, Some(4), "{command:?} while b runs: {refused:?}");
    }
    for sub in ["b", "c"] {
        let status = testq.ok(&["status", "--subconsumer", sub]).await;
        assert!(status.stdout.contains(&format!("subconsumer: {sub}")), "{status:?}");
        testq.ok(&["stop", "--subconsumer", sub]).await;
    }
    let stopped = testq.run(&["status", "--subconsumer", "b"]).await;
    assert_eq!(stopped.code, Some(4), "{stopped:?}");

    // Unregistering a sub-consumer leaves the group and the others alone.
    testq.ok(&["unregister", "--subconsumer", "a"]).await;
    let left: Vec<String> = holders(&testq).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(left, ["b", "c"]);
    assert_eq!(testq.done().await, ids);
}
