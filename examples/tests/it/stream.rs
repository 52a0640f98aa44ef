//! `collector` + `subscriber`: tens of thousands of records from TCP
//! clients that come and go, through the collector daemon, into the remote
//! `stream_items` table, with the subscriber killed (SIGKILL) and restarted
//! several times, once right between its remote and its queue commit: every
//! record ends there exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgq_test_support::{Pgqd, TestDb};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::program::Program;
use crate::support::queue::count;
use crate::support::{free_port, wait_for, Scratch};

const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector");
const SUBSCRIBER: &str = env!("CARGO_BIN_EXE_subscriber");

const CLIENTS: usize = 6;
const PER_CLIENT: usize = 5_000;

/// One client's records, sent in bursts, reconnecting halfway.
async fn send(addr: String, client: usize) {
    let mut stream = TcpStream::connect(&addr).await.expect("connect to the collector");
    for burst in 0..10 {
        if burst == 5 {
            // Clients come and go.
            stream.shutdown().await.expect("disconnect");
            stream = TcpStream::connect(&addr).await.expect("reconnect to the collector");
        }
        let mut text = String::new();
        for i in burst * PER_CLIENT / 10..(burst + 1) * PER_CLIENT / 10 {
            text.push_str(&format!("client {client} record {i}\n"));
        }
        stream.write_all(text.as_bytes()).await.expect("send records");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    stream.shutdown().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_stored_exactly_once_through_subscriber_crashes() {
    let db = TestDb::create().await;
    let remote = TestDb::create_empty().await;
    let _pgqd = Pgqd::start(&db, 0.1);
    let dir = Scratch::new("stream");
    let listen = format!("127.0.0.1:{}", free_port());
    let collector = Program::new(
        COLLECTOR,
        dir.path(),
        "collector",
        &format!(
            "db = {dsn:?}\nqueue = \"stream\"\nconsumer = \"collector\"\npidfile = {pid:?}\nlogfile = {log:?}\n\
             delay = 0.5\n\n[settings]\nlisten = {listen:?}\nbatch_size = 2000\n",
            dsn = db.dsn(),
            pid = dir.join("collector.pid").display().to_string(),
            log = dir.join("collector.log").display().to_string(),
        ),
    );
    let subscriber = Program::new(
        SUBSCRIBER,
        dir.path(),
        "subscriber",
        &format!(
            "db = {dsn:?}\nremote_db = {remote:?}\nqueue = \"stream\"\nconsumer = \"subscriber\"\n\
             delay = 0.05\nfetch_size = 500\n",
            dsn = db.dsn(),
            remote = remote.dsn(),
        ),
    );

    // Started before its queue exists, the collector says what to do.
    let early = collector.run(&["start"]).await;
    assert_eq!(early.code, Some(1), "{early:?}");
    assert!(early.stderr.contains("run `collector -c"), "{early:?}");

    collector.ok(&["install"]).await;
    subscriber.ok(&["install"]).await;
    collector.ok(&["start"]).await;
    let status = collector.ok(&["status"]).await;
    assert!(status.stdout.contains(&format!("listen: {listen}")), "{status:?}");

    let store = remote.connect().await;
    let stored = async || count(&store, "stream_items").await;

    let senders: Vec<_> = (0..CLIENTS).map(|c| tokio::spawn(send(listen.clone(), c))).collect();

    // The subscriber, killed several times while records stream in.
    for (round, pause) in [300u64, 500, 700, 400, 600].into_iter().enumerate() {
        let mut sub = subscriber.spawn(&["run"], &format!("subscriber-{round}.log"), &[]);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        sub.kill().await;
    }
    // Once right between the remote commit and the queue commit.
    let mut crashing = subscriber.spawn(
        &["run"],
        "subscriber-crash.log",
        &[("PGQ_CONSUMERS_CRASH_AT", "after-remote-commit")],
    );
    assert_eq!(
        crashing.wait().await,
        None,
        "the crash point aborts: {}",
        crashing.output()
    );
    for s in senders {
        s.await.expect("a client");
    }

    let before = stored().await;
    let mut last = subscriber.spawn(&["run"], "subscriber-last.log", &[]);
    let total = (CLIENTS * PER_CLIENT) as i64;
    wait_for("every record in stream_items", async || {
        (stored().await >= total).then_some(())
    })
    .await;
    // The batch committed remotely before the crash is finished, not applied again.
    wait_for("the crashed batch recognised", async || {
        last.output()
            .contains("was already applied to the remote database")
            .then_some(())
    })
    .await;

    // A record sent now is committed promptly.
    let sent = Instant::now();
    let mut one = TcpStream::connect(&listen).await.expect("connect");
    one.write_all(b"the last one\r\n").await.expect("send");
    one.shutdown().await.expect("disconnect");
    wait_for("the last record", async || (stored().await == total + 1).then_some(())).await;
    assert!(sent.elapsed() < Duration::from_secs(5), "{:?}", sent.elapsed());
    last.kill().await;

    // Exactly once: every record, no duplicate event, no duplicate record.
    let rows = store
        .query("select ev_id, data from stream_items", &[])
        .await
        .expect("read stream_items");
    assert_eq!(rows.len() as i64, total + 1, "{before} before the last run");
    let mut by_data: HashMap<String, usize> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for r in &rows {
        let id: i64 = r.get(0);
        assert!(ids.insert(id), "event {id} stored twice");
        *by_data.entry(r.get(1)).or_default() += 1;
    }
    for c in 0..CLIENTS {
        for i in 0..PER_CLIENT {
            let key = format!("client {c} record {i}");
            assert_eq!(by_data.get(&key), Some(&1), "{key}");
        }
    }
    assert_eq!(
        by_data.get("the last one"),
        Some(&1),
        "a CR before the newline is not data"
    );

    // A reload re-reads the config; the listener stays.
    collector.ok(&["reload"]).await;
    wait_for("the reload", async || {
        let log = std::fs::read_to_string(dir.join("collector.log")).unwrap_or_default();
        log.contains("NOTICE reloaded").then_some(())
    })
    .await;
    collector.ok(&["stop"]).await;
    let stopped = collector.run(&["status"]).await;
    assert_eq!(stopped.code, Some(4), "{stopped:?}");
}
