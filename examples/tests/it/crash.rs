//! Crashes injected into `testq run --once` at every step between reading a
//! batch and committing it (`PGQ_CONSUMERS_CRASH_AT`, an abort as sudden as
//! `kill -9`), then a run without the crash: every event is applied exactly
//! once (`testq_done` has no unique constraint, so a duplicate would show),
//! and none is lost.

use pgq_test_support::TestDb;
use tokio_postgres::Client;

use crate::support::program::Ran;
use crate::support::queue::done;
use crate::support::testq::TestqDb;

const SIGABRT: i32 = 6;

/// testq installed as a remote consumer of the given mode, and its remote database.
async fn remote_testq(test: &str, mode: &str) -> (TestqDb, TestDb, Client) {
    let remote = TestDb::create_empty().await;
    let client = remote.connect().await;
    let mut testq = TestqDb::new(test).await.logging_to_stderr();
    testq.set("remote_db", remote.dsn()).setting("mode", mode);
    testq.ok(&["install"]).await;
    (testq, remote, client)
}

/// Two batches of plain events; returns the ids of each.
async fn two_batches(testq: &TestqDb) -> (Vec<i64>, Vec<i64>) {
    let first = testq.produce_batch(&["plain", "plain", "plain"]).await;
    let second = testq.produce_batch(&["plain", "plain"]).await;
    (first, second)
}

/// `run --once` with the crash point set: it must die at it.
async fn crash_at(testq: &TestqDb, point: &str) -> Ran {
    let ran = testq
        .run_with(&["run", "--once"], &[("PGQ_CONSUMERS_CRASH_AT", point)])
        .await;
    assert_eq!(ran.signal, Some(SIGABRT), "testq should abort at {point}: {ran:?}");
    assert!(ran.stderr.contains(&format!("crash point {point} reached")), "{ran:?}");
    ran
}

#[tokio::test]
async fn remote_crash_between_the_two_commits_never_applies_a_batch_twice() {
    for mode in ["remote", "remote_event"] {
        let (testq, _remote, rclient) = remote_testq(&format!("crash_between_{mode}"), mode).await;
        let (first, second) = two_batches(&testq).await;

        crash_at(&testq, "after-remote-commit").await;
        assert_eq!(
            done(&rclient).await,
            first,
            "{mode}: the remote side of the first batch committed"
        );
        assert!(testq.current_batch().await.is_some(), "{mode}: the queue side did not");

        let rerun = testq.ok(&["run", "--once"]).await;
        assert!(rerun.stderr.contains("already applied"), "{mode}: {rerun:?}");
        assert_eq!(
            done(&rclient).await,
            [first, second].concat(),
            "{mode}: every event exactly once"
        );
        assert!(
            testq.done().await.is_empty(),
            "{mode}: nothing written in the queue database"
        );
        assert_eq!(testq.current_batch().await, None);
    }
}

#[tokio::test]
async fn remote_crash_before_the_remote_commit_or_after_reading_the_batch_applies_it_once_later() {
    for point in ["batch-read", "before-remote-commit"] {
        let (testq, _remote, rclient) = remote_testq(&format!("crash_{point}"), "remote").await;
        let (first, second) = two_batches(&testq).await;

        crash_at(&testq, point).await;
        assert!(done(&rclient).await.is_empty(), "{point}: nothing committed");
        assert!(testq.current_batch().await.is_some(), "{point}: the batch stays open");

        let rerun = testq.ok(&["run", "--once"]).await;
        assert!(!rerun.stderr.contains("already applied"), "{point}: {rerun:?}");
        assert_eq!(done(&rclient).await, [first, second].concat(), "{point}");
    }
}

#[tokio::test]
async fn local_crash_before_the_commit_applies_the_batch_once_later() {
    let testq = TestqDb::installed("crash_local").await.logging_to_stderr();
    let (first, second) = two_batches(&testq).await;
    crash_at(&testq, "before-remote-commit").await;
    assert!(testq.done().await.is_empty());
    testq.ok(&["run", "--once"]).await;
    assert_eq!(testq.done().await, [&first[..], &second[..]].concat());

    // After the commit, a crash loses nothing and repeats nothing.
    let third = testq.produce_batch(&["plain"]).await;
    crash_at(&testq, "after-queue-commit").await;
    testq.ok(&["run", "--once"]).await;
    assert_eq!(testq.done().await, [&first[..], &second[..], &third[..]].concat());
}

#[tokio::test]
async fn remote_crash_between_the_two_commits_loses_no_failed_or_retried_event() {
    for mode in ["remote", "remote_event"] {
        let (testq, _remote, rclient) = remote_testq(&format!("crash_outcomes_{mode}"), mode).await;
        let ids = testq.produce_batch(&["plain", "fail", "retry", "panic", "plain"]).await;

        crash_at(&testq, "after-remote-commit").await;
        assert_eq!(done(&rclient).await, [ids[0], ids[4]], "{mode}");

        let rerun = testq.ok(&["run", "--once"]).await;
        assert!(rerun.stderr.contains("already applied"), "{mode}: {rerun:?}");
        let failed: Vec<(i64, String)> = testq.failed().await;
        assert_eq!(
            failed,
            [
                (ids[1], format!("testq: event {} has type fail", ids[1])),
                (ids[3], format!("panic: testq: event {} has type panic", ids[3])),
            ],
            "{mode}: the failed events of the batch are kept"
        );
        // The retried event comes back once due, and is applied once.
        testq.requeue_due_retries(1).await;
        testq.ok(&["run", "--once"]).await;
        assert_eq!(done(&rclient).await, [ids[0], ids[2], ids[4]], "{mode}");
    }
}
