//! What an operator meets around a running consumer, through the real
//! binaries: a frozen ticker leader, a queue created again under a remote
//! consumer, a standard output closed under a command (`| head -1`), and
//! payloads too big for a log line.

use pgq_test_support::TestDb;

use crate::support::process::{alive, signal};
use crate::support::queue::count;
use crate::support::testq::{Testq, TestqDb, QUEUE};
use crate::support::wait_for;

/// The `[ticker]` table of a daemon that runs the embedded ticker, trying
/// for the lead every 0.2 s.
fn ticker_on() -> toml::Table {
    toml::toml! {
        enabled = true
        ticker_period = 0.2
        leader_check_period = 0.2
    }
}

/// The age of the queue's last tick, in seconds.
async fn tick_age(client: &tokio_postgres::Client) -> f64 {
    client
        .query_one(
            "select extract(epoch from ticker_lag)::float8 from pgq.get_queue_info($1)",
            &[&QUEUE],
        )
        .await
        .expect("get_queue_info")
        .get(0)
}

#[tokio::test]
async fn a_frozen_ticker_leader_keeps_the_lead_nobody_ticks_and_status_shows_the_leader_and_the_overdue_tick() {
    let mut first = TestqDb::installed("frozen_leader").await;
    first.set("ticker", ticker_on());
    first
        .client
        .execute(
            "select pgq.set_queue_config($1, 'ticker_max_lag', '1 second')",
            &[&QUEUE],
        )
        .await
        .expect("set ticker_max_lag");
    let mut second = Testq::new("frozen_follower", first.db.dsn(), QUEUE, "second");
    second.set("ticker", ticker_on());
    second.ok(&["install"]).await;

    let leader = first.start().await;
    let client = &first.client;
    wait_for("the first daemon leads", async || {
        let leading = pgq_consumers::ticker::leader(client).await.expect("ticker_leader")?;
        (leading.application_name == "testq ticker").then_some(())
    })
    .await;
    second.start().await;
    second.wait_for_log("another process leads").await;
    let ids = first.produce(&["plain"]).await;
    first
        .wait_until("the leader ticks and the event is done", async || {
            first.done().await.contains(&ids[0])
        })
        .await;

    // Frozen: its connection stays open, and the lock with it.
    signal(leader, "STOP");
    let waiting = first.produce(&["plain", "plain"]).await;
    wait_for(
        "the last tick is older than the queue's max lag and the slack",
        async || (tick_age(client).await > 7.0).then_some(()),
    )
    .await;
    let leading = pgq_consumers::ticker::leader(client)
        .await
        .expect("ticker_leader")
        .expect("a leader");
    assert_eq!(
        leading.application_name, "testq ticker",
        "the frozen daemon still leads"
    );
    assert!(
        !second.log().contains("leading"),
        "the other daemon did not take over:\n{}",
        second.log()
    );
    assert!(
        first.done().await.iter().all(|id| !waiting.contains(id)),
        "nothing was ticked"
    );
    let status = second.ok(&["status"]).await;
    assert!(
        status
            .stdout
            .contains(&format!("ticker: led by backend pid {} (testq ticker)", leading.pid)),
        "{status:?}"
    );
    let last_tick = status
        .stdout
        .lines()
        .find(|l| l.starts_with("last tick: "))
        .unwrap_or_default();
    assert!(last_tick.contains("overdue"), "{status:?}");

    // Resumed, it ticks again and everything is done.
    signal(leader, "CONT");
    first
        .wait_until("the waiting events are done", async || {
            let done = first.done().await;
            waiting.iter().all(|id| done.contains(id))
        })
        .await;
    let status = second.ok(&["status"]).await;
    assert!(!status.stdout.contains("overdue"), "{status:?}");
    second.ok(&["stop"]).await;
    first.ok(&["stop"]).await;
}

#[tokio::test]
async fn after_the_queue_is_created_again_forget_applied_yes_lets_a_remote_consumer_go_on() {
    let remote = TestDb::create_empty().await;
    let rclient = remote.connect().await;
    let mut testq = TestqDb::new("forget_applied").await;
    testq.set("remote_db", remote.dsn()).setting("mode", "remote");
    testq.ok(&["install"]).await;
    testq.produce_batch(&["plain", "plain"]).await;
    testq.ok(&["run", "--once"]).await;
    assert_eq!(count(&rclient, "testq_done").await, 2);

    // The queue goes and comes again: its tick ids start again at 1.
    testq.ok(&["uninstall"]).await;
    testq.ok(&["install"]).await;
    testq.produce_batch(&["plain", "plain", "plain"]).await;
    let ran = testq.run(&["run", "--once"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let log = testq.log();
    assert!(
        log.contains("contradicts what the remote database recorded; was the queue created again?")
            && log.contains("run its `forget-applied --yes` command"),
        "the error says what to do:\n{log}"
    );

    // Not without --yes, not while the daemon runs.
    let ran = testq.run(&["forget-applied"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("`forget-applied --yes`"), "{ran:?}");
    let pid = testq.start().await;
    let ran = testq.run(&["forget-applied", "--yes"]).await;
    assert_eq!(ran.code, Some(4), "refused while the daemon runs: {ran:?}");
    testq.ok(&["stop"]).await;
    assert!(!alive(pid));
    assert_eq!(count(&rclient, "testq_done").await, 2, "nothing applied meanwhile");

    let forgot = testq.ok(&["forget-applied", "--yes"]).await;
    assert!(
        forgot
            .stdout
            .contains("forgot 1 record(s) of batches consumer \"testq\" applied from queue \"testq\""),
        "{forgot:?}"
    );
    testq.ok(&["run", "--once"]).await;
    assert_eq!(
        count(&rclient, "testq_done").await,
        5,
        "the new queue's batch is applied once"
    );
}

#[tokio::test]
async fn a_closed_standard_output_ends_every_command_quietly_with_its_own_exit_code() {
    let testq = TestqDb::installed("closed_stdout").await;
    testq.produce_batch(&["plain", "fail"]).await;
    testq.ok(&["run", "--once"]).await;
    let pid = testq.start().await;
    let commands: [(&[&str], i32); 8] = [
        (&["status"], 0),
        (&["failed"], 0),
        (&["failed", "--json"], 0),
        (&["check"], 0),
        (&["install"], 4),
        (&["logmore"], 0),
        (&["--help"], 0),
        (&["stop"], 0),
    ];
    for (args, code) in commands {
        let ran = testq.run_with_stdout_closed(args).await;
        assert_eq!(ran.code, Some(code), "{args:?}: {ran:?}");
        for sign in ["panicked", "Broken pipe", "failed printing", "backtrace"] {
            assert!(!ran.stderr.contains(sign), "{args:?}: {ran:?}");
        }
    }
    assert!(!alive(pid), "stop did its work");
    let ran = testq.run_with_stdout_closed(&["status"]).await;
    assert_eq!(ran.code, Some(4), "not running: {ran:?}");
    assert!(ran.stderr.is_empty(), "{ran:?}");
}

#[tokio::test]
async fn testq_logs_a_bounded_prefix_of_a_huge_payload_with_its_length() {
    let testq = TestqDb::installed("huge_payload").await;
    // 1 MiB and a bit, with two-byte characters across the 200-byte cut.
    let payload = format!("a{}", "é".repeat(524_288));
    let id: i64 = testq
        .client
        .query_one("select pgq.insert_event($1, 'plain', $2)", &[&QUEUE, &payload])
        .await
        .expect("insert the event")
        .get(0);
    testq.tick().await;
    testq.ok(&["run", "--once"]).await;
    assert_eq!(testq.done().await, [id]);
    let log = testq.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("done: event {id} ")))
        .unwrap_or_else(|| panic!("no line for event {id}:\n{}", &log[..log.len().min(2000)]));
    assert!(line.len() < 400, "a short line: {} bytes", line.len());
    let shown = format!("data \"a{}\"... ({} bytes)", "é".repeat(99), payload.len());
    assert!(line.contains(&shown), "{line}");
}
