//! The crate's error type.

use pgq_daemon::ExitCode;
use tokio_postgres::error::SqlState;

/// What can go wrong in a consumer.
///
/// Every variant names what it was about (queue, consumer, batch, file); the
/// underlying cause is only ever the [`source`](std::error::Error::source),
/// never repeated in the message, so print the chain to see it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A framework schema file could not be applied; nothing of the install
    /// was kept.
    #[error("installing the pgq_consumer schema failed at {file} (version {version})")]
    SchemaFile {
        /// The file, e.g. `sql/pgq_consumer/v1.sql`.
        file: &'static str,
        /// The version that file brings.
        version: i32,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Reading or locking the framework schema's version failed.
    #[error("{step} of the pgq_consumer schema failed")]
    Schema {
        /// What was being done: `reading the version`, `locking`, `committing` ...
        step: &'static str,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database has a newer framework schema than this program knows;
    /// it is left alone (no downgrades).
    #[error("the pgq_consumer schema in the database is version {installed}, newer than version {supported} this program knows")]
    SchemaTooNew {
        /// The version in the database.
        installed: i32,
        /// The newest version this program has.
        supported: i32,
    },
    /// PgQ itself (the `pgq` extension) is not in the queue database.
    #[error("PgQ is not installed in the queue database of queue {queue:?} (no schema pgq): run `create extension pgq` there, as a role that may create extensions, then this command again")]
    PgqMissing {
        /// The queue the command is for.
        queue: String,
    },
    /// The framework's SQL is missing from a database a consumer uses, or
    /// older than this program needs.
    #[error("the framework's SQL (schema pgq_consumer) in the {which} is {}; this program needs version {needed}: run the `install` command first (it installs or upgrades it)", match installed { Some(v) => format!("at version {v}"), None => "not installed".to_string() })]
    SchemaOutdated {
        /// Which database.
        which: crate::net::connect::Database,
        /// The version installed there, if any.
        installed: Option<i32>,
        /// The version this program needs.
        needed: i32,
    },
    /// A framework SQL function failed for a queue's consumer.
    #[error("{function} failed for consumer {consumer:?} on queue {queue:?}")]
    Consumer {
        /// The SQL function, e.g. `pgq_consumer.failed_event_retry`.
        function: &'static str,
        /// The queue.
        queue: String,
        /// The consumer (for a cooperative group, the group's consumer).
        consumer: String,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A framework SQL function failed for a cooperative sub-consumer.
    #[error("{function} failed for sub-consumer {subconsumer:?} of consumer {consumer:?} on queue {queue:?}")]
    Subconsumer {
        /// The SQL function, e.g. `pgq_consumer.next_batch_custom`.
        function: &'static str,
        /// The queue.
        queue: String,
        /// The group's consumer.
        consumer: String,
        /// The sub-consumer.
        subconsumer: String,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A framework SQL function failed for a batch.
    #[error("{function} failed for batch {batch_id}")]
    Batch {
        /// The SQL function, e.g. `pgq_consumer.finish_batch`.
        function: &'static str,
        /// The batch.
        batch_id: i64,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The batch is not active any more: finished already, or taken over by
    /// another sub-consumer because this one was silent too long. The
    /// transaction must roll back, so its work is not done twice.
    #[error("batch {batch_id} is not active (finished already, or taken over by another sub-consumer)")]
    BatchNotActive {
        /// The batch.
        batch_id: i64,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Another sub-consumer of the group recorded this batch as applied in
    /// the remote database (it took the batch over while this one was
    /// stalled or cut off): this attempt must roll back, so the batch is
    /// applied once.
    #[error("batch {batch_id} of sub-consumer {subconsumer:?} of consumer {consumer:?} on queue {queue:?} was applied by another sub-consumer of the group, which took it over; this attempt is rolled back")]
    BatchAppliedByOther {
        /// The queue.
        queue: String,
        /// The group's consumer.
        consumer: String,
        /// The sub-consumer whose attempt was refused.
        subconsumer: String,
        /// The batch.
        batch_id: i64,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// In [`CommitMode::RemoteEvent`](crate::CommitMode::RemoteEvent), the
    /// next event was asked for before the outcome of the last one was
    /// applied: each event's savepoint covers the remote writes made until
    /// its outcome is applied, and savepoints nest, so events cannot be
    /// worked on together in that mode.
    #[error("batch {batch_id}: the outcome of event {ev_id} must be applied (Batch::apply) before the next event is read, in remote_event mode (its savepoint covers the remote writes made until then); to work on several events at once, use the remote mode")]
    EventNotApplied {
        /// The batch.
        batch_id: i64,
        /// The event whose outcome is not applied.
        ev_id: i64,
    },
    /// An outcome was applied to an event that the batch did not hand out,
    /// or whose outcome was applied already.
    #[error(
        "batch {batch_id}: event {ev_id} was not handed out by Batch::next_event, or its outcome was applied already"
    )]
    EventNotHandedOut {
        /// The batch.
        batch_id: i64,
        /// The event.
        ev_id: i64,
    },
    /// The consumer (or, when `subconsumer` is set, the sub-consumer) is not
    /// registered on the queue.
    #[error("{} is not registered on queue {queue:?}", who(consumer, subconsumer.as_deref()))]
    NotRegistered {
        /// The queue.
        queue: String,
        /// The consumer (the group's consumer for a sub-consumer).
        consumer: String,
        /// The sub-consumer, if that is what is missing.
        subconsumer: Option<String>,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A batch is in the way: the sub-consumer holds one and was to be
    /// unregistered with [`BatchHandling::Refuse`](crate::coop::BatchHandling::Refuse), or
    /// the group's own consumer holds one (a plain consumer of that name ran).
    #[error("{} holds a batch on queue {queue:?}", who(consumer, subconsumer.as_deref()))]
    BatchHeld {
        /// The queue.
        queue: String,
        /// The group's consumer.
        consumer: String,
        /// The sub-consumer holding the batch; `None` when the group's
        /// consumer itself holds one.
        subconsumer: Option<String>,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The remote database says part of this batch was applied and part was
    /// not (a replayed batch came back cut longer): it can be neither applied
    /// nor skipped. Reposition the consumer at `applied_tick_id`
    /// (`pgq.register_consumer_at`) and carry on.
    #[error("batch {batch_id} (ticks {prev_tick_id}..{tick_id}) of consumer {consumer:?} on queue {queue:?} is partly applied in the remote database, up to tick {applied_tick_id}")]
    BatchPartlyApplied {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// The batch.
        batch_id: i64,
        /// The tick the batch starts after.
        prev_tick_id: i64,
        /// The tick the batch ends at.
        tick_id: i64,
        /// The last tick the remote database has applied.
        applied_tick_id: i64,
    },
    /// The remote database's record contradicts the queue: the tick ids say
    /// the batch was applied, the tick times say it cannot have been (the
    /// queue was dropped and created again). Check, then forget the old
    /// record: the `forget-applied --yes` command, or
    /// [`tracking::forget`](crate::tracking::forget).
    #[error("batch {batch_id} (ticks {prev_tick_id}..{tick_id}) of consumer {consumer:?} on queue {queue:?} contradicts what the remote database recorded; was the queue created again? If so, stop the consumer and run its `forget-applied --yes` command, which forgets that record, then start it again")]
    TrackingInconsistent {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// The batch.
        batch_id: i64,
        /// The tick the batch starts after.
        prev_tick_id: i64,
        /// The tick the batch ends at.
        tick_id: i64,
    },
    /// A PgQ function failed.
    #[error(transparent)]
    Pgq(#[from] pgq::Error),
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    ConfigRead {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has a key this program does not
    /// know, or a value of the wrong type (the source names the line and key,
    /// and does not quote the line, which may hold a password).
    #[error("config file {} is not valid", path.display())]
    ConfigSyntax {
        /// The file.
        path: std::path::PathBuf,
        /// The TOML error, with line and column.
        #[source]
        source: crate::config::TomlSyntax,
    },
    /// A config value is not acceptable.
    #[error("config file {}: {problem}", path.display())]
    ConfigInvalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A connection string could not be parsed (shown with its password hidden).
    #[error("the {which} connection string {dsn:?} is not valid")]
    BadConnString {
        /// Which database.
        which: crate::net::connect::Database,
        /// The connection string, password hidden.
        dsn: String,
        /// The parse error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A connection string (or a `PG*` variable) holds a value libpq would refuse.
    #[error("the {which} connection string {dsn:?} is not valid: {problem}")]
    ConnString {
        /// Which database.
        which: crate::net::connect::Database,
        /// The connection string, password hidden.
        dsn: String,
        /// What is wrong.
        problem: String,
    },
    /// TLS could not be set up as the connection string asks.
    #[error("TLS for the {which}: {problem}")]
    Tls {
        /// Which database.
        which: crate::net::connect::Database,
        /// What is wrong.
        problem: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The database could not be reached.
    #[error("cannot connect to the {which} at {target}")]
    Connect {
        /// Which database.
        which: crate::net::connect::Database,
        /// host:port/dbname.
        target: String,
        /// The connection error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No server was reached: the host name did not resolve, the connection
    /// was refused, or no working connection came within the connect timeout.
    #[error("cannot connect to the {which} at {target}")]
    Unreachable {
        /// Which database.
        which: crate::net::connect::Database,
        /// host:port/dbname.
        target: String,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// A control command's database did not answer within its time
    /// ([`CONTROL_TIMEOUT`](crate::CONTROL_TIMEOUT)): a silent network or
    /// server, or one too busy to answer.
    #[error(
        "the {which} at {target} did not answer within {:.0}s (a silent network, or a server that does not respond); try again later",
        after.as_secs_f64()
    )]
    NoAnswer {
        /// Which database.
        which: crate::net::connect::Database,
        /// host:port/dbname.
        target: String,
        /// How long it was waited for.
        after: std::time::Duration,
    },
    /// A statement on the queue database failed outside any PgQ function
    /// (begin, commit).
    #[error("the queue database failed for consumer {consumer:?} on queue {queue:?}")]
    Db {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The batch's transaction did not begin: its START TRANSACTION failed
    /// (the connection was lost, or the server ended the session). Nothing
    /// of the batch committed. A connection error
    /// ([`Error::is_connection_error`]).
    #[error("the batch's transaction did not begin in the {which} for consumer {consumer:?} on queue {queue:?}")]
    NotBegun {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// Which database.
        which: crate::net::connect::Database,
        /// The PostgreSQL error.
        #[source]
        source: std::sync::Arc<tokio_postgres::Error>,
    },
    /// A statement on the remote database failed.
    #[error("the remote database failed for consumer {consumer:?} on queue {queue:?}")]
    Remote {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The config's `[settings]` do not fit the consumer's settings type:
    /// a key it does not know, or a value of the wrong type (the source
    /// names the key).
    #[error("config file {}: [settings] is not valid", path.display())]
    SettingsInvalid {
        /// The config file.
        path: std::path::PathBuf,
        /// What is wrong, naming the key.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A reload changed a key that is read at start only: refused, and the
    /// daemon goes on with the config it has.
    #[error("config file {}: {key} changed; it is read at start only, so the reload is refused and the daemon goes on as it was: restart it to apply the change", path.display())]
    ReloadRefused {
        /// The config file.
        path: std::path::PathBuf,
        /// The key (or what changed, for the commit mode).
        key: &'static str,
    },
    /// The consumer's own `configure` or `install` hook failed.
    #[error("consumer {consumer:?} refused its settings or install step")]
    Settings {
        /// The consumer.
        consumer: String,
        /// What the hook returned.
        #[source]
        source: crate::consumer::BoxError,
    },
    /// The handler returned an error: the batch was rolled back and comes again.
    #[error(
        "the handler of consumer {consumer:?} on queue {queue:?} failed in batch {batch_id}; the batch was rolled back"
    )]
    Handler {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// The batch.
        batch_id: i64,
        /// What the handler returned.
        #[source]
        source: crate::consumer::BoxError,
    },
    /// A write the handler made through the batch's transaction without
    /// waiting for it failed, or could not be made: a pipelined write
    /// ([`BatchTx::execute_pipelined`](crate::BatchTx::execute_pipelined)),
    /// or rows for COPY ([`BatchTx::copy_row`](crate::BatchTx::copy_row)).
    /// The batch is rolled back and comes again.
    #[error("{what} failed in batch {batch_id} of consumer {consumer:?} on queue {queue:?}{}", match ev_id { Some(id) => format!(" (made for event {id})"), None => String::new() })]
    Write {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// The batch.
        batch_id: i64,
        /// The event handed out last when the write was made, if any.
        ev_id: Option<i64>,
        /// Which write: `pipelined write 3` (the third of the batch on its
        /// connection), `COPY of 100 row(s) into "items"` ...
        what: String,
        /// What the server said (a [`tokio_postgres::Error`]), or why the
        /// write could not be made.
        #[source]
        source: crate::consumer::BoxError,
    },
    /// Rows for COPY were not written: the server would refuse the COPY at
    /// its start. Nothing was sent; the batch is rolled back and comes again.
    #[error("rows cannot be copied into {table:?} in batch {batch_id} of consumer {consumer:?} on queue {queue:?}: {problem}")]
    CopyRefused {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// The batch.
        batch_id: i64,
        /// The table, as the handler named it.
        table: String,
        /// Why.
        problem: String,
    },
    /// The batch being finished was not open any more: something else
    /// finished it (another process consuming under the same name). The
    /// batch's work was rolled back.
    #[error("batch {batch_id} was not open any more when it was to be finished (another process with the same consumer name?); its work was rolled back")]
    BatchGone {
        /// The batch.
        batch_id: i64,
    },
    /// The queue or the consumer is not installed.
    #[error("{what} (queue {queue:?}, consumer {consumer:?}): run the `install` command first")]
    NotInstalled {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// What is missing.
        what: &'static str,
    },
    /// The command is refused while the daemon runs.
    #[error("the consumer daemon is running (pid {pid}): stop it first")]
    DaemonRunning {
        /// The daemon's pid.
        pid: u32,
    },
    /// The daemon's pidfile could not be read.
    #[error("cannot tell whether the daemon runs")]
    Daemon(#[source] Box<pgq_daemon::Error>),
    /// The command line asked for something that cannot be done as asked.
    #[error("{0}")]
    Usage(String),
    /// The async runtime of a command could not be built.
    #[error("cannot start the async runtime")]
    Runtime {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP endpoint (`[http] listen`, `--http-listen`) cannot listen on its address.
    #[error("the HTTP endpoint cannot listen on {address} (`[http] listen`, or `--http-listen` for a sub-consumer: each process needs an address of its own)")]
    HttpListen {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A metric could not be registered (a name given twice).
    #[error("cannot register the metric {name}")]
    Metrics {
        /// The metric.
        name: String,
        /// Why.
        #[source]
        source: prometheus::Error,
    },
    /// A cascade's node is not in a state its worker or cascaded consumer
    /// can work from (its position contradicts the provider's batch, a
    /// merge leaf, a node type it cannot serve); what to do is in `problem`.
    #[error("cascaded queue {queue:?}, node {node:?}: {problem}")]
    Cascade {
        /// The cascaded queue.
        queue: String,
        /// The node (or the consumer) concerned.
        node: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A statement on a cascade's node failed outside any `pgq_node`
    /// function (begin, lock, commit).
    #[error("the {which} of cascaded queue {queue:?} failed")]
    NodeDb {
        /// `node database` (the node kept) or `provider node`.
        which: &'static str,
        /// The cascaded queue.
        queue: String,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A framework SQL function returned a row this crate cannot read (the
    /// installed schema is not the one this program expects).
    #[error("{function} returned an unexpected row")]
    UnexpectedRow {
        /// The SQL function.
        function: &'static str,
        /// The decoding error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// What the framework's SQL puts in an error's COLUMN field when the error
/// is about a sub-consumer (`sql/pgq_consumer/v5.sql`).
const SUBCONSUMER_FIELD: &str = "subconsumer_name";

fn who(consumer: &str, subconsumer: Option<&str>) -> String {
    match subconsumer {
        Some(sub) => format!("sub-consumer {sub:?} of consumer {consumer:?}"),
        None => format!("consumer {consumer:?}"),
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The SQLSTATE of the PostgreSQL error behind this one, if any, a
    /// [`pgq`] error's included.
    pub fn code(&self) -> Option<&SqlState> {
        self.postgres().and_then(tokio_postgres::Error::code)
    }

    /// The PostgreSQL client error behind this one, if any, a [`pgq`]
    /// error's included.
    pub fn postgres(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Error::Pgq(e) => e.postgres(),
            Error::SchemaFile { source, .. }
            | Error::Schema { source, .. }
            | Error::Consumer { source, .. }
            | Error::Subconsumer { source, .. }
            | Error::Batch { source, .. }
            | Error::BatchNotActive { source, .. }
            | Error::BatchAppliedByOther { source, .. }
            | Error::NotRegistered { source, .. }
            | Error::BatchHeld { source, .. }
            | Error::UnexpectedRow { source, .. }
            | Error::Connect { source, .. }
            | Error::Db { source, .. }
            | Error::NodeDb { source, .. }
            | Error::Remote { source, .. } => Some(source),
            Error::Write { source, .. } => source.downcast_ref(),
            Error::NotBegun { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }

    /// True when a database could not be reached, did not answer in time,
    /// or its session is gone (closed, reset, ended by the server): the
    /// caller should reconnect, where a statement the server refused would
    /// fail again. Sessions that are gone are told by
    /// [`pgq::is_connection_error`], through the whole chain of causes.
    pub fn is_connection_error(&self) -> bool {
        // A START TRANSACTION fails only when the session can run nothing.
        matches!(
            self,
            Error::Unreachable { .. } | Error::NoAnswer { .. } | Error::NotBegun { .. }
        ) || pgq::is_connection_error(self)
    }

    /// The documented exit code for this error:
    /// [`ExitCode::CannotConnect`] (3) when a database cannot be reached or
    /// does not answer in time, [`ExitCode::WrongState`] (4) when the daemon
    /// is in the wrong state, [`ExitCode::Failed`] (1) otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Connect { .. } | Error::Unreachable { .. } | Error::NoAnswer { .. } => ExitCode::CannotConnect,
            Error::DaemonRunning { .. } => ExitCode::WrongState,
            _ => ExitCode::Failed,
        }
    }

    /// An error of a statement on the queue database.
    pub(crate) fn db(queue: &str, consumer: &str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let (queue, consumer) = (queue.to_owned(), consumer.to_owned());
        move |source| Error::Db {
            queue,
            consumer,
            source,
        }
    }

    /// An error of a framework SQL function called for a queue's consumer;
    /// "not registered" and "batch held" get their own variants.
    pub(crate) fn consumer(
        function: &'static str,
        queue: &str,
        consumer: &str,
    ) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let (queue, consumer) = (queue.to_owned(), consumer.to_owned());
        move |source| match source.code() {
            Some(c) if *c == SqlState::UNDEFINED_OBJECT => Error::NotRegistered {
                queue,
                consumer,
                subconsumer: None,
                source,
            },
            Some(c) if *c == SqlState::OBJECT_IN_USE => Error::BatchHeld {
                queue,
                consumer,
                subconsumer: None,
                source,
            },
            _ => Error::Consumer {
                function,
                queue,
                consumer,
                source,
            },
        }
    }

    /// An error of a framework SQL function called for a sub-consumer. The
    /// SQL says which of the two is missing or holds a batch (in the error's
    /// COLUMN field); the error names a sub-consumer when it is about it.
    pub(crate) fn subconsumer(
        function: &'static str,
        queue: &str,
        consumer: &str,
        subconsumer: &str,
    ) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let (queue, consumer, sub) = (queue.to_owned(), consumer.to_owned(), subconsumer.to_owned());
        move |source| {
            // The framework's SQL names the sub-consumer in the error's
            // COLUMN field when the error is about it, not its group.
            let about_sub = source
                .as_db_error()
                .is_some_and(|e| e.column() == Some(SUBCONSUMER_FIELD));
            let subconsumer = about_sub.then(|| sub.clone());
            match source.code() {
                Some(c) if *c == SqlState::UNDEFINED_OBJECT => Error::NotRegistered {
                    queue,
                    consumer,
                    subconsumer,
                    source,
                },
                Some(c) if *c == SqlState::OBJECT_IN_USE => Error::BatchHeld {
                    queue,
                    consumer,
                    subconsumer,
                    source,
                },
                _ => Error::Subconsumer {
                    function,
                    queue,
                    consumer,
                    subconsumer: sub,
                    source,
                },
            }
        }
    }

    /// An error of a framework SQL function called for a batch; a batch
    /// that is not active gets its own variant.
    pub(crate) fn batch(function: &'static str, batch_id: i64) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| match source.code() {
            Some(c) if *c == SqlState::NO_DATA_FOUND => Error::BatchNotActive { batch_id, source },
            _ => Error::Batch {
                function,
                batch_id,
                source,
            },
        }
    }

    /// A row of `function` that could not be read.
    pub(crate) fn row(function: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::UnexpectedRow { function, source }
    }
}
