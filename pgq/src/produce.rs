//! Producing events: one at a time, pipelined, or in bulk through COPY.

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use tokio_postgres::{GenericClient, Transaction};

use crate::call::scalar;
use crate::error::{on_queue, Error, Result};
use crate::event::NewEvent;
use crate::ident::quote_qualified;
use crate::producer::copy_events;
use crate::queue::current_event_table;

/// Inserts one event (`pgq.insert_event(3)`). Returns its id. The event is
/// part of the caller's transaction: consumers see it once that commits and
/// a tick follows.
pub async fn insert_event(client: &impl GenericClient, queue: &str, ev_type: &str, ev_data: &str) -> Result<i64> {
    scalar(
        client,
        "pgq.insert_event",
        on_queue(queue),
        "select pgq.insert_event($1, $2, $3)",
        &[&queue, &ev_type, &ev_data],
    )
    .await
}

const INSERT_FULL: &str = "select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)";

/// Inserts one event with its extra fields (`pgq.insert_event(7)`). Returns its id.
pub async fn insert_event_full(client: &impl GenericClient, queue: &str, event: &NewEvent) -> Result<i64> {
    scalar(
        client,
        "pgq.insert_event",
        on_queue(queue),
        INSERT_FULL,
        &[
            &queue,
            &event.ev_type,
            &event.ev_data,
            &event.ev_extra1,
            &event.ev_extra2,
            &event.ev_extra3,
            &event.ev_extra4,
        ],
    )
    .await
}

/// Inserts many events, one `pgq.insert_event` each, pipelined: the
/// statement is prepared once and the calls go out without waiting for each
/// other's answers. Run it in a transaction so they commit together. Returns
/// the ids in the order of `events`.
///
/// Not cancellation-safe: dropped midway, some events may have been inserted
/// (roll the transaction back).
pub async fn insert_events(client: &impl GenericClient, queue: &str, events: &[NewEvent]) -> Result<Vec<i64>> {
    const WINDOW: usize = 1024;
    let stmt = client
        .prepare(INSERT_FULL)
        .await
        .map_err(Error::sql("pgq.insert_event", on_queue(queue)))?;
    let mut ids = Vec::with_capacity(events.len());
    for chunk in events.chunks(WINDOW) {
        let calls = chunk.iter().map(|e| {
            let stmt = &stmt;
            async move {
                let row = client
                    .query_one(
                        stmt,
                        &[
                            &queue,
                            &e.ev_type,
                            &e.ev_data,
                            &e.ev_extra1,
                            &e.ev_extra2,
                            &e.ev_extra3,
                            &e.ev_extra4,
                        ],
                    )
                    .await
                    .map_err(Error::sql("pgq.insert_event", on_queue(queue)))?;
                row.try_get::<_, i64>(0)
                    .map_err(Error::row("pgq.insert_event", on_queue(queue)))
            }
        });
        ids.extend(try_join_all(calls).await?);
    }
    Ok(ids)
}

/// Inserts many events through binary COPY into the queue's current event
/// table (`pgq.current_event_table`), the fastest way in. PgQ assigns ids and
/// transaction ids; `ev_time` is set to now. Returns how many were written.
///
/// It takes a [`Transaction`] because the current event table is only valid
/// within one. Not cancellation-safe: dropped midway, roll the transaction back.
pub async fn insert_events_copy<'a, I>(tx: &Transaction<'_>, queue: &str, events: I) -> Result<u64>
where
    I: IntoIterator<Item = &'a NewEvent>,
{
    let table = current_event_table(tx, queue).await?;
    copy_events(tx.client(), queue, &quote_qualified(&table)?, events).await
}

/// An event with every field given, for [`insert_event_raw`] (moving events
/// between queues, or replaying them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The id to use; `None` takes the next one from the queue's sequence.
    pub ev_id: Option<i64>,
    /// The event's time.
    pub ev_time: DateTime<Utc>,
    /// The subscription that owns it (a retried event); `None` for everyone.
    pub ev_owner: Option<i32>,
    /// Retry count.
    pub ev_retry: Option<i32>,
    /// Type, payload and extra fields.
    pub fields: NewEvent,
}

/// Inserts an event with every field given (`pgq.insert_event_raw`). Returns its id.
pub async fn insert_event_raw(client: &impl GenericClient, queue: &str, event: &RawEvent) -> Result<i64> {
    let f = &event.fields;
    scalar(
        client,
        "pgq.insert_event_raw",
        on_queue(queue),
        "select pgq.insert_event_raw($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &queue,
            &event.ev_id,
            &event.ev_time,
            &event.ev_owner,
            &event.ev_retry,
            &f.ev_type,
            &f.ev_data,
            &f.ev_extra1,
            &f.ev_extra2,
            &f.ev_extra3,
            &f.ev_extra4,
        ],
    )
    .await
}
