//! `pgq-bench`: the framework's speed, measured through its real paths.
//!
//!     pgq-bench consume --db DSN --queue Q --consumer C [--write WAY [--table T] [--remote-db DSN]]
//!     pgq-bench produce --db DSN --queue Q --events N --mode single|bulk [--size BYTES]
//!     pgq-bench latency --db DSN --samples N
//!     pgq-bench idle --db DSN [--seconds S] [--daemons N]
//!     pgq-bench cascade --db DSN --queue Q
//!
//! `consume` drains every available batch through [`BatchLoop`] (the loop the
//! consumer daemons run) with a handler that does nothing, then prints
//! `events=N secs=S ev_per_s=R` (and, before it, `batches=N` and
//! `peak_rss_kib=N`). With `--write`, the handler writes one row per event
//! (`ev_id`, the payload) into table `T` (`bench_rows` unless `--table`) in
//! the batch's transaction: `execute` is the README's way
//! (`cx.tx().execute(sql, params)`), `pipelined` is `execute_pipelined`,
//! `insert` is `insert_row`, `copy` is `copy_row`. With `--remote-db`, the consumer is a remote one and
//! the table is in that database. `produce` inserts N events through [`pgq::Producer`]
//! in one transaction: one `send` per event (`single`), or binary COPY of
//! chunks of 10,000 (`bulk`); last line `events=N secs=S ev_per_s=R`.
//! `latency` creates a fresh database on the server of DSN, runs the
//! embedded ticker at its defaults and a consumer as the daemon runs it
//! (resting `delay` = 1 s between idle rounds unless a tick is notified),
//! produces one event at a time at a low rate and measures from the commit
//! to the handler; last line `samples=N p50_ms=X p99_ms=Y`. `idle` runs such
//! daemons (`--daemons N`, one ticker leading) in a fresh database with no
//! traffic and counts the transactions they cost it (`pg_stat_database`);
//! last line `daemons=N seconds=S transactions=N per_s=R`.
//!
//! `cascade` runs the cascade worker of the branch node DSN (the one
//! `pgq-cascade worker` runs) until its provider has no batch left, copying
//! every batch into the branch's queue; last line `events=N secs=S
//! ev_per_s=R` (and, before it, `batches=N`).
//!
//! `scripts/bench.sh` runs these side by side with Skytools' Python
//! framework and prints the ratios.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use pgq_consumers::{
    async_trait, connect, ticker, BatchLoop, BoxError, CommitMode, ConnString, Consumer, Context, Database, Event,
    Outcome, Round,
};
use tokio::sync::mpsc;

/// Benchmarks of the framework's consumer and producer paths.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Worker threads of the tokio runtime; 0 runs everything on one thread
    /// (a current-thread runtime).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drain every available batch with a no-op handler, or one that writes
    /// a row per event.
    Consume {
        /// Connection string of the queue database.
        #[arg(long)]
        db: String,
        /// The queue.
        #[arg(long)]
        queue: String,
        /// The consumer (registered already).
        #[arg(long)]
        consumer: String,
        /// How the handler writes its row per event.
        #[arg(long, value_enum, default_value_t = Write::None)]
        write: Write,
        /// The table written (`ev_id bigint, data text`).
        #[arg(long, default_value = "bench_rows")]
        table: String,
        /// A remote consumer, writing in this database.
        #[arg(long)]
        remote_db: Option<String>,
    },
    /// Insert events in one transaction.
    Produce {
        /// Connection string of the queue database.
        #[arg(long)]
        db: String,
        /// The queue (created already).
        #[arg(long)]
        queue: String,
        /// How many events.
        #[arg(long)]
        events: u64,
        /// One producer call per event, or binary COPY.
        #[arg(long, value_enum)]
        mode: Mode,
        /// Payload bytes per event.
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// Statements per second a consumer daemon with the embedded ticker
    /// costs the database when there is nothing to do.
    Idle {
        /// Connection string of a database on the server; a fresh database
        /// is created next to it and dropped afterwards.
        #[arg(long)]
        db: String,
        /// How long to count.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// How many daemons (each with a ticker; one leads).
        #[arg(long, default_value_t = 1)]
        daemons: usize,
        /// The consumers' `delay` (seconds between polls when idle).
        #[arg(long, default_value_t = 1.0)]
        delay: f64,
    },
    /// Copy every batch of a branch's provider into the branch, as the
    /// cascade worker does.
    Cascade {
        /// Connection string of the branch node.
        #[arg(long)]
        db: String,
        /// The cascaded queue.
        #[arg(long)]
        queue: String,
    },
    /// Commit-to-handler latency with the embedded ticker at its defaults.
    Latency {
        /// Connection string of a database on the server; a fresh database
        /// is created next to it and dropped afterwards.
        #[arg(long)]
        db: String,
        /// How many events to time.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Mean milliseconds between two events.
        #[arg(long, default_value_t = 50)]
        gap_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `Producer::send` per event.
    Single,
    /// `Producer::copy_in` (binary COPY).
    Bulk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Write {
    /// Nothing.
    None,
    /// `cx.tx().execute(sql, params)` per event, waited for.
    Execute,
    /// `cx.tx().execute_pipelined(sql, params)` per event.
    Pipelined,
    /// `cx.tx().insert_row(table, columns, values)` per event.
    Insert,
    /// `cx.tx().copy_row(table, columns, values)` per event.
    Copy,
}

/// The handler that does nothing (but note when the first event came), or
/// writes a row per event.
struct Noop {
    first: Option<Instant>,
    write: Write,
    /// The table, and the insert into it.
    table: String,
    insert: String,
}

impl Default for Noop {
    fn default() -> Noop {
        Noop {
            first: None,
            write: Write::None,
            table: String::new(),
            insert: String::new(),
        }
    }
}

impl Noop {
    fn writing(write: Write, table: &str) -> Result<Noop> {
        Ok(Noop {
            first: None,
            write,
            table: table.to_string(),
            insert: format!(
                "insert into {} (ev_id, data) values ($1, $2)",
                pgq::quote_qualified(table)?
            ),
        })
    }
}

/// The benchmark consumer's settings: its commit mode.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BenchSettings {
    #[serde(default)]
    mode: CommitMode,
}

#[async_trait]
impl Consumer for Noop {
    type Settings = BenchSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        if self.first.is_none() {
            self.first = Some(Instant::now());
        }
        match self.write {
            Write::None => {}
            Write::Execute => {
                cx.tx().execute(&self.insert, &[&ev.ev_id, &ev.data()]).await?;
            }
            Write::Pipelined => {
                cx.tx()
                    .execute_pipelined(&self.insert, &[&ev.ev_id, &ev.data()])
                    .await?
            }
            Write::Insert => {
                cx.tx()
                    .insert_row(&self.table, &["ev_id", "data"], &[&ev.ev_id, &ev.data()])
                    .await?
            }
            Write::Copy => {
                cx.tx()
                    .copy_row(&self.table, &["ev_id", "data"], &[&ev.ev_id, &ev.data()])
                    .await?
            }
        }
        Ok(Outcome::Ok)
    }

    fn commit_mode(settings: &BenchSettings) -> CommitMode {
        settings.mode
    }
}

fn config(db: &str, queue: &str, consumer: &str) -> pgq_consumers::Config {
    pgq_consumers::Config::new(db, queue, consumer)
}

/// The config of `consumer`, a remote one when `remote_db` is given.
fn remote_config(db: &str, remote_db: Option<&str>, queue: &str, consumer: &str) -> Result<pgq_consumers::Config> {
    let config = config(db, queue, consumer);
    Ok(match remote_db {
        Some(remote) => config
            .with_remote_db(remote)
            .with_settings(pgq_consumers::serde_json::json!({ "mode": "remote" }))?,
        None => config,
    })
}

async fn consume(
    db: &str,
    queue: &str,
    consumer: &str,
    write: Write,
    table: &str,
    remote_db: Option<&str>,
) -> Result<()> {
    // The framework's SQL, as `install` puts it (the loop checks for it).
    for dsn in std::iter::once(db).chain(remote_db) {
        let client = connect(&ConnString::new(dsn), "pgq-bench", Database::Queue).await?;
        pgq_consumers::schema::install(&client).await?;
    }
    let config = remote_config(db, remote_db, queue, consumer)?;
    let mut batches = BatchLoop::connect(Noop::writing(write, table)?, config).await?;
    let (mut events, mut count) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        match batches.round().await? {
            Round::Idle => break,
            Round::Finished(report) => {
                events += report.events;
                count += 1;
            }
            other => bail!("unexpected round: {other:?}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    pgq_daemon::outln!("batches={count}");
    if let Some(first) = batches.consumer().first {
        pgq_daemon::outln!(
            "first_event_ms={:.1}",
            first.duration_since(start).as_secs_f64() * 1000.0
        );
    }
    if let Some(kib) = peak_rss_kib() {
        pgq_daemon::outln!("peak_rss_kib={kib}");
    }
    report_rate(events, secs);
    Ok(())
}

async fn produce(db: &str, queue: &str, events: u64, mode: Mode, size: usize) -> Result<()> {
    let mut client = connect(&ConnString::new(db), "pgq-bench", Database::Queue).await?;
    let payload = "x".repeat(size);
    let start = Instant::now();
    let mut producer = pgq::Producer::begin(&mut client, queue).await?;
    match mode {
        Mode::Single => {
            for _ in 0..events {
                producer.send(pgq::NewEvent::new("bench", payload.clone())).await?;
            }
        }
        Mode::Bulk => {
            // Made as they are sent: one COPY, however many.
            producer
                .copy_in((0..events).map(|_| pgq::NewEvent::new("bench", payload.clone())))
                .await?;
        }
    }
    let sent = producer.commit().await?;
    let secs = start.elapsed().as_secs_f64();
    report_rate(sent, secs);
    Ok(())
}

/// Hands the time each event reached the handler to the bench.
struct Clock(mpsc::UnboundedSender<(String, Instant)>);

#[async_trait]
impl Consumer for Clock {
    type Settings = pgq_consumers::NoSettings;

    async fn process_event(&mut self, ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let _ = self.0.send((ev.data().to_string(), Instant::now()));
        Ok(Outcome::Ok)
    }
}

/// A database created for one measurement, dropped again by [`Fresh::drop_db`].
struct Fresh {
    admin: tokio_postgres::Client,
    name: String,
    dsn: String,
}

impl Fresh {
    /// Creates a database next to the one of `db`, with pgq, a queue and a
    /// registered consumer.
    async fn create(db: &str, what: &str) -> Result<Fresh> {
        let admin = connect(&ConnString::new(db), "pgq-bench", Database::Queue).await?;
        let name = format!("pgq_bench_{what}_{}", std::process::id());
        admin
            .batch_execute(&format!("create database {}", pgq::quote_ident(&name)?))
            .await?;
        let dsn = format!("{db} dbname={name}");
        let fresh = Fresh { admin, name, dsn };
        let client = connect(&ConnString::new(&fresh.dsn), "pgq-bench", Database::Queue).await?;
        client.batch_execute("create extension if not exists pgq").await?;
        pgq_consumers::schema::install(&client).await?;
        pgq::create_queue(&client, BENCH_QUEUE).await?;
        pgq::register_consumer(&client, BENCH_QUEUE, BENCH_CONSUMER).await?;
        Ok(fresh)
    }

    async fn drop_db(self) -> Result<()> {
        self.admin
            .batch_execute(&format!(
                "drop database if exists {} with (force)",
                pgq::quote_ident(&self.name)?
            ))
            .await?;
        Ok(())
    }

    /// Transactions committed or rolled back in the database so far, from
    /// the statistics (each statement outside a transaction is one).
    async fn transactions(&self) -> Result<i64> {
        let row = self
            .admin
            .query_one(
                "select xact_commit + xact_rollback from pg_stat_database where datname = $1",
                &[&self.name],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}

const BENCH_QUEUE: &str = "bench";
const BENCH_CONSUMER: &str = "bench";

/// The embedded ticker at its defaults, and a consumer as the daemon runs
/// it: rounds until idle, then a rest of `delay` that a notified tick ends.
async fn daemon_like<C: Consumer>(
    dsn: &str,
    name: &str,
    delay: f64,
    consumer: C,
) -> Result<(ticker::TickerTask, tokio::task::JoinHandle<()>)> {
    let ticker = ticker::TickerTask::spawn(
        ticker::Ticker::new(ConnString::new(dsn), ticker::TickerConfig::enabled()).label("bench"),
    );
    let config = config(dsn, BENCH_QUEUE, name);
    let delay = Duration::try_from_secs_f64(delay).unwrap_or(config.delay());
    let mut batches = BatchLoop::connect(consumer, config).await?;
    let task = tokio::spawn(async move {
        loop {
            loop {
                match batches.round().await {
                    Ok(Round::Idle) => break,
                    Ok(_) => {}
                    Err(e) => {
                        pgq_daemon::errln!("consumer: {e}");
                        break;
                    }
                }
            }
            tokio::select! {
                () = batches.wait_for_tick() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
    });
    Ok((ticker, task))
}

async fn latency(db: &str, samples: usize, gap_ms: u64) -> Result<()> {
    let fresh = Fresh::create(db, "latency").await?;
    let result = latency_in(&fresh.dsn, samples, gap_ms).await;
    fresh.drop_db().await?;
    let mut times = result?;
    times.sort_unstable();
    let pick = |p: f64| -> f64 {
        let i = ((times.len() as f64 - 1.0) * p).round() as usize;
        times.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    pgq_daemon::outln!(
        "samples={} p50_ms={:.1} p99_ms={:.1}",
        times.len(),
        pick(0.5),
        pick(0.99)
    );
    Ok(())
}

async fn latency_in(dsn: &str, samples: usize, gap_ms: u64) -> Result<Vec<Duration>> {
    let mut client = connect(&ConnString::new(dsn), "pgq-bench", Database::Queue).await?;
    let (sink, mut handled) = mpsc::unbounded_channel();
    let (ticker, consumer) = daemon_like(dsn, BENCH_CONSUMER, 1.0, Clock(sink)).await?;
    // Let the ticker lead and the first idle round pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut times = Vec::with_capacity(samples);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..samples {
        let mut producer = pgq::Producer::begin(&mut client, BENCH_QUEUE).await?;
        producer.send_event("latency", &i.to_string()).await?;
        producer.flush().await?;
        let committed = Instant::now();
        producer.commit().await?;
        let want = i.to_string();
        loop {
            let (data, at) = tokio::time::timeout(Duration::from_secs(10), handled.recv())
                .await
                .context("an event did not reach the handler within 10 s")?
                .context("the consumer stopped")?;
            if data == want {
                times.push(at.duration_since(committed));
                break;
            }
        }
        // A low, uneven rate: gap_ms on average.
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let jitter = (seed >> 33) % (gap_ms.max(1) + 1);
        tokio::time::sleep(Duration::from_millis(gap_ms / 2 + jitter)).await;
    }
    consumer.abort();
    ticker.stop().await;
    Ok(times)
}

async fn idle(db: &str, seconds: u64, daemons: usize, delay: f64) -> Result<()> {
    let fresh = Fresh::create(db, "idle").await?;
    let result = idle_in(&fresh, seconds, daemons, delay).await;
    fresh.drop_db().await?;
    let (secs, n) = result?;
    pgq_daemon::outln!(
        "daemons={daemons} delay={delay} seconds={secs:.1} transactions={n} per_s={:.2}",
        n as f64 / secs
    );
    Ok(())
}

async fn idle_in(fresh: &Fresh, seconds: u64, daemons: usize, delay: f64) -> Result<(f64, i64)> {
    let mut running = Vec::new();
    let client = connect(&ConnString::new(&fresh.dsn), "pgq-bench", Database::Queue).await?;
    for i in 0..daemons.max(1) {
        // A consumer of its own for each daemon, all on the one queue.
        let name = format!("{BENCH_CONSUMER}{i}");
        pgq::register_consumer(&client, BENCH_QUEUE, &name).await?;
        running.push(daemon_like(&fresh.dsn, &name, delay, Noop::default()).await?);
    }
    drop(client);
    // Past the start (first ticks, first maintenance, and the autovacuum
    // pass a new database gets within its first minute, which counts in its
    // statistics too), into the steady state.
    tokio::time::sleep(Duration::from_secs(70)).await;
    let (before, start) = (fresh.transactions().await?, Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (after, secs) = (fresh.transactions().await?, start.elapsed().as_secs_f64());
    for (ticker, consumer) in running {
        consumer.abort();
        ticker.stop().await;
    }
    Ok((secs, after - before))
}

async fn cascade(db: &str, queue: &str) -> Result<()> {
    use pgq_consumers::cascade::{Worker, WorkerConfig, WorkerRound};
    let mut worker = Worker::connect(WorkerConfig::new(queue, db))
        .await
        .context("cannot connect to the branch")?;
    let (mut events, mut batches) = (0, 0);
    let start = Instant::now();
    loop {
        match worker.round().await? {
            WorkerRound::Copied { events: n, .. } => {
                events += n;
                batches += 1;
            }
            WorkerRound::AlreadyDone { .. } => batches += 1,
            WorkerRound::Idle => break,
            other => bail!("the node is no branch with batches to copy: {other:?}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    pgq_daemon::outln!("batches={batches}");
    report_rate(events, secs);
    Ok(())
}

fn report_rate(events: u64, secs: f64) {
    let rate = if secs > 0.0 { events as f64 / secs } else { 0.0 };
    pgq_daemon::outln!("events={events} secs={secs:.3} ev_per_s={rate:.0}");
}

/// The process's peak resident set (VmHWM), from /proc.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = std::env::var("PGQ_BENCH_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(pgq_daemon::Level::Warning);
    // Warnings of the framework (a fallback from its fast path...) on stderr.
    let _log = pgq_daemon::init_logger(None, level);
    let mut builder = if cli.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cli.threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            pgq_daemon::errln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Consume {
                db,
                queue,
                consumer,
                write,
                table,
                remote_db,
            } => consume(&db, &queue, &consumer, write, &table, remote_db.as_deref()).await,
            Command::Produce {
                db,
                queue,
                events,
                mode,
                size,
            } => produce(&db, &queue, events, mode, size).await,
            Command::Cascade { db, queue } => cascade(&db, &queue).await,
            Command::Latency { db, samples, gap_ms } => latency(&db, samples, gap_ms).await,
            Command::Idle {
                db,
                seconds,
                daemons,
                delay,
            } => idle(&db, seconds, daemons, delay).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            pgq_daemon::errln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
