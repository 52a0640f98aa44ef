//! PgQ consumers: write one `process_event`, get a complete consumer program.
//!
//! A [`Consumer`] says what to do with one event and returns an
//! [`Outcome`]; the framework does the rest: the batch loop (get a batch,
//! read its events with bounded memory, apply each outcome, finish the batch
//! in the same transaction as the handler's writes), failed events, retries,
//! remote and cooperative consumers, the daemon, and the command line.
//!
//! ```no_run
//! use pgq_consumers::{async_trait, BoxError, Consumer, Context, Event, Outcome};
//!
//! struct Audit;
//!
//! #[async_trait]
//! impl Consumer for Audit {
//!     type Settings = pgq_consumers::NoSettings;
//!
//!     async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
//!         if ev.kind() == "bad" {
//!             return Ok(Outcome::Failed("bad events are not audited".into()));
//!         }
//!         // Written in the batch's transaction: commits once, with the batch.
//!         cx.tx()
//!             .execute("insert into audit(ev_id, data) values ($1, $2)", &[&ev.ev_id, &ev.data()])
//!             .await?;
//!         Ok(Outcome::Ok)
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     pgq_consumers::main(|| Audit)
//! }
//! ```
//!
//! That program then has the whole command line:
//! `audit -c audit.toml install | check | start | status | failed | retry all | stop ...`
//! (see the README for the commands, the config keys and the exit codes).

mod batch;
mod batch_loop;
mod batch_tx;
mod bulk;
mod cli;
mod commands;
mod config;
mod connect;
mod conninfo;
mod consumer;
mod coop;
mod daemon;
mod error;
mod failed;
mod failpoint;
mod heartbeat;
mod libpq;
mod outcome;
mod pipeline;
mod reader;
mod schema;
pub mod seconds;
mod silence;
mod socket;
mod source;
mod statement_cache;
mod status;
mod ticker;
mod tls;
mod tracking;
mod writes;

pub use batch::{Batch, BatchEnd, BatchReport};
pub use batch_loop::{BatchLoop, Round};
pub use batch_tx::{BatchTx, Sql};
pub use cli::{main, main_with};
pub use config::{
    check_subconsumer_name, Config, ConnString, Filter, TomlSyntax, DB_ENV, DEFAULT_NET_TIMEOUT, MAX_SUBCONSUMER_NAME,
    REMOTE_DB_ENV,
};
pub use connect::{connect, connect_listening, Database, Notifications, CONTROL_TIMEOUT};
pub use conninfo::redact;
pub use consumer::{BoxError, CommitMode, Consumer, Context, NoSettings};
pub use error::{Error, Result};
pub use failpoint::CRASH_AT_ENV;
pub use libpq::SslMode;
pub use outcome::{backoff, Outcome};
pub use ticker::{ticker_leader, Ticker, TickerConfig, TickerLeader, TickerTask, LOCK_KEY as TICKER_LOCK_KEY};

// The framework's own SQL (schema `pgq_consumer`): install, failed events,
// remote batch tracking, cooperative sub-consumers.
pub use coop::{
    batch_owner, finish_batch as finish_subconsumer_batch, group_finished_tick, next_batch as next_subconsumer_batch,
    next_batch_info as next_subconsumer_batch_info, register_subconsumer, subconsumer_info,
    touch_batch as touch_subconsumer_batch, touch_subconsumer, unregister_subconsumer, unregister_subconsumer_with,
    BatchHandling, BatchOwner, SubconsumerBatch, SubconsumerInfo,
};
pub use failed::{
    add as add_failed_event, add_from_batch as add_failed_event_from_batch, count as count_failed_events,
    delete as delete_failed_events, delete_all as delete_all_failed_events, list as list_failed_events,
    list_page as list_failed_events_page, retry as retry_failed_events, retry_all as retry_all_failed_events,
    retry_all_at as retry_all_failed_events_at, retry_at as retry_failed_events_at, FailedEvent,
};
pub use schema::{
    install as install_schema, install_in_transaction as install_schema_in_transaction,
    install_to as install_schema_to, installed_version as installed_schema_version, SchemaFile, SCHEMA_FILES,
    SCHEMA_VERSION,
};
pub use tracking::{
    applied_outcomes, forget as forget_applied_batches, is_applied as is_batch_applied,
    last_applied as last_applied_batch, prune_group as prune_applied_group_batches, record as record_applied_batch,
    record_outcomes as record_applied_outcomes, state as applied_batch_state, AppliedBatch, AppliedOutcome, BatchState,
};

pub use async_trait::async_trait;
pub use pgq::Event;
pub use pgq_daemon::{debug, error, fatal, notice, verbose, warning, Level};
