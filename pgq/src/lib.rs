//! A typed, async wrapper of every function of PgQ 3.5, the PostgreSQL
//! extension that makes a database a transactional event queue.
//!
//! Producers insert events in their own transactions; a ticker (`pgqd`, or
//! [`ticker`] called from Rust) cuts the event stream into batches; every
//! registered consumer reads each batch and moves past it with
//! [`finish_batch`]. Each function here calls the PgQ function of the same
//! name with bound parameters and returns typed rows. Every function takes
//! `&impl GenericClient`, so it runs on a plain connection or inside the
//! caller's transaction, which is how a consumer makes its own writes commit
//! together with [`finish_batch`].
//!
//! ```no_run
//! use futures_util::TryStreamExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (mut client, conn) = tokio_postgres::connect("host=localhost dbname=app", tokio_postgres::NoTls).await?;
//! tokio::spawn(conn);
//!
//! pgq::create_queue(&client, "orders").await?;
//! pgq::register_consumer(&client, "orders", "mailer").await?;
//! pgq::insert_event(&client, "orders", "created", r#"{"id": 1}"#).await?;
//! // pgqd ticks in production, once enough events or time have passed;
//! // force_tick makes the queue due at once.
//! pgq::force_tick(&client, "orders").await?;
//! pgq::ticker(&client).await?;
//!
//! let tx = client.transaction().await?;
//! if let Some(batch) = pgq::next_batch(&tx, "orders", "mailer").await? {
//!     let events = pgq::stream_batch_events(&tx, batch).await?;
//!     futures_util::pin_mut!(events);
//!     while let Some(ev) = events.try_next().await? {
//!         println!("{} {} {}", ev.ev_id, ev.kind(), ev.data());
//!     }
//!     pgq::finish_batch(&tx, batch).await?;
//! }
//! tx.commit().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The functions of `pgq_node`, PgQ's cascades over several databases,
//! are in [`node`].
//!
//! Overloaded PgQ functions get one Rust function per overload:
//! `drop_queue` / [`drop_queue_forced`], `insert_event` /
//! [`insert_event_full`], `ticker` / [`ticker_queue`] / [`ticker_external`],
//! `get_queue_info` / [`get_queue_info_all`], `get_consumer_info` /
//! [`get_consumer_info_queue`] / [`get_consumer_info_all`],
//! `get_batch_cursor` / [`get_batch_cursor_where`], `event_retry` /
//! [`event_retry_at`].

// The crates whose types this crate's signatures use, so that a user's
// Cargo.toml needs no guesswork about their versions.
pub use chrono;
pub use futures_util;
pub use serde;
pub use serde_json;
pub use tokio_postgres;

mod admin;
mod batch;
mod call;
mod consumer;
mod copy;
mod error;
mod event;
mod ident;
mod interval;
mod maint;
pub mod node;
mod notify;
mod produce;
mod producer;
mod queue;
mod reader;
mod relay;
mod stream;
mod target;
mod trigger;

pub use admin::{quote_fqname, seq_getval, seq_setval, upgrade_schema, version};
pub use batch::{
    batch_event_sql, batch_event_tables, batch_retry, event_retry, event_retry_at, event_retry_raw, fetch_batch_cursor,
    finish_batch, get_batch_cursor, get_batch_cursor_where, get_batch_events, get_batch_info, next_batch,
    next_batch_custom, next_batch_info, BatchInfo, BatchLimits, BatchTicks,
};
pub use consumer::{
    get_consumer_info, get_consumer_info_all, get_consumer_info_queue, register_consumer, register_consumer_at,
    unregister_consumer, ConsumerInfo,
};
pub use error::{is_connection_error, Error, Result};
pub use event::{Event, NewEvent, TriggerOp};
pub use ident::{quote_ident, quote_literal, quote_qualified};
pub use interval::Interval;
pub use maint::{
    find_tick_helper, force_tick, maint_operations, maint_retry_events, maint_rotate_tables_step1,
    maint_rotate_tables_step2, maint_tables_to_vacuum, run_maint_operation, ticker, ticker_external, ticker_queue,
    FoundTick, MaintOperation,
};
pub use notify::{listen, notify_events, notify_tick, tick_channel, unlisten, EVENTS_CHANNEL};
pub use produce::{insert_event, insert_event_full, insert_event_raw, insert_events, insert_events_copy, RawEvent};
pub use producer::Producer;
pub use queue::{
    create_queue, current_event_table, drop_queue, drop_queue_forced, get_queue_info, get_queue_info_all, grant_perms,
    set_queue_config, tune_storage, QueueInfo,
};
pub use reader::{
    batch_events_query, large_events_query, tick_events_query, BatchReader, BatchStatements, EventFilter, Upcoming,
};
pub use relay::{relay_batch, CascadeEvent, Relayed};
pub use stream::stream_batch_events;
pub use trigger::{create_trigger, EventField, RowOp, TriggerKind, TriggerOption, TriggerSpec};

/// The examples of the crate's README, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
