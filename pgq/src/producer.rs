//! The fast producer: events handed over one at a time, sent in batches, and
//! the ticker told at commit.

use std::borrow::Borrow;
use std::future::Future;

use tokio_postgres::{Client, Transaction};

use crate::error::{on_queue, Error, Result};
use crate::event::NewEvent;
use crate::notify::notify_events;
use crate::target::{event_bytes, Target};

/// How many events a [`Producer`] keeps before sending them.
const DEFAULT_BUFFER_EVENTS: usize = 5000;
/// How many payload bytes a [`Producer`] keeps before sending them.
const DEFAULT_BUFFER_BYTES: usize = 4 << 20;

/// Inserts events one call at a time, in one transaction, at the speed of a
/// bulk insert: [`Producer::send`] only buffers, and the buffered events go
/// to the database as one multi-row statement (arrays, one round trip) once
/// the buffer is full, on [`Producer::flush`] and on [`Producer::commit`].
///
/// The statement is a plain `INSERT` into the queue's current event table,
/// as `pgq.insert_event` does it in C, where nothing `pgq.insert_event`
/// checks could refuse the events and the session may: with the rights to
/// insert into the event tables directly (PgQ's `pgq_admin` role, the
/// tables' owner, a superuser), into a queue without `queue_per_tx_limit`
/// and with `queue_disable_insert` off, in a transaction that may write.
/// Otherwise it calls `pgq.insert_event` once per row (a role with only
/// `pgq_writer` needs nothing more), still in one statement, and PgQ
/// applies its limits exactly as to its own callers:
///
/// - over the queue's `queue_per_tx_limit` the producer fails with
///   [`Error::TooManyEvents`]; every event of the transaction counts,
///   also those inserted before or after by [`insert_event`](crate::insert_event)
///   and the like, as PgQ counts them (per transaction, in the backend);
/// - while the queue's `queue_disable_insert` is set it fails with
///   [`Error::InsertDisabled`], unless the session's
///   `session_replication_role` is `replica`.
///
/// Which way, and the queue's current event table, are read in one query at
/// the first flush and kept for the transaction; `pgq.insert_event` reads
/// the queue's settings at each call, so a change committed by another
/// session meanwhile applies to the producer's next transaction only.
///
/// Unless turned off with [`Producer::notify`], the producer notifies the
/// ticker ([`notify_events`]) in the same transaction, so an embedded or
/// standalone ticker of this framework ticks the queue as soon as the events
/// commit, and listening consumers get them within milliseconds. The
/// notification goes with the first flush, in the same round trip; should
/// both fail, the error is the insert's, which failed first.
///
/// Events get their ids when they reach the database; the producer does not
/// return them (use [`insert_event`](crate::insert_event) for that). Dropping
/// the producer without [`Producer::commit`] rolls everything back.
///
/// ```no_run
/// # async fn demo(client: &mut tokio_postgres::Client) -> pgq::Result<()> {
/// let mut producer = pgq::Producer::begin(client, "orders").await?;
/// for id in 0..10_000 {
///     producer.send(pgq::NewEvent::new("order.created", format!(r#"{{"id": {id}}}"#))).await?;
/// }
/// let sent = producer.commit().await?;
/// assert_eq!(sent, 10_000);
/// # Ok(())
/// # }
/// ```
pub struct Producer<'a> {
    tx: Transaction<'a>,
    queue: String,
    target: Option<Target>,
    buffer: Vec<NewEvent>,
    buffered_bytes: usize,
    max_events: usize,
    max_bytes: usize,
    notify: bool,
    notified: bool,
    sent: u64,
}

impl<'a> Producer<'a> {
    /// Starts a transaction on `client` and a producer for `queue` in it.
    pub async fn begin(client: &'a mut Client, queue: &str) -> Result<Producer<'a>> {
        let tx = client
            .transaction()
            .await
            .map_err(Error::sql("begin", on_queue(queue)))?;
        Ok(Producer::new(tx, queue))
    }

    /// A producer for `queue` in a transaction of the caller's, which may
    /// hold other writes: they commit together with the events.
    pub fn new(tx: Transaction<'a>, queue: &str) -> Producer<'a> {
        Producer {
            tx,
            queue: queue.to_string(),
            target: None,
            buffer: Vec::new(),
            buffered_bytes: 0,
            max_events: DEFAULT_BUFFER_EVENTS,
            max_bytes: DEFAULT_BUFFER_BYTES,
            notify: true,
            notified: false,
            sent: 0,
        }
    }

    /// Whether to notify the ticker at commit (default: yes).
    pub fn notify(mut self, notify: bool) -> Producer<'a> {
        self.notify = notify;
        self
    }

    /// How many events, and how many bytes of them, to buffer before
    /// sending (defaults: 5000 events, 4 MiB). At least one event.
    pub fn buffer(mut self, events: usize, bytes: usize) -> Producer<'a> {
        self.max_events = events.max(1);
        self.max_bytes = bytes.max(1);
        self
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The transaction, for other work that should commit with the events.
    pub fn transaction(&self) -> &Transaction<'a> {
        &self.tx
    }

    /// How many events were handed over so far (buffered or sent).
    pub fn count(&self) -> u64 {
        self.sent + self.buffer.len() as u64
    }

    /// Hands over one event; sends the buffer when it is full.
    pub async fn send(&mut self, event: NewEvent) -> Result<()> {
        self.buffered_bytes += event_bytes(&event);
        self.buffer.push(event);
        if self.buffer.len() >= self.max_events || self.buffered_bytes >= self.max_bytes {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hands over an event with a type and a payload.
    pub async fn send_event(&mut self, ev_type: &str, ev_data: &str) -> Result<()> {
        self.send(NewEvent::new(ev_type, ev_data)).await
    }

    /// Sends the buffered events now (they are still uncommitted).
    pub async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut target = self.target().await?;
        let events = std::mem::take(&mut self.buffer);
        self.buffered_bytes = 0;
        let notify = self.notify && !self.notified;
        let insert = target.insert(self.tx.client(), &self.queue, &events);
        let written = with_notify(&self.tx, &self.queue, notify, insert).await?;
        self.notified |= notify;
        self.target = Some(target);
        self.sent += written;
        Ok(())
    }

    /// Sends the buffered events, then `events` through binary COPY into the
    /// current event table: the fastest way in for events that are all at
    /// hand, read from the iterator as they are sent (so it may be lazy and
    /// long). Returns how many were copied.
    ///
    /// Where the producer does not insert directly (see [`Producer`]: a
    /// role with only `pgq_writer`, a queue with `queue_per_tx_limit` or
    /// `queue_disable_insert`, a read-only transaction), the events go
    /// through `pgq.insert_event` instead, a buffer's worth per statement,
    /// with the same errors as [`Producer::send`]. A COPY that fails, at its
    /// start (a lock not granted) or midway, leaves the connection usable
    /// (roll the transaction back).
    pub async fn copy_in<I, E>(&mut self, events: I) -> Result<u64>
    where
        I: IntoIterator<Item = E>,
        E: Borrow<NewEvent>,
    {
        self.flush().await?;
        let mut target = self.target().await?;
        let notify = self.notify && !self.notified;
        let copy = target.copy(self.tx.client(), &self.queue, events, self.max_events, self.max_bytes);
        let n = with_notify(&self.tx, &self.queue, notify, copy).await?;
        self.notified |= notify;
        self.target = Some(target);
        self.sent += n;
        Ok(n)
    }

    /// Sends what is buffered and commits. Returns how many events the
    /// transaction inserted.
    pub async fn commit(mut self) -> Result<u64> {
        self.flush().await?;
        let queue = self.queue;
        self.tx.commit().await.map_err(Error::sql("commit", on_queue(&queue)))?;
        Ok(self.sent)
    }

    /// Throws the buffered events away and rolls the transaction back.
    pub async fn rollback(self) -> Result<()> {
        let queue = self.queue;
        self.tx
            .rollback()
            .await
            .map_err(Error::sql("rollback", on_queue(&queue)))
    }

    /// Where the events go: found at the first flush of the transaction
    /// (taken out of the producer while in use, put back once it worked).
    async fn target(&mut self) -> Result<Target> {
        match self.target.take() {
            Some(t) => Ok(t),
            None => Target::find(self.tx.client(), &self.queue).await,
        }
    }
}

/// Runs `work` on `tx`, pipelined with the ticker's notification when
/// `notify` (one round trip for both). Both run to the end; when both fail,
/// the error is the work's: it comes first, and the notification fails only
/// because the transaction was aborted by then.
async fn with_notify<T>(
    tx: &Transaction<'_>,
    queue: &str,
    notify: bool,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    if !notify {
        return work.await;
    }
    let (notified, done) = futures_util::future::join(notify_events(tx, queue), work).await;
    let done = done?;
    notified?;
    Ok(done)
}
