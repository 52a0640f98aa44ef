//! The batch's transaction on one connection, with what the handler's writes
//! through it need: the connection's statement cache, the writes pipelined
//! and the rows buffered for COPY, all checked before the batch counts as
//! committed.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use tokio_postgres::Client;

use crate::bulk::{Bulk, Deferred};
use crate::consumer::BoxError;
use crate::error::{Error, Result};
use crate::pipeline::{settle, Pipe};
use crate::statement_cache::StatementCache;

/// Whose batch the writes are for, to name in errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub(crate) queue: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) batch_id: i64,
}

impl Origin<'_> {
    /// A write that failed, or could not be made.
    pub(crate) fn write(&self, what: String, ev_id: Option<i64>, source: impl Into<BoxError>) -> Error {
        Error::Write {
            queue: self.queue.to_owned(),
            consumer: self.consumer.to_owned(),
            batch_id: self.batch_id,
            ev_id,
            what,
            source: source.into(),
        }
    }
}

/// No event handed out yet.
const NO_EVENT: i64 = i64::MIN;

/// The batch's transaction on one connection, and the writes made through it.
pub(crate) struct Writes<'a> {
    pub(crate) tx: &'a Client,
    pub(crate) cache: &'a StatementCache,
    pub(crate) pipe: &'a (dyn Pipe + 'a),
    /// The rows buffered to be written in bulk.
    pub(crate) bulk: Bulk,
    pub(crate) origin: Origin<'a>,
    /// A savepoint per event on this connection (the remote side in
    /// remote_event mode): buffered rows are written between events only,
    /// and those of an event that does not end Ok are dropped.
    savepoints: bool,
    /// The event handed out last ([`NO_EVENT`] before the first).
    event: AtomicI64,
    /// An event is handed out and its outcome not applied (with savepoints).
    in_flight: AtomicBool,
}

impl<'a> Writes<'a> {
    pub(crate) fn new(
        tx: &'a Client,
        cache: &'a StatementCache,
        pipe: &'a (dyn Pipe + 'a),
        origin: Origin<'a>,
        savepoints: bool,
    ) -> Writes<'a> {
        Writes {
            tx,
            cache,
            pipe,
            bulk: Bulk::default(),
            origin,
            savepoints,
            event: AtomicI64::new(NO_EVENT),
            in_flight: AtomicBool::new(false),
        }
    }

    /// The event handed out last, which a write made now is blamed on.
    pub(crate) fn event(&self) -> Option<i64> {
        Some(self.event.load(Ordering::Relaxed)).filter(|id| *id != NO_EVENT)
    }

    /// `ev_id` was handed out (after its savepoint, with savepoints).
    pub(crate) fn handed_out(&self, ev_id: i64) {
        self.event.store(ev_id, Ordering::Relaxed);
        if self.savepoints {
            self.in_flight.store(true, Ordering::Relaxed);
            self.bulk.mark();
        }
    }

    /// With savepoints, before the event's savepoint is released (`ok`) or
    /// rolled back: waits for the answers of its pipelined writes, so that a
    /// failed one is blamed on it (and aborts the batch), and keeps or drops
    /// its buffered rows. Nothing without savepoints.
    pub(crate) async fn event_done(&self, ok: bool) -> Result<()> {
        if !self.savepoints {
            return Ok(());
        }
        settle(self.pipe).await;
        if let Some(e) = self.failure() {
            return Err(e);
        }
        self.bulk.unmark(ok);
        self.in_flight.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the buffered rows when a buffer is full, unless an
    /// event is in flight under a savepoint (they would fall into its
    /// savepoint).
    pub(crate) async fn flush_if_full(&self) -> Result<()> {
        if self.bulk.is_full() && !self.in_flight.load(Ordering::Relaxed) {
            self.bulk.flush(self, false).await?;
        }
        Ok(())
    }

    /// Before the batch commits: writes every buffered row and, with
    /// `settle_now`, waits for every pipelined write's answer; returns the
    /// first failure known. With `defer`, the buffered rows' INSERTs are not
    /// sent but returned, for the statements that commit the batch to take
    /// along. Without `settle_now`, the answers still to come are read while the
    /// transaction commits ([`Writes::settled_failure`]): a write that failed
    /// aborted the transaction, and its COMMIT rolls it back.
    pub(crate) async fn finish(&self, defer: bool, settle_now: bool) -> Result<Vec<Deferred>> {
        let flushed = self.bulk.flush(self, defer).await;
        if settle_now {
            settle(self.pipe).await;
        }
        // A pipelined write that failed made everything after it fail:
        // it is the cause.
        match self.failure() {
            Some(e) => Err(e),
            None => flushed,
        }
    }

    /// Waits for the pipelined writes' answers and returns the first that
    /// failed, if any (when a batch fails: it is the likely cause).
    pub(crate) async fn settled_failure(&self) -> Option<Error> {
        settle(self.pipe).await;
        self.failure()
    }

    /// The first pipelined write known to have failed, as an error. A
    /// failure that says a cached statement is stale empties the cache.
    fn failure(&self) -> Option<Error> {
        let failure = self.pipe.take_failure()?;
        self.cache.forget_all_if_stale(&failure.source);
        let what = failure
            .what
            .unwrap_or_else(|| format!("pipelined write {}", failure.seq));
        Some(self.origin.write(what, failure.ev_id, failure.source))
    }
}
