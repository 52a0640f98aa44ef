//! Batches: getting one, reading its events, retrying events, finishing it.

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use crate::call::{map_rows, rows, scalar};
use crate::error::{on_batch, on_consumer, Error, Result};
use crate::event::Event;
use crate::ident::quote_ident;
use crate::interval::Interval;

/// Opens the consumer's next batch (`pgq.next_batch`), or returns the one it
/// already holds. `None` when no tick has come since its last batch.
pub async fn next_batch(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<Option<i64>> {
    scalar(
        client,
        "pgq.next_batch",
        on_consumer(queue, consumer),
        "select pgq.next_batch($1, $2)",
        &[&queue, &consumer],
    )
    .await
}

/// The ticks that bound a batch, as `pgq.next_batch_info` and
/// `pgq.next_batch_custom` return them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTicks {
    /// The batch's id.
    pub batch_id: i64,
    /// The tick the batch ends at.
    pub cur_tick_id: i64,
    /// The tick the batch starts after.
    pub prev_tick_id: i64,
    /// When the end tick was taken.
    pub cur_tick_time: DateTime<Utc>,
    /// When the start tick was taken.
    pub prev_tick_time: DateTime<Utc>,
    /// Event sequence value at the end tick.
    pub cur_tick_event_seq: i64,
    /// Event sequence value at the start tick.
    pub prev_tick_event_seq: i64,
}

impl BatchTicks {
    /// Reads the columns `pgq.next_batch_info` returns (`batch_id`,
    /// `cur_tick_id`, ... `prev_tick_event_seq`) from a row, by name; `None`
    /// when `batch_id` is NULL (no batch). For functions returning the same
    /// columns, like the framework's cooperative `next_batch`.
    pub fn from_row(r: &Row) -> std::result::Result<Option<BatchTicks>, tokio_postgres::Error> {
        let Some(batch_id) = r.try_get::<_, Option<i64>>("batch_id")? else {
            return Ok(None);
        };
        Ok(Some(BatchTicks {
            batch_id,
            cur_tick_id: r.try_get("cur_tick_id")?,
            prev_tick_id: r.try_get("prev_tick_id")?,
            cur_tick_time: r.try_get("cur_tick_time")?,
            prev_tick_time: r.try_get("prev_tick_time")?,
            cur_tick_event_seq: r.try_get("cur_tick_event_seq")?,
            prev_tick_event_seq: r.try_get("prev_tick_event_seq")?,
        }))
    }

    /// An upper bound on the number of events in the batch, from the event
    /// sequence (retried events are not counted).
    pub fn event_estimate(&self) -> i64 {
        (self.cur_tick_event_seq - self.prev_tick_event_seq).max(0)
    }
}

async fn one_batch(
    client: &impl GenericClient,
    function: &'static str,
    context: String,
    sql: &str,
    params: crate::call::Params<'_>,
) -> Result<Option<BatchTicks>> {
    let mut v = map_rows(client, function, context, sql, params, BatchTicks::from_row).await?;
    Ok(v.pop().flatten())
}

/// Opens the next batch and says which ticks bound it (`pgq.next_batch_info`).
pub async fn next_batch_info(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<Option<BatchTicks>> {
    one_batch(
        client,
        "pgq.next_batch_info",
        on_consumer(queue, consumer),
        "select * from pgq.next_batch_info($1, $2)",
        &[&queue, &consumer],
    )
    .await
}

/// How big and how old a batch should be before [`next_batch_custom`] opens
/// it. `None` leaves a limit unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchLimits {
    /// Only events at least this old.
    pub min_lag: Option<Interval>,
    /// Wait until at least this many events are there.
    pub min_count: Option<i32>,
    /// Wait until the batch spans at least this long.
    pub min_interval: Option<Interval>,
}

/// Opens the next batch with size and age limits (`pgq.next_batch_custom`).
pub async fn next_batch_custom(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    limits: &BatchLimits,
) -> Result<Option<BatchTicks>> {
    one_batch(
        client,
        "pgq.next_batch_custom",
        on_consumer(queue, consumer),
        "select * from pgq.next_batch_custom($1, $2, $3, $4, $5)",
        &[
            &queue,
            &consumer,
            &limits.min_lag,
            &limits.min_count,
            &limits.min_interval,
        ],
    )
    .await
}

/// Where a batch comes from, a row of `pgq.get_batch_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// Queue name.
    pub queue_name: String,
    /// The consumer holding the batch.
    pub consumer_name: String,
    /// Time of the start tick.
    pub batch_start: DateTime<Utc>,
    /// Time of the end tick.
    pub batch_end: DateTime<Utc>,
    /// The start tick.
    pub prev_tick_id: i64,
    /// The end tick.
    pub tick_id: i64,
    /// Now minus the time of the end tick.
    pub lag: Interval,
    /// Event sequence at the start tick.
    pub seq_start: i64,
    /// Event sequence at the end tick.
    pub seq_end: i64,
}

/// Describes an open batch (`pgq.get_batch_info`); `None` when no consumer
/// holds a batch with that id.
pub async fn get_batch_info(client: &impl GenericClient, batch_id: i64) -> Result<Option<BatchInfo>> {
    let rows = rows(
        client,
        "pgq.get_batch_info",
        &on_batch(batch_id),
        "select * from pgq.get_batch_info($1)",
        &[&batch_id],
    )
    .await?;
    let Some(r) = rows.first() else { return Ok(None) };
    let read = || -> std::result::Result<Option<BatchInfo>, tokio_postgres::Error> {
        let Some(queue_name) = r.try_get::<_, Option<String>>("queue_name")? else {
            return Ok(None);
        };
        Ok(Some(BatchInfo {
            queue_name,
            consumer_name: r.try_get("consumer_name")?,
            batch_start: r.try_get("batch_start")?,
            batch_end: r.try_get("batch_end")?,
            prev_tick_id: r.try_get("prev_tick_id")?,
            tick_id: r.try_get("tick_id")?,
            lag: r.try_get("lag")?,
            seq_start: r.try_get("seq_start")?,
            seq_end: r.try_get("seq_end")?,
        }))
    };
    read().map_err(Error::row("pgq.get_batch_info", on_batch(batch_id)))
}

/// All events of a batch at once (`pgq.get_batch_events`). For big batches,
/// [`stream_batch_events`](crate::stream_batch_events) reads them with bounded
/// memory.
pub async fn get_batch_events(client: &impl GenericClient, batch_id: i64) -> Result<Vec<Event>> {
    map_rows(
        client,
        "pgq.get_batch_events",
        on_batch(batch_id),
        "select * from pgq.get_batch_events($1)",
        &[&batch_id],
        Event::from_row,
    )
    .await
}

/// Opens a cursor named `cursor` over a batch's events and returns the first
/// `quick_limit` of them (`pgq.get_batch_cursor(3)`); read the rest with
/// [`fetch_batch_cursor`]. Must run inside a transaction, which the cursor
/// lives in.
pub async fn get_batch_cursor(
    client: &impl GenericClient,
    batch_id: i64,
    cursor: &str,
    quick_limit: i32,
) -> Result<Vec<Event>> {
    map_rows(
        client,
        "pgq.get_batch_cursor",
        on_batch(batch_id),
        "select * from pgq.get_batch_cursor($1, $2, $3)",
        &[&batch_id, &cursor, &quick_limit],
        Event::from_row,
    )
    .await
}

/// As [`get_batch_cursor`], keeping only events matching `extra_where`
/// (`pgq.get_batch_cursor(4)`).
///
/// `extra_where` is an SQL condition on the event columns, e.g.
/// `ev_type = 'user'`. PgQ puts it into the query it builds: it is SQL, not a
/// value, so it must come from the program, never from untrusted input.
pub async fn get_batch_cursor_where(
    client: &impl GenericClient,
    batch_id: i64,
    cursor: &str,
    quick_limit: i32,
    extra_where: &str,
) -> Result<Vec<Event>> {
    map_rows(
        client,
        "pgq.get_batch_cursor",
        on_batch(batch_id),
        "select * from pgq.get_batch_cursor($1, $2, $3, $4)",
        &[&batch_id, &cursor, &quick_limit, &extra_where],
        Event::from_row,
    )
    .await
}

/// Fetches up to `count` more events from a cursor opened by
/// [`get_batch_cursor`]; an empty result means the batch is read. The cursor
/// is closed at the end of the transaction. A `count` of 0 returns nothing
/// (SQL's `FETCH 0` would re-read the current row, which PgQ's no-scroll
/// cursor refuses, aborting the transaction).
pub async fn fetch_batch_cursor(client: &impl GenericClient, cursor: &str, count: u32) -> Result<Vec<Event>> {
    if count == 0 {
        quote_ident(cursor)?;
        return Ok(Vec::new());
    }
    let sql = format!("fetch {count} from {}", quote_ident(cursor)?);
    map_rows(
        client,
        "fetch",
        format!("cursor {cursor:?}"),
        &sql,
        &[],
        Event::from_row,
    )
    .await
}

/// The SQL query that reads a batch's events (`pgq.batch_event_sql`).
pub async fn batch_event_sql(client: &impl GenericClient, batch_id: i64) -> Result<String> {
    scalar(
        client,
        "pgq.batch_event_sql",
        on_batch(batch_id),
        "select pgq.batch_event_sql($1)",
        &[&batch_id],
    )
    .await
}

/// The event tables a batch's events lie in (`pgq.batch_event_tables`).
pub async fn batch_event_tables(client: &impl GenericClient, batch_id: i64) -> Result<Vec<String>> {
    map_rows(
        client,
        "pgq.batch_event_tables",
        on_batch(batch_id),
        "select * from pgq.batch_event_tables($1)",
        &[&batch_id],
        |r| r.try_get(0),
    )
    .await
}

/// Puts an event of an open batch back into the queue, for this consumer
/// only, after `seconds` (`pgq.event_retry(3)` with a delay). Returns `false`
/// when the event was already set to be retried.
pub async fn event_retry(client: &impl GenericClient, batch_id: i64, ev_id: i64, seconds: i32) -> Result<bool> {
    let n: i32 = scalar(
        client,
        "pgq.event_retry",
        format!("{}, event {ev_id}", on_batch(batch_id)),
        "select pgq.event_retry($1, $2, $3::int4)",
        &[&batch_id, &ev_id, &seconds],
    )
    .await?;
    Ok(n == 1)
}

/// As [`event_retry`], with the time it comes back
/// (`pgq.event_retry(3)` with a timestamp).
pub async fn event_retry_at(
    client: &impl GenericClient,
    batch_id: i64,
    ev_id: i64,
    retry_time: DateTime<Utc>,
) -> Result<bool> {
    let n: i32 = scalar(
        client,
        "pgq.event_retry",
        format!("{}, event {ev_id}", on_batch(batch_id)),
        "select pgq.event_retry($1, $2, $3::timestamptz)",
        &[&batch_id, &ev_id, &retry_time],
    )
    .await?;
    Ok(n == 1)
}

/// Puts a whole event, given field by field, into the retry queue of one
/// consumer (`pgq.event_retry_raw`); it is delivered to that consumer again
/// once `retry_after` has passed and the ticker has run
/// `pgq.maint_retry_events`. Needs no open batch. Returns the event id.
pub async fn event_retry_raw(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    retry_after: DateTime<Utc>,
    event: &Event,
) -> Result<i64> {
    scalar(
        client,
        "pgq.event_retry_raw",
        format!("{}, event {}", on_consumer(queue, consumer), event.ev_id),
        "select pgq.event_retry_raw($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &queue,
            &consumer,
            &retry_after,
            &event.ev_id,
            &event.ev_time,
            &event.ev_retry,
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

/// Puts every event of an open batch back, for this consumer, after
/// `seconds` (`pgq.batch_retry`). Returns how many events were put back.
pub async fn batch_retry(client: &impl GenericClient, batch_id: i64, seconds: i32) -> Result<i32> {
    scalar(
        client,
        "pgq.batch_retry",
        on_batch(batch_id),
        "select pgq.batch_retry($1, $2)",
        &[&batch_id, &seconds],
    )
    .await
}

/// Closes a batch (`pgq.finish_batch`): the consumer moves past it. Returns
/// `false` when no open batch has that id.
pub async fn finish_batch(client: &impl GenericClient, batch_id: i64) -> Result<bool> {
    let n: i32 = scalar(
        client,
        "pgq.finish_batch",
        on_batch(batch_id),
        "select pgq.finish_batch($1)",
        &[&batch_id],
    )
    .await?;
    Ok(n == 1)
}
