//! The fast producer: events handed over one at a time, sent in batches, and
//! the ticker told at commit.

use std::borrow::Borrow;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::Utc;
use futures_util::SinkExt;
use postgres_types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use crate::error::{on_queue, Error, Result};
use crate::event::NewEvent;
use crate::ident::quote_qualified;
use crate::notify::notify_events;

/// How many events a [`Producer`] keeps before sending them.
const DEFAULT_BUFFER_EVENTS: usize = 5000;
/// How many payload bytes a [`Producer`] keeps before sending them.
const DEFAULT_BUFFER_BYTES: usize = 4 << 20;

/// Inserts events one call at a time, in one transaction, at the speed of a
/// bulk insert: [`Producer::send`] only buffers, and the buffered events go
/// to the database as one multi-row statement (arrays, one round trip) once
/// the buffer is full, on [`Producer::flush`] and on [`Producer::commit`].
///
/// With the rights to insert into the queue's event tables directly (PgQ's
/// `pgq_admin` role, the tables' owner, a superuser) the statement is a
/// plain `INSERT` into the current event table, as `pgq.insert_event` does
/// it in C; otherwise it calls `pgq.insert_event` once per row (the
/// `pgq_writer` right), still in one statement.
///
/// Unless turned off with [`Producer::notify`], the producer notifies the
/// ticker ([`notify_events`]) in the same transaction, so an embedded or
/// standalone ticker of this framework ticks the queue as soon as the events
/// commit, and listening consumers get them within milliseconds.
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

/// Where the buffered events go, found at the first flush.
struct Target {
    /// The current event table, quoted.
    table: String,
    /// The multi-row `INSERT` into it, when this session may insert there
    /// directly; `None`: `pgq.insert_event` per row.
    insert: Option<String>,
}

const INSERT_BY_FUNCTION: &str = "select pgq.insert_event($1, t, d, e1, e2, e3, e4) \
     from unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
     as u(t, d, e1, e2, e3, e4)";

/// The current event table and whether this session may insert into it
/// (table INSERT and the right to draw from the event id sequence).
const TARGET: &str = "select pgq.current_event_table(q.queue_name), \
     has_table_privilege(pgq.current_event_table(q.queue_name), 'INSERT') \
     and (has_sequence_privilege(q.queue_event_seq, 'USAGE') \
          or has_sequence_privilege(q.queue_event_seq, 'UPDATE')) \
     from pgq.queue q where q.queue_name = $1";

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
        let target = match self.target.take() {
            Some(t) => t,
            None => self.find_target().await?,
        };
        let events = std::mem::take(&mut self.buffer);
        self.buffered_bytes = 0;
        let column = |f: fn(&NewEvent) -> &Option<String>| -> Vec<Option<&str>> {
            events.iter().map(|e| f(e).as_deref()).collect()
        };
        let cols = [
            column(|e| &e.ev_type),
            column(|e| &e.ev_data),
            column(|e| &e.ev_extra1),
            column(|e| &e.ev_extra2),
            column(|e| &e.ev_extra3),
            column(|e| &e.ev_extra4),
        ];
        let fail = || Error::sql("pgq event insert", on_queue(&self.queue));
        let insert = async {
            match &target.insert {
                Some(sql) => {
                    let params: Vec<(&(dyn ToSql + Sync), Type)> = cols
                        .iter()
                        .map(|c| (c as &(dyn ToSql + Sync), Type::TEXT_ARRAY))
                        .collect();
                    self.tx.execute_typed(sql, &params).await.map_err(fail())
                }
                None => {
                    let queue = self.queue.as_str();
                    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&queue, Type::TEXT)];
                    params.extend(cols.iter().map(|c| (c as &(dyn ToSql + Sync), Type::TEXT_ARRAY)));
                    self.tx.execute_typed(INSERT_BY_FUNCTION, &params).await.map_err(fail())
                }
            }
        };
        let written = if self.notify && !self.notified {
            // One round trip for both: tokio-postgres pipelines them.
            let (_, written) = futures_util::future::try_join(notify_events(&self.tx, &self.queue), insert).await?;
            self.notified = true;
            written
        } else {
            insert.await?
        };
        self.target = Some(target);
        self.sent += written;
        Ok(())
    }

    /// Sends the buffered events, then `events` through binary COPY into the
    /// current event table: the fastest way in for events that are all at
    /// hand, read from the iterator as they are sent (so it may be lazy and
    /// long). Needs the rights for direct inserts (PgQ's `pgq_admin`).
    /// Returns how many were copied.
    pub async fn copy_in<I, E>(&mut self, events: I) -> Result<u64>
    where
        I: IntoIterator<Item = E>,
        E: Borrow<NewEvent>,
    {
        self.flush().await?;
        let target = match self.target.take() {
            Some(t) => t,
            None => self.find_target().await?,
        };
        let notify = self.notify && !self.notified;
        let copy = copy_events(self.tx.client(), &self.queue, &target.table, events);
        let n = if notify {
            let (_, n) = futures_util::future::try_join(notify_events(&self.tx, &self.queue), copy).await?;
            self.notified = true;
            n
        } else {
            copy.await?
        };
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

    async fn find_target(&self) -> Result<Target> {
        let row = self
            .tx
            .query_opt(TARGET, &[&self.queue])
            .await
            .map_err(Error::sql("pgq.current_event_table", on_queue(&self.queue)))?;
        let Some(row) = row else {
            return Err(Error::InvalidArgument {
                what: "queue",
                problem: format!("there is no queue {:?}", self.queue),
            });
        };
        let read = Error::row("pgq.current_event_table", on_queue(&self.queue));
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
        Ok(Target { table, insert })
    }
}

/// Bytes sent to the server at a time by [`copy_events`].
const COPY_CHUNK: usize = 256 << 10;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Writes events into `table` (quoted) with binary COPY, encoding them
/// straight into large chunks. `ev_time` is now; PgQ's column defaults give
/// the id and transaction id. Returns how many rows were written.
///
/// Events without extra fields are copied as three columns: less for the
/// server to read. Should an event with extra fields follow, that COPY ends
/// and another one with every column goes on (in the same transaction).
pub(crate) async fn copy_events<I, E>(client: &Client, queue: &str, table: &str, events: I) -> Result<u64>
where
    I: IntoIterator<Item = E>,
    E: Borrow<NewEvent>,
{
    let mut events = events.into_iter().peekable();
    let mut total = 0;
    while events.peek().is_some() {
        total += copy_run(client, queue, table, &mut events).await?;
    }
    Ok(total)
}

/// One COPY of [`copy_events`]: as many events as fit its columns.
async fn copy_run<I, E>(client: &Client, queue: &str, table: &str, events: &mut std::iter::Peekable<I>) -> Result<u64>
where
    I: Iterator<Item = E>,
    E: Borrow<NewEvent>,
{
    let has_extras =
        |e: &NewEvent| e.ev_extra1.is_some() || e.ev_extra2.is_some() || e.ev_extra3.is_some() || e.ev_extra4.is_some();
    let all = events.peek().is_some_and(|e| has_extras(e.borrow()));
    let columns = if all {
        "ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4"
    } else {
        "ev_time, ev_type, ev_data"
    };
    let sql = format!("copy {table} ({columns}) from stdin (format binary)");
    let fail = || Error::sql("copy", on_queue(queue));
    let sink = client.copy_in::<_, Bytes>(&sql).await.map_err(fail())?;
    futures_util::pin_mut!(sink);
    let now = Utc::now().timestamp_micros() - PG_EPOCH_MICROS;
    let mut buf = BytesMut::with_capacity(COPY_CHUNK + 1024);
    // Signature, flags, header extension length.
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    let put = |buf: &mut BytesMut, field: &Option<String>| -> Result<()> {
        match field {
            None => buf.put_i32(-1),
            Some(text) => {
                let len = i32::try_from(text.len()).map_err(|_| Error::InvalidArgument {
                    what: "event",
                    problem: "a field is longer than 2 GiB".into(),
                })?;
                buf.put_i32(len);
                buf.put_slice(text.as_bytes());
            }
        }
        Ok(())
    };
    loop {
        // The next event, unless it needs columns this COPY has not.
        let Some(event) = events.next_if(|e| all || !has_extras(e.borrow())) else {
            break;
        };
        let e = event.borrow();
        buf.put_i16(if all { 7 } else { 3 });
        buf.put_i32(8);
        buf.put_i64(now);
        put(&mut buf, &e.ev_type)?;
        put(&mut buf, &e.ev_data)?;
        if all {
            for field in [&e.ev_extra1, &e.ev_extra2, &e.ev_extra3, &e.ev_extra4] {
                put(&mut buf, field)?;
            }
        }
        if buf.len() >= COPY_CHUNK {
            sink.as_mut().send(buf.split().freeze()).await.map_err(fail())?;
        }
    }
    buf.put_i16(-1);
    sink.as_mut().send(buf.freeze()).await.map_err(fail())?;
    sink.finish().await.map_err(fail())
}

fn event_bytes(e: &NewEvent) -> usize {
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
