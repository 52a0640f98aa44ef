//! `mapreduce`: a map over many jobs on several workers finishes in a
//! fraction of the serial time; with a worker killed mid-job, every result
//! still comes back; `title` against a local HTTP server; `--no-wait`.

use std::time::{Duration, Instant};

use pgq_test_support::{Pgqd, TestDb};

use crate::loopback::{Answer, HttpServer};
use crate::support::program::{Program, Running};
use crate::support::queue::count;
use crate::support::{wait_for, Scratch};

const MAPREDUCE: &str = env!("CARGO_BIN_EXE_mapreduce");
const WORKERS: usize = 4;
const JOBS: usize = 40;
const SLEEP_MS: u64 = 500;

/// The expected output of `map --function sleep_echo` over `args`.
fn echoed(args: &[String]) -> String {
    args.iter().map(|a| format!("{a}\t{a}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_runs_on_parallel_workers_and_survives_a_killed_one() {
    let db = TestDb::create().await;
    let _pgqd = Pgqd::start(&db, 0.1);
    let dir = Scratch::new("mapreduce");
    let config = format!(
        "db = {dsn:?}\nqueue = \"jobs\"\nconsumer = \"workers\"\npidfile = {pid:?}\n\
         delay = 0.1\ndead_interval = 3\n\n[settings]\nsleep_ms = {SLEEP_MS}\nhttp_timeout = 5\n",
        dsn = db.dsn(),
        pid = dir.join("worker.pid").display().to_string(),
    );
    let mr = Program::new(MAPREDUCE, dir.path(), "mapreduce", &config);
    mr.ok(&["install"]).await;

    // Workers register themselves, each with a pidfile of its own.
    let mut workers: Vec<Running> = (1..=WORKERS)
        .map(|i| {
            let name = format!("w{i}");
            mr.spawn(&["run", "--subconsumer", &name], &format!("{name}.log"), &[])
        })
        .collect();
    let client = db.connect().await;
    wait_for("the workers registered", async || {
        let n = pgq_consumers::coop::info(&client, "jobs", "workers")
            .await
            .map(|i| i.len())
            .unwrap_or(0);
        (n == WORKERS).then_some(())
    })
    .await;
    assert!(dir.join("worker.w1.pid").exists() && dir.join("worker.w4.pid").exists());

    // In parallel: well under half the serial time.
    let args: Vec<String> = (0..JOBS).map(|i| format!("job-{i}")).collect();
    let mut map = vec!["map", "--function", "sleep_echo"];
    map.extend(args.iter().map(String::as_str));
    let started = Instant::now();
    let ran = mr.ok(&map).await;
    let took = started.elapsed();
    assert_eq!(ran.stdout, echoed(&args));
    let serial = Duration::from_millis(SLEEP_MS) * JOBS as u32;
    assert!(took < serial / 2, "{took:?} for {serial:?} of serial work");

    // A worker killed mid-job: its batch goes to another one after dead_interval.
    let mut map_run = mr.spawn(&map, "map-2.log", &[]);
    let victim = wait_for("a worker holding a batch", async || {
        let info = pgq_consumers::coop::info(&client, "jobs", "workers").await.ok()?;
        info.into_iter().find(|w| w.batch_id.is_some()).map(|w| w.subconsumer)
    })
    .await;
    let index: usize = victim.trim_start_matches('w').parse().expect("a worker name");
    workers[index - 1].kill().await;
    assert_eq!(map_run.wait().await, Some(0), "{}", map_run.output());
    assert_eq!(map_run.output(), echoed(&args));
    let took_over = workers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index - 1)
        .any(|(_, w)| {
            w.output()
                .contains(&format!("took over the batch of sub-consumer {victim:?}"))
        });
    assert!(took_over, "no worker took over the batch of {victim}");

    // title, against a local server; a failed job prints its error and map exits 1.
    let server = HttpServer::start().await;
    server.answer(
        "/page",
        Answer {
            body: "<html><head><title>Hello &amp; welcome</title></head></html>".into(),
            ..Answer::status(200)
        },
    );
    let (page, missing) = (server.url("/page"), server.url("/missing"));
    let ran = mr.run(&["map", "--function", "title", &page, &missing]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!("{page}\tHello & welcome\n{missing}\terror: HTTP 404 Not Found\n")
    );
    assert!(ran.stderr.contains("1 of 2 jobs failed"), "{ran:?}");
    // The failed job is in `failed` too; retried after its map ended, it
    // fails again and leaves no result behind.
    let failed = mr.ok(&["failed"]).await;
    assert!(failed.stdout.contains("HTTP 404 Not Found"), "{failed:?}");
    mr.ok(&["retry", "all"]).await;
    wait_for("the retried job failed again", async || {
        let ran = mr.run(&["failed"]).await;
        ran.stdout.contains("HTTP 404 Not Found").then_some(())
    })
    .await;
    assert_eq!(server.seen("/missing").len(), 2);

    // Fire and forget.
    let ran = mr.ok(&["map", "--no-wait", "--function", "sleep_echo", "x", "y"]).await;
    assert!(
        ran.stdout.is_empty() && ran.stderr.contains("2 jobs enqueued"),
        "{ran:?}"
    );
    let bad = mr.run(&["map", "--function", "nope", "x"]).await;
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(bad.stderr.contains("unknown function \"nope\""), "{bad:?}");

    let left = count(&client, "mapreduce_results").await;
    assert_eq!(left, 0, "map deletes the results it printed");
    let maps = count(&client, "mapreduce_maps").await;
    assert_eq!(maps, 0, "a map is registered only while it waits");
    drop(workers);
}
