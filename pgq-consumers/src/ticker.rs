//! The ticker, embedded: what `pgqd` does for a database, as a task of any
//! consumer daemon (`[ticker] enabled = true`) or of the standalone
//! `pgq-ticker`.
//!
//! Every daemon that runs one contends for a session advisory lock of the
//! database; the one holding it leads and ticks, the others try again every
//! `leader_check_period`. When the leader dies its connection closes, the
//! lock goes with it, and another daemon takes over at its next try.
//!
//! The leader does what pgqd does, each step in its own transaction:
//! `pgq.ticker` for every queue every `ticker_period` (a queue gets a tick
//! once enough events or time have passed, by its own thresholds),
//! `pgq.maint_retry_events` every `retry_period` (until it returns 0), and
//! every step `pgq.maint_operations` lists every `maint_period` (again while
//! a step asks for it; `vacuum` outside any transaction).
//!
//! And it cuts latency: it listens on [`pgq::EVENTS_CHANNEL`], where this
//! framework's producers ([`pgq::Producer`], [`pgq::notify_events`]) notify
//! at commit, and ticks such a queue at once, whatever its thresholds, with
//! ticks of one queue at least `coalesce` seconds apart so that a burst of
//! commits shares a tick and batches stay large under load. After every tick
//! it notifies the queue's consumers on [`pgq::tick_channel`], so consumers
//! that listen look for their batch at once instead of sleeping `delay`.
//! Events from other producers (triggers, other languages) are still ticked
//! by the periodic pass.
//!
//! Do not run it and pgqd on the same database: PgQ's ticker must not run
//! twice at once, and pgqd knows nothing of the lock.

use std::collections::BTreeSet;
use std::time::Duration;

use pgq_daemon::{backoff, error_chain};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ConnString;
use crate::net::connect::{connect_listening, Database, Notifications};

/// The advisory lock that elects the ticker of a database: the two-key form
/// of `pg_try_advisory_lock`, class `PGQT`, object 1. Advisory locks belong
/// to one database, so there is one leader per database.
pub const LOCK_KEY: (i32, i32) = (0x5047_5154, 1);

/// The `[ticker]` table of a consumer's config (and the settings of the
/// standalone `pgq-ticker`). Periods are in seconds.
///
/// ```toml
/// [ticker]
/// enabled = true
/// ticker_period = 1.0       # periodic pgq.ticker pass
/// retry_period = 30.0       # pgq.maint_retry_events
/// maint_period = 120.0      # pgq.maint_operations
/// coalesce = 0.02           # least time between two prompt ticks
/// listen = true             # prompt ticks on producers' notifications
/// leader_check_period = 1.0 # how often a daemon that does not lead tries to
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TickerConfig {
    /// Run the ticker in this daemon.
    #[serde(default)]
    pub enabled: bool,
    /// Seconds between two periodic `pgq.ticker` passes.
    #[serde(default = "default_ticker_period")]
    pub ticker_period: f64,
    /// Seconds between two `pgq.maint_retry_events` passes.
    #[serde(default = "default_retry_period")]
    pub retry_period: f64,
    /// Seconds between two `pgq.maint_operations` passes.
    #[serde(default = "default_maint_period")]
    pub maint_period: f64,
    /// Least seconds between two prompt ticks.
    #[serde(default = "default_coalesce")]
    pub coalesce: f64,
    /// Tick promptly when a producer notifies (`LISTEN pgq_events`).
    #[serde(default = "default_true")]
    pub listen: bool,
    /// Seconds between two tries of a daemon that does not lead.
    #[serde(default = "default_leader_check_period")]
    pub leader_check_period: f64,
}

fn default_ticker_period() -> f64 {
    1.0
}
fn default_retry_period() -> f64 {
    30.0
}
fn default_maint_period() -> f64 {
    120.0
}
fn default_coalesce() -> f64 {
    0.02
}
fn default_true() -> bool {
    true
}
fn default_leader_check_period() -> f64 {
    1.0
}

impl Default for TickerConfig {
    fn default() -> TickerConfig {
        TickerConfig {
            enabled: false,
            ticker_period: default_ticker_period(),
            retry_period: default_retry_period(),
            maint_period: default_maint_period(),
            coalesce: default_coalesce(),
            listen: true,
            leader_check_period: default_leader_check_period(),
        }
    }
}

impl TickerConfig {
    /// The defaults, enabled.
    pub fn enabled() -> TickerConfig {
        TickerConfig {
            enabled: true,
            ..TickerConfig::default()
        }
    }

    /// Says what is wrong with a value, naming its key: every period is a
    /// number of seconds more than 0 (`coalesce`: 0 or more) and at most
    /// [`MAX_SECONDS`](crate::seconds::MAX_SECONDS).
    pub fn check(&self) -> std::result::Result<(), String> {
        for (key, v, zero_ok) in [
            ("ticker_period", self.ticker_period, false),
            ("retry_period", self.retry_period, false),
            ("maint_period", self.maint_period, false),
            ("coalesce", self.coalesce, true),
            ("leader_check_period", self.leader_check_period, false),
        ] {
            crate::seconds::check(&format!("ticker.{key}"), v, zero_ok)?;
        }
        Ok(())
    }

    fn period(v: f64) -> Duration {
        match crate::seconds::duration(v) {
            Duration::ZERO => Duration::from_secs(1),
            d => d,
        }
    }
}

/// The ticker of one database. [`Ticker::run`] contends for the lead and,
/// when it has it, ticks, until stopped.
#[derive(Debug, Clone)]
pub struct Ticker {
    dsn: ConnString,
    config: TickerConfig,
    application_name: String,
    label: String,
    metrics: Option<crate::metrics::TickerMetrics>,
}

/// Why leading ended.
enum Ended {
    /// Stopped from outside.
    Stopped,
    /// The connection is gone.
    Lost(String),
}

/// Backoff after a failed connection attempt: the first.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
/// Backoff after failed connection attempts: the longest.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long to wait before looking again for PgQ in a database without it.
const NO_PGQ_WAIT: Duration = Duration::from_secs(30);

impl Ticker {
    /// A ticker for the database of `dsn`.
    pub fn new(dsn: ConnString, config: TickerConfig) -> Ticker {
        let label = dsn.redacted();
        Ticker {
            dsn,
            config,
            application_name: "pgq ticker".into(),
            label,
            metrics: None,
        }
    }

    /// Counts its ticks and shows whether it leads in these metrics.
    pub fn metrics(mut self, metrics: crate::metrics::TickerMetrics) -> Ticker {
        self.metrics = Some(metrics);
        self
    }

    fn ticked(&self, n: usize) {
        if let Some(m) = &self.metrics {
            m.ticked(n);
        }
    }

    /// The `application_name` of its connection (default `pgq ticker`).
    pub fn application_name(mut self, name: impl Into<String>) -> Ticker {
        self.application_name = name.into();
        self
    }

    /// How the database is named in log lines (default: the connection
    /// string, password hidden).
    pub fn label(mut self, label: impl Into<String>) -> Ticker {
        self.label = label.into();
        self
    }

    /// The settings.
    pub fn config(&self) -> &TickerConfig {
        &self.config
    }

    /// Contends for the lead and ticks while leading, until `stop` is
    /// cancelled. Never fails: a lost connection is reopened with back-off, a
    /// failing step is logged and tried again at its next period. Stopping
    /// drops the connection, which hands the lead to another daemon at once.
    pub async fn run(self, stop: CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let connected = tokio::select! {
                () = stop.cancelled() => return,
                c = connect_listening(&self.dsn, &self.application_name, Database::Queue) => c,
            };
            let (client, mut notifications) = match connected {
                Ok(c) => c,
                Err(e) => {
                    if failures == 0 {
                        log::warn!(
                            "ticker for {}: cannot connect, trying again with back-off: {}",
                            self.label,
                            error_chain(&e)
                        );
                    }
                    let wait = backoff(RECONNECT_FIRST, failures, RECONNECT_MAX);
                    failures = failures.saturating_add(1);
                    if sleep_or_stop(wait, &stop).await {
                        return;
                    }
                    continue;
                }
            };
            if failures > 0 {
                log::info!("ticker for {}: connected again", self.label);
                failures = 0;
            }
            match self.contend(&client, &mut notifications, &stop).await {
                Ended::Stopped => return,
                Ended::Lost(why) => {
                    log::warn!("ticker for {}: lost the connection ({why}); reconnecting", self.label);
                    if sleep_or_stop(RECONNECT_FIRST, &stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Tries for the lock until it is had, then leads.
    async fn contend(&self, client: &Client, notifications: &mut Notifications, stop: &CancellationToken) -> Ended {
        let mut said_follow = false;
        let mut said_no_pgq = false;
        // Prepared once: a follower asks every `leader_check_period`.
        let lock = match client.prepare(TRY_LOCK).await {
            Ok(s) => s,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        loop {
            let attempt = client
                .query_one(&lock, &[&LOCK_KEY.0, &LOCK_KEY.1])
                .await
                .and_then(|row| row.try_get::<_, Option<bool>>(0));
            let wait = match attempt {
                Ok(Some(true)) => {
                    log::info!("ticker for {}: leading (this process ticks the database)", self.label);
                    if let Some(m) = &self.metrics {
                        m.leading(true);
                    }
                    let ended = self.lead(client, notifications, stop).await;
                    if let Some(m) = &self.metrics {
                        m.leading(false);
                    }
                    if let Ended::Stopped = ended {
                        log::info!("ticker for {}: stopped", self.label);
                    }
                    return ended;
                }
                Ok(Some(false)) => {
                    if !said_follow {
                        log::info!(
                            "ticker for {}: another process leads; taking over if it goes",
                            self.label
                        );
                        said_follow = true;
                    }
                    TickerConfig::period(self.config.leader_check_period)
                }
                Ok(None) => {
                    if !said_no_pgq {
                        log::info!(
                            "ticker for {}: no pgq extension here (or a standby); looking again every {}s",
                            self.label,
                            NO_PGQ_WAIT.as_secs()
                        );
                        said_no_pgq = true;
                    }
                    NO_PGQ_WAIT
                }
                Err(e) if client.is_closed() => return Ended::Lost(e.to_string()),
                Err(e) => {
                    log::warn!("ticker for {}: cannot try for the lead: {e}", self.label);
                    TickerConfig::period(self.config.leader_check_period)
                }
            };
            if sleep_or_stop(wait, stop).await {
                return Ended::Stopped;
            }
        }
    }

    /// Ticks, moves retries and maintains until stopped or disconnected.
    async fn lead(&self, client: &Client, notifications: &mut Notifications, stop: &CancellationToken) -> Ended {
        // A dead host should lose the lock in seconds, not hours: the server
        // probes the idle connection and drops it when nobody answers.
        if let Err(e) = client
            .batch_execute("set tcp_keepalives_idle = 5; set tcp_keepalives_interval = 2; set tcp_keepalives_count = 3")
            .await
        {
            if client.is_closed() {
                return Ended::Lost(e.to_string());
            }
        }
        if self.config.listen {
            if let Err(e) = pgq::listen(client, pgq::EVENTS_CHANNEL).await {
                if client.is_closed() {
                    return Ended::Lost(e.to_string());
                }
                log::warn!("ticker for {}: cannot listen for producers: {e}", self.label);
            }
        }
        let statements = match Statements::prepare(client).await {
            Ok(s) => s,
            Err(e) if client.is_closed() => return Ended::Lost(e.to_string()),
            Err(e) => {
                // PgQ is not what this ticker expects; say so, try again later.
                log::error!("ticker for {}: cannot prepare its statements: {e}", self.label);
                return match sleep_or_stop(NO_PGQ_WAIT, stop).await {
                    true => Ended::Stopped,
                    false => Ended::Lost("preparing failed".into()),
                };
            }
        };
        let mut state = LeaderState::new(&self.config);
        let mut steps = Steps::default();
        loop {
            let deadline = state.next_deadline();
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ended::Stopped,
                note = notifications.recv() => match note {
                    Some(n) if n.channel() == pgq::EVENTS_CHANNEL => state.notified(n.payload()),
                    Some(_) => {}
                    None => return Ended::Lost("the connection closed".into()),
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
            // Take in every notification that is already there.
            while let Ok(n) = notifications.try_recv() {
                if n.channel() == pgq::EVENTS_CHANNEL {
                    state.notified(n.payload());
                }
            }
            let now = Instant::now();
            if state.prompt_at.is_some_and(|at| at <= now) {
                let queues = std::mem::take(&mut state.dirty);
                state.prompt_at = None;
                state.last_prompt = now;
                let r = self.prompt_ticks(client, &statements, &queues, &mut steps).await;
                if let Some(lost) = self.step_result("prompt tick", r, client, &mut steps.failing_prompt) {
                    return lost;
                }
            }
            if state.next_tick <= now {
                state.next_tick = now + TickerConfig::period(self.config.ticker_period);
                let r = self.periodic_ticks(client, &statements).await;
                if let Some(lost) = self.step_result("pgq.ticker", r, client, &mut steps.failing_tick) {
                    return lost;
                }
            }
            if state.next_retry <= now {
                state.next_retry = now + TickerConfig::period(self.config.retry_period);
                let r = self.retry_events(client, &statements).await;
                match r {
                    Ok(queues) if !queues.is_empty() => {
                        // Retried events are back: tick their queues now.
                        for q in queues {
                            state.notified(&q);
                        }
                        steps.failing_retry = None;
                    }
                    r => {
                        let r = r.map(|_| ());
                        if let Some(lost) =
                            self.step_result("pgq.maint_retry_events", r, client, &mut steps.failing_retry)
                        {
                            return lost;
                        }
                    }
                }
            }
            if state.next_maint <= now {
                state.next_maint = now + TickerConfig::period(self.config.maint_period);
                let r = self.maintain(client).await;
                if let Some(lost) = self.step_result("maintenance", r, client, &mut steps.failing_maint) {
                    return lost;
                }
            }
        }
    }

    /// Logs a failed step once until it works again; `Some` when the
    /// connection is gone.
    fn step_result(
        &self,
        step: &str,
        r: pgq::Result<()>,
        client: &Client,
        failing: &mut Option<String>,
    ) -> Option<Ended> {
        match r {
            Ok(()) => {
                if failing.take().is_some() {
                    log::info!("ticker for {}: {step} works again", self.label);
                }
                None
            }
            Err(e) if client.is_closed() || e.is_connection_error() => Some(Ended::Lost(error_chain(&e))),
            Err(e) => {
                let text = error_chain(&e);
                if failing.as_deref() != Some(text.as_str()) {
                    log::error!("ticker for {}: {step} failed: {text}", self.label);
                    *failing = Some(text);
                }
                None
            }
        }
    }

    /// Ticks the notified queues now and notifies their consumers, in one
    /// transaction. The tick is the one `pgq.ticker(queue)` inserts, without
    /// its thresholds; without the rights to insert it (PgQ's `pgq_admin`),
    /// `pgq.force_tick` and `pgq.ticker(queue)` do it instead.
    async fn prompt_ticks(
        &self,
        client: &Client,
        statements: &Statements,
        queues: &BTreeSet<String>,
        steps: &mut Steps,
    ) -> pgq::Result<()> {
        if queues.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = queues.iter().map(String::as_str).collect();
        let channels: Vec<String> = names.iter().map(|q| pgq::tick_channel(q)).collect();
        if steps.direct_ticks {
            let r = client.query(&statements.prompt, &[&names, &channels]).await;
            match r {
                Ok(rows) => {
                    self.ticked(rows.len());
                    log::debug!("ticker for {}: ticked {} queue(s) at once", self.label, rows.len());
                    return Ok(());
                }
                Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                    log::info!(
                        "ticker for {}: no right to insert ticks directly (pgq_admin); using pgq.force_tick",
                        self.label
                    );
                    steps.direct_ticks = false;
                }
                Err(e) => {
                    return Err(pgq::Error::Sql {
                        function: "prompt tick",
                        context: String::new(),
                        source: e,
                    })
                }
            }
        }
        for (queue, channel) in names.iter().zip(&channels) {
            pgq::force_tick(client, queue).await?;
            client
                .query(FORCED_TICK, &[queue, channel])
                .await
                .map_err(|source| pgq::Error::Sql {
                    function: "pgq.ticker",
                    context: format!("queue {queue:?}"),
                    source,
                })?;
            self.ticked(1);
        }
        Ok(())
    }

    /// `pgq.ticker` for every queue, then a notification to the consumers of
    /// those that got a tick.
    async fn periodic_ticks(&self, client: &Client, statements: &Statements) -> pgq::Result<()> {
        let sql_error = |function: &'static str| {
            move |source| pgq::Error::Sql {
                function,
                context: String::new(),
                source,
            }
        };
        let rows = client
            .query(&statements.periodic, &[])
            .await
            .map_err(sql_error("pgq.ticker"))?;
        let ticked = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|source| pgq::Error::Row {
                function: "pgq.ticker",
                context: String::new(),
                source,
            })?;
        if !ticked.is_empty() {
            self.ticked(ticked.len());
            log::debug!("ticker for {}: ticked {}", self.label, ticked.join(", "));
            let channels: Vec<String> = ticked.iter().map(|q| pgq::tick_channel(q)).collect();
            client
                .query(&statements.notify, &[&channels])
                .await
                .map_err(sql_error("pg_notify"))?;
        }
        Ok(())
    }

    /// `pgq.maint_retry_events` until it has nothing left; returns the
    /// queues that got events back.
    async fn retry_events(&self, client: &Client, statements: &Statements) -> pgq::Result<Vec<String>> {
        let due = client
            .query(&statements.due_retries, &[])
            .await
            .map_err(|source| pgq::Error::Sql {
                function: "pgq.retry_queue",
                context: String::new(),
                source,
            })?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut moved = 0i64;
        // Ten at a time, each call its own transaction; a bound so that a
        // queue filling as fast as it drains does not hold the ticker.
        for _ in 0..100_000 {
            let n = pgq::maint_retry_events(client).await?;
            if n == 0 {
                break;
            }
            moved += i64::from(n);
        }
        log::debug!(
            "ticker for {}: {moved} retried event(s) back in their queues",
            self.label
        );
        due.iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|source| pgq::Error::Row {
                function: "pgq.retry_queue",
                context: String::new(),
                source,
            })
    }

    /// Runs every step `pgq.maint_operations` lists, each in its own
    /// transaction, again while it asks to be; `vacuum` outside any.
    async fn maintain(&self, client: &Client) -> pgq::Result<()> {
        let ops = pgq::maint_operations(client).await?;
        for op in &ops {
            let mut calls = 0;
            while pgq::run_maint_operation(client, op).await? {
                calls += 1;
                if calls >= 1000 {
                    log::warn!(
                        "ticker for {}: {} still asks to be called again after {calls} calls; next pass",
                        self.label,
                        op.func_name
                    );
                    break;
                }
            }
            log::debug!(
                "ticker for {}: maintenance {} {}",
                self.label,
                op.func_name,
                op.func_arg.as_deref().unwrap_or("")
            );
        }
        Ok(())
    }
}

/// Inserts a tick into each queue named in `$1` as `pgq.ticker(queue)`
/// would, without waiting for its thresholds (skipping paused queues and
/// queues with an external ticker), and notifies each ticked queue's channel
/// (`$2`, parallel to `$1`). One statement, one transaction.
const PROMPT_TICK: &str = "with d as (select * from unnest($1::text[], $2::text[]) as d(name, channel)), \
     t as (insert into pgq.tick (tick_queue, tick_id, tick_event_seq) \
           select q.queue_id, nextval(q.queue_tick_seq), pgq.seq_getval(q.queue_event_seq) \
             from pgq.queue q join d on d.name = q.queue_name \
            where not q.queue_external_ticker and not q.queue_ticker_paused \
           returning tick_queue) \
     select q.queue_name, pg_notify(d.channel, '') \
       from t join pgq.queue q on q.queue_id = t.tick_queue join d on d.name = q.queue_name";

/// After `pgq.force_tick($1)`: the tick, and the notification when it came.
const FORCED_TICK: &str = "select pg_notify($2, '') from (select pgq.ticker($1::text) as t) x where t is not null";

/// What `pgq.ticker()` does, returning the queues that got a tick: every
/// queue that is not paused and has no external ticker, by name, in one
/// transaction.
const PERIODIC_TICK: &str = "select queue_name from (select queue_name, pgq.ticker(queue_name) as tick \
       from pgq.queue where not queue_external_ticker and not queue_ticker_paused order by queue_name) x \
      where tick is not null";

/// Asks for the lead: NULL when the database has no PgQ or is a standby.
const TRY_LOCK: &str = "select case when pg_is_in_recovery() or to_regclass('pgq.queue') is null then null \
     else pg_try_advisory_lock($1, $2) end";

/// Notifies each channel in `$1`.
const NOTIFY: &str = "select pg_notify(c, '') from unnest($1::text[]) as c";

/// The queues with retried events due.
const DUE_RETRIES: &str = "select distinct q.queue_name from pgq.retry_queue r \
     join pgq.queue q on q.queue_id = r.ev_queue where r.ev_retry_after <= current_timestamp";

/// The leader's frequent statements, prepared once per connection: each
/// run is then one statement, one transaction.
struct Statements {
    periodic: Statement,
    prompt: Statement,
    notify: Statement,
    due_retries: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> std::result::Result<Statements, tokio_postgres::Error> {
        let (periodic, prompt, notify, due_retries) = futures_util::future::try_join4(
            client.prepare(PERIODIC_TICK),
            client.prepare(PROMPT_TICK),
            client.prepare(NOTIFY),
            client.prepare(DUE_RETRIES),
        )
        .await?;
        Ok(Statements {
            periodic,
            prompt,
            notify,
            due_retries,
        })
    }
}

/// When the leader does what.
struct LeaderState {
    next_tick: Instant,
    next_retry: Instant,
    next_maint: Instant,
    coalesce: Duration,
    dirty: BTreeSet<String>,
    prompt_at: Option<Instant>,
    last_prompt: Instant,
}

impl LeaderState {
    fn new(config: &TickerConfig) -> LeaderState {
        let now = Instant::now();
        let coalesce = crate::seconds::duration(config.coalesce);
        LeaderState {
            next_tick: now,
            next_retry: now,
            next_maint: now + TickerConfig::period(config.maint_period).min(Duration::from_secs(10)),
            coalesce,
            dirty: BTreeSet::new(),
            prompt_at: None,
            last_prompt: now.checked_sub(coalesce).unwrap_or(now),
        }
    }

    /// A producer committed events into `queue`: tick it now, or once
    /// `coalesce` has passed since the last prompt tick.
    fn notified(&mut self, queue: &str) {
        if !self.dirty.contains(queue) {
            self.dirty.insert(queue.to_string());
        }
        if self.prompt_at.is_none() {
            self.prompt_at = Some(Instant::now().max(self.last_prompt + self.coalesce));
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut at = self.next_tick.min(self.next_retry).min(self.next_maint);
        if let Some(p) = self.prompt_at {
            at = at.min(p);
        }
        at
    }
}

/// What the leader remembers about its steps.
struct Steps {
    /// Whether prompt ticks may insert into `pgq.tick` (else force_tick).
    direct_ticks: bool,
    failing_prompt: Option<String>,
    failing_tick: Option<String>,
    failing_retry: Option<String>,
    failing_maint: Option<String>,
}

impl Default for Steps {
    fn default() -> Steps {
        Steps {
            direct_ticks: true,
            failing_prompt: None,
            failing_tick: None,
            failing_retry: None,
            failing_maint: None,
        }
    }
}

/// The process that leads the ticking of a database, as [`leader`] finds
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickerLeader {
    /// The backend pid of its connection.
    pub pid: i32,
    /// Its connection's `application_name`.
    pub application_name: String,
}

/// Which connection holds the ticker's lock in the database `client` is
/// connected to, if any (from `pg_locks`).
pub async fn leader(client: &impl tokio_postgres::GenericClient) -> crate::Result<Option<TickerLeader>> {
    let row = client
        .query_opt(
            "select l.pid, coalesce(a.application_name, '') from pg_locks l \
               left join pg_stat_activity a on a.pid = l.pid \
              where l.locktype = 'advisory' and l.granted and l.objsubid = 2 \
                and l.classid::int8 = $1 and l.objid::int8 = $2 \
                and l.database = (select oid from pg_database where datname = current_database())",
            &[&i64::from(LOCK_KEY.0), &i64::from(LOCK_KEY.1)],
        )
        .await
        .map_err(crate::error::Error::row("pg_locks"))?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(TickerLeader {
        pid: row.try_get(0).map_err(crate::error::Error::row("pg_locks"))?,
        application_name: row.try_get(1).map_err(crate::error::Error::row("pg_locks"))?,
    }))
}

/// A [`Ticker`] running as a task of its own. Dropping it stops the ticker
/// without waiting; [`TickerTask::stop`] waits for it.
#[derive(Debug)]
pub struct TickerTask {
    config: TickerConfig,
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// How long [`TickerTask::stop`] waits for the ticker's step in flight.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl TickerTask {
    /// Spawns the ticker on the current tokio runtime.
    pub fn spawn(ticker: Ticker) -> TickerTask {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let config = ticker.config.clone();
        tracker.spawn(ticker.run(stop.clone()));
        tracker.close();
        TickerTask { config, stop, tracker }
    }

    /// The running ticker's settings.
    pub fn config(&self) -> &TickerConfig {
        &self.config
    }

    /// True once the ticker's task has ended.
    pub fn is_finished(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Stops the ticker and waits (at most a few seconds) until it has: its
    /// connection is closed, so the lead is free for another daemon.
    pub async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_WAIT, self.tracker.wait()).await.is_err() {
            log::warn!("the ticker did not stop within {}s; leaving it", STOP_WAIT.as_secs());
        }
    }
}

impl Drop for TickerTask {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sleeps; true when stopped meanwhile.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
