//! `mapreduce`: a pool of parallel workers with results (the job of
//! Worker-machine), on PgQ.
//!
//! A cooperative consumer: `mapreduce -c CONF run --subconsumer NAME` (or
//! `start --subconsumer NAME`) is one worker; start as many as you like, on
//! as many machines as reach the database. Each registers itself in the
//! group when it starts.
//!
//! `mapreduce -c CONF map --function F ARG...` enqueues one job per argument
//! (type F, the argument as data, the map's id and the argument's position in
//! `ev_extra1` and `ev_extra2`), waits for every result and prints
//! `ARG<TAB>RESULT` lines in argument order; a job that failed prints
//! `ARG<TAB>error: REASON` and makes `map` exit 1. A worker writes a job's
//! result into `mapreduce_results` in the batch's own transaction, so a
//! result is there exactly once, and only once its job is finished; `map`
//! polls that table and deletes its rows once printed. A map is registered
//! in `mapreduce_maps` while it waits; a result for a map no longer there
//! (a failed job put back with `retry` later) is not kept. `map --no-wait` only
//! enqueues: its jobs carry no map id and their results are only logged.
//!
//! A worker killed mid-job loses nothing: its batch is rolled back, and once
//! it has been silent for `dead_interval` seconds another worker takes the
//! batch over. A working worker is never silent (it heartbeats every third
//! of `dead_interval` while it processes a batch), so a job may take longer
//! than `dead_interval`.
//!
//! Parallelism comes from batches: the group hands each batch to one worker,
//! and a batch is what the ticker cut between two ticks. So `map` commits its
//! jobs a few at a time (`--per-batch`, by default spread to about four
//! batches per registered worker) and, between two commits, asks the ticker
//! for a tick (`pgq.force_tick`) and waits until it has ticked. It never
//! ticks itself: two tickers at once are not safe. Enqueueing so takes about
//! one ticker period per batch, while the workers already run.
//!
//! Functions: `sleep_echo` sleeps `[settings] sleep_ms` milliseconds
//! (default 1000) and returns its argument; `title` fetches a URL (`http://`
//! is added when there is no scheme) and returns its HTML title, giving up
//! after `[settings] http_timeout` seconds (default 10).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgq::NewEvent;
use pgq_consumers::{
    async_trait, failed, verbose, BoxError, Config, Consumer, Context, Database, Event, ExitCode, Outcome,
};
use pgq_examples::http;
use serde::Deserialize;
use tokio_postgres::Client;

/// The functions a worker knows.
const FUNCTIONS: &[&str] = &["sleep_echo", "title"];

const INSTALL: &str = "
create sequence if not exists mapreduce_map_id_seq;
create table if not exists mapreduce_maps (
    map_id     bigint primary key default nextval('mapreduce_map_id_seq'),
    started_at timestamptz not null default now()
);
create table if not exists mapreduce_results (
    map_id  bigint not null,
    idx     integer not null,
    ok      boolean not null,
    result  text not null,
    worker  text not null default current_setting('application_name'),
    done_at timestamptz not null default now(),
    primary key (map_id, idx)
);";

/// A result, kept only while its map waits (a failed job put back with
/// `retry` after its map ended leaves nothing behind).
const STORE: &str = "
insert into mapreduce_results (map_id, idx, ok, result)
select $1, $2, $3, $4 where exists (select 1 from mapreduce_maps where map_id = $1)
on conflict (map_id, idx) do update
   set ok = excluded.ok, result = excluded.result, worker = excluded.worker, done_at = excluded.done_at";

/// The longest `map` waits for the ticker to tick.
const TICK_PATIENCE: Duration = Duration::from_secs(30);

/// What `[settings]` says.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// What `sleep_echo` sleeps, in milliseconds.
    sleep_ms: u64,
    /// How long `title` waits for a page.
    #[serde(with = "pgq_consumers::seconds")]
    http_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            sleep_ms: 1000,
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// A worker.
struct Worker {
    sleep: Duration,
    http_timeout: Duration,
    client: Option<reqwest::Client>,
}

impl Worker {
    /// Runs a job: its result, or why it failed.
    async fn run(&self, function: &str, arg: &str) -> Result<String, String> {
        match function {
            "sleep_echo" => {
                tokio::time::sleep(self.sleep).await;
                Ok(arg.to_string())
            }
            "title" => {
                let client = self.client.as_ref().ok_or("the HTTP client is not configured")?;
                title(client, arg).await
            }
            other => Err(format!(
                "unknown function {other:?}; the functions are {}",
                FUNCTIONS.join(", ")
            )),
        }
    }
}

/// Fetches a page and returns its title.
async fn title(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let response = client.get(&url).send().await.map_err(|e| http::error_text(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let body = http::body_prefix(response, 1 << 20)
        .await
        .map_err(|e| http::error_text(&e))?;
    http::title_of(&String::from_utf8_lossy(&body)).ok_or_else(|| format!("{url} has no <title>"))
}

/// The map a job belongs to and its position there, when someone waits for it.
fn job_of(ev: &Event) -> Result<Option<(i64, i32)>, String> {
    match (&ev.ev_extra1, &ev.ev_extra2) {
        (Some(map), Some(idx)) => {
            let map = map.parse().map_err(|_| format!("ev_extra1 {map:?} is not a map id"))?;
            let idx = idx
                .parse()
                .map_err(|_| format!("ev_extra2 {idx:?} is not a position"))?;
            Ok(Some((map, idx)))
        }
        _ => Ok(None),
    }
}

#[async_trait]
impl Consumer for Worker {
    type Settings = Settings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let job = match job_of(ev) {
            Ok(job) => job,
            Err(e) => return Ok(Outcome::Failed(e)),
        };
        let result = self.run(ev.kind(), ev.data()).await;
        match job {
            Some((map, idx)) => {
                let (ok, text) = match &result {
                    Ok(r) => (true, r.as_str()),
                    Err(e) => (false, e.as_str()),
                };
                // In the batch's transaction: the result is there once, when the job is done.
                cx.db().execute(STORE, &[&map, &idx, &ok, &text]).await?;
            }
            None => verbose!("job {} {}({:?}): {:?}", ev.ev_id, ev.kind(), ev.data(), result),
        }
        Ok(match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Failed(e),
        })
    }

    async fn configure(&mut self, settings: Settings) -> Result<(), BoxError> {
        self.sleep = Duration::from_millis(settings.sleep_ms);
        let timeout = settings.http_timeout;
        if timeout.is_zero() {
            return Err("[settings] http_timeout must be more than 0 seconds".into());
        }
        if self.client.is_none() || timeout != self.http_timeout {
            self.client = Some(http::client(timeout, true)?);
            self.http_timeout = timeout;
        }
        Ok(())
    }

    async fn install(&mut self, db: &Client, _remote: Option<&Client>) -> Result<(), BoxError> {
        db.batch_execute(INSTALL).await?;
        Ok(())
    }
}

/// The commands `mapreduce` has besides the standard ones.
#[derive(Debug, clap::Subcommand)]
enum Extra {
    /// Enqueue one job per argument; wait for the results and print `ARG<TAB>RESULT` lines in argument order.
    Map {
        /// The function: sleep_echo or title.
        #[arg(long, short)]
        function: String,
        /// Enqueue and return; the results are only logged by the workers.
        #[arg(long)]
        no_wait: bool,
        /// Jobs per batch (default: about four batches per registered worker).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        per_batch: Option<u32>,
        /// Give up waiting after this many seconds (default: wait as long as it takes).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
        /// The arguments, one job each.
        #[arg(required = true, value_name = "ARG")]
        args: Vec<String>,
    },
}

async fn extra(command: Extra, config: Config) -> Result<(), BoxError> {
    let Extra::Map {
        function,
        no_wait,
        per_batch,
        timeout,
        args,
    } = command;
    if !FUNCTIONS.contains(&function.as_str()) {
        return Err(format!(
            "unknown function {function:?}; the functions are {}",
            FUNCTIONS.join(", ")
        )
        .into());
    }
    let deadline = match timeout {
        Some(t) => Some(Instant::now() + pgq_consumers::seconds::check("--timeout", t, true)?),
        None => None,
    };
    let mut db = pgq_consumers::connect(&config.db, &format!("{} map", config.consumer), Database::Queue).await?;
    if pgq::get_queue_info(&db, &config.queue).await?.is_none() {
        return Err(format!("queue {:?} does not exist: run `mapreduce install` first", config.queue).into());
    }
    let map_id = if no_wait {
        None
    } else {
        let row = db
            .query_one("insert into mapreduce_maps default values returning map_id", &[])
            .await
            .map_err(|e| format!("cannot start a map (did `mapreduce install` run?): {e}"))?;
        Some(row.try_get::<_, i64>(0)?)
    };
    let job = Map {
        function,
        args,
        map_id,
        per_batch: per_batch.map(|n| n as usize),
        deadline,
    };
    let outcome = job.run(&mut db, &config).await;
    if let Some(map_id) = map_id {
        // Whatever happened: the map's rows go, and late results are not kept.
        let tx = db.transaction().await?;
        tx.execute("delete from mapreduce_maps where map_id = $1", &[&map_id])
            .await?;
        tx.execute("delete from mapreduce_results where map_id = $1", &[&map_id])
            .await?;
        tx.commit().await?;
    }
    match outcome? {
        0 => Ok(()),
        n => Err(format!("{n} of {} jobs failed", job.args.len()).into()),
    }
}

/// One `map` command.
struct Map {
    function: String,
    args: Vec<String>,
    /// `None` for `--no-wait`.
    map_id: Option<i64>,
    per_batch: Option<usize>,
    deadline: Option<Instant>,
}

impl Map {
    /// Enqueues the jobs and, unless `--no-wait`, prints their results;
    /// returns how many jobs failed.
    async fn run(&self, db: &mut Client, config: &Config) -> Result<usize, BoxError> {
        let per_batch = match self.per_batch {
            Some(n) => n,
            None => {
                let workers = pgq_consumers::coop::info(&*db, &config.queue, &config.consumer)
                    .await?
                    .iter()
                    .filter(|w| !w.handed_back)
                    .count();
                self.args.len().div_ceil(4 * workers.max(1)).max(1)
            }
        };
        let jobs: Vec<NewEvent> = self
            .args
            .iter()
            .enumerate()
            .map(|(idx, arg)| NewEvent {
                ev_type: Some(self.function.clone()),
                ev_data: Some(arg.clone()),
                ev_extra1: self.map_id.map(|m| m.to_string()),
                ev_extra2: self.map_id.map(|_| idx.to_string()),
                ..NewEvent::default()
            })
            .collect();
        let mut ids = HashMap::new();
        let chunks: Vec<&[NewEvent]> = jobs.chunks(per_batch).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let tx = db.transaction().await?;
            let first = i * per_batch;
            for (k, id) in pgq::insert_events(&tx, &config.queue, chunk)
                .await?
                .into_iter()
                .enumerate()
            {
                ids.insert(id, first + k);
            }
            tx.commit().await?;
            let before = last_tick(db, &config.queue).await?;
            pgq::force_tick(&*db, &config.queue).await?;
            if i + 1 < chunks.len() {
                wait_for_tick(db, &config.queue, before).await?;
            }
        }
        match self.map_id {
            Some(map_id) => collect(db, config, map_id, &self.args, &ids, self.deadline).await,
            None => {
                pgq_daemon::errln!("{} jobs enqueued", jobs.len());
                Ok(0)
            }
        }
    }
}

/// The queue's last tick.
async fn last_tick(db: &Client, queue: &str) -> Result<Option<i64>, BoxError> {
    Ok(pgq::get_queue_info(db, queue).await?.and_then(|q| q.last_tick_id))
}

/// Waits until the queue has ticked after `before`.
async fn wait_for_tick(db: &Client, queue: &str, before: Option<i64>) -> Result<(), BoxError> {
    let start = Instant::now();
    while last_tick(db, queue).await? == before {
        if start.elapsed() > TICK_PATIENCE {
            return Err(format!(
                "queue {queue:?} did not tick within {}s: is a ticker (pgqd) running for this database?",
                TICK_PATIENCE.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Polls for the map's results, printing them in argument order as they
/// come; returns how many jobs failed. A job the framework failed without a
/// result (a worker's panic) is found in the failed-event store.
async fn collect(
    db: &Client,
    config: &Config,
    map_id: i64,
    args: &[String],
    ids: &HashMap<i64, usize>,
    deadline: Option<Instant>,
) -> Result<usize, BoxError> {
    let mut results: Vec<Option<(bool, String)>> = vec![None; args.len()];
    let (mut printed, mut failed, mut missing) = (0, 0, args.len());
    // Polls without a new result in a row: the pause grows with them.
    let mut idle_polls = 0u32;
    let mut store_checked = Instant::now();
    while missing > 0 {
        let rows = db
            .query(
                "select idx, ok, result from mapreduce_results where map_id = $1",
                &[&map_id],
            )
            .await?;
        for row in rows {
            let idx: i32 = row.try_get(0)?;
            if let Some(slot) = usize::try_from(idx).ok().and_then(|i| results.get_mut(i)) {
                if slot.is_none() {
                    *slot = Some((row.try_get(1)?, row.try_get(2)?));
                    missing -= 1;
                    idle_polls = 0;
                }
            }
        }
        if missing > 0 && store_checked.elapsed() > Duration::from_secs(2) {
            store_checked = Instant::now();
            let store: Vec<failed::FailedEvent> = failed::list(db, &config.queue, &config.consumer).await?;
            for f in store {
                if let Some(slot) = ids.get(&f.event.ev_id).and_then(|&i| results.get_mut(i)) {
                    if slot.is_none() {
                        *slot = Some((false, f.reason));
                        missing -= 1;
                    }
                }
            }
        }
        while let Some(Some((ok, result))) = results.get(printed) {
            if *ok {
                pgq_daemon::outln!("{}\t{result}", args[printed]);
            } else {
                pgq_daemon::outln!("{}\terror: {result}", args[printed]);
                failed += 1;
            }
            printed += 1;
        }
        if missing > 0 {
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(format!("gave up waiting: {missing} of {} results have not come", args.len()).into());
            }
            let pause = pgq_consumers::backoff(Duration::from_millis(20), idle_polls, Duration::from_millis(500));
            tokio::time::sleep(pause).await;
            idle_polls = idle_polls.saturating_add(1);
        }
    }
    Ok(failed)
}

fn main() -> ExitCode {
    pgq_consumers::main_with(
        || Worker {
            sleep: Duration::from_secs(1),
            http_timeout: Duration::ZERO,
            client: None,
        },
        extra,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_names_its_map_and_position() {
        let mut ev = Event {
            ev_id: 1,
            ev_time: Default::default(),
            ev_txid: 1,
            ev_retry: None,
            ev_type: Some("sleep_echo".into()),
            ev_data: Some("x".into()),
            ev_extra1: Some("7".into()),
            ev_extra2: Some("3".into()),
            ev_extra3: None,
            ev_extra4: None,
        };
        assert_eq!(job_of(&ev), Ok(Some((7, 3))));
        ev.ev_extra2 = Some("x".into());
        assert!(job_of(&ev).is_err());
        ev.ev_extra1 = None;
        assert_eq!(job_of(&ev), Ok(None));
    }
}
