//! The batch loop: one round takes one batch from where batches come from
//! (a plain or a cooperative consumer), runs the handler over it, and commits
//! the way the consumer's work commits (local, remote, savepoint per event).
//!
//! A round reads as its phases ([`BatchLoop::round`]): take the batch; open
//! the transactions and the event source; skip a remote batch already
//! applied; run the handler; then commit, or roll back for an abort, an
//! error, a panic or a lost batch.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::FutureExt;
use pgq::{BatchLimits, BatchStatements, BatchTicks, Interval};
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::batch::{Batch, BatchEnd, BatchReport};
use crate::bulk::Deferred;
use crate::config::Config;
use crate::consumer::{configure, read_settings, BoxError, CommitMode, Consumer, Context};
use crate::coop;
use crate::error::{Error, Result};
use crate::failpoint::crash_point;
use crate::heartbeat::{Heartbeat, Lease, Loss};
use crate::net::connect::{connect, Database};
use crate::pipeline::Pipeline;
use crate::reader::{Prefetch, Reader};
use crate::source::{event_filter, EventSource};
use crate::statement_cache::StatementCache;
use crate::tracking::{self, AppliedOutcome};
use crate::tx::{CommitError, Tx};
use crate::writes::{Origin, Writes};

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
    /// Events that made the handler panic, replayed as failed.
    poisoned: HashMap<i64, String>,
    /// Cooperative consumers: keeps the sub-consumer's hold on its batch
    /// while it works on it, so that only a silent one loses it.
    heartbeat: Heartbeat,
    /// `next_batch_custom` and `finish_batch`, prepared on `queue_db`.
    statements: Option<BatchStatements>,
    /// The handler's statements prepared on `queue_db`.
    queue_cache: StatementCache,
    /// The handler's statements prepared on `remote_db`.
    remote_cache: StatementCache,
    /// The batch tracking's statements, prepared on `remote_db`.
    tracking: Option<tracking::Prepared>,
    /// The second connection to the queue database: streams batches and
    /// listens for ticks.
    reader: Option<Reader>,
    /// The next batch, opened in the transaction that finished the previous
    /// one (plain consumers), and its events already streaming.
    pending: Option<Pending>,
    /// When a cooperative remote consumer last dropped the remote records
    /// of its group's finished batches.
    pruned: Option<Instant>,
    /// The daemon's metrics, when it serves them (see `metrics.rs`).
    metrics: Option<crate::metrics::ConsumerMetrics>,
    /// A cascaded consumer's provider (see [`crate::cascade`]); `config.db`
    /// is then that provider's location, `config.remote_db` its target node.
    cascade: Option<Follow>,
}

// --- cascade: a cascaded consumer follows its provider ---
/// Where a cascaded consumer reads from now.
struct Follow {
    /// The provider's location, as the target node names it.
    provider: String,
}

/// A batch opened by the transaction that finished the previous one.
struct Pending {
    ticks: BatchTicks,
    /// Its batch query, started while that transaction committed.
    prefetch: Option<Prefetch>,
}

/// A batch taken by a round.
struct Taken {
    ticks: BatchTicks,
    /// When it was asked for: a sub-consumer's hold on it counts from then.
    asked_at: Instant,
    /// Its batch query, started already.
    prefetch: Option<Prefetch>,
}

/// What the handler came to.
enum Ran {
    /// `process_batch` returned [`BatchEnd::Finish`].
    Finished {
        report: BatchReport,
        /// The events stored as failed or retried, for the remote record.
        outcomes: Vec<AppliedOutcome>,
    },
    /// `process_batch` returned [`BatchEnd::Abort`].
    Aborted,
    /// `process_batch` returned an error.
    Failed(BoxError),
    /// The handler panicked, while `in_flight` was handed out.
    Panicked { in_flight: Option<i64>, message: String },
    /// The sub-consumer lost its hold on the batch while the handler ran.
    Lost(Loss),
}

impl<C: Consumer> BatchLoop<C> {
    /// Reads the consumer's settings from `[settings]` and hands them to its
    /// [`Consumer::configure`], then connects to the queue database (and the
    /// remote one, in the remote commit modes) and checks that the queue
    /// exists, the consumer is registered and the framework's SQL is
    /// installed ([`Error::NotInstalled`] or [`Error::SchemaOutdated`]
    /// otherwise: run `install`).
    pub async fn connect(mut consumer: C, config: Config) -> Result<BatchLoop<C>> {
        // A config built in code is checked here as a file's is when read.
        config.check(config.origin())?;
        let settings = read_settings::<C>(&config)?;
        let mode = C::commit_mode(&settings);
        configure(&mut consumer, settings, &config).await?;
        let app = application_name(&config);
        // --- cascade: batches from the provider, work on the target node ---
        let (config, cascade, mode) = if config.cascade {
            let st = crate::cascade::consumer::state(&config, &app).await?;
            let view = crate::cascade::consumer::view(&config, &st.provider_location);
            let mode = match mode {
                CommitMode::RemoteEvent => CommitMode::RemoteEvent,
                _ => CommitMode::Remote,
            };
            let follow = Follow {
                provider: st.provider_location,
            };
            (view, Some(follow), mode)
        } else {
            (config, None, mode)
        };
        // --- end cascade ---
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
        crate::installed::verify(&queue_db, &config).await?;
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
            queue_cache: StatementCache::default(),
            remote_cache: StatementCache::default(),
            tracking: None,
            reader,
            pending: None,
            pruned: None,
            metrics: None,
            cascade,
        })
    }

    /// Counts batches and times events in `metrics`.
    pub(crate) fn set_metrics(&mut self, metrics: crate::metrics::ConsumerMetrics) {
        self.metrics = Some(metrics);
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
            self.queue_cache.clear();
        }
        self.reopen_reader().await;
        if let (Some(remote), Some(dsn)) = (&self.remote_db, &self.config.remote_db) {
            if remote.is_closed() {
                let fresh = connect(dsn, &app, Database::Remote).await?;
                self.remote_db = Some(fresh);
                self.remote_cache.clear();
                self.tracking = None;
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
        match self.reader.as_mut() {
            Some(reader) => reader.tick().await,
            None => std::future::pending().await,
        }
    }

    /// Opens the reader connection again when it was lost (quietly: the
    /// queue connection's state is what the daemon reports).
    async fn reopen_reader(&mut self) {
        if self.reader.as_ref().is_some_and(|r| !r.is_closed()) {
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
        // --- cascade: the file's `db` is the target node ---
        let config = match &self.cascade {
            Some(f) if config.cascade => crate::cascade::consumer::view(&config, &f.provider),
            _ => config,
        };
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
        // --- cascade: paused, or following a new provider ---
        if self.cascade.is_some() && !self.follow_provider().await? {
            return Ok(Round::Idle);
        }
        let statements = self.statements().await?;
        let Some(taken) = self.take(&statements).await? else {
            return Ok(Round::Idle);
        };
        let batch_id = taken.ticks.batch_id;
        if let Some(m) = &self.metrics {
            m.batch_opened(batch_id);
        }
        crash_point("batch-read");
        // A sub-consumer's hold on its batch: its heartbeat beats until this
        // round ends, however it ends.
        let lease = self.heartbeat.start(&self.config, batch_id, taken.asked_at);
        self.reopen_reader().await;
        let BatchLoop {
            consumer,
            config,
            mode,
            queue_db,
            remote_db,
            poisoned,
            reader,
            pending,
            pruned,
            queue_cache,
            remote_cache,
            tracking,
            metrics,
            ..
        } = self;

        let Taken { ticks, prefetch, .. } = taken;

        let Opened {
            queue_tx,
            remote_tx,
            applied,
            events,
            prepared,
        } = open(
            queue_db,
            remote_db.as_mut(),
            tracking,
            reader.as_mut(),
            prefetch,
            config,
            &ticks,
        )
        .await?;
        if applied {
            return skip_applied(queue_tx, remote_tx, config, &ticks).await;
        }
        if let (Some(remote), Some(_)) = (&remote_tx, &config.subconsumer) {
            prune_group_records(pruned, config, &queue_tx, remote).await?;
        }

        // The writes the handler makes without waiting for them: pipelined
        // on each connection, or buffered for COPY.
        let origin = Origin {
            queue: &config.queue,
            consumer: &config.consumer,
            batch_id,
        };
        let queue_pipe = Pipeline::new(queue_tx.client());
        let remote_pipe = remote_tx.as_ref().map(|tx| Pipeline::new(tx.client()));
        let queue_writes = Writes::new(queue_tx.client(), queue_cache, &queue_pipe, origin, false);
        let remote_writes = match (&remote_tx, &remote_pipe) {
            (Some(tx), Some(pipe)) => Some(Writes::new(
                tx.client(),
                remote_cache,
                pipe,
                origin,
                *mode == CommitMode::RemoteEvent,
            )),
            _ => None,
        };
        let writes: Vec<&Writes<'_>> = [Some(&queue_writes), remote_writes.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        let cx = Context {
            db: &queue_writes,
            tx: remote_writes.as_ref().unwrap_or(&queue_writes),
            ticks: &ticks,
            queue: &config.queue,
            consumer: &config.consumer,
        };
        let batch = Batch::new(cx, *mode, events, config.max_retries, poisoned).timed(metrics.as_ref());
        // The last buffered rows go with the statements that commit the
        // batch: the remote record, or (a local consumer's) the finish.
        let mut deferred = Deferrals::default();
        let ran = match run(consumer, batch, lease.as_ref(), &writes).await {
            // Before anything commits (the remote record included): every
            // buffered row written or taken along; the pipelined writes of
            // the side that commits first are answered while it commits.
            Ran::Finished { report, outcomes } => match finish_writes(&queue_writes, remote_writes.as_ref()).await {
                Ok(rows) => {
                    deferred = rows;
                    Ran::Finished { report, outcomes }
                }
                // A pipelined write answered since may be the cause.
                Err(e) => Ran::Failed(match first_failure(&writes).await {
                    Some(write) => Box::new(write),
                    None => Box::new(e),
                }),
            },
            // A pipelined write that failed aborted the transaction: it is
            // the cause of what failed after it.
            Ran::Failed(source) => Ran::Failed(match first_failure(&writes).await {
                Some(e) => Box::new(e),
                None => source,
            }),
            other => other,
        };
        if !matches!(ran, Ran::Finished { .. }) {
            // Every answer is read before a rollback waits on these
            // connections: one left unread stops its connection reading.
            for w in &writes {
                let _ = w.settled_failure().await;
            }
        }
        drop(writes);
        // The writes that commit first: their last answers come with the
        // commit.
        let unsettled = remote_writes.as_ref().unwrap_or(&queue_writes);
        match ran {
            Ran::Finished { report, outcomes } => {
                // The next batch's events are read while this one commits.
                let filter = event_filter(config);
                let ahead = reader
                    .as_ref()
                    .filter(|_| reads_ahead(config))
                    .and_then(|r| r.read_ahead(&config.consumer, &ticks, &filter));
                let committed = Commit {
                    statements: &statements,
                    config,
                    ticks: &ticks,
                    lease: lease.as_ref(),
                    queue_cache,
                    remote_cache,
                    tracking: prepared.as_ref(),
                }
                .commit(queue_tx, remote_tx, &outcomes, deferred, unsettled)
                .await
                .inspect_err(|e| {
                    if tracking::Prepared::stale(e) {
                        *tracking = None;
                    }
                })?;
                let next = match committed {
                    Committed::Done(next) => next,
                    Committed::Lost => return Ok(Round::Lost { batch_id }),
                };
                // The next batch's events: those read ahead, or a stream
                // started at once.
                *pending = next.map(|ticks| Pending {
                    prefetch: reader
                        .as_ref()
                        .and_then(|r| r.prefetch(&config.consumer, &ticks, &filter, ahead)),
                    ticks,
                });
                crash_point("after-queue-commit");
                poisoned.clear();
                log::debug!(
                    "batch {batch_id}: {} events, {} ok, {} failed, {} retried",
                    report.events,
                    report.ok,
                    report.failed,
                    report.retried
                );
                Ok(Round::Finished(report))
            }
            Ran::Aborted => {
                rollback(queue_tx, remote_tx).await;
                log::info!("batch {batch_id} aborted by the handler; it will be delivered again");
                Ok(Round::Aborted { batch_id })
            }
            Ran::Failed(source) => {
                rollback(queue_tx, remote_tx).await;
                Err(handler_error(config, batch_id, source))
            }
            Ran::Panicked { in_flight, message } => {
                rollback(queue_tx, remote_tx).await;
                let Some(ev_id) = in_flight else {
                    return Err(Error::Handler {
                        queue: config.queue.clone(),
                        consumer: config.consumer.clone(),
                        batch_id,
                        source: format!("panic outside any event: {message}").into(),
                    });
                };
                log::error!(
                    "the handler panicked on event {ev_id} of batch {batch_id}: {message}; \
                     replaying the batch with that event marked failed"
                );
                poisoned.insert(ev_id, message.clone());
                Ok(Round::Panicked {
                    batch_id,
                    ev_id,
                    message,
                })
            }
            Ran::Lost(loss) => {
                rollback(queue_tx, remote_tx).await;
                give_up(config, batch_id, &loss);
                Ok(Round::Lost { batch_id })
            }
        }
    }

    // --- cascade ---
    /// A cascaded consumer's state on its target node: `false` when it is
    /// paused. When its provider changed, the connections to the old one
    /// are replaced (and the batch the old one opened is left to it).
    async fn follow_provider(&mut self) -> Result<bool> {
        let (Some(follow), Some(target)) = (&mut self.cascade, &self.remote_db) else {
            return Ok(true);
        };
        let st = crate::cascade::consumer::refresh(target, &self.config.queue, &self.config.consumer).await?;
        if st.paused {
            log::debug!("cascaded consumer {:?} is paused", self.config.consumer);
            return Ok(false);
        }
        if st.provider_location != follow.provider {
            log::info!(
                "cascaded consumer {:?}: provider changed to node {:?}; reading from there at tick {}",
                self.config.consumer,
                st.provider_node,
                st.completed_tick
            );
            let timeout = self.config.db.net_timeout();
            let db = crate::config::ConnString::new(st.provider_location.clone()).with_net_timeout(timeout);
            let app = application_name(&self.config);
            self.queue_db = connect(&db, &app, Database::Queue).await?;
            self.config.db = db;
            follow.provider = st.provider_location;
            self.statements = None;
            self.queue_cache.clear();
            self.pending = None;
            self.reader = None;
            self.reopen_reader().await;
        }
        Ok(true)
    }
    // --- end cascade ---

    /// Takes the batch to work on: the one the last round opened, or the
    /// next one from where this consumer's batches come from (its own queue
    /// position, or its cooperative group's). `None` when there is none.
    async fn take(&mut self, statements: &BatchStatements) -> Result<Option<Taken>> {
        let asked_at = Instant::now();
        if let Some(p) = self.pending.take() {
            return Ok(Some(Taken {
                ticks: p.ticks,
                asked_at,
                prefetch: p.prefetch,
            }));
        }
        let c = &self.config;
        let limits = limits(c);
        let ticks = match &c.subconsumer {
            Some(sub) => {
                coop::next_batch(&self.queue_db, &c.queue, &c.consumer, sub, c.dead_interval(), &limits).await?
            }
            None => {
                statements
                    .next_batch(&self.queue_db, &c.queue, &c.consumer, &limits)
                    .await?
            }
        };
        Ok(ticks.map(|ticks| Taken {
            ticks,
            asked_at,
            prefetch: None,
        }))
    }
}

/// What [`open`] opened.
struct Opened<'q, 'r> {
    queue_tx: Tx<'q>,
    remote_tx: Option<Tx<'r>>,
    /// Whether the remote database applied the batch already.
    applied: bool,
    events: EventSource,
    /// The batch tracking's statements on the remote connection.
    prepared: Option<tracking::Prepared>,
}

/// Opens the round's transactions (the queue database's, and the remote
/// one's in the remote modes) and its event source, built here and nowhere
/// else: the batch query the last round started (`prefetch`), or the one
/// started now on the reader connection while the transactions begin (one
/// round trip for all), or PgQ's cursor when the reader cannot be used.
/// The remote transaction's first statement, whether the batch was applied
/// there already, runs while the events are still coming; on a new remote
/// connection, the tracking's statements are prepared first (`tracking`).
async fn open<'q, 'r>(
    queue_db: &'q mut Client,
    remote_db: Option<&'r mut Client>,
    tracking: &mut Option<tracking::Prepared>,
    reader: Option<&mut Reader>,
    prefetch: Option<Prefetch>,
    config: &Config,
    ticks: &BatchTicks,
) -> Result<Opened<'q, 'r>> {
    let stream = async {
        match (prefetch, reader) {
            (Some(prefetch), _) => prefetch.await.ok().flatten(),
            (None, Some(reader)) => {
                // A plain consumer's batch is read by its ticks; a
                // sub-consumer's by its id.
                let plain = config.subconsumer.is_none().then_some(config.consumer.as_str());
                reader.stream(&config.queue, plain, ticks, &event_filter(config)).await
            }
            (None, None) => None,
        }
    };
    let remote = async {
        let Some(db) = remote_db else {
            return Ok((None, false, None));
        };
        let (queue, consumer) = (&config.queue, &config.consumer);
        let prepared = match tracking {
            Some(p) => p.clone(),
            None => tracking
                .insert(tracking::Prepared::prepare(&*db, queue, consumer).await?)
                .clone(),
        };
        // The check goes out right behind the START TRANSACTION: one round
        // trip for both.
        let mut tx = Tx::begin(db);
        let client = tx.client();
        let sub = config.subconsumer.as_deref();
        let (begun, applied) = futures_util::future::join(
            tx.begun(),
            tracking::is_applied_with(client, Some(&prepared), queue, consumer, sub, ticks),
        )
        .await;
        begun.map_err(not_begun(config, Database::Remote))?;
        match applied {
            Ok(applied) => Ok::<_, Error>((Some(tx), applied, Some(prepared))),
            Err(e) => {
                if tracking::Prepared::stale(&e) {
                    *tracking = None;
                }
                Err(e)
            }
        }
    };
    // The queue transaction's START TRANSACTION goes out now, and its answer
    // is waited for with the rest: nothing else is sent on that connection
    // before the transaction is known to be open.
    let mut queue_tx = Tx::begin(queue_db);
    let (begun, remote, stream) = futures_util::future::join3(queue_tx.begun(), remote, stream).await;
    begun.map_err(not_begun(config, Database::Queue))?;
    let (remote_tx, applied, prepared) = remote?;
    Ok(Opened {
        queue_tx,
        remote_tx,
        applied,
        events: EventSource::new(stream, config)?,
        prepared,
    })
}

/// Finishes a batch that the remote database has applied already: the
/// queue transaction of its first attempt was lost (a crash between the two
/// commits), so what that transaction did besides finishing the batch (the
/// events it stored as failed or retried, kept with the remote record) is
/// done again, and the handler is not run.
async fn skip_applied(
    queue_tx: Tx<'_>,
    remote_tx: Option<Tx<'_>>,
    config: &Config,
    ticks: &BatchTicks,
) -> Result<Round> {
    let (queue, consumer, sub) = (&config.queue, &config.consumer, config.subconsumer.as_deref());
    let batch_id = ticks.batch_id;
    let outcomes = match &remote_tx {
        Some(remote) => tracking::applied_outcomes(remote.client(), queue, consumer, sub, ticks).await?,
        None => Vec::new(),
    };
    drop(remote_tx);
    let (failed, retried) = replay_outcomes(&queue_tx, queue, consumer, batch_id, &outcomes).await?;
    if sub.is_some() {
        coop::finish_batch(queue_tx.client(), batch_id).await?;
    } else {
        pgq::finish_batch(queue_tx.client(), batch_id).await?;
    }
    queue_tx.commit().await.map_err(commit_error(config, Database::Queue))?;
    log::info!(
        "batch {batch_id} was already applied to the remote database; finished it \
         ({failed} event(s) stored as failed and {retried} retried again, as the first time)"
    );
    Ok(Round::Finished(BatchReport {
        batch_id,
        failed,
        retried,
        already_applied: true,
        ..Default::default()
    }))
}

/// Runs the handler over the batch. A panic is caught and survived:
/// `catching` makes the daemon's panic hook log it at ERROR, not FATAL. A
/// sub-consumer that can no longer prove it holds its batch stops working on
/// it at once. Meanwhile, the answers of the handler's pipelined `writes`
/// are read as they come.
async fn run<C: Consumer>(
    consumer: &mut C,
    mut batch: Batch<'_>,
    lease: Option<&Lease>,
    writes: &[&Writes<'_>],
) -> Ran {
    let outcome = {
        let handler =
            std::panic::AssertUnwindSafe(pgq_daemon::catching(consumer.process_batch(&mut batch))).catch_unwind();
        // Polled first, so the pipelines know the task's waker before the
        // handler sends anything.
        let answers = futures_util::future::poll_fn(|cx| {
            for w in writes {
                let _ = w.pipe.poll_answers(cx);
            }
            std::task::Poll::<std::convert::Infallible>::Pending
        });
        let handler = async {
            tokio::select! {
                biased;
                never = answers => match never {},
                outcome = handler => outcome,
            }
        };
        match lease {
            None => handler.await,
            Some(lease) => tokio::select! {
                outcome = handler => outcome,
                loss = lease.lost() => return Ran::Lost(loss),
            },
        }
    };
    match outcome {
        Ok(Ok(BatchEnd::Finish)) => Ran::Finished {
            report: batch.report,
            outcomes: batch.outcomes,
        },
        Ok(Ok(BatchEnd::Abort)) => Ran::Aborted,
        Ok(Err(e)) => Ran::Failed(e),
        Err(panic) => Ran::Panicked {
            in_flight: batch.in_flight,
            message: panic_message(panic.as_ref()),
        },
    }
}

/// The last buffered rows of a batch, each side's, for the statements that
/// commit the batch to take along.
#[derive(Default)]
struct Deferrals {
    /// A local consumer's: sent with the finish.
    queue: Vec<Deferred>,
    /// A remote consumer's: sent with the remote record.
    remote: Vec<Deferred>,
}

/// Writes what the handler left buffered, on every connection (the remote
/// one first); the first failure known is the batch's. The connection whose
/// commit comes first (the remote one, or a local consumer's queue one)
/// keeps its last buffered rows, returned unsent, and its pipelined writes'
/// answers still to come: both go with the statements that commit it, and
/// are checked once they are answered (see [`Commit::commit`]). A remote
/// consumer's queue side is written, and its answers waited for, before the
/// remote side commits.
async fn finish_writes(queue: &Writes<'_>, remote: Option<&Writes<'_>>) -> Result<Deferrals> {
    let mut deferred = Deferrals::default();
    match remote {
        Some(remote) => {
            deferred.remote = remote.finish(true, false).await?;
            queue.finish(false, true).await?;
        }
        None => deferred.queue = queue.finish(true, false).await?,
    }
    Ok(deferred)
}

/// Sends the rows left to write (`deferred`) on `tx`, all at once; the
/// answers in their order.
async fn send_deferred(tx: &Client, deferred: &[Deferred]) -> Vec<std::result::Result<u64, tokio_postgres::Error>> {
    futures_util::future::join_all(deferred.iter().map(|d| tx.execute_raw(&d.statement, d.params.iter()))).await
}

/// The first of the rows left to write that failed, as the batch's error.
fn deferred_failure(
    config: &Config,
    batch_id: i64,
    cache: &StatementCache,
    deferred: Vec<Deferred>,
    sent: Vec<std::result::Result<u64, tokio_postgres::Error>>,
) -> Result<()> {
    let Some((d, source)) = deferred
        .into_iter()
        .zip(sent)
        .find_map(|(d, sent)| sent.err().map(|e| (d, e)))
    else {
        return Ok(());
    };
    cache.forget_all_if_stale(&source);
    let write = Error::Write {
        queue: config.queue.clone(),
        consumer: config.consumer.clone(),
        batch_id,
        ev_id: None,
        what: d.what,
        source: Box::new(source),
    };
    Err(handler_error(config, batch_id, Box::new(write)))
}

/// The first pipelined write that failed, on any connection, once all
/// have been answered.
async fn first_failure(writes: &[&Writes<'_>]) -> Option<Error> {
    for w in writes.iter().rev() {
        if let Some(e) = w.settled_failure().await {
            return Some(e);
        }
    }
    None
}

/// The error of a round whose `process_batch` returned `source`. The
/// framework's own work failing under it (storing a failed event, reading
/// the batch, a lost connection) is that error, not the handler's; the
/// handler's own errors, and its misuse of the batch, are
/// [`Error::Handler`].
fn handler_error(config: &Config, batch_id: i64, source: BoxError) -> Error {
    let handler = |source| Error::Handler {
        queue: config.queue.clone(),
        consumer: config.consumer.clone(),
        batch_id,
        source,
    };
    match source.downcast::<Error>() {
        Ok(e)
            if matches!(
                *e,
                Error::EventNotApplied { .. }
                    | Error::EventNotHandedOut { .. }
                    | Error::Write { .. }
                    | Error::CopyRefused { .. }
            ) =>
        {
            handler(e)
        }
        Ok(e) => *e,
        Err(source) => handler(source),
    }
}

/// What committing a batch needs besides its transactions.
struct Commit<'a> {
    statements: &'a BatchStatements,
    config: &'a Config,
    ticks: &'a BatchTicks,
    lease: Option<&'a Lease>,
    /// The handler's statements on each connection.
    queue_cache: &'a StatementCache,
    remote_cache: &'a StatementCache,
    /// The batch tracking's statements on the remote connection.
    tracking: Option<&'a tracking::Prepared>,
}

/// How committing a batch ended.
enum Committed {
    /// Committed; the next batch, opened by the same transaction (a plain
    /// consumer's).
    Done(Option<BatchTicks>),
    /// The sub-consumer's batch went to another member: rolled back.
    Lost,
}

/// How the queue transaction's finish of a batch went.
enum Finished {
    /// A plain consumer's: the batch finished and the next one opened.
    Plain(pgq::Result<Option<BatchTicks>>),
    /// A sub-consumer's.
    Sub(Result<()>),
}

impl Commit<'_> {
    /// Commits the work the way the consumer's work commits: the remote
    /// transaction first (recording the batch there, with `outcomes`, the
    /// events stored as failed or retried), then the queue transaction that
    /// finishes the batch, with the rows left to write (`deferred`, a local
    /// consumer's) sent right before it finishes the batch.
    ///
    /// A remote consumer's queue transaction finishes the batch (and opens
    /// the next) while the remote side commits, and commits only once the
    /// remote COMMIT succeeded: the order of the commits is kept, the
    /// finish's work is off the path.
    ///
    /// The handler's pipelined writes on the side that commits first
    /// (`unsettled`) may still be unanswered: the COMMIT goes out behind
    /// them, and their answers are read meanwhile. One that failed aborted
    /// the transaction, so its COMMIT rolled it back (PostgreSQL answers a
    /// COMMIT of an aborted transaction as a ROLLBACK, without an error): it
    /// is checked first, and is the batch's error.
    async fn commit(
        self,
        queue_tx: Tx<'_>,
        remote_tx: Option<Tx<'_>>,
        outcomes: &[AppliedOutcome],
        deferred: Deferrals,
        unsettled: &Writes<'_>,
    ) -> Result<Committed> {
        let Commit {
            statements,
            config,
            ticks,
            lease,
            queue_cache,
            remote_cache,
            tracking: prepared,
        } = self;
        let (queue, consumer, sub) = (&config.queue, &config.consumer, config.subconsumer.as_deref());
        let batch_id = ticks.batch_id;
        crash_point("before-remote-commit");
        // Checked last before anything commits: the commits themselves
        // catch what slips past it.
        if let Some(Err(loss)) = lease.map(Lease::check) {
            futures_util::future::join(rollback(queue_tx, remote_tx), unsettled.settled_failure()).await;
            give_up(config, batch_id, &loss);
            return Ok(Committed::Lost);
        }
        // A pipelined write that failed: nothing of the batch committed.
        let write_failed = |e: Error| handler_error(config, batch_id, Box::new(e));
        // The queue transaction's finish: the rows left to write go first,
        // in the same round trip (tokio-postgres sends a request when its
        // future is first polled, and `join` polls in order); should one
        // fail, the finish fails and the transaction cannot commit.
        let queue_deferred = &deferred.queue;
        let queue_client = queue_tx.client();
        let finish = async {
            if sub.is_some() {
                let (sent, finished) = futures_util::future::join(
                    send_deferred(queue_client, queue_deferred),
                    coop::finish_batch(queue_client, batch_id),
                )
                .await;
                (sent, Finished::Sub(finished))
            } else {
                let (sent, next) = futures_util::future::join(
                    send_deferred(queue_client, queue_deferred),
                    statements.finish_and_next(queue_client, batch_id, queue, consumer, &limits(config)),
                )
                .await;
                (sent, Finished::Plain(next))
            }
        };
        let Some(remote) = remote_tx else {
            // No remote side: where it would have committed.
            crash_point("after-remote-commit");
            if sub.is_some() {
                let ((sent, finished), failure) = futures_util::future::join(finish, unsettled.settled_failure()).await;
                if let Some(e) = failure {
                    return Err(write_failed(e));
                }
                return sub_finished(config, batch_id, queue_cache, deferred.queue, sent, finished, queue_tx).await;
            }
            // A plain local consumer: finishing this batch, opening the next
            // one and committing, in one round trip. The COMMIT goes without
            // waiting for the finish, polled after it (so it is sent after
            // it): if the finish failed (or found the batch not open, which
            // it makes an error), the transaction is aborted and the COMMIT
            // rolls it back.
            let ((sent, finished), committed, failure) =
                futures_util::future::join3(finish, queue_tx.commit(), unsettled.settled_failure()).await;
            if let Some(e) = failure {
                return Err(write_failed(e));
            }
            committed.map_err(commit_error(config, Database::Queue))?;
            deferred_failure(config, batch_id, queue_cache, deferred.queue, sent)?;
            let next = plain_next(finished)?;
            return Ok(Committed::Done(next));
        };
        // The last buffered rows, the record of the batch (and of the
        // outcomes stored in the queue database) and the COMMIT go in one
        // round trip: each is sent when first polled (all are parsed, bound
        // and run at once), and `join5` polls them in this order. Should one
        // fail, the transaction is aborted and the COMMIT rolls it back:
        // nothing commits, and its error is the round's.
        let remote_client = remote.client();
        let outcomes_kept = async {
            if outcomes.is_empty() {
                Ok(())
            } else {
                tracking::record_outcomes(remote_client, queue, consumer, sub, batch_id, outcomes).await
            }
        };
        // A cascaded consumer's completed tick on its target node.
        let completed = async {
            if config.cascade {
                let (prev, cur) = (ticks.prev_tick_id, ticks.cur_tick_id);
                crate::cascade::consumer::complete(remote_client, queue, consumer, prev, cur).await
            } else {
                Ok(())
            }
        };
        let remote_commit = futures_util::future::join5(
            send_deferred(remote_client, &deferred.remote),
            tracking::record_with(remote_client, prepared, queue, consumer, sub, ticks),
            outcomes_kept,
            completed,
            remote.commit(),
        );
        let ((queue_sent, finished), (sent, recorded, kept, completed, committed), failure) =
            futures_util::future::join3(finish, remote_commit, unsettled.settled_failure()).await;
        // From here on, a return leaves `queue_tx` unfinished: dropped, it
        // rolls back (its finish, and the next batch it opened, with it).
        if let Some(e) = failure {
            return Err(write_failed(e));
        }
        deferred_failure(config, batch_id, remote_cache, deferred.remote, sent)?;
        match recorded {
            Err(e @ Error::BatchAppliedByOther { .. }) => {
                log::warn!("{}", pgq_daemon::error_chain(&e));
                return Ok(Committed::Lost);
            }
            other => other?,
        }
        kept?;
        match completed {
            // Another process of this consumer committed the batch.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) => {
                log::warn!(
                    "{}; this process's work on it is rolled back",
                    pgq_daemon::error_chain(&e)
                );
                return Ok(Committed::Lost);
            }
            other => other?,
        }
        committed.map_err(commit_error(config, Database::Remote))?;
        crash_point("after-remote-commit");
        if sub.is_some() {
            return sub_finished(
                config,
                batch_id,
                queue_cache,
                deferred.queue,
                queue_sent,
                finished,
                queue_tx,
            )
            .await;
        }
        deferred_failure(config, batch_id, queue_cache, deferred.queue, queue_sent)?;
        let next = plain_next(finished)?;
        queue_tx.commit().await.map_err(commit_error(config, Database::Queue))?;
        Ok(Committed::Done(next))
    }
}

/// The next batch a plain consumer's finish opened, or its error.
fn plain_next(finished: Finished) -> Result<Option<BatchTicks>> {
    match finished {
        Finished::Plain(next) => next.map_err(|e| match e {
            pgq::Error::BatchNotOpen { batch_id, .. } => Error::BatchGone { batch_id },
            e => Error::Pgq(e),
        }),
        Finished::Sub(_) => Ok(None),
    }
}

/// Ends a sub-consumer's batch once its finish came back: the queue
/// transaction commits, unless a row failed, or the batch went to another
/// member (then its work here is rolled back: what was committed in the
/// remote database is recorded there, and the member holding the batch
/// finds it applied).
async fn sub_finished(
    config: &Config,
    batch_id: i64,
    queue_cache: &StatementCache,
    deferred: Vec<Deferred>,
    sent: Vec<std::result::Result<u64, tokio_postgres::Error>>,
    finished: Finished,
    queue_tx: Tx<'_>,
) -> Result<Committed> {
    // A return before the commit drops `queue_tx` unfinished: it rolls back.
    deferred_failure(config, batch_id, queue_cache, deferred, sent)?;
    match finished {
        Finished::Sub(Err(e @ Error::BatchNotActive { .. })) => {
            log::warn!(
                "{}; its work here is rolled back (what was committed in the remote database is \
                 recorded there, and the sub-consumer holding the batch finds it applied)",
                pgq_daemon::error_chain(&e)
            );
            return Ok(Committed::Lost);
        }
        Finished::Sub(result) => result?,
        Finished::Plain(_) => {}
    }
    queue_tx.commit().await.map_err(commit_error(config, Database::Queue))?;
    Ok(Committed::Done(None))
}

/// The error of a START TRANSACTION that failed in `which` database.
fn not_begun(config: &Config, which: Database) -> impl FnOnce(std::sync::Arc<tokio_postgres::Error>) -> Error {
    let (queue, consumer) = (config.queue.clone(), config.consumer.clone());
    move |source| Error::NotBegun {
        queue,
        consumer,
        which,
        source,
    }
}

/// The error of a transaction of `which` database that did not commit.
fn commit_error(config: &Config, which: Database) -> impl FnOnce(CommitError) -> Error + '_ {
    move |e| match e {
        CommitError::NotBegun(source) => not_begun(config, which)(source),
        CommitError::Commit(source) => {
            let (queue, consumer) = (config.queue.clone(), config.consumer.clone());
            match which {
                Database::Remote => Error::Remote {
                    queue,
                    consumer,
                    source,
                },
                _ => Error::Db {
                    queue,
                    consumer,
                    source,
                },
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
    pruned: &mut Option<Instant>,
    config: &Config,
    queue_tx: &Client,
    remote: &Client,
) -> Result<()> {
    if pruned.is_some_and(|at| at.elapsed() < PRUNE_PERIOD) {
        return Ok(());
    }
    *pruned = Some(Instant::now());
    let (queue, consumer) = (&config.queue, &config.consumer);
    if let Some(tick) = coop::group_finished_tick(queue_tx, queue, consumer).await? {
        let n = tracking::prune_group(remote, queue, consumer, tick).await?;
        log::debug!("dropped {n} remote record(s) of finished batches of the group, up to tick {tick}");
    }
    Ok(())
}

/// Logs that a sub-consumer gives up its batch, and why.
fn give_up(config: &Config, batch_id: i64, loss: &Loss) {
    log::warn!(
        "sub-consumer {:?} of {:?} gives up batch {batch_id} and rolls its work back: {loss}",
        config.subconsumer.as_deref().unwrap_or_default(),
        config.consumer
    );
}

/// The batch size and age limits of the config.
/// Whether the next batch can be known, and read, before this one is
/// finished: for a plain consumer whose batches end at the next tick (no
/// `min_count` or `min_interval`; see [`pgq::BatchReader::read_ahead`]).
fn reads_ahead(c: &Config) -> bool {
    let limits = limits(c);
    c.subconsumer.is_none() && limits.min_count.is_none() && limits.min_interval.is_none()
}

fn limits(c: &Config) -> BatchLimits {
    BatchLimits {
        min_lag: c.min_lag().map(Interval::from_duration),
        min_count: c.min_count,
        min_interval: c.min_interval().map(Interval::from_duration),
    }
}

/// Stores as failed and retries again, in the queue transaction, the events
/// of an applied batch that its first attempt failed or retried (those of
/// them in this batch: a replay may be cut shorter). Returns how many of each.
async fn replay_outcomes(
    tx: &Client,
    queue: &str,
    consumer: &str,
    batch_id: i64,
    outcomes: &[AppliedOutcome],
) -> Result<(u64, u64)> {
    if outcomes.is_empty() {
        return Ok((0, 0));
    }
    let ids: Vec<i64> = outcomes.iter().map(AppliedOutcome::ev_id).collect();
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
            AppliedOutcome::Failed { ev_id, reason } => {
                crate::failed::add_from_batch(tx, batch_id, *ev_id, reason).await?;
                failed += 1;
            }
            AppliedOutcome::Retry { ev_id, seconds } => {
                pgq::event_retry(tx, batch_id, *ev_id, *seconds).await?;
                retried += 1;
            }
        }
    }
    Ok((failed, retried))
}

async fn rollback(queue_tx: Tx<'_>, remote_tx: Option<Tx<'_>>) {
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

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}
