//! Binary COPY of events into an event table, encoded straight into large
//! chunks.
//!
//! A COPY must not be refused when it starts: tokio-postgres then ends its
//! connection (it answers the refusal with CopyFail and a second Sync, and the
//! second ReadyForQuery finds no request waiting for it: "unexpected message
//! from server"). Refused midway, or given up by the caller, a COPY leaves the
//! connection usable. So what can refuse a COPY at its start is settled
//! before it: the rights and a read-only transaction by the caller (the
//! `target` module takes this way only with the rights, in a transaction
//! that may write), and the table's lock here: the first COPY of a
//! transaction takes `ROW EXCLUSIVE` on the table first, as its own statement,
//! pipelined with preparing the COPY. A lock not granted (`lock_timeout`, a
//! deadlock, a cancel) then fails that statement, and the COPY never starts.

use std::borrow::Borrow;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::Utc;
use futures_util::SinkExt;
use tokio_postgres::{Client, Statement};

use crate::error::{on_queue, Error, Result};
use crate::event::NewEvent;

/// Bytes sent to the server at a time.
const COPY_CHUNK: usize = 256 << 10;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Writes events into `table` (quoted) with binary COPY. `ev_time` is now;
/// PgQ's column defaults give the id and transaction id. Returns how many
/// rows were written. Unless `locked` (the transaction holds its lock on the
/// table already), takes the lock first, and sets `locked`.
///
/// Events without extra fields are copied as three columns: less for the
/// server to read. Should an event with extra fields follow, that COPY ends
/// and another one with every column goes on (in the same transaction).
pub(crate) async fn copy_events<I, E>(
    client: &Client,
    queue: &str,
    table: &str,
    locked: &mut bool,
    events: I,
) -> Result<u64>
where
    I: IntoIterator<Item = E>,
    E: Borrow<NewEvent>,
{
    let mut events = events.into_iter().peekable();
    let mut total = 0;
    while let Some(first) = events.peek() {
        let all = has_extras(first.borrow());
        let statement = start(client, queue, table, all, locked).await?;
        total += copy_run(client, queue, &statement, all, &mut events).await?;
    }
    Ok(total)
}

fn has_extras(e: &NewEvent) -> bool {
    e.ev_extra1.is_some() || e.ev_extra2.is_some() || e.ev_extra3.is_some() || e.ev_extra4.is_some()
}

/// Prepares a COPY of every column (`all`) or of the first three, after
/// taking the table's lock unless `locked`.
async fn start(client: &Client, queue: &str, table: &str, all: bool, locked: &mut bool) -> Result<Statement> {
    let columns = if all {
        "ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4"
    } else {
        "ev_time, ev_type, ev_data"
    };
    let sql = format!("copy {table} ({columns}) from stdin (format binary)");
    let fail = || Error::sql("copy", on_queue(queue));
    if *locked {
        return client.prepare(&sql).await.map_err(fail());
    }
    let lock = format!("lock table {table} in row exclusive mode");
    // One round trip for both; the lock's error, if any, is the first.
    let (lock, prepared) = futures_util::future::join(client.batch_execute(&lock), client.prepare(&sql)).await;
    lock.map_err(fail())?;
    *locked = true;
    prepared.map_err(fail())
}

/// One COPY: as many events as fit its columns.
async fn copy_run<I, E>(
    client: &Client,
    queue: &str,
    statement: &Statement,
    all: bool,
    events: &mut std::iter::Peekable<I>,
) -> Result<u64>
where
    I: Iterator<Item = E>,
    E: Borrow<NewEvent>,
{
    let fail = || Error::sql("copy", on_queue(queue));
    let sink = client.copy_in::<_, Bytes>(statement).await.map_err(fail())?;
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
