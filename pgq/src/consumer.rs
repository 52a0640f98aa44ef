//! Consumers: registering, unregistering and inspecting them.

use tokio_postgres::{GenericClient, Row};

use crate::call::{map_rows, scalar};
use crate::error::{on_consumer, on_queue, Result};
use crate::interval::Interval;

/// Registers a consumer on a queue (`pgq.register_consumer`); it will see
/// events inserted from the next tick on. Returns `false` when it was already
/// registered.
pub async fn register_consumer(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<bool> {
    let n: i32 = scalar(
        client,
        "pgq.register_consumer",
        on_consumer(queue, consumer),
        "select pgq.register_consumer($1, $2)",
        &[&queue, &consumer],
    )
    .await?;
    Ok(n == 1)
}

/// Registers a consumer, or moves an existing one, to a given tick
/// (`pgq.register_consumer_at`). Returns `false` when it was already registered.
pub async fn register_consumer_at(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    tick_id: i64,
) -> Result<bool> {
    let n: i32 = scalar(
        client,
        "pgq.register_consumer_at",
        on_consumer(queue, consumer),
        "select pgq.register_consumer_at($1, $2, $3)",
        &[&queue, &consumer, &tick_id],
    )
    .await?;
    Ok(n == 1)
}

/// Unregisters a consumer (`pgq.unregister_consumer`); its unread events are
/// gone for it. Returns how many (sub)consumers were unregistered.
pub async fn unregister_consumer(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<i32> {
    scalar(
        client,
        "pgq.unregister_consumer",
        on_consumer(queue, consumer),
        "select pgq.unregister_consumer($1, $2)",
        &[&queue, &consumer],
    )
    .await
}

/// A consumer's position and health, a row of `pgq.get_consumer_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Queue name.
    pub queue_name: String,
    /// Consumer name.
    pub consumer_name: String,
    /// How far behind the consumer is: now minus the time of its last tick.
    pub lag: Option<Interval>,
    /// Time since the consumer last asked for or finished a batch.
    pub last_seen: Option<Interval>,
    /// The last tick it finished.
    pub last_tick: Option<i64>,
    /// The batch it holds open, if any.
    pub current_batch: Option<i64>,
    /// The tick its open batch ends at, if any.
    pub next_tick: Option<i64>,
    /// Events waiting for it (estimate from tick sequence numbers).
    pub pending_events: Option<i64>,
}

impl ConsumerInfo {
    fn from_row(r: &Row) -> std::result::Result<ConsumerInfo, tokio_postgres::Error> {
        Ok(ConsumerInfo {
            queue_name: r.try_get("queue_name")?,
            consumer_name: r.try_get("consumer_name")?,
            lag: r.try_get("lag")?,
            last_seen: r.try_get("last_seen")?,
            last_tick: r.try_get("last_tick")?,
            current_batch: r.try_get("current_batch")?,
            next_tick: r.try_get("next_tick")?,
            pending_events: r.try_get("pending_events")?,
        })
    }
}

/// Every consumer on every queue (`pgq.get_consumer_info(0)`).
pub async fn get_consumer_info_all(client: &impl GenericClient) -> Result<Vec<ConsumerInfo>> {
    map_rows(
        client,
        "pgq.get_consumer_info",
        String::new(),
        "select * from pgq.get_consumer_info()",
        &[],
        ConsumerInfo::from_row,
    )
    .await
}

/// Every consumer of one queue (`pgq.get_consumer_info(1)`).
pub async fn get_consumer_info_queue(client: &impl GenericClient, queue: &str) -> Result<Vec<ConsumerInfo>> {
    map_rows(
        client,
        "pgq.get_consumer_info",
        on_queue(queue),
        "select * from pgq.get_consumer_info($1)",
        &[&queue],
        ConsumerInfo::from_row,
    )
    .await
}

/// One consumer of one queue (`pgq.get_consumer_info(2)`); `None` when it is
/// not registered there.
pub async fn get_consumer_info(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
) -> Result<Option<ConsumerInfo>> {
    let mut v = map_rows(
        client,
        "pgq.get_consumer_info",
        on_consumer(queue, consumer),
        "select * from pgq.get_consumer_info($1, $2)",
        &[&queue, &consumer],
        ConsumerInfo::from_row,
    )
    .await?;
    Ok(v.pop())
}
