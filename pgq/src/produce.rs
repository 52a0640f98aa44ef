//! Producing events: one at a time, pipelined, or in bulk through COPY.

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use tokio_postgres::{GenericClient, Transaction};

use crate::call::Params;
use crate::error::{on_queue, Error, Result};
use crate::event::NewEvent;
use crate::target::Target;

/// Events per statement when [`insert_events_copy`] cannot COPY.
const CHUNK_EVENTS: usize = 5000;
/// Payload bytes per statement when [`insert_events_copy`] cannot COPY.
const CHUNK_BYTES: usize = 4 << 20;

/// Runs a statement that calls `function` (`pgq.insert_event` or
/// `pgq.insert_event_raw`) once and reads the event id it returns.
async fn insert_one(
    client: &impl GenericClient,
    function: &'static str,
    queue: &str,
    sql: &str,
    params: Params<'_>,
) -> Result<i64> {
    let row = client
        .query_one(sql, params)
        .await
        .map_err(Error::insert(function, queue))?;
    row.try_get(0).map_err(Error::row(function, on_queue(queue)))
}

/// Inserts one event (`pgq.insert_event(3)`). Returns its id. The event is
/// part of the caller's transaction: consumers see it once that commits and
/// a tick follows.
///
/// PgQ refuses it with [`Error::InsertDisabled`] while the queue's
/// `queue_disable_insert` is set, and with [`Error::TooManyEvents`] once the
/// transaction holds `queue_per_tx_limit` events of the queue; the same
/// holds for every function here and for [`Producer`](crate::Producer).
pub async fn insert_event(client: &impl GenericClient, queue: &str, ev_type: &str, ev_data: &str) -> Result<i64> {
    insert_one(
        client,
        "pgq.insert_event",
        queue,
        "select pgq.insert_event($1, $2, $3)",
        &[&queue, &ev_type, &ev_data],
    )
    .await
}

const INSERT_FULL: &str = "select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)";

/// Inserts one event with its extra fields (`pgq.insert_event(7)`). Returns its id.
pub async fn insert_event_full(client: &impl GenericClient, queue: &str, event: &NewEvent) -> Result<i64> {
    insert_one(
        client,
        "pgq.insert_event",
        queue,
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
                    .map_err(Error::insert("pgq.insert_event", queue))?;
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
/// COPY writes the table directly, past `pgq.insert_event`'s checks, so it
/// is used only where they cannot refuse anything; otherwise the events go
/// through `pgq.insert_event`, up to 5000 in one statement, and PgQ checks
/// them. That is: when the session may not write the table (a role with
/// only `pgq_writer`), when the queue has a `queue_per_tx_limit` (then every
/// event of the transaction counts against it, as in PgQ, also those of
/// other calls), while its `queue_disable_insert` is set, and in a read-only
/// transaction. A first query reads which (the queue's settings, read once
/// per call). A COPY that fails, at its start (a lock not granted) or
/// midway, leaves the connection usable (roll the transaction back).
///
/// It takes a [`Transaction`] because the current event table is only valid
/// within one. Not cancellation-safe: dropped midway, roll the transaction back.
pub async fn insert_events_copy<'a, I>(tx: &Transaction<'_>, queue: &str, events: I) -> Result<u64>
where
    I: IntoIterator<Item = &'a NewEvent>,
{
    let mut target = Target::find(tx.client(), queue).await?;
    target.copy(tx.client(), queue, events, CHUNK_EVENTS, CHUNK_BYTES).await
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
    insert_one(
        client,
        "pgq.insert_event_raw",
        queue,
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
