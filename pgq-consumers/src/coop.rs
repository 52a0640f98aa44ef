//! Cooperative consumers: several processes (sub-consumers) share one
//! consumer's batches, each batch going to exactly one of them.
//!
//! PgQ 3.5 as packaged by Debian has no `pgq_coop`; the framework's SQL
//! brings the same idea (see "Cooperative consumers" in
//! `sql/pgq_consumer/v1.sql`). The group's consumer is registered with pgq;
//! each sub-consumer is the pgq consumer `<consumer>.<subconsumer>` sharing
//! the group's subscription id, so events retried by any member come back to
//! the group. A sub-consumer takes batches with [`next_batch`] and closes
//! them with [`finish_batch`] (not `pgq::finish_batch`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgq::{BatchLimits, BatchTicks, Interval};
use tokio_postgres::{GenericClient, Row};

use crate::error::{Error, Result};

/// The group whose sub-consumer the pgq consumer `name` is, among the
/// consumers `registered` on its queue: the longest registered `group` such
/// that `name` is `<group>.<subconsumer>` (both may hold dots), as the
/// framework's SQL tells them. `None` when `name` is nobody's sub-consumer.
///
/// ```
/// use pgq_consumers::coop::group_of;
/// let registered = ["mailer", "mailer.w1", "billing.v2", "grp", "grp.w.1"];
/// assert_eq!(group_of("mailer.w1", registered), Some("mailer"));
/// assert_eq!(group_of("grp.w.1", registered), Some("grp"));
/// assert_eq!(group_of("billing.v2", registered), None);
/// assert_eq!(group_of("mailer", registered), None);
/// ```
pub fn group_of<'a>(name: &str, registered: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    registered
        .into_iter()
        .filter(|group| name.len() > group.len() + 1 && name.starts_with(group) && name.as_bytes()[group.len()] == b'.')
        .max_by_key(|group| group.len())
}

/// What [`unregister_with`] does with a batch the sub-consumer
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchHandling {
    /// Refuse to unregister ([`Error::BatchHeld`]); nothing changes.
    Refuse,
    /// Hand the batch back: the next sub-consumer asking for a batch gets it,
    /// dead interval or not.
    #[default]
    HandBack,
    /// Drop the batch: its events are never delivered to the group.
    Drop,
}

impl BatchHandling {
    /// The name `pgq_consumer.unregister_subconsumer` knows it by.
    pub fn as_sql(self) -> &'static str {
        match self {
            BatchHandling::Refuse => "refuse",
            BatchHandling::HandBack => "hand_back",
            BatchHandling::Drop => "drop",
        }
    }
}

/// A batch given to a sub-consumer by [`next_batch_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubconsumerBatch {
    /// The batch and the ticks that bound it.
    pub ticks: BatchTicks,
    /// The sub-consumer the batch was taken over from (it was dead, or it
    /// handed the batch back), under a new batch id.
    pub taken_from: Option<String>,
}

/// Who holds an active batch ([`batch_owner`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOwner {
    /// The queue.
    pub queue: String,
    /// The consumer; for a sub-consumer's batch, the group's consumer.
    pub consumer: String,
    /// The sub-consumer holding it, for a cooperative group.
    pub subconsumer: Option<String>,
}

/// One sub-consumer of a group ([`info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubconsumerInfo {
    /// Its name within the group.
    pub subconsumer: String,
    /// The batch it holds.
    pub batch_id: Option<i64>,
    /// The tick its batch starts after.
    pub prev_tick_id: Option<i64>,
    /// The tick its batch ends at.
    pub cur_tick_id: Option<i64>,
    /// When it last asked for a batch (or was touched); `None` for a handed
    /// back batch.
    pub last_seen: Option<DateTime<Utc>>,
    /// The sub-consumer was unregistered and its batch waits to be taken
    /// over.
    pub handed_back: bool,
}

/// Registers sub-consumer `subconsumer` of the group `consumer` on `queue`,
/// registering `consumer` with pgq first when needed (the queue must have
/// ticked once). Returns `false` when it was registered already.
///
/// [`Error::BatchHeld`] when `consumer` itself holds a batch (a plain
/// consumer of that name has been running).
pub async fn register(client: &impl GenericClient, queue: &str, consumer: &str, subconsumer: &str) -> Result<bool> {
    subconsumer_call(
        client,
        "pgq_consumer.register_subconsumer",
        "select pgq_consumer.register_subconsumer($1, $2, $3) as n",
        (queue, consumer, subconsumer),
    )
    .await
}

/// Unregisters a sub-consumer, handing a batch it holds back to the group
/// ([`BatchHandling::HandBack`]). Returns `false` when it was not
/// registered. The group's consumer stays registered.
pub async fn unregister(client: &impl GenericClient, queue: &str, consumer: &str, subconsumer: &str) -> Result<bool> {
    unregister_with(client, queue, consumer, subconsumer, BatchHandling::HandBack).await
}

/// Unregisters a sub-consumer, doing `handling` with a batch it holds.
/// Returns `false` when it was not registered.
pub async fn unregister_with(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: &str,
    handling: BatchHandling,
) -> Result<bool> {
    const F: &str = "pgq_consumer.unregister_subconsumer";
    let row = client
        .query_one(
            "select pgq_consumer.unregister_subconsumer($1, $2, $3, $4) as n",
            &[&queue, &consumer, &subconsumer, &handling.as_sql()],
        )
        .await
        .map_err(Error::subconsumer(F, queue, consumer, subconsumer))?;
    let n: i32 = row.try_get("n").map_err(Error::row(F))?;
    Ok(n > 0)
}

/// The batch sub-consumer `subconsumer` of `consumer` should work on, or
/// `None` when there is none yet (see [`next_batch_info`]).
///
/// A batch taken over from another sub-consumer is logged at warning level.
pub async fn next_batch(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: &str,
    dead_interval: Option<Duration>,
    limits: &BatchLimits,
) -> Result<Option<BatchTicks>> {
    let Some(b) = next_batch_info(client, queue, consumer, subconsumer, dead_interval, limits).await? else {
        return Ok(None);
    };
    if let Some(from) = &b.taken_from {
        log::warn!(
            "sub-consumer {subconsumer:?} of {consumer:?} on queue {queue:?} took over the batch of \
             sub-consumer {from:?} (ticks {}..{}), now batch {}",
            b.ticks.prev_tick_id,
            b.ticks.cur_tick_id,
            b.ticks.batch_id
        );
    }
    Ok(Some(b.ticks))
}

/// The batch sub-consumer `subconsumer` of `consumer` should work on
/// (`pgq_consumer.next_batch_custom`), in this order:
///
/// 1. the batch it holds already (a restarted process resumes it);
/// 2. a batch handed back by an unregistered sub-consumer, or held by one not
///    seen for longer than `dead_interval` (`None`: never take over from a
///    silent one), under a new batch id so the old holder's
///    [`finish_batch`] fails;
/// 3. the group's next batch, cut as `pgq.next_batch_custom` does with
///    `limits`.
///
/// `None` when there is no batch. Every call marks the sub-consumer as seen.
pub async fn next_batch_info(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: &str,
    dead_interval: Option<Duration>,
    limits: &BatchLimits,
) -> Result<Option<SubconsumerBatch>> {
    const F: &str = "pgq_consumer.next_batch_custom";
    let dead = dead_interval.map(Interval::from);
    let rows = client
        .query(
            "select * from pgq_consumer.next_batch_custom($1, $2, $3, $4, $5, $6, $7)",
            &[
                &queue,
                &consumer,
                &subconsumer,
                &dead,
                &limits.min_lag,
                &limits.min_count,
                &limits.min_interval,
            ],
        )
        .await
        .map_err(Error::subconsumer(F, queue, consumer, subconsumer))?;
    match rows.first() {
        Some(r) => read_batch(r).map_err(Error::row(F)),
        None => Ok(None),
    }
}

fn read_batch(r: &Row) -> std::result::Result<Option<SubconsumerBatch>, tokio_postgres::Error> {
    let Some(ticks) = BatchTicks::from_row(r)? else {
        return Ok(None);
    };
    Ok(Some(SubconsumerBatch {
        ticks,
        taken_from: r.try_get("taken_from")?,
    }))
}

/// Closes an active batch (`pgq_consumer.finish_batch`): a sub-consumer's,
/// which then holds none, or a plain consumer's (as `pgq.finish_batch`).
///
/// Unlike `pgq::finish_batch`, a batch that is not active is an error,
/// [`Error::BatchNotActive`]: that is what a sub-consumer whose batch was
/// taken over meanwhile gets, and its transaction must roll back.
pub async fn finish_batch(client: &impl GenericClient, batch_id: i64) -> Result<()> {
    const F: &str = "pgq_consumer.finish_batch";
    client
        .execute("select pgq_consumer.finish_batch($1)", &[&batch_id])
        .await
        .map_err(Error::batch(F, batch_id))?;
    Ok(())
}

/// Marks a sub-consumer as seen, so a long batch is not taken over as dead.
/// Use a connection other than the one processing the batch. Returns `false`
/// when the sub-consumer is not registered.
pub async fn touch(client: &impl GenericClient, queue: &str, consumer: &str, subconsumer: &str) -> Result<bool> {
    subconsumer_call(
        client,
        "pgq_consumer.touch_subconsumer",
        "select pgq_consumer.touch_subconsumer($1, $2, $3) as n",
        (queue, consumer, subconsumer),
    )
    .await
}

/// Marks a sub-consumer as seen while it holds batch `batch_id`
/// (`pgq_consumer.touch_subconsumer(4)`, schema version 5). Returns `false`
/// when it does not hold that batch any more (taken over by another
/// sub-consumer, finished, or the sub-consumer unregistered): it must stop
/// working on the batch and roll back. Use a connection other than the one
/// processing the batch.
pub async fn touch_batch(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: &str,
    batch_id: i64,
) -> Result<bool> {
    const F: &str = "pgq_consumer.touch_subconsumer";
    let row = client
        .query_one(
            "select pgq_consumer.touch_subconsumer($1, $2, $3, $4) as n",
            &[&queue, &consumer, &subconsumer, &batch_id],
        )
        .await
        .map_err(Error::subconsumer(F, queue, consumer, subconsumer))?;
    let n: i32 = row.try_get("n").map_err(Error::row(F))?;
    Ok(n > 0)
}

/// The tick up to which every batch of the cooperative group `consumer` is
/// finished (`pgq_consumer.group_finished_tick`, schema version 5): a batch
/// ending at or before it is not delivered again. `None` when the group is
/// not registered. Its remote database's records of such batches can go
/// ([`crate::tracking::prune_group`]).
pub async fn group_finished_tick(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<Option<i64>> {
    const F: &str = "pgq_consumer.group_finished_tick";
    let row = client
        .query_one(
            "select pgq_consumer.group_finished_tick($1, $2) as t",
            &[&queue, &consumer],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    row.try_get("t").map_err(Error::row(F))
}

/// Runs `sql`, a call of the framework function `function` taking
/// (queue, consumer, subconsumer) and returning a count as `n`; `true` when
/// the count is above zero.
async fn subconsumer_call(
    client: &impl GenericClient,
    function: &'static str,
    sql: &str,
    (queue, consumer, subconsumer): (&str, &str, &str),
) -> Result<bool> {
    let row = client
        .query_one(sql, &[&queue, &consumer, &subconsumer])
        .await
        .map_err(Error::subconsumer(function, queue, consumer, subconsumer))?;
    let n: i32 = row.try_get("n").map_err(Error::row(function))?;
    Ok(n > 0)
}

/// The sub-consumers of `consumer` on `queue`, in name order.
pub async fn info(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<Vec<SubconsumerInfo>> {
    const F: &str = "pgq_consumer.get_subconsumer_info";
    let rows = client
        .query(
            "select * from pgq_consumer.get_subconsumer_info($1, $2)",
            &[&queue, &consumer],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    rows.iter()
        .map(|r| {
            Ok(SubconsumerInfo {
                subconsumer: r.try_get("subconsumer_name")?,
                batch_id: r.try_get("batch_id")?,
                prev_tick_id: r.try_get("prev_tick_id")?,
                cur_tick_id: r.try_get("cur_tick_id")?,
                last_seen: r.try_get("last_seen")?,
                handed_back: r.try_get("handed_back")?,
            })
        })
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(Error::row(F))
}

/// Who holds the active batch `batch_id` (`pgq_consumer.batch_consumer`);
/// `None` when no one does.
pub async fn batch_owner(client: &impl GenericClient, batch_id: i64) -> Result<Option<BatchOwner>> {
    const F: &str = "pgq_consumer.batch_consumer";
    let row = client
        .query_one("select * from pgq_consumer.batch_consumer($1)", &[&batch_id])
        .await
        .map_err(Error::batch(F, batch_id))?;
    let queue: Option<String> = row.try_get("queue_name").map_err(Error::row(F))?;
    let consumer: Option<String> = row.try_get("consumer_name").map_err(Error::row(F))?;
    let subconsumer: Option<String> = row.try_get("subconsumer_name").map_err(Error::row(F))?;
    Ok(match (queue, consumer) {
        (Some(queue), Some(consumer)) => Some(BatchOwner {
            queue,
            consumer,
            subconsumer,
        }),
        _ => None,
    })
}
