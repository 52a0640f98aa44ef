//! One batch being processed: reading its events, applying outcomes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use pgq::Event;

use crate::consumer::{CommitMode, Context};
use crate::error::{Error, Result};
use crate::failed;
use crate::metrics::ConsumerMetrics;
use crate::outcome::Outcome;
use crate::source::EventSource;
use crate::tracking::AppliedOutcome;

/// How a batch ends: finished (its effects commit and the consumer moves
/// past it) or aborted (everything rolls back; it is delivered again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum BatchEnd {
    /// Commit the work and finish the batch.
    Finish,
    /// Roll back; the batch comes again on the next round.
    Abort,
}

/// What one batch came to, event by event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// The batch's id.
    pub batch_id: i64,
    /// Events read (after the filter).
    pub events: u64,
    /// Events that were [`Outcome::Ok`].
    pub ok: u64,
    /// Events stored as failed.
    pub failed: u64,
    /// Events set to be retried.
    pub retried: u64,
    /// True when the batch had already been applied to the remote database
    /// (a crash between the two commits): it was finished without running
    /// the handler again.
    pub already_applied: bool,
}

/// The savepoint of the event handed out, in remote_event mode.
const SAVEPOINT: &str = "pgq_consumer_event";

/// A batch being processed: hands out its events, applies their outcomes.
/// Given to [`Consumer::process_batch`](crate::Consumer::process_batch).
pub struct Batch<'a> {
    cx: Context<'a>,
    mode: CommitMode,
    max_retries: Option<u32>,
    events: EventSource,
    /// The events handed out whose outcomes are not applied yet.
    handed_out: HashSet<i64>,
    poisoned: &'a HashMap<i64, String>,
    /// An event handed out whose outcome is not applied (the last one handed
    /// out, while it is so): the one a panic is blamed on.
    pub(crate) in_flight: Option<i64>,
    pub(crate) report: BatchReport,
    /// The events stored as failed or retried, for a remote consumer to keep
    /// in the remote database with the batch.
    pub(crate) outcomes: Vec<AppliedOutcome>,
    /// Where the handler's time per event goes, when the daemon serves metrics.
    metrics: Option<&'a ConsumerMetrics>,
    /// When the last event was handed out (with `metrics` only).
    handed_out_at: Option<Instant>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(
        cx: Context<'a>,
        mode: CommitMode,
        events: EventSource,
        max_retries: Option<u32>,
        poisoned: &'a HashMap<i64, String>,
    ) -> Batch<'a> {
        let batch_id = cx.ticks.batch_id;
        Batch {
            cx,
            mode,
            max_retries,
            events,
            handed_out: HashSet::new(),
            poisoned,
            in_flight: None,
            outcomes: Vec::new(),
            metrics: None,
            handed_out_at: None,
            report: BatchReport {
                batch_id,
                ..BatchReport::default()
            },
        }
    }

    /// Times the handler per event in `metrics`, when there are.
    pub(crate) fn timed(mut self, metrics: Option<&'a ConsumerMetrics>) -> Batch<'a> {
        self.metrics = metrics;
        self
    }

    /// What the handler can reach: the transactions and the batch's ids.
    pub fn context(&mut self) -> &mut Context<'a> {
        &mut self.cx
    }

    /// The next event of the batch, `None` when all were handed out. Events
    /// are streamed from the database as they are handed out (or read
    /// `fetch_size` at a time from a cursor), so memory does not grow with
    /// the batch. An event that made the handler panic on an earlier try is not
    /// handed out again: it is stored as failed with the panic's message.
    ///
    /// Events may be read ahead of applying their outcomes, and applied in
    /// any order, except in [`CommitMode::RemoteEvent`]: there a savepoint is
    /// opened on the remote side for the event handed out, covering the
    /// remote writes made until [`Batch::apply`] closes it, and savepoints
    /// nest, so an event's outcome must be applied before the next event is
    /// read ([`Error::EventNotApplied`] otherwise). To work on several
    /// events at once, use [`CommitMode::Remote`].
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        if self.mode == CommitMode::RemoteEvent {
            if let Some(&ev_id) = self.handed_out.iter().next() {
                return Err(Error::EventNotApplied {
                    batch_id: self.cx.ticks.batch_id,
                    ev_id,
                });
            }
        }
        loop {
            let batch_id = self.cx.ticks.batch_id;
            let next = match self.events.next(self.cx.db.tx, batch_id).await {
                Ok(next) => next,
                // Bytes that are not UTF-8 (an SQL_ASCII database): the
                // event is stored as failed as it is, in the database, and
                // the batch goes on.
                Err(pgq::Error::Undecodable { ev_id, field, .. }) => {
                    self.report.events += 1;
                    let reason = format!(
                        "undecodable: {field} is not valid UTF-8 (the database's encoding is SQL_ASCII); \
                         the event is kept here as it was"
                    );
                    failed::add_from_batch(self.cx.db.tx, batch_id, ev_id, &reason).await?;
                    log::warn!("event {ev_id} of batch {batch_id} stored as failed: {reason}");
                    self.note_failed(ev_id, reason);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let Some(event) = next else {
                self.in_flight = self.handed_out.iter().next().copied();
                return Ok(None);
            };
            self.report.events += 1;
            if let Some(message) = (!self.poisoned.is_empty())
                .then(|| self.poisoned.get(&event.ev_id))
                .flatten()
            {
                let reason = format!("panic: {message}");
                self.record_failed(&event, &reason).await?;
                continue;
            }
            if self.mode == CommitMode::RemoteEvent {
                self.remote_exec(&format!("savepoint {SAVEPOINT}")).await?;
            }
            // Writes made from now on are blamed on this event (and, under
            // its savepoint, rolled back with it).
            self.cx.tx.handed_out(event.ev_id);
            if !std::ptr::eq(self.cx.db, self.cx.tx) {
                self.cx.db.handed_out(event.ev_id);
            }
            self.in_flight = Some(event.ev_id);
            self.handed_out.insert(event.ev_id);
            if self.metrics.is_some() {
                self.handed_out_at = Some(Instant::now());
            }
            return Ok(Some(event));
        }
    }

    /// Applies an event's outcome: nothing more for [`Outcome::Ok`]; the
    /// failed-event store for [`Outcome::Failed`]; `pgq.event_retry` for
    /// [`Outcome::Retry`] (or the failed store once `max_retries` is spent);
    /// [`BatchEnd::Abort`] for [`Outcome::AbortBatch`], which the caller must
    /// return from `process_batch`.
    ///
    /// Each event handed out by [`Batch::next_event`] takes one outcome:
    /// an event that was not handed out, or whose outcome was applied
    /// already, is [`Error::EventNotHandedOut`]. An event handed out and left
    /// without an outcome when `process_batch` returns [`BatchEnd::Finish`]
    /// is done, as with [`Outcome::Ok`].
    pub async fn apply(&mut self, event: &Event, outcome: Outcome) -> Result<BatchEnd> {
        if !self.handed_out.remove(&event.ev_id) {
            return Err(Error::EventNotHandedOut {
                batch_id: self.cx.ticks.batch_id,
                ev_id: event.ev_id,
            });
        }
        if let (Some(metrics), Some(at)) = (self.metrics, self.handed_out_at.take()) {
            metrics.event_done(at.elapsed());
        }
        let outcome = match outcome {
            Outcome::Retry(delay) => match self.max_retries {
                Some(max) if event.ev_retry.unwrap_or(0) >= i32::try_from(max).unwrap_or(i32::MAX) => Outcome::Failed(
                    format!("gave up after {max} retries: the handler asked for another one"),
                ),
                _ => Outcome::Retry(delay),
            },
            other => other,
        };
        if self.mode == CommitMode::RemoteEvent {
            // The event's pipelined writes are answered before its savepoint
            // goes: one that failed is this event's, and aborts the batch.
            self.cx.tx.event_done(outcome == Outcome::Ok).await?;
            let sql = match outcome {
                Outcome::Ok => format!("release savepoint {SAVEPOINT}"),
                _ => format!("rollback to savepoint {SAVEPOINT}"),
            };
            self.remote_exec(&sql).await?;
        }
        if self.in_flight == Some(event.ev_id) {
            // Any other event still without an outcome takes the blame.
            self.in_flight = self.handed_out.iter().next().copied();
        }
        match outcome {
            Outcome::Ok => self.report.ok += 1,
            Outcome::Failed(reason) => self.record_failed(event, &reason).await?,
            Outcome::Retry(delay) => {
                let seconds = whole_seconds(delay);
                pgq::event_retry(self.cx.db.tx, self.cx.ticks.batch_id, event.ev_id, seconds).await?;
                self.outcomes.push(AppliedOutcome::Retry {
                    ev_id: event.ev_id,
                    seconds,
                });
                self.report.retried += 1;
            }
            Outcome::AbortBatch => return Ok(BatchEnd::Abort),
        }
        // Rows buffered for COPY are written once a buffer is full.
        self.cx.tx.flush_if_full().await?;
        if !std::ptr::eq(self.cx.db, self.cx.tx) {
            self.cx.db.flush_if_full().await?;
        }
        Ok(BatchEnd::Finish)
    }

    async fn record_failed(&mut self, event: &Event, reason: &str) -> Result<()> {
        failed::add(self.cx.db.tx, self.cx.queue, self.cx.consumer, event, reason).await?;
        self.note_failed(event.ev_id, reason.to_owned());
        Ok(())
    }

    /// Counts an event stored as failed, and keeps its outcome for a remote
    /// consumer's record of the batch.
    fn note_failed(&mut self, ev_id: i64, reason: String) {
        self.outcomes.push(AppliedOutcome::Failed { ev_id, reason });
        self.report.failed += 1;
    }

    async fn remote_exec(&self, sql: &str) -> Result<()> {
        self.cx.tx.tx.batch_execute(sql).await.map_err(|source| Error::Remote {
            queue: self.cx.queue.to_string(),
            consumer: self.cx.consumer.to_string(),
            source,
        })
    }
}

/// Turns a retry delay into whole seconds for `pgq.event_retry`, rounding up.
fn whole_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(i32::MAX)
}
