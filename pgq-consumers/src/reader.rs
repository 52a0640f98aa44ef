//! The reader connection: a batch's events are streamed from it while the
//! queue connection carries the batch's transaction, so the handler's own
//! statements never wait behind unread rows, and the two round trips that
//! start a batch overlap. It also listens on the queue's tick channel.

use std::sync::Arc;

use pgq::{BatchReader, BatchTicks, EventFilter};
use tokio_postgres::Client;
use tokio_util::task::AbortOnDropHandle;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::net::connect::{connect_listening, Database, Notifications};
use crate::source::EventStream;

/// A batch query started on a task of its own, while the transaction that
/// opened its batch commits: nobody waits for its first rows.
pub(crate) type Prefetch = tokio::task::JoinHandle<Option<EventStream>>;

/// The events of the next batch, read before it is opened.
pub(crate) type ReadAhead = AbortOnDropHandle<Option<pgq::Upcoming>>;

/// Batches with at least this many events (by the event sequence) are read
/// with the batch query's parallel form.
const LARGE_BATCH: i64 = 20_000;

/// The reader connection of a batch loop.
pub(crate) struct Reader {
    client: Arc<Client>,
    notifications: Notifications,
    /// The batch query, prepared on this connection.
    batch: Option<BatchReader>,
    listening: bool,
}

impl Reader {
    /// Opens the reader connection of the consumer of `config`, listening
    /// on its queue's tick channel.
    pub(crate) async fn open(config: &Config, app: &str) -> Result<Reader> {
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

    /// Whether the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Completes when the ticker notifies a tick on the queue; never when
    /// the reader does not listen or its connection is gone. Notifications
    /// that came meanwhile count once.
    ///
    /// Cancellation-safe.
    pub(crate) async fn tick(&mut self) {
        if !self.listening {
            return std::future::pending().await;
        }
        match self.notifications.recv().await {
            Some(_) => while self.notifications.try_recv().is_ok() {},
            // The connection is gone; the next round opens another.
            None => std::future::pending().await,
        }
    }

    /// Starts streaming a batch's events; `None` when the batch query cannot
    /// be used (the caller reads through a cursor instead). `consumer` is the
    /// plain consumer whose batch it is: the batch is read by its ticks (so
    /// the query may run before the transaction that opened the batch
    /// commits), in its parallel form for a big batch; `None` (a
    /// sub-consumer's batch) reads it by its id.
    pub(crate) async fn stream(
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
        let reader = self.batch.as_ref()?;
        let stream = start(reader, &self.client, consumer, ticks, filter).await;
        if stream.is_none() {
            // Prepared again next time (the queue may have been created again).
            self.batch = None;
        }
        stream
    }

    /// As [`Reader::stream`] for a plain consumer's batch, on a task of its
    /// own: the caller goes on while the first rows come. `None` when the
    /// batch query is not prepared.
    /// Starts reading, in a task of its own, the events of the batch a
    /// plain consumer will get after `after` (see
    /// [`BatchReader::read_ahead`]), while the round commits `after`.
    /// Dropped, the task stops.
    pub(crate) fn read_ahead(&self, consumer: &str, after: &BatchTicks, filter: &EventFilter) -> Option<ReadAhead> {
        let reader = self.batch.clone()?;
        let client = Arc::clone(&self.client);
        let (consumer, after, filter) = (consumer.to_string(), after.clone(), filter.clone());
        Some(AbortOnDropHandle::new(tokio::spawn(async move {
            match reader
                .read_ahead(&*client, &consumer, &after, LARGE_BATCH, &filter)
                .await
            {
                Ok(upcoming) => upcoming,
                Err(e) => {
                    log::debug!("reading the next batch ahead failed (read once it is open): {e}");
                    None
                }
            }
        })))
    }

    /// Starts streaming the events of the batch `ticks`, opened now: those
    /// read ahead (`ahead`) when they are that batch's, else by a query of
    /// their own.
    pub(crate) fn prefetch(
        &self,
        consumer: &str,
        ticks: &BatchTicks,
        filter: &EventFilter,
        ahead: Option<ReadAhead>,
    ) -> Option<Prefetch> {
        let reader = self.batch.clone()?;
        let client = Arc::clone(&self.client);
        let (consumer, ticks, filter) = (consumer.to_string(), ticks.clone(), filter.clone());
        Some(tokio::spawn(async move {
            if let Some(ahead) = ahead {
                if let Some(stream) = ahead.await.ok().flatten().and_then(|u| u.into_batch(&ticks)) {
                    return Some(Box::pin(stream) as EventStream);
                }
            }
            start(&reader, &client, Some(&consumer), &ticks, &filter).await
        }))
    }
}

/// Starts the batch query of `reader` on `client`: see [`Reader::stream`].
/// `None`, logged, when it fails.
async fn start(
    reader: &BatchReader,
    client: &Client,
    consumer: Option<&str>,
    ticks: &BatchTicks,
    filter: &EventFilter,
) -> Option<EventStream> {
    let stream: pgq::Result<EventStream> = async {
        Ok(match consumer {
            Some(c) if ticks.event_estimate() >= LARGE_BATCH => {
                Box::pin(reader.stream_ticks_large(client, c, ticks, filter).await?) as EventStream
            }
            Some(c) => Box::pin(reader.stream_ticks(client, c, ticks, filter).await?),
            None => Box::pin(reader.stream(client, ticks.batch_id, filter).await?),
        })
    }
    .await;
    match stream {
        Ok(stream) => Some(stream),
        Err(e) => {
            log::warn!("the batch query failed, reading through a cursor: {e}");
            None
        }
    }
}
