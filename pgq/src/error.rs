//! The crate's error type.

use tokio_postgres::error::{Severity, SqlState};

/// What can go wrong when talking to PgQ.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PgQ function failed in the database; the PostgreSQL error, with its
    /// SQLSTATE and message, is the source.
    #[error("{function} failed{}", context_suffix(.context))]
    Sql {
        /// The SQL function or statement that failed, e.g. `pgq.next_batch`.
        function: &'static str,
        /// The queue, consumer or batch involved, as `queue "q"` or `batch 12`.
        context: String,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A row came back in a shape this crate does not expect (a column missing
    /// or of another type): the installed PgQ differs from 3.5.
    #[error("{function} returned an unexpected row{}", context_suffix(.context))]
    Row {
        /// The SQL function whose row could not be read.
        function: &'static str,
        /// The queue, consumer or batch involved.
        context: String,
        /// The decoding error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// An event's payload is not in the format it was read as.
    #[error("event {ev_id}: ev_data is not valid {format}")]
    Payload {
        /// The event's id.
        ev_id: i64,
        /// The format that was expected: `urlencoded` or `JSON`.
        format: &'static str,
        /// What was wrong, when the decoder said.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An event whose text fields are not valid UTF-8: only a database whose
    /// encoding is `SQL_ASCII` can hold such bytes, and PostgreSQL cannot send
    /// them as text. Reading a batch goes on past it (the next item of the
    /// stream is the next event); the event itself is left in the database,
    /// for a consumer to store as failed there.
    #[error("event {ev_id} of batch {batch_id}: {field} is not valid UTF-8 (the database's encoding is SQL_ASCII)")]
    Undecodable {
        /// The batch.
        batch_id: i64,
        /// The event.
        ev_id: i64,
        /// The first field that is not valid UTF-8, e.g. `ev_data`.
        field: &'static str,
    },
    /// A batch was to be finished that is not open (finished already, by
    /// this process or another one consuming under the same name). From
    /// [`BatchStatements::finish_and_next`](crate::BatchStatements::finish_and_next),
    /// which makes that an error so the caller's transaction rolls back.
    #[error("batch {batch_id} was not open when it was to be finished")]
    BatchNotOpen {
        /// The batch.
        batch_id: i64,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// PgQ refused an event because the queue takes none: its
    /// `queue_disable_insert` is set (a column of `pgq.queue`). Only a
    /// session with `session_replication_role = replica` may insert then.
    /// The transaction is aborted; the source is PgQ's error, SQLSTATE
    /// `XX000` ([`Error::code`]).
    #[error(
        "queue {queue:?} takes no new events: its queue_disable_insert is set \
         (clear it in pgq.queue, or insert with session_replication_role = replica)"
    )]
    InsertDisabled {
        /// The queue.
        queue: String,
        /// PgQ's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// PgQ refused an event because the transaction has inserted as many
    /// into the queue as its `queue_per_tx_limit` (a column of `pgq.queue`)
    /// allows; every event of the transaction counts, whichever call
    /// inserted it. The transaction is aborted; the source is PgQ's error,
    /// which states the limit, SQLSTATE `XX000` ([`Error::code`]).
    #[error(
        "queue {queue:?} takes no more events in this transaction: its queue_per_tx_limit is reached \
         (insert fewer events per transaction, or raise the limit in pgq.queue)"
    )]
    TooManyEvents {
        /// The queue.
        queue: String,
        /// PgQ's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A `pgq_node` function answered with a status code of 300 or more
    /// (it reports failures that way, not as SQL errors): e.g. 404 "Unknown
    /// queue" when the queue has no node in this database, 401 "Node already
    /// initialized". The transaction goes on.
    #[error("{function} refused{}: {code} {note}", context_suffix(.context))]
    NodeRefused {
        /// The `pgq_node` function, e.g. `pgq_node.create_node`.
        function: &'static str,
        /// The queue, node or consumer involved.
        context: String,
        /// Its `ret_code`.
        code: i32,
        /// Its `ret_note`.
        note: String,
    },
    /// An argument was refused before anything was sent to the database.
    #[error("invalid {what}: {problem}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why it was refused.
        problem: String,
    },
}

fn context_suffix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" for {context}")
    }
}

impl Error {
    /// The SQLSTATE of the PostgreSQL error behind this one, if any.
    pub fn code(&self) -> Option<&SqlState> {
        self.postgres().and_then(tokio_postgres::Error::code)
    }

    /// The status code of a `pgq_node` function that refused
    /// ([`Error::NodeRefused`]), e.g. 404.
    pub fn node_code(&self) -> Option<i32> {
        match self {
            Error::NodeRefused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's error report behind this one, if the server sent one.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        self.postgres().and_then(tokio_postgres::Error::as_db_error)
    }

    /// The PostgreSQL client error behind this one, if any.
    pub fn postgres(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Error::Sql { source, .. }
            | Error::Row { source, .. }
            | Error::BatchNotOpen { source, .. }
            | Error::InsertDisabled { source, .. }
            | Error::TooManyEvents { source, .. } => Some(source),
            _ => None,
        }
    }

    /// True when the connection itself is gone (closed, reset, or never
    /// made), as opposed to a statement the server refused: the caller
    /// should reconnect. [`is_connection_error`](crate::is_connection_error)
    /// says how that is told.
    pub fn is_connection_error(&self) -> bool {
        is_connection_error(self)
    }

    pub(crate) fn sql(
        function: &'static str,
        context: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let context = context.into();
        move |source| Error::Sql {
            function,
            context,
            source,
        }
    }

    /// Like [`Error::sql`], for a statement that calls `pgq.insert_event`
    /// (or `pgq.insert_event_raw`) on `queue`: PgQ's refusals become
    /// [`Error::InsertDisabled`] and [`Error::TooManyEvents`].
    pub(crate) fn insert(function: &'static str, queue: &str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let queue = queue.to_string();
        move |source| match refusal(&source) {
            Some(Refusal::Disabled) => Error::InsertDisabled { queue, source },
            Some(Refusal::TxLimit) => Error::TooManyEvents { queue, source },
            None => Error::Sql {
                function,
                context: on_queue(&queue),
                source,
            },
        }
    }

    pub(crate) fn row(
        function: &'static str,
        context: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let context = context.into();
        move |source| Error::Row {
            function,
            context,
            source,
        }
    }
}

/// Whether `error`, or any of its causes, is a PostgreSQL client error
/// saying the database session is gone: the connection closed or reset (a
/// failure of the socket itself), a server error that ends the session
/// (severity FATAL or PANIC, e.g. `57P01` when the backend is terminated
/// while a call is in flight), or SQLSTATE class `08` (connection
/// exception). A statement the server refused is not one: the session
/// goes on.
///
/// It takes any error, so it sees through the errors of other crates that
/// wrap a `tokio_postgres::Error` as their source.
pub fn is_connection_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(error);
    while let Some(err) = cur {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            if session_gone(pg) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Whether one PostgreSQL client error says its session is gone.
fn session_gone(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(db) = error.as_db_error() {
        return matches!(db.parsed_severity(), Some(Severity::Fatal | Severity::Panic))
            || db.code().code().starts_with("08");
    }
    // Not from the server: a failure of the socket itself.
    std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// PgQ's refusals of an event.
enum Refusal {
    /// `queue_disable_insert` is set.
    Disabled,
    /// `queue_per_tx_limit` is reached.
    TxLimit,
}

/// Which refusal of PgQ's, if any, `error` is.
///
/// PgQ raises both in C (`insert_event.c`, behind `pgq.insert_event_raw`)
/// with `elog(ERROR)`, so their SQLSTATE is `XX000` (internal error), which
/// alone tells nothing. The error report also names the C function that
/// raised it, and that does: `load_insert_plan` raises only the
/// per-transaction limit, and of what `pgq_insert_event_raw` raises itself,
/// only the disabled insert can happen to a call with a queue name (the rest
/// are failures of PostgreSQL's SPI). Never the message text.
fn refusal(error: &tokio_postgres::Error) -> Option<Refusal> {
    let db = error.as_db_error()?;
    if db.code() != &SqlState::INTERNAL_ERROR || db.file() != Some("insert_event.c") {
        return None;
    }
    match db.routine()? {
        "load_insert_plan" => Some(Refusal::TxLimit),
        "pgq_insert_event_raw" => Some(Refusal::Disabled),
        _ => None,
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats the context of a call on a queue.
pub(crate) fn on_queue(queue: &str) -> String {
    format!("queue {queue:?}")
}

/// Formats the context of a call on a queue and consumer.
pub(crate) fn on_consumer(queue: &str, consumer: &str) -> String {
    format!("queue {queue:?}, consumer {consumer:?}")
}

/// Formats the context of a call on a batch.
pub(crate) fn on_batch(batch_id: i64) -> String {
    format!("batch {batch_id}")
}
