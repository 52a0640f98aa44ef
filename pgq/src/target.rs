//! Where a transaction's new events go, and which way: straight into the
//! queue's current event table, or through `pgq.insert_event`.
//!
//! The straight way (a multi-row `INSERT`, or binary COPY) is what
//! `pgq.insert_event` does in C, minus its checks. So it is taken only where
//! those checks cannot refuse anything and the session may write the table:
//!
//! - the session has INSERT on the event table and may draw from the queue's
//!   event id sequence;
//! - the queue has no `queue_per_tx_limit` (null or negative): PgQ counts a
//!   transaction's events in the memory of the backend, inside
//!   `pgq.insert_event`, and events inserted past it are not counted.
//!   Through `pgq.insert_event`, every event of the transaction counts
//!   against the limit, whoever inserted it, and the limit holds exactly as
//!   PgQ defines it (its count also takes in events of rolled-back
//!   savepoints, and starts again when the queue's tables rotate);
//! - `queue_disable_insert` is off (PgQ refuses inserts then, except in a
//!   session with `session_replication_role = replica`);
//! - the transaction is not read-only (a COPY refused when it starts would
//!   end the connection, see the `copy` module).
//!
//! Otherwise every event goes through `pgq.insert_event`, still many in one
//! statement, and PgQ decides, with its own errors
//! ([`Error::TooManyEvents`], [`Error::InsertDisabled`]).
//!
//! All of it is read in one query, once per transaction (a producer's, or a
//! call of [`insert_events_copy`](crate::insert_events_copy)), where
//! `pgq.insert_event` reads the queue's settings at each call: a change of
//! the settings committed while the transaction runs applies from the next.

use std::borrow::Borrow;

use postgres_types::{ToSql, Type};
use tokio_postgres::Client;

use crate::copy::copy_events;
use crate::error::{on_queue, Error, Result};
use crate::event::NewEvent;
use crate::ident::quote_qualified;

/// The current event table, and whether events may go straight into it.
///
/// The table is named as `pgq.current_event_table` names it, without
/// calling it: that function refuses a queue with `queue_disable_insert`
/// (outside replica sessions) with an error of its own, where such a queue
/// should go to `pgq.insert_event` and get PgQ's refusal from there.
const TARGET: &str = "select t.name, \
     has_table_privilege(t.name, 'INSERT') \
     and (has_sequence_privilege(q.queue_event_seq, 'USAGE') \
          or has_sequence_privilege(q.queue_event_seq, 'UPDATE')) \
     and coalesce(q.queue_per_tx_limit, -1) < 0 \
     and not q.queue_disable_insert \
     and not pg_catalog.current_setting('transaction_read_only')::bool \
     from pgq.queue q, lateral (select q.queue_data_pfx || '_' || q.queue_cur_table::text) t(name) \
     where q.queue_name = $1";

/// What [`TARGET`] is called in errors.
const LOOKUP: &str = "current event table lookup";

/// Many events through `pgq.insert_event`, one call per row, in one statement.
const INSERT_BY_FUNCTION: &str = "select pgq.insert_event($1, t, d, e1, e2, e3, e4) \
     from unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
     as u(t, d, e1, e2, e3, e4)";

/// Where one transaction's events for one queue go.
pub(crate) struct Target {
    /// The current event table, quoted.
    table: String,
    /// The multi-row `INSERT` into it, when events may go there directly;
    /// `None`: `pgq.insert_event` per row.
    insert: Option<String>,
    /// Whether the transaction holds its lock on the table (it wrote there):
    /// a COPY need not take it first.
    locked: bool,
}

impl Target {
    /// Looks up `queue`'s current event table and the way in (one query).
    pub(crate) async fn find(client: &Client, queue: &str) -> Result<Target> {
        let row = client
            .query_opt(TARGET, &[&queue])
            .await
            .map_err(Error::sql(LOOKUP, on_queue(queue)))?;
        let Some(row) = row else {
            return Err(Error::InvalidArgument {
                what: "queue",
                problem: format!("there is no queue {queue:?}"),
            });
        };
        let read = Error::row(LOOKUP, on_queue(queue));
        let (table, direct): (String, bool) = match (row.try_get(0), row.try_get(1)) {
            (Ok(t), Ok(d)) => (t, d),
            (Err(e), _) | (_, Err(e)) => return Err(read(e)),
        };
        let table = quote_qualified(&table)?;
        let insert = direct.then(|| {
            format!(
                "insert into {table} (ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4) \
                 select now(), t, d, e1, e2, e3, e4 \
                 from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                 as u(t, d, e1, e2, e3, e4)"
            )
        });
        Ok(Target {
            table,
            insert,
            locked: false,
        })
    }

    /// Inserts `events` in one statement. Returns how many were inserted.
    pub(crate) async fn insert<E: Borrow<NewEvent>>(
        &mut self,
        client: &Client,
        queue: &str,
        events: &[E],
    ) -> Result<u64> {
        let column = |f: fn(&NewEvent) -> &Option<String>| -> Vec<Option<&str>> {
            events.iter().map(|e| f(e.borrow()).as_deref()).collect()
        };
        let cols = [
            column(|e| &e.ev_type),
            column(|e| &e.ev_data),
            column(|e| &e.ev_extra1),
            column(|e| &e.ev_extra2),
            column(|e| &e.ev_extra3),
            column(|e| &e.ev_extra4),
        ];
        let arrays = cols.iter().map(|c| (c as &(dyn ToSql + Sync), Type::TEXT_ARRAY));
        match &self.insert {
            Some(sql) => {
                let params: Vec<(&(dyn ToSql + Sync), Type)> = arrays.collect();
                let n = client
                    .execute_typed(sql, &params)
                    .await
                    .map_err(Error::sql("pgq event insert", on_queue(queue)))?;
                self.locked = true;
                Ok(n)
            }
            None => {
                let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&queue, Type::TEXT)];
                params.extend(arrays);
                client
                    .execute_typed(INSERT_BY_FUNCTION, &params)
                    .await
                    .map_err(Error::insert("pgq.insert_event", queue))
            }
        }
    }

    /// Inserts `events` the fastest way open: binary COPY when events may go
    /// straight into the table, otherwise statements of [`Target::insert`]
    /// of at most `max_events` events or `max_bytes` bytes each. Reads the
    /// iterator as it goes. Returns how many were inserted.
    pub(crate) async fn copy<I, E>(
        &mut self,
        client: &Client,
        queue: &str,
        events: I,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<u64>
    where
        I: IntoIterator<Item = E>,
        E: Borrow<NewEvent>,
    {
        if self.insert.is_some() {
            return copy_events(client, queue, &self.table, &mut self.locked, events).await;
        }
        let mut events = events.into_iter();
        let mut total = 0;
        loop {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while chunk.len() < max_events && bytes < max_bytes {
                let Some(e) = events.next() else { break };
                bytes += event_bytes(e.borrow());
                chunk.push(e);
            }
            if chunk.is_empty() {
                return Ok(total);
            }
            total += self.insert(client, queue, &chunk).await?;
        }
    }
}

/// About how much memory an event takes in a buffer.
pub(crate) fn event_bytes(e: &NewEvent) -> usize {
    [
        &e.ev_type,
        &e.ev_data,
        &e.ev_extra1,
        &e.ev_extra2,
        &e.ev_extra3,
        &e.ev_extra4,
    ]
    .iter()
    .map(|f| f.as_ref().map_or(0, String::len))
    .sum::<usize>()
        + 64
}
