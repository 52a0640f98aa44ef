//! Copying a batch of a provider's queue into another database's queue with
//! the same event ids, as a cascade's branch holds it: the provider's rows
//! go out with binary `COPY ... TO STDOUT` and in with binary
//! `COPY ... FROM STDIN`, byte for byte, never decoded, streamed (bounded
//! memory). On the way, the rows whose type is a cascade's own (`pgq.*`:
//! locations, watermarks) are picked out for the caller, who applies them
//! in the same transaction.
//!
//! The target queue must take the rows: a branch's queue refuses inserts
//! through PgQ's functions, but a COPY into its event table is not checked;
//! the caller runs it in the transaction that also inserts the batch's tick.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::batch::batch_event_sql;
use crate::error::{on_batch, on_queue, Error, Result};
use crate::ident::quote_qualified;
use crate::queue::current_event_table;

/// The columns copied, in this order.
const COLUMNS: &str = "ev_id, ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4";
/// Binary COPY's header: signature, flags, header extension length.
const HEADER_LEN: usize = 11 + 4 + 4;

/// An event of a cascade's own (`ev_type` starting with `pgq.`), as copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CascadeEvent {
    /// The event's id.
    pub ev_id: i64,
    /// `pgq.location-info`, `pgq.unregister-location`, `pgq.global-watermark`, `pgq.tick-id`.
    pub ev_type: String,
    /// The node name or the tick id.
    pub ev_data: Option<String>,
    /// The queue name.
    pub ev_extra1: Option<String>,
    /// A location.
    pub ev_extra2: Option<String>,
    /// A location's dead flag.
    pub ev_extra3: Option<String>,
}

/// What [`relay_batch`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relayed {
    /// How many events.
    pub events: u64,
    /// Those of them that are the cascade's own, in the order they came.
    pub cascade_events: Vec<CascadeEvent>,
}

/// Copies the events of `batch_id` (open on `provider`, for any consumer)
/// into the current event table of `queue` on `target`, keeping `ev_id`,
/// `ev_time`, `ev_type`, `ev_data` and the extra fields; the copy's
/// `ev_txid` is the target's transaction. `target` should be in a
/// transaction: the event table is locked (`ROW EXCLUSIVE`) first, so a COPY
/// is never refused as it starts.
pub async fn relay_batch(provider: &Client, target: &Client, queue: &str, batch_id: i64) -> Result<Relayed> {
    let table = quote_qualified(&current_event_table(target, queue).await?)?;
    let fail_in = || Error::sql("copy", on_queue(queue));
    target
        .batch_execute(&format!("lock table {table} in row exclusive mode"))
        .await
        .map_err(fail_in())?;
    let copy_in = target
        .prepare(&format!("copy {table} ({COLUMNS}) from stdin (format binary)"))
        .await
        .map_err(fail_in())?;

    // The batch's query, as PgQ writes it for this batch id; no parameter
    // can be bound into a COPY.
    let batch_sql = batch_event_sql(provider, batch_id).await?;
    let out_sql = format!("copy (select {COLUMNS} from ({batch_sql}) b) to stdout (format binary)");
    let fail_out = || Error::sql("copy", on_batch(batch_id));
    let source = provider.copy_out(out_sql.as_str()).await.map_err(fail_out())?;
    futures_util::pin_mut!(source);

    let sink = target.copy_in::<_, Bytes>(&copy_in).await.map_err(fail_in())?;
    futures_util::pin_mut!(sink);
    let mut scanner = Scanner::default();
    while let Some(chunk) = source.next().await {
        let chunk = chunk.map_err(fail_out())?;
        scanner.feed(&chunk, batch_id)?;
        sink.as_mut().send(chunk).await.map_err(fail_in())?;
    }
    let events = sink.finish().await.map_err(fail_in())?;
    if !scanner.ended {
        return Err(malformed(batch_id, "the provider's COPY ended before its trailer"));
    }
    Ok(Relayed {
        events,
        cascade_events: scanner.found,
    })
}

fn malformed(batch_id: i64, problem: &str) -> Error {
    Error::InvalidArgument {
        what: "binary COPY stream",
        problem: format!("batch {batch_id}: {problem}"),
    }
}

/// Reads the rows of a binary COPY stream as they pass, to pick out the
/// cascade's own events. Keeps only the bytes of a row not complete yet.
#[derive(Default)]
struct Scanner {
    rest: BytesMut,
    header_read: bool,
    ended: bool,
    found: Vec<CascadeEvent>,
}

impl Scanner {
    fn feed(&mut self, chunk: &[u8], batch_id: i64) -> Result<()> {
        self.rest.extend_from_slice(chunk);
        if !self.header_read {
            if self.rest.len() < HEADER_LEN {
                return Ok(());
            }
            let ext = u32::from_be_bytes([self.rest[15], self.rest[16], self.rest[17], self.rest[18]]) as usize;
            if self.rest.len() < HEADER_LEN + ext {
                return Ok(());
            }
            self.rest.advance(HEADER_LEN + ext);
            self.header_read = true;
        }
        while !self.ended {
            let Some(len) = self.complete_row(batch_id)? else {
                break;
            };
            let row = self.rest.split_to(len);
            if let Some(ev) = cascade_event(&row, batch_id)? {
                self.found.push(ev);
            }
        }
        Ok(())
    }

    /// The length of the first row when it is all there (`None` when not);
    /// at the trailer, marks the stream ended.
    fn complete_row(&mut self, batch_id: i64) -> Result<Option<usize>> {
        let buf = &self.rest[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let fields = i16::from_be_bytes([buf[0], buf[1]]);
        if fields == -1 {
            self.ended = true;
            self.rest.clear();
            return Ok(None);
        }
        if fields != 8 {
            return Err(malformed(batch_id, &format!("a row of {fields} columns, not 8")));
        }
        let mut pos = 2;
        for _ in 0..fields {
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
            pos += 4;
            if len > 0 {
                pos += len as usize;
            }
        }
        Ok((buf.len() >= pos).then_some(pos))
    }
}

/// The fields of one complete row.
fn fields(row: &[u8]) -> Vec<Option<&[u8]>> {
    let mut out = Vec::with_capacity(8);
    let mut pos = 2;
    while pos + 4 <= row.len() {
        let len = i32::from_be_bytes([row[pos], row[pos + 1], row[pos + 2], row[pos + 3]]);
        pos += 4;
        if len < 0 {
            out.push(None);
        } else {
            let end = (pos + len as usize).min(row.len());
            out.push(Some(&row[pos..end]));
            pos = end;
        }
    }
    out
}

/// The row as a cascade event, when its type starts with `pgq.`.
fn cascade_event(row: &[u8], batch_id: i64) -> Result<Option<CascadeEvent>> {
    let f = fields(row);
    let ev_type = f.get(2).copied().flatten();
    if !ev_type.is_some_and(|t| t.starts_with(b"pgq.")) {
        return Ok(None);
    }
    let text = |i: usize| -> Result<Option<String>> {
        match f.get(i).copied().flatten() {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|_| malformed(batch_id, "a cascade event's field is not UTF-8")),
        }
    };
    let ev_id = match f.first().copied().flatten() {
        Some(b) if b.len() == 8 => i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        _ => return Err(malformed(batch_id, "an event without an 8-byte ev_id")),
    };
    Ok(Some(CascadeEvent {
        ev_id,
        ev_type: text(2)?.unwrap_or_default(),
        ev_data: text(3)?,
        ev_extra1: text(4)?,
        ev_extra2: text(5)?,
        ev_extra3: text(6)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, ty: &str, data: Option<&str>) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&8i16.to_be_bytes());
        r.extend_from_slice(&8i32.to_be_bytes());
        r.extend_from_slice(&id.to_be_bytes());
        r.extend_from_slice(&8i32.to_be_bytes());
        r.extend_from_slice(&0i64.to_be_bytes());
        for f in [Some(ty), data, Some("q"), None, None, None] {
            match f {
                None => r.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(s) => {
                    r.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    r.extend_from_slice(s.as_bytes());
                }
            }
        }
        r
    }

    #[test]
    fn cascade_events_are_found_whatever_the_chunks_boundaries() {
        let mut stream = b"PGCOPY\n\xff\r\n\0".to_vec();
        stream.extend_from_slice(&[0; 8]);
        stream.extend(row(1, "t", Some("a")));
        stream.extend(row(2, "pgq.global-watermark", Some("7")));
        stream.extend(row(3, "t", None));
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        for size in [1, 3, 7, 1000] {
            let mut s = Scanner::default();
            for chunk in stream.chunks(size) {
                s.feed(chunk, 1).expect("well formed");
            }
            assert!(s.ended, "chunks of {size}");
            assert_eq!(s.found.len(), 1);
            assert_eq!(s.found[0].ev_id, 2);
            assert_eq!(s.found[0].ev_data.as_deref(), Some("7"));
            assert_eq!(s.found[0].ev_extra1.as_deref(), Some("q"));
        }
    }
}
