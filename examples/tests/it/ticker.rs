//! The ticker without pgqd: testq daemons with `[ticker] enabled = true`
//! tick their database themselves, one of them at a time, the other taking
//! over when the leader stops, the lock freed when both have; events from
//! the framework's producer reach the handler at once though `delay` is long;
//! and `pgq-ticker`, given pgqd's own ini file, ticks a database for a
//! consumer that has no ticker of its own.

use std::time::{Duration, Instant};

use pgq_test_support::server_dsn;
use tokio_postgres::Client;

use crate::support::program::Program;
use crate::support::queue::{done, produce_plain};
use crate::support::testq::{Testq, TestqDb, QUEUE};
use crate::support::{wait_for, Scratch};

/// `[ticker]` with short periods, so the test does not wait for defaults.
fn ticker() -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("enabled".into(), true.into());
    t.insert("ticker_period".into(), 0.2.into());
    t.insert("leader_check_period".into(), 0.2.into());
    toml::Value::Table(t)
}

/// The `application_name` of the connection that leads the ticking.
async fn leader(client: &Client) -> Option<String> {
    pgq_consumers::ticker::leader(client)
        .await
        .ok()
        .flatten()
        .map(|l| l.application_name)
}

/// Produces one event through `pgq::Producer` (which notifies the ticker).
async fn produce_notified(dsn: &str) {
    let mut client = pgq_test_support::connect(dsn).await;
    let mut producer = pgq::Producer::begin(&mut client, QUEUE).await.expect("begin");
    producer.send_event("plain", "notified").await.expect("send");
    producer.commit().await.expect("commit");
}

#[tokio::test]
async fn consumer_daemons_tick_their_database_one_at_a_time_and_hand_the_lead_over() {
    let mut a = TestqDb::installed("ticker_a").await;
    a.set("ticker", ticker()).set("delay", 5.0);
    // A second consumer daemon on the same database (its own queue).
    let mut b = Testq::new("ticker_b", a.db.dsn(), "testq_b", "testq_b");
    b.set("ticker", ticker()).set("delay", 5.0);
    b.ok(&["install"]).await;
    pgq::set_queue_config(&a.client, QUEUE, "ticker_max_lag", "0.5")
        .await
        .expect("set_queue_config");
    a.start().await;
    b.start().await;
    let first = wait_for("a daemon to lead", async || leader(&a.client).await).await;
    assert!(first == "testq ticker" || first == "testq_b ticker", "{first}");

    // A plain insert (no notification): the leader's periodic pass ticks it.
    let ids = produce_plain(&a.client, QUEUE, 5).await;
    a.wait_until("the plain events are done", async || done(&a.client).await == ids)
        .await;

    // Through the producer: the daemon hears of the tick, it does not wait
    // out its 5 s delay.
    let sent = Instant::now();
    produce_notified(a.db.dsn()).await;
    a.wait_until("the notified event is done", async || done(&a.client).await.len() == 6)
        .await;
    assert!(sent.elapsed() < Duration::from_secs(2), "{:?}", sent.elapsed());

    // The leader stops: the other daemon takes over.
    let (leader_daemon, other, other_name): (&Testq, &Testq, &str) = if first == "testq ticker" {
        (&a, &b, "testq_b ticker")
    } else {
        (&b, &a, "testq ticker")
    };
    leader_daemon.ok(&["stop"]).await;
    let took_over = Instant::now();
    wait_for("the other daemon to lead", async || {
        (leader(&a.client).await.as_deref() == Some(other_name)).then_some(())
    })
    .await;
    assert!(
        took_over.elapsed() < Duration::from_secs(5),
        "{:?}",
        took_over.elapsed()
    );

    // The ticker stops with its daemon: the lock is free.
    other.ok(&["stop"]).await;
    wait_for("the lock to be free", async || {
        leader(&a.client).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn pgq_ticker_reads_pgqds_ini_file_and_ticks_for_a_consumer() {
    let testq = TestqDb::installed("pgq_ticker_consumer").await;
    pgq::set_queue_config(&testq.client, QUEUE, "ticker_max_lag", "0.5")
        .await
        .expect("set_queue_config");
    let dir = Scratch::new("pgq_ticker");
    let dsn = server_dsn();
    let base: Vec<&str> = dsn.split_whitespace().filter(|kv| !kv.starts_with("dbname=")).collect();
    let ini = format!(
        "[pgqd]\nbase_connstr = {}\ndatabase_list = {}\nlogfile = {}\npidfile = {}\n\
         ticker_period = 0.2\nsyslog = 0\n",
        base.join(" "),
        testq.db.name(),
        dir.join("pgq-ticker.log").display(),
        dir.join("pgq-ticker.pid").display(),
    );
    let ticker = Program::new(env!("CARGO_BIN_EXE_pgq-ticker"), dir.path(), "pgq-ticker", &ini);
    ticker.ok(&["start"]).await;
    testq.start().await;
    let name = wait_for("pgq-ticker to lead", async || leader(&testq.client).await).await;
    assert_eq!(name, "pgq-ticker");
    let status = ticker.ok(&["status"]).await;
    let backend = pgq_consumers::ticker::leader(&testq.client)
        .await
        .expect("pg_locks")
        .expect("a leader")
        .pid;
    let process = std::fs::read_to_string(dir.join("pgq-ticker.pid")).expect("the pidfile");
    let mut lines = status.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("pgq-ticker is running, pid {}", process.trim()).as_str()),
        "first the process: {status:?}"
    );
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "database {}: ticked by the session of backend pid {backend} (application_name \"pgq-ticker\")",
                testq.db.name()
            )
            .as_str()
        ),
        "then the leading session, labelled: {status:?}"
    );

    let ids = produce_plain(&testq.client, QUEUE, 3).await;
    testq
        .wait_until("the events are done", async || done(&testq.client).await == ids)
        .await;

    testq.ok(&["stop"]).await;
    ticker.ok(&["stop"]).await;
    wait_for("the lock to be free", async || {
        leader(&testq.client).await.is_none().then_some(())
    })
    .await;
}
