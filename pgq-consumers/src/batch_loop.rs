//! The batch loop: one round takes one batch from where batches come from
//! (a plain or a cooperative consumer), runs the handler over it, and commits
//! the way the consumer's work commits (local, remote, savepoint per event).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use pgq::{BatchLimits, BatchReader, BatchStatements, BatchTicks, EventFilter, Interval};
use tokio_postgres::Client;

use crate::batch::{Batch, BatchEnd, BatchReport, EventStream};
use crate::config::Config;
use crate::connect::{connect, connect_listening, Database, Notifications};
use crate::consumer::{configure, read_settings, CommitMode, Consumer, Context};
use crate::coop;
use crate::error::{Error, Result};
use crate::failpoint::crash_point;
use crate::heartbeat::{Heartbeat, Lease};
use crate::tracking;

/// What one round of the loop did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Round {
    /// There was no batch to process.
    Idle,
    /// A batch was processed and finished.
    Finished(BatchReport),
    /// The handler aborted the batch; it comes again.
    Aborted {
        /// The batch.
        batch_id: i64,
    },
    /// The handler panicked on an event; the batch was rolled back and is
    /// replayed at once with that event marked failed.
    Panicked {
        /// The batch.
        batch_id: i64,
        /// The event being processed.
        ev_id: i64,
        /// The panic's message.
        message: String,
    },
    /// A cooperative sub-consumer lost its batch to another member of its
    /// group (it could no longer prove it held it, or another member took
    /// it over and applied it first): its work on the batch was rolled
    /// back, and the batch is done once, by the member that holds it.
    Lost {
        /// The batch.
        batch_id: i64,
    },
}

/// Runs a [`Consumer`] over its queue, batch by batch.
///
/// Used by the daemon for `start`/`run`, and directly as the interactive
/// consumer: [`BatchLoop::consume_available`] processes everything there is
/// and returns what it did.
pub struct BatchLoop<C> {
    consumer: C,
    config: Config,
    /// How the consumer's work commits: fixed at connect.
    mode: CommitMode,
    queue_db: Client,
    remote_db: Option<Client>,
    poisoned: HashMap<i64, String>,
    /// Cooperative consumers: marks the sub-consumer as seen while it works
    /// on a batch, so that only a silent one loses it.
    heartbeat: Heartbeat,
    /// `next_batch_custom` and `finish_batch`, prepared on `queue_db`.
    statements: Option<BatchStatements>,
    /// The second connection to the queue database: streams batches and
    /// listens for ticks.
    reader: Option<Reader>,
    /// The next batch, opened in the transaction that finished the previous
    /// one (plain consumers), and its events already streaming.
    pending: Option<Pending>,
    /// When a cooperative remote consumer last dropped the remote records
    /// of its group's finished batches.
    pruned: Option<tokio::time::Instant>,
}

/// A batch opened by the transaction that finished the previous one.
struct Pending {
    ticks: BatchTicks,
    /// Its batch query, started (on a task of its own, so that nobody waits
    /// for its first rows) while that transaction committed.
    stream: Option<Prefetch>,
}

/// A batch query started on a task of its own.
type Prefetch = tokio::task::JoinHandle<Option<EventStream>>;

/// The reader connection: a batch's events are streamed from it while the
/// queue connection carries the batch's transaction, so the handler's own
/// statements never wait behind unread rows, and the two round trips that
/// start a batch overlap. It also listens on the queue's tick channel.
struct Reader {
    client: Arc<Client>,
    notifications: Notifications,
    /// The batch query, prepared on this connection.
    batch: Option<BatchReader>,
    listening: bool,
}

impl Reader {
    async fn open(config: &Config, app: &str) -> Result<Reader> {
        let (client, notifications) = connect_listening(&config.db, app, Database::Queue).await?;
        // The batch query's best plan does not depend on the batch: without
        // this, PostgreSQL plans it afresh for every batch, which costs more
        // than running it.
        // And a big batch's sort is what takes longest: let PostgreSQL share
        // it among parallel workers (only the statement for big batches can
        // be planned in parallel).
        client
            .batch_execute(
                "set plan_cache_mode = force_generic_plan; \
                 set parallel_setup_cost = 0; set parallel_tuple_cost = 0",
            )
            .await
            .map_err(Error::db(&config.queue, &config.consumer))?;
        let listening = match pgq::listen(&client, &pgq::tick_channel(&config.queue)).await {
            Ok(()) => true,
            Err(e) => {
                log::warn!("cannot listen for ticks (polling every `delay` instead): {e}");
                false
            }
        };
        Ok(Reader {
            client: Arc::new(client),
            notifications,
            batch: None,
            listening,
        })
    }

    /// Starts streaming a batch's events; `None` when the batch query cannot
    /// be used (the caller reads through a cursor instead). `consumer` is
    /// the plain consumer whose batch it is; `None` (a sub-consumer's
    /// batch) reads it by its id.
    async fn stream(
        &mut self,
        queue: &str,
        consumer: Option<&str>,
        ticks: &BatchTicks,
        filter: &EventFilter,
    ) -> Option<EventStream> {
        if self.batch.is_none() {
            match BatchReader::prepare(&*self.client, queue).await {
                Ok(r) => self.batch = Some(r),
                Err(e) => {
                    log::warn!("cannot prepare the batch query, reading through a cursor: {e}");
                    return None;
                }
            }
        }
        self.start(consumer, ticks, filter).await
    }

    /// Starts the batch query: by the batch's ticks for a plain consumer (so
    /// it may run before the transaction that opened the batch commits), in
    /// its parallel form for a big batch; by the batch's id otherwise.
    async fn start(&mut self, consumer: Option<&str>, ticks: &BatchTicks, filter: &EventFilter) -> Option<EventStream> {
        let reader = self.batch.as_ref()?;
        match start(reader, &self.client, consumer, ticks, filter).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                log::warn!("the batch query failed, reading through a cursor: {e}");
                // Prepared again next time (the queue may have been re-created).
                self.batch = None;
                None
            }
        }
    }

    /// As [`Reader::start`] for a plain consumer's batch, on a task of its
    /// own: the caller goes on while the first rows come.
    fn spawn_start(&self, consumer: &str, ticks: &BatchTicks, filter: &EventFilter) -> Option<Prefetch> {
        let reader = self.batch.clone()?;
        let client = Arc::clone(&self.client);
        let (consumer, ticks, filter) = (consumer.to_string(), ticks.clone(), filter.clone());
        Some(tokio::spawn(async move {
            match start(&reader, &client, Some(&consumer), &ticks, &filter).await {
                Ok(stream) => Some(stream),
                Err(e) => {
                    log::warn!("the batch query failed, reading through a cursor: {e}");
                    None
                }
            }
        }))
    }
}

/// Starts the batch query of `reader` on `client`: see [`Reader::start`].
async fn start(
    reader: &BatchReader,
    client: &Client,
    consumer: Option<&str>,
    ticks: &BatchTicks,
    filter: &EventFilter,
) -> pgq::Result<EventStream> {
    Ok(match consumer {
        Some(c) if ticks.event_estimate() >= LARGE_BATCH => {
            Box::pin(reader.stream_ticks_large(client, c, ticks, filter).await?)
        }
        Some(c) => Box::pin(reader.stream_ticks(client, c, ticks, filter).await?),
        None => Box::pin(reader.stream(client, ticks.batch_id, filter).await?),
    })
}

/// Batches with at least this many events (by the event sequence) are read
/// with the batch query's parallel form.
const LARGE_BATCH: i64 = 20_000;

impl<C: Consumer> BatchLoop<C> {
    /// Reads the consumer's settings from `[settings]` and hands them to its
    /// [`Consumer::configure`], then connects to the queue database (and the
    /// remote one, in the remote commit modes) and checks that the queue
    /// exists, the consumer is registered and the framework's SQL is
    /// installed ([`Error::NotInstalled`] or [`Error::SchemaOutdated`]
    /// otherwise: run `install`).
    pub async fn connect(mut consumer: C, config: Config) -> Result<BatchLoop<C>> {
        let settings = read_settings::<C>(&config)?;
        let mode = C::commit_mode(&settings);
        configure(&mut consumer, settings, &config).await?;
        let app = application_name(&config);
        let queue_db = connect(&config.db, &app, Database::Queue).await?;
        let remote_db = match mode {
            CommitMode::Local => None,
            CommitMode::Remote | CommitMode::RemoteEvent => {
                let dsn = config.remote_db.as_ref().ok_or_else(|| Error::ConfigInvalid {
                    path: config.origin().to_path_buf(),
                    problem: "this is a remote consumer: set `remote_db`".into(),
                })?;
                Some(connect(dsn, &app, Database::Remote).await?)
            }
        };
        // The queue, the consumer and the framework's own SQL (failed
        // events, remote batch tracking, sub-consumers) must be there before
        // the first batch needs them.
        crate::commands::verify_installed(&queue_db, &config).await?;
        crate::schema::require(&queue_db, Database::Queue).await?;
        if let Some(remote) = &remote_db {
            crate::schema::require(remote, Database::Remote).await?;
        }
        let reader = Some(Reader::open(&config, &app).await?);
        Ok(BatchLoop {
            consumer,
            config,
            mode,
            queue_db,
            remote_db,
            poisoned: HashMap::new(),
            heartbeat: Heartbeat::default(),
            statements: None,
            reader,
            pending: None,
            pruned: None,
        })
    }

    /// The consumer.
    pub fn consumer(&mut self) -> &mut C {
        &mut self.consumer
    }

    /// The current configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How the consumer's work commits (fixed at [`BatchLoop::connect`]).
    pub fn commit_mode(&self) -> CommitMode {
        self.mode
    }

    /// The queue database connection (outside any batch).
    pub fn queue_db(&self) -> &Client {
        &self.queue_db
    }

    /// True when a connection was lost; the loop must be rebuilt.
    pub fn is_broken(&self) -> bool {
        self.queue_db.is_closed() || self.remote_db.as_ref().is_some_and(Client::is_closed)
    }

    /// Opens new connections in place of lost ones. The batch that was in
    /// flight was rolled back with its connection and is delivered again.
    pub async fn reconnect(&mut self) -> Result<()> {
        let app = application_name(&self.config);
        if self.queue_db.is_closed() {
            self.queue_db = connect(&self.config.db, &app, Database::Queue).await?;
            self.statements = None;
        }
        self.reopen_reader().await;
        if let (Some(remote), Some(dsn)) = (&self.remote_db, &self.config.remote_db) {
            if remote.is_closed() {
                let fresh = connect(dsn, &app, Database::Remote).await?;
                self.remote_db = Some(fresh);
            }
        }
        Ok(())
    }

    /// Completes when the ticker notifies a new tick on the consumer's queue
    /// (see [`pgq::tick_channel`]): the daemon's rest between rounds ends
    /// then, instead of lasting `delay`. Notifications that came while the
    /// loop was busy count: a tick is never missed, at most a round finds
    /// nothing. Never completes when the loop cannot listen.
    ///
    /// Cancellation-safe.
    pub async fn wait_for_tick(&mut self) {
        let Some(reader) = self.reader.as_mut().filter(|r| r.listening) else {
            return std::future::pending().await;
        };
        match reader.notifications.recv().await {
            Some(_) => while reader.notifications.try_recv().is_ok() {},
            // The connection is gone; the next round opens another.
            None => std::future::pending().await,
        }
    }

    /// Opens the reader connection again when it was lost (quietly: the
    /// queue connection's state is what the daemon reports).
    async fn reopen_reader(&mut self) {
        if self.reader.as_ref().is_some_and(|r| !r.client.is_closed()) {
            return;
        }
        let app = application_name(&self.config);
        self.reader = match Reader::open(&self.config, &app).await {
            Ok(r) => Some(r),
            Err(e) => {
                log::debug!("cannot open the reader connection, reading through a cursor: {e}");
                None
            }
        };
    }

    /// The prepared statements of `queue_db`.
    async fn statements(&mut self) -> Result<BatchStatements> {
        if let Some(s) = &self.statements {
            return Ok(s.clone());
        }
        let s = BatchStatements::prepare(&self.queue_db).await?;
        self.statements = Some(s.clone());
        Ok(s)
    }

    /// Applies a re-read configuration: the new `[settings]` are read and
    /// handed to the consumer's [`Consumer::configure`], and the other keys
    /// take effect from the next round. What was fixed at connect cannot
    /// change: the connection strings (`db`, `remote_db`), `queue`,
    /// `consumer`, `subconsumer`, and the commit mode the settings give. A
    /// config that changes one of them is refused with
    /// [`Error::ReloadRefused`] naming it, as is one whose settings do not
    /// read or whose `configure` fails; then nothing changes.
    ///
    /// Not cancellation-safe: dropped midway, the consumer may have taken
    /// the new settings while the rest of the config stays old.
    pub async fn reconfigure(&mut self, config: Config) -> Result<()> {
        let old = &self.config;
        let fixed: [(&'static str, bool); 5] = [
            ("`db`", config.db != old.db),
            ("`remote_db`", config.remote_db != old.remote_db),
            ("`queue`", config.queue != old.queue),
            ("`consumer`", config.consumer != old.consumer),
            ("`subconsumer`", config.subconsumer != old.subconsumer),
        ];
        if let Some((key, _)) = fixed.iter().find(|(_, changed)| *changed) {
            return Err(Error::ReloadRefused {
                path: config.origin().to_path_buf(),
                key,
            });
        }
        let settings = read_settings::<C>(&config)?;
        if C::commit_mode(&settings) != self.mode {
            return Err(Error::ReloadRefused {
                path: config.origin().to_path_buf(),
                key: "the commit mode (which [settings] gives)",
            });
        }
        configure(&mut self.consumer, settings, &config).await?;
        self.config = config;
        Ok(())
    }

    /// Processes batches until none is left, and returns what each came to.
    /// Stops at the first error (the batch it happened in comes again).
    ///
    /// Cancellation-safe in the sense that matters: dropping it rolls back
    /// the batch in flight, which is delivered again later.
    pub async fn consume_available(&mut self) -> Result<Vec<BatchReport>> {
        let mut done = Vec::new();
        loop {
            match self.round().await? {
                Round::Idle => return Ok(done),
                Round::Finished(report) => done.push(report),
                Round::Aborted { .. } | Round::Lost { .. } => return Ok(done),
                Round::Panicked { .. } => {}
            }
        }
    }

    /// One round: takes the next batch, if any, and processes it.
    ///
    /// Cancellation-safe: dropped midway, the transactions roll back and the
    /// batch is delivered again.
    pub async fn round(&mut self) -> Result<Round> {
        let statements = self.statements().await?;
        let asked_at = tokio::time::Instant::now();
        let (ticks, prefetched) = match self.pending.take() {
            Some(p) => (p.ticks, p.stream),
            None => match next_batch(&self.queue_db, &statements, &self.config).await? {
                Some(ticks) => (ticks, None),
                None => return Ok(Round::Idle),
            },
        };
        let batch_id = ticks.batch_id;
        crash_point("batch-read");
        let mode = self.mode;
        let queue = self.config.queue.clone();
        let consumer = self.config.consumer.clone();
        let subconsumer = self.config.subconsumer.clone();
        // A sub-consumer's hold on its batch: its heartbeat beats until this
        // round ends, however it ends.
        let lease = self.heartbeat.start(&self.config, batch_id, asked_at);

        // The transaction starts while the reader connection starts
        // streaming the batch: one round trip for both.
        self.reopen_reader().await;
        let event_filter = event_filter(&self.config);
        let (queue_tx, stream) = match (prefetched, &mut self.reader) {
            (Some(prefetch), _) => {
                futures_util::future::join(self.queue_db.transaction(), async { prefetch.await.ok().flatten() }).await
            }
            (None, Some(reader)) => {
                let plain = subconsumer.is_none().then_some(consumer.as_str());
                futures_util::future::join(
                    self.queue_db.transaction(),
                    reader.stream(&queue, plain, &ticks, &event_filter),
                )
                .await
            }
            (None, None) => (self.queue_db.transaction().await, None),
        };
        let queue_tx = queue_tx.map_err(Error::db(&queue, &consumer))?;
        let remote_tx = match &mut self.remote_db {
            Some(db) => Some(db.transaction().await.map_err(|source| Error::Remote {
                queue: queue.clone(),
                consumer: consumer.clone(),
                source,
            })?),
            None => None,
        };

        if let (Some(remote), true) = (&remote_tx, subconsumer.is_some()) {
            prune_group_records(&mut self.pruned, &self.config, &queue_tx, remote).await?;
        }
        if let Some(remote) = &remote_tx {
            if tracking::is_applied(remote, &queue, &consumer, subconsumer.as_deref(), &ticks).await? {
                // The queue transaction of the first attempt was lost: what
                // it did besides finishing the batch is done again.
                let outcomes =
                    tracking::applied_outcomes(remote, &queue, &consumer, subconsumer.as_deref(), &ticks).await?;
                drop(remote_tx);
                let (failed, retried) = replay_outcomes(&queue_tx, &queue, &consumer, batch_id, &outcomes).await?;
                finish(&queue_tx, batch_id, subconsumer.is_some()).await?;
                queue_tx.commit().await.map_err(Error::db(&queue, &consumer))?;
                log::info!(
                    "batch {batch_id} was already applied to the remote database; finished it \
                     ({failed} event(s) stored as failed and {retried} retried again, as the first time)"
                );
                return Ok(Round::Finished(BatchReport {
                    batch_id,
                    failed,
                    retried,
                    already_applied: true,
                    ..Default::default()
                }));
            }
        }

        let filter = filter_sql(&self.config)?;
        let cx = Context {
            db: &queue_tx,
            tx: remote_tx.as_ref().unwrap_or(&queue_tx),
            ticks: &ticks,
            queue: &queue,
            consumer: &consumer,
        };
        let mut batch = Batch::new(
            cx,
            mode,
            self.config.fetch_size,
            filter,
            self.config.max_retries,
            &self.poisoned,
        );
        if let Some(stream) = stream {
            batch = batch.with_stream(stream);
        }
        // A panic of the handler is caught here and survived: `catching` makes
        // the daemon's panic hook log it at ERROR, not FATAL.
        let handler =
            std::panic::AssertUnwindSafe(pgq_daemon::catching(self.consumer.process_batch(&mut batch))).catch_unwind();
        // A sub-consumer that can no longer prove it holds its batch stops
        // working on it at once.
        let outcome = match &lease {
            None => handler.await,
            Some(lease) => tokio::select! {
                outcome = handler => outcome,
                loss = lease.lost() => {
                    drop(batch);
                    rollback(queue_tx, remote_tx).await;
                    return Ok(lost(&self.config, batch_id, &loss));
                }
            },
        }
        .map_err(|panic| panic_message(panic.as_ref()));
        let in_flight = batch.in_flight;
        let report = batch.report.clone();
        let outcomes = std::mem::take(&mut batch.outcomes);
        drop(batch);

        match outcome {
            Ok(Ok(BatchEnd::Finish)) => {
                crash_point("before-remote-commit");
                // Checked last before anything commits: the commits
                // themselves catch what slips past it.
                if let Some(Err(loss)) = lease.as_ref().map(Lease::check) {
                    rollback(queue_tx, remote_tx).await;
                    return Ok(lost(&self.config, batch_id, &loss));
                }
                if let Some(remote) = remote_tx {
                    match tracking::record(&remote, &queue, &consumer, subconsumer.as_deref(), &ticks).await {
                        Err(e @ Error::BatchAppliedByOther { .. }) => {
                            rollback(queue_tx, Some(remote)).await;
                            log::warn!("{}", crate::cli::error_chain(&e));
                            return Ok(Round::Lost { batch_id });
                        }
                        other => other?,
                    }
                    if !outcomes.is_empty() {
                        tracking::record_outcomes(
                            &remote,
                            &queue,
                            &consumer,
                            subconsumer.as_deref(),
                            batch_id,
                            &outcomes,
                        )
                        .await?;
                    }
                    remote.commit().await.map_err(|source| Error::Remote {
                        queue: queue.clone(),
                        consumer: consumer.clone(),
                        source,
                    })?;
                }
                crash_point("after-remote-commit");
                let next = if subconsumer.is_some() {
                    match finish(&queue_tx, batch_id, true).await {
                        Err(e @ Error::BatchNotActive { .. }) => {
                            drop(queue_tx);
                            log::warn!(
                                "{}; its work here is rolled back (what was committed in the remote database \
                                 is recorded there, and the sub-consumer holding the batch finds it applied)",
                                crate::cli::error_chain(&e)
                            );
                            return Ok(Round::Lost { batch_id });
                        }
                        other => other?,
                    }
                    queue_tx.commit().await.map_err(Error::db(&queue, &consumer))?;
                    None
                } else {
                    // Finishing this batch, opening the next one and
                    // committing: one round trip. The COMMIT goes without
                    // waiting for the finish: if the finish failed (or found
                    // the batch not open, which it makes an error), the
                    // transaction is aborted and the COMMIT rolls it back.
                    // Order: tokio-postgres sends a request when its future is
                    // first polled (a prepared statement needs no round trip
                    // first), and `join` polls the finish before the COMMIT,
                    // so the finish is inside the transaction it commits with.
                    let limits = limits(&self.config);
                    let (next, committed) = futures_util::future::join(
                        statements.finish_and_next(&queue_tx, batch_id, &queue, &consumer, &limits),
                        queue_tx.client().batch_execute("commit"),
                    )
                    .await;
                    // The transaction has ended on the server, committed or
                    // rolled back: its guard must not send a ROLLBACK.
                    std::mem::forget(queue_tx);
                    let next = next.map_err(|e| match e {
                        pgq::Error::BatchNotOpen { batch_id, .. } => Error::BatchGone { batch_id },
                        e => Error::Pgq(e),
                    })?;
                    committed.map_err(Error::db(&queue, &consumer))?;
                    next
                };
                // The next batch's events start streaming on the reader
                // connection at once.
                self.pending = next.map(|ticks| {
                    let stream = match &self.reader {
                        Some(reader) => reader.spawn_start(&consumer, &ticks, &event_filter),
                        None => None,
                    };
                    Pending { ticks, stream }
                });
                crash_point("after-queue-commit");
                self.poisoned.clear();
                log::debug!(
                    "batch {batch_id}: {} events, {} ok, {} failed, {} retried",
                    report.events,
                    report.ok,
                    report.failed,
                    report.retried
                );
                Ok(Round::Finished(report))
            }
            Ok(Ok(BatchEnd::Abort)) => {
                rollback(queue_tx, remote_tx).await;
                log::info!("batch {batch_id} aborted by the handler; it will be delivered again");
                Ok(Round::Aborted { batch_id })
            }
            Ok(Err(source)) => {
                rollback(queue_tx, remote_tx).await;
                Err(Error::Handler {
                    queue,
                    consumer,
                    batch_id,
                    source,
                })
            }
            Err(message) => {
                rollback(queue_tx, remote_tx).await;
                match in_flight {
                    Some(ev_id) => {
                        log::error!(
                            "the handler panicked on event {ev_id} of batch {batch_id}: {message}; \
                             replaying the batch with that event marked failed"
                        );
                        self.poisoned.insert(ev_id, message.clone());
                        Ok(Round::Panicked {
                            batch_id,
                            ev_id,
                            message,
                        })
                    }
                    None => Err(Error::Handler {
                        queue,
                        consumer,
                        batch_id,
                        source: format!("panic outside any event: {message}").into(),
                    }),
                }
            }
        }
    }
}

/// How often a cooperative remote consumer drops the remote records of its
/// group's finished batches.
const PRUNE_PERIOD: Duration = Duration::from_secs(60);

/// Drops, at most every [`PRUNE_PERIOD`] (`pruned`: when it was last done),
/// the remote records of the group's batches that the queue database says
/// are finished. In the round's transactions: rolled back with them.
async fn prune_group_records(
    pruned: &mut Option<tokio::time::Instant>,
    config: &Config,
    queue_tx: &tokio_postgres::Transaction<'_>,
    remote: &tokio_postgres::Transaction<'_>,
) -> Result<()> {
    if pruned.is_some_and(|at| at.elapsed() < PRUNE_PERIOD) {
        return Ok(());
    }
    *pruned = Some(tokio::time::Instant::now());
    let (queue, consumer) = (&config.queue, &config.consumer);
    if let Some(tick) = coop::group_finished_tick(queue_tx, queue, consumer).await? {
        let n = tracking::prune_group(remote, queue, consumer, tick).await?;
        log::debug!("dropped {n} remote record(s) of finished batches of the group, up to tick {tick}");
    }
    Ok(())
}

/// The round's result when a sub-consumer lost its batch, logged.
fn lost(config: &Config, batch_id: i64, loss: &crate::heartbeat::Loss) -> Round {
    log::warn!(
        "sub-consumer {:?} of {:?} gives up batch {batch_id} and rolls its work back: {loss}",
        config.subconsumer.as_deref().unwrap_or_default(),
        config.consumer
    );
    Round::Lost { batch_id }
}

/// Takes the next batch from where this consumer's batches come from: its
/// own queue position, or its cooperative group's. A free function, so the
/// consumer itself need not be `Sync`.
async fn next_batch(db: &Client, statements: &BatchStatements, c: &Config) -> Result<Option<BatchTicks>> {
    let limits = limits(c);
    match &c.subconsumer {
        Some(sub) => coop::next_batch(db, &c.queue, &c.consumer, sub, c.dead_interval(), &limits).await,
        None => Ok(statements.next_batch(db, &c.queue, &c.consumer, &limits).await?),
    }
}

/// The batch size and age limits of the config.
fn limits(c: &Config) -> BatchLimits {
    BatchLimits {
        min_lag: c.min_lag.map(seconds),
        min_count: c.min_count,
        min_interval: c.min_interval.map(seconds),
    }
}

/// `[filter]` as the batch query's parameters.
fn event_filter(c: &Config) -> EventFilter {
    let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    EventFilter {
        ev_type: list(&c.filter.ev_type),
        ev_extra1: list(&c.filter.ev_extra1),
    }
}

/// Stores as failed and retries again, in the queue transaction, the events
/// of an applied batch that its first attempt failed or retried (those of
/// them in this batch: a replay may be cut shorter). Returns how many of each.
async fn replay_outcomes(
    tx: &tokio_postgres::Transaction<'_>,
    queue: &str,
    consumer: &str,
    batch_id: i64,
    outcomes: &[tracking::AppliedOutcome],
) -> Result<(u64, u64)> {
    if outcomes.is_empty() {
        return Ok((0, 0));
    }
    let ids: Vec<i64> = outcomes.iter().map(tracking::AppliedOutcome::ev_id).collect();
    let present: std::collections::HashSet<i64> = tx
        .query(
            "select ev_id from pgq.get_batch_events($1) where ev_id = any($2)",
            &[&batch_id, &ids],
        )
        .await
        .map_err(Error::db(queue, consumer))?
        .iter()
        .map(|r| r.try_get::<_, i64>(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(Error::db(queue, consumer))?;
    let (mut failed, mut retried) = (0, 0);
    for outcome in outcomes.iter().filter(|o| present.contains(&o.ev_id())) {
        match outcome {
            tracking::AppliedOutcome::Failed { ev_id, reason } => {
                crate::failed::add_from_batch(tx, batch_id, *ev_id, reason).await?;
                failed += 1;
            }
            tracking::AppliedOutcome::Retry { ev_id, seconds } => {
                pgq::event_retry(tx, batch_id, *ev_id, *seconds).await?;
                retried += 1;
            }
        }
    }
    Ok((failed, retried))
}

/// Finishes a batch. A sub-consumer's batch may have been taken over by
/// another one meanwhile: that is an error, so the work rolls back.
async fn finish(tx: &tokio_postgres::Transaction<'_>, batch_id: i64, cooperative: bool) -> Result<()> {
    if cooperative {
        coop::finish_batch(tx, batch_id).await
    } else {
        pgq::finish_batch(tx, batch_id).await?;
        Ok(())
    }
}

fn seconds(s: f64) -> Interval {
    Interval::from_duration(crate::seconds::duration(s))
}

async fn rollback(queue_tx: tokio_postgres::Transaction<'_>, remote_tx: Option<tokio_postgres::Transaction<'_>>) {
    if let Some(remote) = remote_tx {
        let _ = remote.rollback().await;
    }
    let _ = queue_tx.rollback().await;
}

/// The `application_name` of the consumer's connections.
pub(crate) fn application_name(config: &Config) -> String {
    match &config.subconsumer {
        Some(sub) => format!("{}.{}", config.consumer, sub),
        None => config.consumer.clone(),
    }
}

/// The SQL condition for `[filter]`, values written as literals.
fn filter_sql(config: &Config) -> Result<Option<String>> {
    let mut parts = Vec::new();
    for (column, values) in [
        ("ev_type", &config.filter.ev_type),
        ("ev_extra1", &config.filter.ev_extra1),
    ] {
        if values.is_empty() {
            continue;
        }
        let list = values
            .iter()
            .map(|v| pgq::quote_literal(v))
            .collect::<pgq::Result<Vec<_>>>()?;
        parts.push(format!("{column} in ({})", list.join(", ")));
    }
    Ok((!parts.is_empty()).then(|| parts.join(" and ")))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}
