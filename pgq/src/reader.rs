//! The consumer's fast path: prepared statements for the calls made once per
//! batch, and a batch query that is prepared once per queue instead of being
//! built and planned for every batch.

use futures_util::{Stream, StreamExt, TryStreamExt};
use postgres_types::{ToSql, Type};
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, RowStream, Statement};

use crate::batch::{BatchLimits, BatchTicks};
use crate::error::{on_batch, on_consumer, on_queue, Error, Result};
use crate::event::Event;
use crate::ident::quote_qualified;

/// The events of a batch, as PgQ's `pgq.batch_event_sql` selects them, as
/// one fixed statement whose only parameter is the batch id (`$1`), plus two
/// optional filters: `$2` (`text[]`, accepted `ev_type` values) and `$3`
/// (`text[]`, accepted `ev_extra1` values), each NULL to accept everything.
///
/// `table` is the queue's event table prefix (`pgq.queue.queue_data_pfx`,
/// e.g. `pgq.event_1`): the parent of the queue's rotating event tables, so
/// one statement covers whichever of them a batch lies in.
///
/// It selects what `pgq.batch_event_sql` does, in the same order (by
/// `ev_id`): the events of transactions that committed between the batch's
/// two ticks, i.e. whose txid is visible in the end tick's snapshot and not
/// in the start tick's, owned by nobody or by this consumer (retried
/// events). As there, the txids at or above the start snapshot's xmax (so
/// not visible in it) are found by an index range scan and the older ones,
/// in progress at the start tick and committed by the end tick, by an exact
/// list. PgQ's function
/// builds that as SQL text with literal txids, for every batch; here the
/// snapshots are read from `pgq.tick` by the statement itself.
pub fn batch_events_query(table: &str) -> Result<String> {
    events_query(table, Fields::Text, BY_BATCH)
}

/// The source of [`batch_events_query`]: the batch by its id.
const BY_BATCH: &str = "from pgq.subscription s \
     join pgq.tick l on l.tick_queue = s.sub_queue and l.tick_id = s.sub_last_tick \
     join pgq.tick c on c.tick_queue = s.sub_queue and c.tick_id = s.sub_next_tick \
     where s.sub_batch = $1";

/// As [`batch_events_query`], for the events between two ticks as one
/// consumer sees them: `$4` the queue, `$5` the consumer, `$1` the start
/// tick and `$6` the end tick (the batch's `prev_tick_id` and
/// `cur_tick_id`), `$2` and `$3` the filters. It reads only what was
/// committed before the end tick was, so it can run before the transaction
/// that opens the batch commits, e.g. on another connection while it
/// commits.
pub fn tick_events_query(table: &str) -> Result<String> {
    events_query(table, Fields::Text, BY_TICKS)
}

/// The source of [`tick_events_query`]: the batch by its ticks.
const BY_TICKS: &str = "from pgq.queue q \
     join pgq.consumer co on co.co_name = $5::text \
     join pgq.subscription s on s.sub_queue = q.queue_id and s.sub_consumer = co.co_id \
     join pgq.tick l on l.tick_queue = q.queue_id and l.tick_id = $1 \
     join pgq.tick c on c.tick_queue = q.queue_id and c.tick_id = $6::int8 \
     where q.queue_name = $4::text";

/// The first tick of queue `$1` after tick `$2`: where the batch that
/// `pgq.next_batch` opens after a batch ending at `$2` ends, for a consumer
/// with no `min_count` or `min_interval` (as `pgq.next_batch_custom`
/// chooses it).
///
/// The queue's id is a scalar subquery, so that the generic plan (the
/// reader's connection forces it) reads the tick's primary key from the
/// tick after `$2` on, however many ticks the table holds: with a join, it
/// scans the whole table and sorts.
const NEXT_TICK: &str = "select t.tick_id, t.tick_event_seq \
     from pgq.tick t \
     where t.tick_queue = (select q.queue_id from pgq.queue q where q.queue_name = $1) \
       and t.tick_id > $2 \
     order by t.tick_id \
     limit 1";

/// The bounds of the batch between two ticks as one consumer sees it, for
/// [`large_events_query`]: the subscription's id, the start snapshot's
/// xmax, the end snapshot's xmax, the end snapshot, and the txids in
/// progress at the start tick and not at the end tick. Parameters as
/// [`tick_events_query`]'s: `$1` start tick, `$2` end tick, `$3` queue,
/// `$4` consumer.
const BOUNDS_BY_TICKS: &str = "select s.sub_id, txid_snapshot_xmax(l.tick_snapshot), \
       txid_snapshot_xmax(c.tick_snapshot), c.tick_snapshot::text, \
       array(select txid_snapshot_xip(l.tick_snapshot) except select txid_snapshot_xip(c.tick_snapshot)) \
     from pgq.queue q \
     join pgq.consumer co on co.co_name = $4 \
     join pgq.subscription s on s.sub_queue = q.queue_id and s.sub_consumer = co.co_id \
     join pgq.tick l on l.tick_queue = q.queue_id and l.tick_id = $1 \
     join pgq.tick c on c.tick_queue = q.queue_id and c.tick_id = $2 \
     where q.queue_name = $3";

/// The batch query for big batches: as [`batch_events_query`], with the
/// bounds computed beforehand ([`BatchReader::stream_ticks_large`]) and
/// passed in: `$1` the start snapshot's xmax, `$2` the end snapshot's xmax,
/// `$3` the end snapshot, `$4` the subscription id, `$5` the exact list of
/// older txids, `$6` and `$7` the filters. Without the statement-level
/// join it can be planned in parallel, which halves the sort a big batch
/// needs.
pub fn large_events_query(table: &str) -> Result<String> {
    large_query(table, Fields::Text)
}

/// How a batch query selects the events' text fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fields {
    /// As text.
    Text,
    /// As their bytes (`bytea`): in a database whose encoding is
    /// `SQL_ASCII`, a text field may hold bytes that are not UTF-8, which
    /// PostgreSQL refuses to send as text ("invalid byte sequence"), failing
    /// the whole query. As bytes, such an event is told apart and the
    /// others are read.
    Bytes,
}

impl Fields {
    /// The select list.
    fn list(self) -> &'static str {
        match self {
            Fields::Text => {
                "ev.ev_id, ev.ev_time, ev.ev_txid, ev.ev_retry, ev.ev_type, ev.ev_data, \
                 ev.ev_extra1, ev.ev_extra2, ev.ev_extra3, ev.ev_extra4"
            }
            Fields::Bytes => {
                "ev.ev_id, ev.ev_time, ev.ev_txid, ev.ev_retry, \
                 convert_to(ev.ev_type, 'SQL_ASCII'), convert_to(ev.ev_data, 'SQL_ASCII'), \
                 convert_to(ev.ev_extra1, 'SQL_ASCII'), convert_to(ev.ev_extra2, 'SQL_ASCII'), \
                 convert_to(ev.ev_extra3, 'SQL_ASCII'), convert_to(ev.ev_extra4, 'SQL_ASCII')"
            }
        }
    }
}

fn large_query(table: &str, fields: Fields) -> Result<String> {
    let table = quote_qualified(table)?;
    let fields = fields.list();
    const FILTER: &str = "and ($6::text[] is null or ev.ev_type = any($6::text[])) \
                          and ($7::text[] is null or ev.ev_extra1 = any($7::text[]))";
    Ok(format!(
        "select {fields} from {table} ev \
          where ev.ev_txid >= $1 and ev.ev_txid <= $2 \
            and txid_visible_in_snapshot(ev.ev_txid, $3::txid_snapshot) \
            and (ev.ev_owner is null or ev.ev_owner = $4) {FILTER} \
         union all \
         select {fields} from {table} ev \
          where ev.ev_txid = any($5::int8[]) \
            and (ev.ev_owner is null or ev.ev_owner = $4) {FILTER} \
         order by 1"
    ))
}

/// The batch query, with `source` the FROM and WHERE that find the
/// subscription (`s`) and the start (`l`) and end (`c`) ticks.
fn events_query(table: &str, fields: Fields, source: &str) -> Result<String> {
    let table = quote_qualified(table)?;
    let fields = fields.list();
    const FILTER: &str = "and ($2::text[] is null or ev.ev_type = any($2::text[])) \
                          and ($3::text[] is null or ev.ev_extra1 = any($3::text[]))";
    Ok(format!(
        "with b as materialized ( \
           select s.sub_id, l.tick_snapshot as ls, c.tick_snapshot as cs, \
                  array(select txid_snapshot_xip(l.tick_snapshot) \
                        except select txid_snapshot_xip(c.tick_snapshot)) as xips \
           {source}) \
         select {fields} from b, {table} ev \
          where ev.ev_txid >= txid_snapshot_xmax(b.ls) and ev.ev_txid <= txid_snapshot_xmax(b.cs) \
            and txid_visible_in_snapshot(ev.ev_txid, b.cs) \
            and (ev.ev_owner is null or ev.ev_owner = b.sub_id) {FILTER} \
         union all \
         select {fields} from b, {table} ev \
          where ev.ev_txid = any(b.xips) \
            and (ev.ev_owner is null or ev.ev_owner = b.sub_id) {FILTER} \
         order by 1"
    ))
}

/// Which events of a batch to keep, on the server. `None` keeps all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Accepted `ev_type` values.
    pub ev_type: Option<Vec<String>>,
    /// Accepted `ev_extra1` values (the table name of trigger events).
    pub ev_extra1: Option<Vec<String>>,
}

/// [`batch_events_query`] and [`tick_events_query`] prepared for one queue
/// on one connection.
///
/// A prepared statement belongs to the connection that prepared it: use the
/// reader with that connection (or a transaction on it) only. The queries'
/// best plan does not depend on the batch; PostgreSQL may still plan them
/// afresh for each batch, which costs more than running a small one:
/// `set plan_cache_mode = force_generic_plan` on a connection of their own
/// avoids that.
#[derive(Debug, Clone)]
pub struct BatchReader {
    queue: String,
    fields: Fields,
    by_batch: Statement,
    by_ticks: Statement,
    bounds: Statement,
    large: Statement,
    next_tick: Statement,
}

impl BatchReader {
    /// Looks up the queue's event tables and prepares the batch queries.
    ///
    /// In a database whose encoding is `SQL_ASCII`, the queries read the
    /// events' text fields as bytes, and an event whose bytes are not UTF-8
    /// comes out of the stream as [`Error::Undecodable`] without ending it.
    pub async fn prepare(client: &impl GenericClient, queue: &str) -> Result<BatchReader> {
        let row = client
            .query_opt(
                "select queue_data_pfx, current_setting('server_encoding') = 'SQL_ASCII' \
                 from pgq.queue where queue_name = $1",
                &[&queue],
            )
            .await
            .map_err(Error::sql("pgq.queue", on_queue(queue)))?
            .ok_or_else(|| Error::InvalidArgument {
                what: "queue",
                problem: format!("there is no queue {queue:?}"),
            })?;
        let read = |row: &tokio_postgres::Row| -> std::result::Result<(String, bool), tokio_postgres::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?))
        };
        let (table, sql_ascii) = read(&row).map_err(Error::row("pgq.queue", on_queue(queue)))?;
        let fields = if sql_ascii { Fields::Bytes } else { Fields::Text };
        let prepare = |sql: String, types: &'static [Type]| async move {
            client
                .prepare_typed(&sql, types)
                .await
                .map_err(Error::sql("batch query", on_queue(queue)))
        };
        let (bounds, large, next_tick) = futures_util::future::try_join3(
            prepare(
                BOUNDS_BY_TICKS.to_string(),
                &[Type::INT8, Type::INT8, Type::TEXT, Type::TEXT],
            ),
            prepare(
                large_query(&table, fields)?,
                &[
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::INT4,
                    Type::INT8_ARRAY,
                    Type::TEXT_ARRAY,
                    Type::TEXT_ARRAY,
                ],
            ),
            prepare(NEXT_TICK.to_string(), &[Type::TEXT, Type::INT8]),
        )
        .await?;
        let (by_batch, by_ticks) = futures_util::future::try_join(
            prepare(
                events_query(&table, fields, BY_BATCH)?,
                &[Type::INT8, Type::TEXT_ARRAY, Type::TEXT_ARRAY],
            ),
            prepare(
                events_query(&table, fields, BY_TICKS)?,
                &[
                    Type::INT8,
                    Type::TEXT_ARRAY,
                    Type::TEXT_ARRAY,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                ],
            ),
        )
        .await?;
        Ok(BatchReader {
            queue: queue.to_string(),
            fields,
            by_batch,
            by_ticks,
            bounds,
            large,
            next_tick,
        })
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Streams the events of an open batch: binary rows, decoded as they
    /// arrive. The client reads no further ahead than the stream's consumer,
    /// so memory stays bounded however big the batch is. One round trip
    /// brings the first rows.
    ///
    /// The batch need not be read in the transaction that will finish it: its
    /// events are fixed by its two ticks, so another connection may stream
    /// them while the first one does the work. A batch id that is not open
    /// gives no events.
    pub async fn stream(
        &self,
        client: &impl GenericClient,
        batch_id: i64,
        filter: &EventFilter,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + 'static> {
        let params: [&(dyn ToSql + Sync); 3] = [&batch_id, &filter.ev_type, &filter.ev_extra1];
        let rows = client
            .query_raw(&self.by_batch, params)
            .await
            .map_err(Error::sql("batch query", on_batch(batch_id)))?;
        Ok(decode(rows, batch_id, self.fields))
    }

    /// As [`BatchReader::stream`], for the batch `consumer` opened between
    /// the ticks of `ticks` ([`tick_events_query`]): it needs nothing but
    /// those ticks, so it may start before the transaction that opened the
    /// batch has committed.
    pub async fn stream_ticks(
        &self,
        client: &impl GenericClient,
        consumer: &str,
        ticks: &BatchTicks,
        filter: &EventFilter,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + 'static> {
        let params: [&(dyn ToSql + Sync); 6] = [
            &ticks.prev_tick_id,
            &filter.ev_type,
            &filter.ev_extra1,
            &self.queue,
            &consumer,
            &ticks.cur_tick_id,
        ];
        let rows = client
            .query_raw(&self.by_ticks, params)
            .await
            .map_err(Error::sql("batch query", on_batch(ticks.batch_id)))?;
        Ok(decode(rows, ticks.batch_id, self.fields))
    }

    /// As [`BatchReader::stream_ticks`], for big batches
    /// ([`large_events_query`]): one round trip more to read the batch's
    /// bounds, then a statement PostgreSQL can run in parallel, if the
    /// connection's settings let it (`parallel_setup_cost` and
    /// `parallel_tuple_cost` set to 0, as the batch loop's reader connection
    /// does). No events when the ticks or the consumer are not found.
    pub async fn stream_ticks_large(
        &self,
        client: &impl GenericClient,
        consumer: &str,
        ticks: &BatchTicks,
        filter: &EventFilter,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + 'static> {
        let fail = || Error::sql("batch query", on_batch(ticks.batch_id));
        let bounds = client
            .query_opt(
                &self.bounds,
                &[&ticks.prev_tick_id, &ticks.cur_tick_id, &self.queue, &consumer],
            )
            .await
            .map_err(fail())?;
        let read = |row: &tokio_postgres::Row| -> std::result::Result<_, tokio_postgres::Error> {
            Ok((
                row.try_get::<_, i32>(0)?,
                row.try_get::<_, i64>(1)?,
                row.try_get::<_, i64>(2)?,
                row.try_get::<_, String>(3)?,
                row.try_get::<_, Vec<i64>>(4)?,
            ))
        };
        let (sub_id, start_xmax, end_xmax, end_snapshot, xips) = match &bounds {
            Some(row) => read(row).map_err(Error::row("batch query", on_batch(ticks.batch_id)))?,
            // Nothing to read: a range that selects nothing.
            None => (0, 1, 0, "1:1:".to_string(), Vec::new()),
        };
        let params: [&(dyn ToSql + Sync); 7] = [
            &start_xmax,
            &end_xmax,
            &end_snapshot,
            &sub_id,
            &xips,
            &filter.ev_type,
            &filter.ev_extra1,
        ];
        let rows = client.query_raw(&self.large, params).await.map_err(fail())?;
        Ok(decode(rows, ticks.batch_id, self.fields))
    }

    /// Starts reading the events of the batch that `consumer` will get
    /// next, before it is opened: the tick range from the end tick of
    /// `after` (the batch it works on) to the first tick after it, which is
    /// the batch `pgq.next_batch` opens once `after` is finished, for a
    /// consumer with no `min_count` or `min_interval`. Meanwhile the
    /// consumer finishes `after`; [`Upcoming::into_batch`] then checks that
    /// the batch opened is that range and hands its events over. Two round
    /// trips, on a connection of its own: the batch's work is not waiting on
    /// them.
    ///
    /// `None` when there is no tick after `after` yet, or when the range
    /// holds `max_events` events or more by the event sequence (big batches
    /// are better read by [`BatchReader::stream_ticks_large`] once open).
    pub async fn read_ahead(
        &self,
        client: &impl GenericClient,
        consumer: &str,
        after: &BatchTicks,
        max_events: i64,
        filter: &EventFilter,
    ) -> Result<Option<Upcoming>> {
        let prev_tick_id = after.cur_tick_id;
        let row = client
            .query_opt(&self.next_tick, &[&self.queue, &prev_tick_id])
            .await
            .map_err(Error::sql("batch query", on_queue(&self.queue)))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read = |row: &tokio_postgres::Row| -> std::result::Result<(i64, i64), tokio_postgres::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?))
        };
        let (cur_tick_id, cur_event_seq) = read(&row).map_err(Error::row("batch query", on_queue(&self.queue)))?;
        if cur_event_seq - after.cur_tick_event_seq >= max_events {
            return Ok(None);
        }
        let params: [&(dyn ToSql + Sync); 6] = [
            &prev_tick_id,
            &filter.ev_type,
            &filter.ev_extra1,
            &self.queue,
            &consumer,
            &cur_tick_id,
        ];
        let rows = client
            .query_raw(&self.by_ticks, params)
            .await
            .map_err(Error::sql("batch query", on_ticks(prev_tick_id, cur_tick_id)))?;
        Ok(Some(Upcoming {
            prev_tick_id,
            cur_tick_id,
            rows,
            fields: self.fields,
        }))
    }

    /// All events of an open batch at once.
    pub async fn events(&self, client: &impl GenericClient, batch_id: i64, filter: &EventFilter) -> Result<Vec<Event>> {
        self.stream(client, batch_id, filter).await?.try_collect().await
    }
}

/// The events of a tick range read before the range is opened as a batch
/// ([`BatchReader::read_ahead`]). The rows wait in the connection until
/// they are read; dropped, the rest are discarded.
pub struct Upcoming {
    prev_tick_id: i64,
    cur_tick_id: i64,
    rows: RowStream,
    fields: Fields,
}

impl std::fmt::Debug for Upcoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upcoming")
            .field("prev_tick_id", &self.prev_tick_id)
            .field("cur_tick_id", &self.cur_tick_id)
            .finish_non_exhaustive()
    }
}

impl Upcoming {
    /// The tick range read: after `.0`, up to and including `.1`.
    pub fn ticks(&self) -> (i64, i64) {
        (self.prev_tick_id, self.cur_tick_id)
    }

    /// The events as those of `batch`, when `batch` is the range read
    /// (same start and end ticks); `None` otherwise (the read is dropped).
    pub fn into_batch(self, batch: &BatchTicks) -> Option<impl Stream<Item = Result<Event>> + Send + 'static> {
        (batch.prev_tick_id == self.prev_tick_id && batch.cur_tick_id == self.cur_tick_id)
            .then(|| decode(self.rows, batch.batch_id, self.fields))
    }
}

fn on_ticks(prev_tick_id: i64, cur_tick_id: i64) -> String {
    format!("ticks {prev_tick_id} to {cur_tick_id}")
}

/// Rows of the batch query as events.
fn decode(rows: RowStream, batch_id: i64, fields: Fields) -> impl Stream<Item = Result<Event>> + Send + 'static {
    rows.map(move |row| {
        let row = row.map_err(|source| Error::Sql {
            function: "batch query",
            context: on_batch(batch_id),
            source,
        })?;
        let unreadable = |source| Error::Row {
            function: "batch query",
            context: on_batch(batch_id),
            source,
        };
        match fields {
            Fields::Text => Event::from_row(&row).map_err(unreadable),
            Fields::Bytes => Event::from_raw_row(&row)
                .map_err(unreadable)?
                .map_err(|field| Error::Undecodable {
                    batch_id,
                    ev_id: row.try_get(0).unwrap_or_default(),
                    field,
                }),
        }
    })
}

/// The PgQ calls a consumer makes for every batch, prepared once per
/// connection so that each is one round trip: `pgq.next_batch_custom` and
/// `pgq.finish_batch`.
///
/// Like [`BatchReader`], use them only on the connection that prepared them.
#[derive(Debug, Clone)]
pub struct BatchStatements {
    next_batch: Statement,
    finish_batch: Statement,
    finish_and_next: Statement,
}

/// `pgq.finish_batch($1)`, then `pgq.next_batch_custom($2 ... $6)`, in one
/// statement: the lateral reference makes the second run after the first.
/// When the batch was not open, the queue name given to
/// `next_batch_custom` is instead a text that does not read as an integer
/// and is read as one, so the statement fails with SQLSTATE 22P02
/// (`invalid_text_representation`, which nothing else in it can raise: its
/// parameters are typed and sent in binary) and the transaction cannot
/// commit. The text depends on `f.finished`, so the planner never computes
/// it ahead of the CASE.
const FINISH_AND_NEXT: &str = "select n.* \
     from (select pgq.finish_batch($1) as finished) f, \
     lateral pgq.next_batch_custom(case when f.finished = 1 then $2 \
                                        else ('batch ' || $1::text || ' was not open (finish_batch returned ' \
                                              || f.finished::text || ')')::int::text end, $3, $4, $5, $6) n";

impl BatchStatements {
    /// Prepares the statements.
    pub async fn prepare(client: &impl GenericClient) -> Result<BatchStatements> {
        let next_batch = client
            .prepare_typed(
                "select * from pgq.next_batch_custom($1, $2, $3, $4, $5)",
                &[Type::TEXT, Type::TEXT, Type::INTERVAL, Type::INT4, Type::INTERVAL],
            )
            .await
            .map_err(Error::sql("pgq.next_batch_custom", String::new()))?;
        let finish_batch = client
            .prepare_typed("select pgq.finish_batch($1)", &[Type::INT8])
            .await
            .map_err(Error::sql("pgq.finish_batch", String::new()))?;
        let finish_and_next = client
            .prepare_typed(
                FINISH_AND_NEXT,
                &[
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INTERVAL,
                    Type::INT4,
                    Type::INTERVAL,
                ],
            )
            .await
            .map_err(Error::sql("pgq.finish_batch", String::new()))?;
        Ok(BatchStatements {
            next_batch,
            finish_batch,
            finish_and_next,
        })
    }

    /// Finishes a batch and opens the consumer's next one, in one statement
    /// (one round trip), in the caller's transaction: `pgq.finish_batch`,
    /// then `pgq.next_batch_custom`. Returns the next batch, if any; both
    /// take effect when the transaction commits. A batch that is not open
    /// is an error ([`Error::BatchNotOpen`]) raised in the database, so the
    /// transaction is aborted and cannot commit the work that was to finish
    /// it (a COMMIT sent after it without waiting rolls back).
    pub async fn finish_and_next(
        &self,
        client: &impl GenericClient,
        batch_id: i64,
        queue: &str,
        consumer: &str,
        limits: &BatchLimits,
    ) -> Result<Option<BatchTicks>> {
        let row = client
            .query_one(
                &self.finish_and_next,
                &[
                    &batch_id,
                    &queue,
                    &consumer,
                    &limits.min_lag,
                    &limits.min_count,
                    &limits.min_interval,
                ],
            )
            .await
            .map_err(|source| {
                if source.code() == Some(&SqlState::INVALID_TEXT_REPRESENTATION) {
                    Error::BatchNotOpen { batch_id, source }
                } else {
                    Error::Sql {
                        function: "pgq.finish_batch",
                        context: on_batch(batch_id),
                        source,
                    }
                }
            })?;
        BatchTicks::from_row(&row).map_err(Error::row("pgq.next_batch_custom", on_batch(batch_id)))
    }

    /// [`next_batch_custom`](crate::next_batch_custom), prepared; with
    /// default limits it is what [`next_batch_info`](crate::next_batch_info)
    /// calls.
    pub async fn next_batch(
        &self,
        client: &impl GenericClient,
        queue: &str,
        consumer: &str,
        limits: &BatchLimits,
    ) -> Result<Option<BatchTicks>> {
        let rows = client
            .query(
                &self.next_batch,
                &[
                    &queue,
                    &consumer,
                    &limits.min_lag,
                    &limits.min_count,
                    &limits.min_interval,
                ],
            )
            .await
            .map_err(Error::sql("pgq.next_batch_custom", on_consumer(queue, consumer)))?;
        match rows.first() {
            Some(r) => {
                BatchTicks::from_row(r).map_err(Error::row("pgq.next_batch_custom", on_consumer(queue, consumer)))
            }
            None => Ok(None),
        }
    }

    /// [`finish_batch`](crate::finish_batch), prepared.
    pub async fn finish_batch(&self, client: &impl GenericClient, batch_id: i64) -> Result<bool> {
        let row = client
            .query_one(&self.finish_batch, &[&batch_id])
            .await
            .map_err(Error::sql("pgq.finish_batch", on_batch(batch_id)))?;
        let n: i32 = row
            .try_get(0)
            .map_err(Error::row("pgq.finish_batch", on_batch(batch_id)))?;
        Ok(n == 1)
    }
}
