//! What `cx.tx()` and `cx.db()` give a handler: the batch's transaction,
//! with statements prepared once per connection, and writes that do not wait.

use std::ops::Deref;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::bulk::Way;
use crate::error::Result;
use crate::pipeline::Encoded;
use crate::writes::Writes;

/// The batch's transaction on one database, as a handler writes through it
/// ([`Context::tx`](crate::Context::tx), [`Context::db`](crate::Context::db)).
/// Everything written through it commits exactly once, with the batch, or
/// not at all.
///
/// Four ways to write, from the simplest to the fastest:
///
/// - [`BatchTx::execute`] (and [`query`](BatchTx::query),
///   [`query_one`](BatchTx::query_one), [`query_opt`](BatchTx::query_opt)):
///   as tokio-postgres' own, except that SQL text is prepared once per
///   connection and the statement reused in every batch after (dropped
///   when the connection is replaced). One round trip, waited for.
/// - [`BatchTx::execute_pipelined`]: sent at once without waiting for the
///   answer; the next statement goes out behind it, and so does the
///   COMMIT. Every answer is checked before the batch counts as committed; a
///   failure aborts the batch like a handler
///   error (in remote_event mode, before the event's savepoint is released,
///   so it is blamed on its event). No round trip of its own.
/// - [`BatchTx::insert_row`]: the row is buffered and written with the
///   others of its table by one multi-row INSERT (at the batch's end, or
///   when the buffer is full), pipelined: one statement per table per batch.
/// - [`BatchTx::copy_row`]: the same by one binary COPY, waited for: the
///   least work for the server per row, for three round trips per COPY.
///
/// It dereferences to the connection's [`Client`] for everything else: what
/// runs through it runs in the batch's transaction.
#[derive(Clone, Copy)]
pub struct BatchTx<'a> {
    writes: &'a Writes<'a>,
}

/// How often [`BatchTx::execute_pipelined`] lets the connection's task send
/// what is queued: after the first write of a batch and every this many.
const YIELD_EVERY: u64 = 16;

/// SQL a [`BatchTx`] runs: text, prepared once per connection (`str`,
/// `String`), or a [`Statement`] prepared already; or a reference to one.
pub trait Sql: sealed::Sealed + Sync {
    /// The statement when prepared already, otherwise the text to prepare.
    #[doc(hidden)]
    fn prepared_or_text(&self) -> std::result::Result<&Statement, &str>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for str {}
    impl Sealed for String {}
    impl Sealed for tokio_postgres::Statement {}
    impl<T: ?Sized + super::Sql> Sealed for &T {}
}

impl Sql for str {
    fn prepared_or_text(&self) -> std::result::Result<&Statement, &str> {
        Err(self)
    }
}

impl Sql for String {
    fn prepared_or_text(&self) -> std::result::Result<&Statement, &str> {
        Err(self)
    }
}

impl Sql for Statement {
    fn prepared_or_text(&self) -> std::result::Result<&Statement, &str> {
        Ok(self)
    }
}

impl<T: ?Sized + Sql> Sql for &T {
    fn prepared_or_text(&self) -> std::result::Result<&Statement, &str> {
        (**self).prepared_or_text()
    }
}

impl<'a> BatchTx<'a> {
    pub(crate) fn new(writes: &'a Writes<'a>) -> BatchTx<'a> {
        BatchTx { writes }
    }

    /// The connection, inside the batch's transaction (also reached through
    /// `Deref`), e.g. for a function generic over `GenericClient`: what runs
    /// through it commits or rolls back with the batch.
    pub fn client(&self) -> &'a Client {
        self.writes.tx
    }

    /// The statement of `sql`, prepared on this connection the first time it
    /// is asked for and kept for the connection's life (at most 1000
    /// statements; past that, new texts are prepared for each use).
    pub async fn prepare_cached(&self, sql: &str) -> std::result::Result<Statement, tokio_postgres::Error> {
        self.writes.cache.prepare(self.writes.tx, sql).await
    }

    async fn statement<S: ?Sized + Sql>(&self, sql: &S) -> std::result::Result<Statement, tokio_postgres::Error> {
        match sql.prepared_or_text() {
            Ok(statement) => Ok(statement.clone()),
            Err(text) => self.prepare_cached(text).await,
        }
    }

    /// Notes an error of running a statement: one that says cached
    /// statements are stale empties the cache.
    fn noted<T>(
        &self,
        result: std::result::Result<T, tokio_postgres::Error>,
    ) -> std::result::Result<T, tokio_postgres::Error> {
        if let Err(e) = &result {
            self.writes.cache.forget_all_if_stale(e);
        }
        result
    }

    /// Runs a statement and returns how many rows it changed, as
    /// [`Client::execute`] does, with SQL text prepared once per
    /// connection.
    pub async fn execute<S: ?Sized + Sql>(
        &self,
        sql: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.noted(self.writes.tx.execute(&statement, params).await)
    }

    /// Runs a query and returns its rows, as [`Client::query`] does,
    /// with SQL text prepared once per connection.
    pub async fn query<S: ?Sized + Sql>(
        &self,
        sql: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.noted(self.writes.tx.query(&statement, params).await)
    }

    /// Runs a query that returns exactly one row, as
    /// [`Client::query_one`] does, with SQL text prepared once per
    /// connection.
    pub async fn query_one<S: ?Sized + Sql>(
        &self,
        sql: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Row, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.noted(self.writes.tx.query_one(&statement, params).await)
    }

    /// Runs a query that returns at most one row, as
    /// [`Client::query_opt`] does, with SQL text prepared once per
    /// connection.
    pub async fn query_opt<S: ?Sized + Sql>(
        &self,
        sql: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.noted(self.writes.tx.query_opt(&statement, params).await)
    }

    /// Sends a write now and does not wait for its answer: the handler goes
    /// on, and what it sends next goes out behind it on the connection (so
    /// a later query sees its effect). Returns once it is sent; the first use
    /// of a text on a connection waits for it to be prepared.
    ///
    /// The answer is checked before the batch counts as committed (and, in
    /// remote_event mode, before the savepoint of the event it was made for
    /// is released or rolled back): the statements that commit the batch go
    /// out behind the writes without waiting for their answers, and a write
    /// that failed aborted the transaction, so its COMMIT rolls it back. A
    /// write that fails aborts the batch, reported as
    /// [`Error::Write`](crate::Error::Write) naming the event handed out last
    /// when it was made; the batch is rolled back and comes again, as for a
    /// handler error. Every statement after it in the transaction fails too
    /// (the transaction is aborted), so a handler that awaits something else
    /// after it gets "current transaction is aborted": the batch reports the
    /// write's own error.
    ///
    /// Errors here are those of making the write: preparing its text, or a
    /// value that does not encode as its parameter's type.
    ///
    /// Cancellation-safe once the write is sent: dropped while it lets other
    /// tasks run, the write stays sent and checked.
    pub async fn execute_pipelined<S: ?Sized + Sql>(&self, sql: &S, params: &[&(dyn ToSql + Sync)]) -> Result<()> {
        let w = self.writes;
        let ev_id = w.event();
        let what = || "a pipelined write".to_string();
        let statement = self
            .statement(sql)
            .await
            .map_err(|e| w.origin.write(what(), ev_id, e))?;
        let types = statement.params();
        if types.len() != params.len() {
            return Err(w.origin.write(
                what(),
                ev_id,
                format!("{} parameters given, the statement has {}", params.len(), types.len()),
            ));
        }
        let mut buf = bytes::BytesMut::new();
        let mut encoded = Vec::with_capacity(params.len());
        for (i, (value, ty)) in params.iter().zip(types).enumerate() {
            let param = Encoded::new(*value, ty, &mut buf).map_err(|e| {
                w.origin
                    .write(what(), ev_id, format!("parameter ${} ({ty}): {e}", i + 1))
            })?;
            encoded.push(param);
        }
        let seq = w.pipe.send(statement, encoded, ev_id, None);
        // The write waits in the connection's queue until its task runs: on
        // a runtime of one thread, not before the handler yields. Yielding
        // after the first write and every few after it puts them on the
        // wire while the handler goes on, so the server works meanwhile.
        if seq % YIELD_EVERY == 1 {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Buffers one row for `columns` of `table` (a name, schema-qualified or
    /// not), written with the other rows buffered for the same table and
    /// columns by one `INSERT INTO table (columns) SELECT * FROM ROWS FROM
    /// (unnest($1), ...)` (an array per column, in binary) sent as a
    /// pipelined write: at the
    /// batch's end, before it commits, or once the table's buffer holds 1 MiB
    /// (between events in remote_event mode). `values` are encoded now, as
    /// the columns' types, so a value of the wrong type is an error here. A
    /// column of an array type cannot be written this way (unnest would
    /// flatten it): use [`BatchTx::copy_row`].
    ///
    /// The rows are not in the table until then: a query of the batch does
    /// not see them. In remote_event mode the rows given for an event whose
    /// outcome is not Ok are dropped with its other writes. An INSERT that
    /// fails (a constraint, a trigger) aborts the batch, as a pipelined
    /// write does.
    pub async fn insert_row(&self, table: &str, columns: &[&str], values: &[&(dyn ToSql + Sync)]) -> Result<()> {
        let w = self.writes;
        w.bulk.add(w, Way::Insert, table, columns, values).await?;
        w.flush_if_full().await
    }

    /// Buffers one row, as [`BatchTx::insert_row`], written with the others
    /// of the same table and columns by one binary COPY instead: the least
    /// work for the server per row, and any column type, for three round
    /// trips per COPY (the table's lock and a check, the COPY's start, its
    /// data), waited for. Best for big batches.
    ///
    /// A COPY that fails (a constraint, a trigger) aborts the batch, as a
    /// handler error. One the server would refuse at its start is not
    /// started, and is [`Error::CopyRefused`](crate::Error::CopyRefused):
    /// the relation is not a table, the transaction is read-only, row-level
    /// security applies, or a column is missing, generated or not writable
    /// by the user.
    pub async fn copy_row(&self, table: &str, columns: &[&str], values: &[&(dyn ToSql + Sync)]) -> Result<()> {
        let w = self.writes;
        w.bulk.add(w, Way::Copy, table, columns, values).await?;
        w.flush_if_full().await
    }
}

impl Deref for BatchTx<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.writes.tx
    }
}
