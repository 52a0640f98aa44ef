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
//! fn main() -> pgq_consumers::ExitCode {
//!     pgq_consumers::main(|| Audit)
//! }
//! ```
//!
//! That program then has the whole command line:
//! `audit -c audit.toml install | check | start | status | failed | retry all | stop ...`
//! (see the README for the commands, the config keys and the exit codes).
//!
//! # The crate
//!
//! The types a consumer is written with are at the root: [`Consumer`],
//! [`Context`], [`Outcome`], [`Batch`], [`CommitMode`], [`Config`],
//! [`Error`], and [`BatchLoop`] for running the loop from code of your own.
//! The framework's own SQL (schema `pgq_consumer`) has a module per concept,
//! its functions taking any `GenericClient` so they run in the caller's
//! transaction: [`failed`] (the failed-event store), [`coop`] (cooperative
//! sub-consumers), [`tracking`] (what a remote database recorded of the
//! batches it applied) and [`schema`] (installing it); [`ticker`] is the
//! embedded ticker, [`config`] the config file, [`seconds`] durations in
//! seconds for settings.
//!
//! The crates whose types appear in its signatures are re-exported
//! ([`pgq`], [`pgq_daemon`], [`tokio_postgres`], [`toml`], [`serde`],
//! [`serde_json`], [`clap`], [`chrono`], [`tokio`], [`tokio_util`],
//! [`async_trait`](macro@async_trait)),
//! so a consumer's `Cargo.toml` needs only this crate (and `serde` with
//! its `derive` feature for a settings type, or not even that:
//!
//! ```
//! use pgq_consumers::serde::Deserialize;
//!
//! /// The config's `[settings]`.
//! #[derive(Deserialize)]
//! #[serde(crate = "pgq_consumers::serde", deny_unknown_fields)]
//! struct Settings {
//!     url: String,
//!     #[serde(with = "pgq_consumers::seconds", default = "ten")]
//!     timeout: std::time::Duration,
//! }
//!
//! fn ten() -> std::time::Duration {
//!     std::time::Duration::from_secs(10)
//! }
//!
//! let s: Settings = pgq_consumers::toml::from_str("url = 'http://h/'").unwrap();
//! assert_eq!((s.url.as_str(), s.timeout.as_secs()), ("http://h/", 10));
//! ```
//!
//! Errors: [`Error`] names what it was about and keeps its cause as its
//! source; [`error_chain`] prints it with its causes on one line,
//! [`Error::is_connection_error`] tells a lost or unreachable database from
//! a refused statement, [`Error::code`] gives the SQLSTATE behind it, and
//! [`Error::exit_code`] the documented [`ExitCode`].
//!
//! # Features
//!
//! - `failpoints` (off by default): the crash points of the fault-injection
//!   tests, armed by the environment variable `PGQ_CONSUMERS_CRASH_AT`. Only
//!   tests turn it on; a build without it has no crash point at all.

mod batch;
mod batch_loop;
mod batch_tx;
mod bulk;
pub mod cascade;
mod cli;
pub mod config;
mod consumer;
pub mod coop;
mod error;
pub mod failed;
#[cfg(feature = "failpoints")]
pub mod failpoint;
#[cfg(not(feature = "failpoints"))]
mod failpoint;
mod health;
mod heartbeat;
pub mod http;
mod installed;
pub mod metrics;
mod net;
mod outcome;
mod pipeline;
mod queue_state;
mod reader;
pub mod schema;
pub mod seconds;
mod source;
mod statement_cache;
pub mod ticker;
pub mod tracking;
mod tx;
mod writes;

pub use batch::{Batch, BatchEnd, BatchReport};
pub use batch_loop::{BatchLoop, Round};
pub use batch_tx::{BatchTx, Sql};
pub use cli::{main, main_with};
pub use config::{Config, ConnString, HttpConfig, Runtime};
pub use consumer::{BoxError, CommitMode, Consumer, Context, NoSettings};
pub use error::{Error, Result};
pub use health::Health;
pub use net::connect::{connect, connect_listening, Database, Notifications, CONTROL_TIMEOUT};
pub use outcome::Outcome;

pub use async_trait::async_trait;
pub use pgq::Event;
pub use pgq_daemon::{backoff, debug, error, error_chain, fatal, notice, verbose, warning, ExitCode, Level};

// The crates whose types the public signatures use.
pub use chrono;
pub use clap;
pub use pgq;
pub use pgq_daemon;
pub use prometheus;
pub use serde;
pub use serde_json;
pub use tokio;
pub use tokio_postgres;
pub use tokio_util;
pub use toml;

/// The examples of the crate's README, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
