//! Rows a handler writes into its own tables, buffered and sent by binary
//! COPY: one statement for many events instead of one per event.
//!
//! A row is encoded when it is given (its values need not outlive the call),
//! in the binary format of the table's column types, and kept in a buffer per
//! table and column list. The buffers are written when one grows past
//! [`FLUSH_BYTES`] (between events, in remote_event mode) and before the batch
//! commits.
//!
//! A COPY must not be refused when it starts: tokio-postgres then ends the
//! connection (see `pgq`'s `copy` module). So each COPY is preceded, in one
//! round trip, by the table's lock (`ROW EXCLUSIVE`, which the COPY would
//! take: a lock not granted fails here) and a check of what else refuses a
//! COPY at its start: a relation that is not a table, a read-only
//! transaction, row-level security, a column that is missing, generated, or
//! that the user may not insert into, and a transaction already aborted
//! (where the check itself fails). What fails later (a constraint, a
//! trigger, a value the type refuses) fails the COPY midway, which leaves
//! the connection usable; either way the batch is rolled back.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};
use tokio_postgres::{Statement, Transaction};

use crate::error::{Error, Result};
use crate::statement_cache::StatementCache;
use crate::writes::Writes;

/// Bytes a table's buffer holds before it is written.
pub(crate) const FLUSH_BYTES: usize = 1 << 20;

/// The binary COPY header: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// What refuses a COPY into table `$1` (quoted, possibly qualified) of
/// columns `$2` at its start, as a sentence; null when nothing does.
const CHECK: &str = "select case \
       when c.relkind not in ('r', 'p') then 'it is not a table (COPY writes tables only)' \
       when pg_catalog.current_setting('transaction_read_only')::bool then 'the transaction is read-only' \
       when pg_catalog.row_security_active(c.oid) \
         then 'row-level security applies to it for this user, and COPY FROM does not support that' \
       else (select 'column ' || pg_catalog.quote_ident(u.name) || case \
                 when a.attnum is null then ' does not exist' \
                 when a.attgenerated <> '' then ' is a generated column' \
                 else ': this user may not insert into it' end \
             from pg_catalog.unnest($2::text[]) with ordinality as u(name, i) \
             left join pg_catalog.pg_attribute a \
               on a.attrelid = c.oid and a.attname = u.name and a.attnum > 0 and not a.attisdropped \
             where a.attnum is null or a.attgenerated <> '' \
               or not pg_catalog.has_column_privilege(c.oid, a.attnum, 'INSERT') \
             order by u.i limit 1) \
     end \
     from pg_catalog.pg_class c where c.oid = $1::text::pg_catalog.regclass";

/// The rows buffered for COPY on one connection in one batch.
#[derive(Default)]
pub(crate) struct CopyRows {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tables: Vec<Table>,
    /// An event's rows are being given (remote_event mode): a table's rows
    /// from its mark on are that event's.
    marked: bool,
}

/// One table and column list, and its rows not written yet.
struct Table {
    /// The table as the handler named it.
    name: String,
    /// The columns as the handler named them.
    columns: Vec<String>,
    /// The table, quoted.
    quoted: String,
    types: Vec<Type>,
    /// `COPY ... FROM STDIN (FORMAT binary)`, prepared.
    copy: Statement,
    /// Starts with [`HEADER`].
    buf: BytesMut,
    rows: u64,
    /// Where the buffer was when the event being processed was handed out.
    mark: Option<(usize, u64)>,
}

impl Table {
    fn fresh_buffer() -> BytesMut {
        let mut buf = BytesMut::with_capacity(64 << 10);
        buf.put_slice(HEADER);
        buf
    }

    /// Encodes one row of `values` at the end of the buffer; on error the
    /// buffer is as it was.
    fn encode(&mut self, values: &[&(dyn ToSql + Sync)]) -> std::result::Result<(), String> {
        if values.len() != self.types.len() {
            return Err(format!(
                "{} values for {} columns ({})",
                values.len(),
                self.types.len(),
                self.columns.join(", ")
            ));
        }
        let start = self.buf.len();
        let fields = i16::try_from(values.len()).map_err(|_| "too many columns".to_string())?;
        self.buf.put_i16(fields);
        for ((value, ty), column) in values.iter().zip(&self.types).zip(&self.columns) {
            if let Err(problem) = encode_field(&mut self.buf, *value, ty) {
                self.buf.truncate(start);
                return Err(format!("column {column:?} ({ty}): {problem}"));
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The buffer's rows as one COPY's data, and how many; the buffer is
    /// empty after.
    fn take(&mut self) -> Option<(Bytes, u64)> {
        if self.rows == 0 {
            return None;
        }
        self.buf.put_i16(-1);
        let data = std::mem::replace(&mut self.buf, Table::fresh_buffer()).freeze();
        let rows = std::mem::take(&mut self.rows);
        self.mark = None;
        Some((data, rows))
    }
}

/// Encodes one field: its length, then its bytes (-1 and none for NULL).
fn encode_field(buf: &mut BytesMut, value: &(dyn ToSql + Sync), ty: &Type) -> std::result::Result<(), String> {
    if matches!(value.encode_format(ty), Format::Text) {
        return Err("the value encodes itself as text; binary COPY needs its binary form".into());
    }
    let at = buf.len();
    buf.put_i32(-1);
    match value.to_sql_checked(ty, buf) {
        Ok(IsNull::Yes) => {
            buf.truncate(at + 4);
            Ok(())
        }
        Ok(IsNull::No) => {
            let len = i32::try_from(buf.len() - at - 4).map_err(|_| "the value is longer than 1 GiB".to_string())?;
            buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

impl CopyRows {
    /// Buffers one row of `values` for `columns` of `table`. The first row
    /// for a table and column list in a batch learns the columns' types
    /// (from a statement prepared once per connection).
    pub(crate) async fn add(
        &self,
        on: &Writes<'_>,
        table: &str,
        columns: &[&str],
        values: &[&(dyn ToSql + Sync)],
    ) -> Result<()> {
        let (origin, ev_id) = (&on.origin, on.event());
        let what = || format!("a row for COPY into {table:?}");
        if !self.has(table, columns) {
            let new = Table::prepare(on.tx, on.cache, table, columns)
                .await
                .map_err(|source| origin.write(what(), ev_id, source))?;
            let mut state = self.lock();
            if !state.tables.iter().any(|t| t.is(table, columns)) {
                let mut new = new;
                if state.marked {
                    new.mark = Some((HEADER.len(), 0));
                }
                state.tables.push(new);
            }
        }
        let mut state = self.lock();
        let Some(t) = state.tables.iter_mut().find(|t| t.is(table, columns)) else {
            return Err(origin.write(what(), ev_id, "the table's buffer went missing"));
        };
        t.encode(values).map_err(|problem| origin.write(what(), ev_id, problem))
    }

    fn has(&self, table: &str, columns: &[&str]) -> bool {
        self.lock().tables.iter().any(|t| t.is(table, columns))
    }

    /// True when a table's buffer is past [`FLUSH_BYTES`].
    pub(crate) fn is_full(&self) -> bool {
        self.lock().tables.iter().any(|t| t.buf.len() >= FLUSH_BYTES)
    }

    /// Writes every buffered row, a COPY per table, through `on`'s
    /// transaction. Returns how many rows.
    pub(crate) async fn flush(&self, on: &Writes<'_>) -> Result<u64> {
        let (tx, cache, origin) = (on.tx, on.cache, &on.origin);
        let mut total = 0;
        let count = self.lock().tables.len();
        for i in 0..count {
            let taken = {
                let mut state = self.lock();
                state.tables.get_mut(i).and_then(|t| {
                    Some((
                        t.take()?,
                        t.name.clone(),
                        t.quoted.clone(),
                        t.columns.clone(),
                        t.copy.clone(),
                    ))
                })
            };
            let Some(((data, rows), name, quoted, columns, copy)) = taken else {
                continue;
            };
            let what = || format!("COPY of {rows} row(s) into {name:?}");
            check(tx, cache, &quoted, &columns).await.map_err(|e| match e {
                Checked::Refused(problem) => Error::CopyRefused {
                    queue: origin.queue.to_owned(),
                    consumer: origin.consumer.to_owned(),
                    batch_id: origin.batch_id,
                    table: name.clone(),
                    problem,
                },
                Checked::Failed(source) => origin.write(what(), None, source),
            })?;
            total += copy_in(tx, &copy, data)
                .await
                .map_err(|source| origin.write(what(), None, source))?;
        }
        Ok(total)
    }

    /// The event handed out now: the rows given from here on are its own.
    pub(crate) fn mark(&self) {
        let mut state = self.lock();
        state.marked = true;
        for t in &mut state.tables {
            t.mark = Some((t.buf.len(), t.rows));
        }
    }

    /// The event's outcome is applied: its rows stay (`keep`), or are
    /// dropped, as its savepoint drops its other writes.
    pub(crate) fn unmark(&self, keep: bool) {
        let mut state = self.lock();
        state.marked = false;
        for t in &mut state.tables {
            if let (Some((len, rows)), false) = (t.mark, keep) {
                t.buf.truncate(len);
                t.rows = rows;
            }
            t.mark = None;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Table {
    fn is(&self, table: &str, columns: &[&str]) -> bool {
        self.name == table && self.columns.iter().map(String::as_str).eq(columns.iter().copied())
    }

    /// Learns the columns' types and prepares the COPY (once per
    /// connection: both statements are cached).
    async fn prepare(
        tx: &Transaction<'_>,
        cache: &StatementCache,
        table: &str,
        columns: &[&str],
    ) -> std::result::Result<Table, crate::consumer::BoxError> {
        if columns.is_empty() {
            return Err("no columns given".into());
        }
        if let Some(c) = columns
            .iter()
            .enumerate()
            .find_map(|(i, c)| columns[..i].contains(c).then_some(c))
        {
            return Err(format!("column {c:?} is given twice").into());
        }
        let quoted = pgq::quote_qualified(table)?;
        let list = columns
            .iter()
            .map(|c| pgq::quote_ident(c))
            .collect::<pgq::Result<Vec<_>>>()?
            .join(", ");
        let probe = cache.prepare(tx, &format!("select {list} from {quoted}")).await?;
        let types = probe.columns().iter().map(|c| c.type_().clone()).collect();
        let copy = cache
            .prepare(tx, &format!("copy {quoted} ({list}) from stdin (format binary)"))
            .await?;
        Ok(Table {
            name: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            quoted,
            types,
            copy,
            buf: Table::fresh_buffer(),
            rows: 0,
            mark: None,
        })
    }
}

/// Why a COPY was not started.
enum Checked {
    /// It would be refused at its start, for this reason.
    Refused(String),
    /// The lock or the check failed.
    Failed(tokio_postgres::Error),
}

/// Takes the table's lock and checks, in one round trip, that a COPY into
/// `columns` of table `quoted` would not be refused at its start.
async fn check(
    tx: &Transaction<'_>,
    cache: &StatementCache,
    quoted: &str,
    columns: &[String],
) -> std::result::Result<(), Checked> {
    let statement = cache.prepare(tx, CHECK).await.map_err(Checked::Failed)?;
    let lock = format!("lock table {quoted} in row exclusive mode");
    // The lock is sent first; its error, if any, is the first.
    let (locked, checked) =
        futures_util::future::join(tx.batch_execute(&lock), tx.query_one(&statement, &[&quoted, &columns])).await;
    locked.map_err(Checked::Failed)?;
    let row = checked.map_err(Checked::Failed)?;
    match row.try_get::<_, Option<String>>(0).map_err(Checked::Failed)? {
        Some(problem) => Err(Checked::Refused(problem)),
        None => Ok(()),
    }
}

/// Runs the prepared COPY `statement` with `data` (header to trailer).
async fn copy_in(
    tx: &Transaction<'_>,
    statement: &Statement,
    data: Bytes,
) -> std::result::Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    sink.as_mut().send(data).await?;
    sink.finish().await
}
