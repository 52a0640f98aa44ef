//! Rows a handler writes into its own tables, buffered and written in bulk:
//! one statement per table for many events instead of one per event.
//!
//! A row is encoded when it is given (its values need not outlive the call),
//! in the binary format of the table's column types, and kept in a buffer per
//! table, column list and way. The buffers are written when one grows past
//! [`FLUSH_BYTES`] (between events, in remote_event mode) and before the batch
//! commits. Two ways:
//!
//! - [`Way::Insert`]: the rows go as one
//!   `INSERT INTO t (cols) SELECT * FROM ROWS FROM (unnest($1::type[]), ...)`,
//!   a binary array per column, sent as a pipelined write: no round trip of
//!   its own, its answer checked with the other pipelined writes. An array
//!   can hold no arrays (unnest would flatten them), so a column of an array
//!   type cannot be written this way.
//! - [`Way::Copy`]: the rows go as one binary COPY. A COPY must not be
//!   refused when it starts: tokio-postgres then ends the connection (see
//!   `pgq`'s `copy` module). So each COPY is preceded, in one round trip, by
//!   the table's lock (`ROW EXCLUSIVE`, which the COPY would take: a lock not
//!   granted fails here) and a check of what else refuses a COPY at its
//!   start: a relation that is not a table, a read-only transaction,
//!   row-level security, a column that is missing, generated, or that the
//!   user may not insert into, and a transaction already aborted (where the
//!   check itself fails). Then the COPY takes two round trips (its start, its
//!   data). What fails later (a constraint, a trigger, a value the type
//!   refuses) fails the COPY midway, which leaves the connection usable.
//!
//! Either way, a failure aborts the batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::types::{Format, IsNull, Kind, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::error::{Error, Result};
use crate::pipeline::Encoded;
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

/// A table's rows left to write when the batch commits: their INSERT, sent
/// with the statements that finish the batch (a local consumer's), in one
/// round trip. If it fails, the transaction is aborted, the finish fails
/// and the COMMIT rolls back.
pub(crate) struct Deferred {
    pub(crate) statement: Statement,
    pub(crate) params: Vec<Encoded>,
    /// What it is, for its error: `INSERT of 100 row(s) into "items"`.
    pub(crate) what: String,
}

/// How buffered rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// One `INSERT ... SELECT * FROM unnest(...)`, pipelined.
    Insert,
    /// One binary COPY, waited for.
    Copy,
}

/// The rows buffered on one connection in one batch.
#[derive(Default)]
pub(crate) struct Bulk {
    state: Mutex<State>,
    /// Whether a table was ever given rows in this batch: what is asked of
    /// every event is answered without the lock while none was.
    used: AtomicBool,
}

#[derive(Default)]
struct State {
    tables: Vec<Table>,
    /// An event's rows are being given (remote_event mode): a table's rows
    /// from its mark on are that event's.
    marked: bool,
}

/// One table, column list and way, and its rows not written yet.
struct Table {
    way: Way,
    /// The table as the handler named it.
    name: String,
    /// The columns as the handler named them.
    columns: Vec<String>,
    /// The table, quoted.
    quoted: String,
    types: Vec<Type>,
    /// The `INSERT` or the `COPY`, prepared.
    statement: Statement,
    /// [`Way::Copy`]: the rows, starting with [`HEADER`]. [`Way::Insert`]:
    /// one buffer per column, its values one after the other (as in a
    /// binary array), with whether one is NULL.
    buffers: Vec<BytesMut>,
    nulls: Vec<bool>,
    rows: u64,
    /// Where the buffers were when the event being processed was handed out.
    mark: Option<Mark>,
    /// Scratch space of [`Table::encode`]: the buffers' lengths before the
    /// row, and its NULLs.
    lens: Vec<usize>,
    row_nulls: Vec<bool>,
}

struct Mark {
    rows: u64,
    lens: Vec<usize>,
    nulls: Vec<bool>,
}

impl Table {
    fn empty_buffers(way: Way, columns: usize) -> Vec<BytesMut> {
        match way {
            Way::Copy => {
                let mut buf = BytesMut::with_capacity(64 << 10);
                buf.put_slice(HEADER);
                vec![buf]
            }
            Way::Insert => (0..columns).map(|_| BytesMut::with_capacity(4 << 10)).collect(),
        }
    }

    fn is(&self, way: Way, table: &str, columns: &[&str]) -> bool {
        self.way == way && self.name == table && self.columns.iter().map(String::as_str).eq(columns.iter().copied())
    }

    fn bytes(&self) -> usize {
        self.buffers.iter().map(BytesMut::len).sum()
    }

    fn here(&self) -> Mark {
        Mark {
            rows: self.rows,
            lens: self.buffers.iter().map(BytesMut::len).collect(),
            nulls: self.nulls.clone(),
        }
    }

    fn back_to(&mut self, mark: &Mark) {
        for (buf, len) in self.buffers.iter_mut().zip(&mark.lens) {
            buf.truncate(*len);
        }
        self.nulls.clone_from(&mark.nulls);
        self.rows = mark.rows;
    }

    /// Encodes one row of `values` at the end of the buffers; on error the
    /// buffers are as they were.
    fn encode(&mut self, values: &[&(dyn ToSql + Sync)]) -> std::result::Result<(), String> {
        if values.len() != self.types.len() {
            return Err(format!(
                "{} values for {} columns ({})",
                values.len(),
                self.types.len(),
                self.columns.join(", ")
            ));
        }
        self.lens.clear();
        self.lens.extend(self.buffers.iter().map(BytesMut::len));
        self.row_nulls.clear();
        if self.way == Way::Copy {
            let fields = i16::try_from(values.len()).map_err(|_| "too many columns".to_string())?;
            self.buffers[0].put_i16(fields);
        }
        for (i, ((value, ty), column)) in values.iter().zip(&self.types).zip(&self.columns).enumerate() {
            let buf = match self.way {
                Way::Copy => &mut self.buffers[0],
                Way::Insert => &mut self.buffers[i],
            };
            match encode_field(buf, *value, ty) {
                Ok(null) => self.row_nulls.push(null),
                Err(problem) => {
                    for (buf, len) in self.buffers.iter_mut().zip(&self.lens) {
                        buf.truncate(*len);
                    }
                    return Err(format!("column {column:?} ({ty}): {problem}"));
                }
            }
        }
        for (null, row_null) in self.nulls.iter_mut().zip(&self.row_nulls) {
            *null |= *row_null;
        }
        self.rows += 1;
        Ok(())
    }

    /// The buffered rows as the statement's data, and how many; the buffers
    /// are empty after. [`Way::Copy`]: the COPY's data, header to trailer.
    /// [`Way::Insert`]: an array per column.
    fn take(&mut self) -> Option<(Vec<Bytes>, u64)> {
        if self.rows == 0 {
            return None;
        }
        let rows = std::mem::take(&mut self.rows);
        let buffers = std::mem::replace(&mut self.buffers, Table::empty_buffers(self.way, self.columns.len()));
        let nulls = std::mem::replace(&mut self.nulls, vec![false; self.columns.len()]);
        self.mark = None;
        let data = match self.way {
            Way::Copy => buffers
                .into_iter()
                .map(|mut buf| {
                    buf.put_i16(-1);
                    buf.freeze()
                })
                .collect(),
            Way::Insert => buffers
                .into_iter()
                .zip(&self.types)
                .zip(nulls)
                .map(|((values, ty), null)| {
                    // A one-dimensional array: dimensions, whether a NULL is
                    // in it, the element type, its length and lower bound.
                    let mut array = BytesMut::with_capacity(20 + values.len());
                    array.put_i32(1);
                    array.put_i32(i32::from(null));
                    array.put_u32(ty.oid());
                    array.put_i32(i32::try_from(rows).unwrap_or(i32::MAX));
                    array.put_i32(1);
                    array.extend_from_slice(&values);
                    array.freeze()
                })
                .collect(),
        };
        Some((data, rows))
    }
}

/// Encodes one field: its length, then its bytes (-1 and none for NULL).
/// Returns whether it was NULL.
fn encode_field(buf: &mut BytesMut, value: &(dyn ToSql + Sync), ty: &Type) -> std::result::Result<bool, String> {
    if matches!(value.encode_format(ty), Format::Text) {
        return Err("the value encodes itself as text; the binary form is needed".into());
    }
    let at = buf.len();
    buf.put_i32(-1);
    match value.to_sql_checked(ty, buf) {
        Ok(IsNull::Yes) => {
            buf.truncate(at + 4);
            Ok(true)
        }
        Ok(IsNull::No) => {
            let len = i32::try_from(buf.len() - at - 4).map_err(|_| "the value is longer than 1 GiB".to_string())?;
            buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            Ok(false)
        }
        Err(e) => {
            buf.truncate(at);
            Err(e.to_string())
        }
    }
}

impl Bulk {
    /// Buffers one row of `values` for `columns` of `table`, to be written
    /// `way`. The first row for a table, column list and way in a batch
    /// learns the columns' types and prepares the statement (both cached
    /// per connection).
    pub(crate) async fn add(
        &self,
        on: &Writes<'_>,
        way: Way,
        table: &str,
        columns: &[&str],
        values: &[&(dyn ToSql + Sync)],
    ) -> Result<()> {
        let (origin, ev_id) = (&on.origin, on.event());
        let what = || match way {
            Way::Insert => format!("a row for INSERT into {table:?}"),
            Way::Copy => format!("a row for COPY into {table:?}"),
        };
        if !self.has(way, table, columns) {
            let new = Table::prepare(on.tx, on.cache, way, table, columns)
                .await
                .map_err(|source| origin.write(what(), ev_id, source))?;
            let mut state = self.lock();
            if !state.tables.iter().any(|t| t.is(way, table, columns)) {
                let mut new = new;
                if state.marked {
                    new.mark = Some(new.here());
                }
                state.tables.push(new);
                self.used.store(true, Ordering::Relaxed);
            }
        }
        let mut state = self.lock();
        let Some(t) = state.tables.iter_mut().find(|t| t.is(way, table, columns)) else {
            return Err(origin.write(what(), ev_id, "the table's buffer went missing"));
        };
        t.encode(values).map_err(|problem| origin.write(what(), ev_id, problem))
    }

    fn has(&self, way: Way, table: &str, columns: &[&str]) -> bool {
        self.lock().tables.iter().any(|t| t.is(way, table, columns))
    }

    /// True when a table's buffer is past [`FLUSH_BYTES`].
    pub(crate) fn is_full(&self) -> bool {
        if !self.used.load(Ordering::Relaxed) {
            return false;
        }
        self.lock().tables.iter().any(|t| t.bytes() >= FLUSH_BYTES)
    }

    /// Writes every buffered row through `on`'s transaction, a statement per
    /// table: the COPYs waited for, the INSERTs pipelined (checked with the
    /// other pipelined writes), or, when `defer`, returned unsent, for the
    /// statements that commit the batch to take along.
    pub(crate) async fn flush(&self, on: &Writes<'_>, defer: bool) -> Result<Vec<Deferred>> {
        let (tx, cache, origin) = (on.tx, on.cache, &on.origin);
        let mut deferred = Vec::new();
        let count = self.lock().tables.len();
        for i in 0..count {
            let taken = {
                let mut state = self.lock();
                state.tables.get_mut(i).and_then(|t| {
                    let (data, rows) = t.take()?;
                    Some((
                        t.way,
                        data,
                        rows,
                        t.name.clone(),
                        t.quoted.clone(),
                        t.columns.clone(),
                        t.statement.clone(),
                    ))
                })
            };
            let Some((way, data, rows, name, quoted, columns, statement)) = taken else {
                continue;
            };
            match way {
                Way::Insert => {
                    let params = data.into_iter().map(Encoded::binary).collect();
                    let what = format!("INSERT of {rows} row(s) into {name:?}");
                    if defer {
                        deferred.push(Deferred {
                            statement,
                            params,
                            what,
                        });
                    } else {
                        on.pipe.send(statement, params, None, Some(what));
                    }
                }
                Way::Copy => {
                    let what = || format!("COPY of {rows} row(s) into {name:?}");
                    check(tx, cache, &quoted, &columns).await.map_err(|e| match e {
                        Checked::Refused(problem) => Error::CopyRefused {
                            queue: origin.queue.to_owned(),
                            consumer: origin.consumer.to_owned(),
                            batch_id: origin.batch_id,
                            table: name.clone(),
                            problem,
                        },
                        Checked::Failed(source) => {
                            cache.forget_all_if_stale(&source);
                            origin.write(what(), None, source)
                        }
                    })?;
                    for chunk in data {
                        copy_in(tx, &statement, chunk).await.map_err(|source| {
                            cache.forget_all_if_stale(&source);
                            origin.write(what(), None, source)
                        })?;
                    }
                }
            }
        }
        Ok(deferred)
    }

    /// The event handed out now: the rows given from here on are its own.
    pub(crate) fn mark(&self) {
        let mut state = self.lock();
        state.marked = true;
        for t in &mut state.tables {
            t.mark = Some(t.here());
        }
    }

    /// The event's outcome is applied: its rows stay (`keep`), or are
    /// dropped, as its savepoint drops its other writes.
    pub(crate) fn unmark(&self, keep: bool) {
        let mut state = self.lock();
        state.marked = false;
        for t in &mut state.tables {
            if let Some(mark) = t.mark.take() {
                if !keep {
                    t.back_to(&mark);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Table {
    /// Learns the columns' types and prepares the statement (once per
    /// connection: both statements are cached).
    async fn prepare(
        tx: &Client,
        cache: &StatementCache,
        way: Way,
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
        let types: Vec<Type> = probe.columns().iter().map(|c| c.type_().clone()).collect();
        let sql = match way {
            Way::Copy => format!("copy {quoted} ({list}) from stdin (format binary)"),
            Way::Insert => {
                let mut arrays = Vec::with_capacity(types.len());
                for (i, (ty, column)) in types.iter().zip(columns).enumerate() {
                    if is_array(ty) {
                        return Err(format!(
                            "column {column:?} is of an array type ({ty}), which insert_row cannot write \
                             (an array of arrays is flattened): use copy_row"
                        )
                        .into());
                    }
                    let name = format!("{}.{}", pgq::quote_ident(ty.schema())?, pgq::quote_ident(ty.name())?);
                    arrays.push(format!("pg_catalog.unnest(${}::{name}[])", i + 1));
                }
                format!(
                    "insert into {quoted} ({list}) select * from rows from ({})",
                    arrays.join(", ")
                )
            }
        };
        let statement = cache.prepare(tx, &sql).await?;
        Ok(Table {
            way,
            name: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            quoted,
            buffers: Table::empty_buffers(way, types.len()),
            nulls: vec![false; types.len()],
            types,
            statement,
            rows: 0,
            mark: None,
            lens: Vec::new(),
            row_nulls: Vec::new(),
        })
    }
}

/// True for an array type, or a domain over one.
fn is_array(ty: &Type) -> bool {
    match ty.kind() {
        Kind::Array(_) => true,
        Kind::Domain(inner) => is_array(inner),
        _ => false,
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
    tx: &Client,
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
async fn copy_in(tx: &Client, statement: &Statement, data: Bytes) -> std::result::Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    sink.as_mut().send(data).await?;
    sink.finish().await
}
