//! Queues: creating, configuring, inspecting and dropping them.

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use crate::call::{map_rows, scalar};
use crate::error::{on_queue, Result};
use crate::interval::Interval;

/// Creates a queue (`pgq.create_queue`). Returns `false` when it already existed.
pub async fn create_queue(client: &impl GenericClient, queue: &str) -> Result<bool> {
    let n: i32 = scalar(
        client,
        "pgq.create_queue",
        on_queue(queue),
        "select pgq.create_queue($1)",
        &[&queue],
    )
    .await?;
    Ok(n == 1)
}

/// Drops a queue (`pgq.drop_queue(1)`); refused by PgQ while consumers are
/// registered on it.
pub async fn drop_queue(client: &impl GenericClient, queue: &str) -> Result<()> {
    let _: i32 = scalar(
        client,
        "pgq.drop_queue",
        on_queue(queue),
        "select pgq.drop_queue($1)",
        &[&queue],
    )
    .await?;
    Ok(())
}

/// Drops a queue (`pgq.drop_queue(2)`); with `force`, even while consumers are
/// registered on it (they are unregistered and their unread events are lost).
pub async fn drop_queue_forced(client: &impl GenericClient, queue: &str, force: bool) -> Result<()> {
    let _: i32 = scalar(
        client,
        "pgq.drop_queue",
        on_queue(queue),
        "select pgq.drop_queue($1, $2)",
        &[&queue, &force],
    )
    .await?;
    Ok(())
}

/// Sets one queue parameter (`pgq.set_queue_config`): one of
/// `ticker_max_count`, `ticker_max_lag`, `ticker_idle_period`,
/// `ticker_paused`, `rotation_period`, `external_ticker`, the value as its
/// SQL text (`"5 seconds"`, `"true"`). PgQ refuses any other name; the
/// column's type refuses a bad value.
pub async fn set_queue_config(client: &impl GenericClient, queue: &str, param: &str, value: &str) -> Result<()> {
    let _: i32 = scalar(
        client,
        "pgq.set_queue_config",
        format!("{}, parameter {param:?}", on_queue(queue)),
        "select pgq.set_queue_config($1, $2, $3)",
        &[&queue, &param, &value],
    )
    .await?;
    Ok(())
}

/// The name of the event table events are inserted into now
/// (`pgq.current_event_table`), as `schema.table`. Valid only until the end of
/// the current transaction.
pub async fn current_event_table(client: &impl GenericClient, queue: &str) -> Result<String> {
    scalar(
        client,
        "pgq.current_event_table",
        on_queue(queue),
        "select pgq.current_event_table($1)",
        &[&queue],
    )
    .await
}

/// Grants PgQ's roles their rights on a queue's tables (`pgq.grant_perms`).
pub async fn grant_perms(client: &impl GenericClient, queue: &str) -> Result<()> {
    let _: i32 = scalar(
        client,
        "pgq.grant_perms",
        on_queue(queue),
        "select pgq.grant_perms($1)",
        &[&queue],
    )
    .await?;
    Ok(())
}

/// Sets storage parameters on a queue's event tables (`pgq.tune_storage`):
/// fillfactor 100, autovacuum off. Returns `false` when there is no such
/// queue (PgQ does not raise an error for that).
pub async fn tune_storage(client: &impl GenericClient, queue: &str) -> Result<bool> {
    let n: i32 = scalar(
        client,
        "pgq.tune_storage",
        on_queue(queue),
        "select pgq.tune_storage($1)",
        &[&queue],
    )
    .await?;
    Ok(n == 1)
}

/// A queue's configuration and state, a row of `pgq.get_queue_info`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    /// Queue name.
    pub queue_name: String,
    /// Number of event tables it rotates through.
    pub queue_ntables: i32,
    /// The event table in use.
    pub queue_cur_table: i32,
    /// How often the tables rotate.
    pub queue_rotation_period: Interval,
    /// When the tables last rotated.
    pub queue_switch_time: DateTime<Utc>,
    /// Whether ticks come from outside (replicated queue).
    pub queue_external_ticker: bool,
    /// Whether ticking is paused.
    pub queue_ticker_paused: bool,
    /// Events after which a tick is due.
    pub queue_ticker_max_count: i32,
    /// Time after which a tick is due when there are events.
    pub queue_ticker_max_lag: Interval,
    /// Time after which a tick is due when there are no events.
    pub queue_ticker_idle_period: Interval,
    /// Age of the last tick.
    pub ticker_lag: Option<Interval>,
    /// Events per second over the last ticks.
    pub ev_per_sec: Option<f64>,
    /// Events inserted since the last tick.
    pub ev_new: Option<i64>,
    /// Id of the last tick.
    pub last_tick_id: Option<i64>,
}

impl QueueInfo {
    fn from_row(r: &Row) -> std::result::Result<QueueInfo, tokio_postgres::Error> {
        Ok(QueueInfo {
            queue_name: r.try_get("queue_name")?,
            queue_ntables: r.try_get("queue_ntables")?,
            queue_cur_table: r.try_get("queue_cur_table")?,
            queue_rotation_period: r.try_get("queue_rotation_period")?,
            queue_switch_time: r.try_get("queue_switch_time")?,
            queue_external_ticker: r.try_get("queue_external_ticker")?,
            queue_ticker_paused: r.try_get("queue_ticker_paused")?,
            queue_ticker_max_count: r.try_get("queue_ticker_max_count")?,
            queue_ticker_max_lag: r.try_get("queue_ticker_max_lag")?,
            queue_ticker_idle_period: r.try_get("queue_ticker_idle_period")?,
            ticker_lag: r.try_get("ticker_lag")?,
            ev_per_sec: r.try_get("ev_per_sec")?,
            ev_new: r.try_get("ev_new")?,
            last_tick_id: r.try_get("last_tick_id")?,
        })
    }
}

/// Every queue's info (`pgq.get_queue_info(0)`).
pub async fn get_queue_info_all(client: &impl GenericClient) -> Result<Vec<QueueInfo>> {
    map_rows(
        client,
        "pgq.get_queue_info",
        String::new(),
        "select * from pgq.get_queue_info()",
        &[],
        QueueInfo::from_row,
    )
    .await
}

/// One queue's info (`pgq.get_queue_info(1)`); `None` when there is no such queue.
pub async fn get_queue_info(client: &impl GenericClient, queue: &str) -> Result<Option<QueueInfo>> {
    let mut v = map_rows(
        client,
        "pgq.get_queue_info",
        on_queue(queue),
        "select * from pgq.get_queue_info($1)",
        &[&queue],
        QueueInfo::from_row,
    )
    .await?;
    Ok(v.pop())
}
