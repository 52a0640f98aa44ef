//! Remote batch tracking: which batch a remote consumer last applied, kept in
//! the remote database itself (table `pgq_consumer.applied_batch`), so a batch
//! delivered again after a crash between the remote COMMIT and the queue
//! COMMIT is recognised and not applied twice.
//!
//! A batch is identified by its tick range `(prev_tick_id, cur_tick_id]`, not
//! by its id (a replayed batch may get a new id). The rules, and what is and
//! is not safe, are in the comments of `sql/pgq_consumer/v1.sql` ("Remote
//! batch tracking"). In short, inside the remote transaction and before
//! applying anything: ask [`state`] (or [`is_applied`]); if the batch is
//! applied, apply nothing and finish it in the queue; if it is new, apply it
//! and [`record`] it, then commit remote, then queue.

use chrono::{DateTime, Utc};
use pgq::BatchTicks;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row, Statement};

use crate::error::{Error, Result};

/// The last batch a (sub)consumer recorded as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppliedBatch {
    /// The queue.
    pub queue: String,
    /// The consumer (the group's consumer for a sub-consumer).
    pub consumer: String,
    /// The sub-consumer, for cooperative consumers.
    pub subconsumer: Option<String>,
    /// The batch's id when it was applied.
    pub batch_id: i64,
    /// The tick the batch started after.
    pub prev_tick_id: i64,
    /// The tick the batch ended at: a plain consumer has applied everything
    /// up to it.
    pub tick_id: i64,
    /// The end tick's time (`None` when recorded without it).
    pub tick_time: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub applied_at: DateTime<Utc>,
}

impl AppliedBatch {
    fn from_row(row: &Row) -> std::result::Result<AppliedBatch, tokio_postgres::Error> {
        let subconsumer: String = row.try_get("subconsumer_name")?;
        Ok(AppliedBatch {
            queue: row.try_get("queue_name")?,
            consumer: row.try_get("consumer_name")?,
            subconsumer: (!subconsumer.is_empty()).then_some(subconsumer),
            batch_id: row.try_get("batch_id")?,
            prev_tick_id: row.try_get("prev_tick_id")?,
            tick_id: row.try_get("tick_id")?,
            tick_time: row.try_get("tick_time")?,
            applied_at: row.try_get("applied_at")?,
        })
    }
}

/// What the remote database knows about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchState {
    /// Not applied yet: apply it, and [`record`] it.
    New,
    /// Applied already (a replay): apply nothing; store and retry again the
    /// events the first attempt failed or retried ([`applied_outcomes`]), and
    /// finish the batch.
    Applied,
    /// A replayed batch that came back cut longer: part of it is applied,
    /// part not. Neither applying nor skipping it is right; reposition the
    /// consumer at the last applied tick (`pgq.register_consumer_at`).
    Partial,
    /// The tick times contradict the tick ids: the queue was dropped and
    /// created again since the record was made. Check, then [`forget`].
    Inconsistent,
}

fn sql_error(
    function: &'static str,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let (queue, consumer, sub) = (queue.to_owned(), consumer.to_owned(), subconsumer.map(str::to_owned));
    move |source| match sub {
        Some(sub) => Error::subconsumer(function, &queue, &consumer, &sub)(source),
        None => Error::consumer(function, &queue, &consumer)(source),
    }
}

/// The last batch `consumer` (or its sub-consumer `subconsumer`) recorded as
/// applied on `queue`, in the remote database `client` is connected to.
pub async fn last_applied(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
) -> Result<Option<AppliedBatch>> {
    const F: &str = "pgq_consumer.last_applied_batch";
    let rows = client
        .query(
            "select * from pgq_consumer.last_applied_batch($1, $2, $3)",
            &[&queue, &consumer, &subconsumer],
        )
        .await
        .map_err(sql_error(F, queue, consumer, subconsumer))?;
    match rows.first() {
        Some(r) => Ok(Some(AppliedBatch::from_row(r).map_err(Error::row(F))?)),
        None => Ok(None),
    }
}

/// `pgq_consumer.applied_batch_state`, with its parameters' types.
const STATE: &str = "select pgq_consumer.applied_batch_state($1, $2, $3, $4, $5, $6) as state";
const STATE_TYPES: [Type; 6] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TIMESTAMPTZ,
];

/// `pgq_consumer.record_applied_batch`, with its parameters' types.
const RECORD: &str = "select pgq_consumer.record_applied_batch($1, $2, $3, $4, $5, $6, $7)";
const RECORD_TYPES: [Type; 7] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TIMESTAMPTZ,
];

/// The statements a remote consumer runs for every batch ([`state`] and
/// [`record`]), prepared once on its remote connection, so the server does
/// not parse and plan them for each batch. They belong to that connection.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    state: Statement,
    record: Statement,
}

impl Prepared {
    /// Prepares them on `client`'s connection (one round trip).
    pub(crate) async fn prepare(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<Prepared> {
        let (state, record) = futures_util::future::try_join(
            client.prepare_typed(STATE, &STATE_TYPES),
            client.prepare_typed(RECORD, &RECORD_TYPES),
        )
        .await
        .map_err(Error::consumer("pgq_consumer", queue, consumer))?;
        Ok(Prepared { state, record })
    }

    /// Whether `error` (of running one of them) says the server no longer
    /// has them as they were prepared (deallocated, or their function's
    /// result changed): they must be prepared again.
    pub(crate) fn stale(error: &Error) -> bool {
        error.postgres().is_some_and(crate::statement_cache::is_stale)
    }
}

/// Runs `sql` with `params`: the statement `prepared` when given, otherwise
/// the text with its parameters' `types`, parsed, bound and run in one
/// round trip. Either way the request is sent when the future is first
/// polled (the batch loop sends the remote COMMIT right behind a record).
async fn run_one(
    client: &impl GenericClient,
    prepared: Option<&Statement>,
    sql: &str,
    types: &[Type],
    params: &[&(dyn ToSql + Sync)],
) -> std::result::Result<Row, tokio_postgres::Error> {
    match prepared {
        Some(statement) => client.query_one(statement, params).await,
        None => {
            let typed: Vec<(&(dyn ToSql + Sync), Type)> =
                params.iter().zip(types).map(|(p, t)| (*p, t.clone())).collect();
            client.query_typed_one(sql, &typed).await
        }
    }
}

/// Whether `batch` was applied by `consumer` (or its sub-consumer
/// `subconsumer`) in the remote database. Call it in the remote transaction
/// that will apply the batch: it locks the (sub)consumer's record until that
/// transaction ends.
pub async fn state(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
    batch: &BatchTicks,
) -> Result<BatchState> {
    state_with(client, None, queue, consumer, subconsumer, batch).await
}

async fn state_with(
    client: &impl GenericClient,
    prepared: Option<&Prepared>,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
    batch: &BatchTicks,
) -> Result<BatchState> {
    const F: &str = "pgq_consumer.applied_batch_state";
    let row = run_one(
        client,
        prepared.map(|p| &p.state),
        STATE,
        &STATE_TYPES,
        &[
            &queue,
            &consumer,
            &subconsumer,
            &batch.prev_tick_id,
            &batch.cur_tick_id,
            &batch.cur_tick_time,
        ],
    )
    .await
    .map_err(sql_error(F, queue, consumer, subconsumer))?;
    let state: String = row.try_get("state").map_err(Error::row(F))?;
    match state.as_str() {
        "new" => Ok(BatchState::New),
        "applied" => Ok(BatchState::Applied),
        "partial" => Ok(BatchState::Partial),
        _ => Ok(BatchState::Inconsistent),
    }
}

/// [`state`] as a yes or no: `true` for [`BatchState::Applied`], `false` for
/// [`BatchState::New`], and an error for the states that need an operator
/// ([`Error::BatchPartlyApplied`], [`Error::TrackingInconsistent`]).
pub async fn is_applied(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
    batch: &BatchTicks,
) -> Result<bool> {
    is_applied_with(client, None, queue, consumer, subconsumer, batch).await
}

/// [`is_applied`], by the statement `prepared` when given.
pub(crate) async fn is_applied_with(
    client: &impl GenericClient,
    prepared: Option<&Prepared>,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
    batch: &BatchTicks,
) -> Result<bool> {
    match state_with(client, prepared, queue, consumer, subconsumer, batch).await? {
        BatchState::New => Ok(false),
        BatchState::Applied => Ok(true),
        BatchState::Partial => {
            let applied_tick_id = last_applied(client, queue, consumer, subconsumer)
                .await?
                .map_or(batch.prev_tick_id, |a| a.tick_id);
            Err(Error::BatchPartlyApplied {
                queue: queue.to_owned(),
                consumer: consumer.to_owned(),
                batch_id: batch.batch_id,
                prev_tick_id: batch.prev_tick_id,
                tick_id: batch.cur_tick_id,
                applied_tick_id,
            })
        }
        BatchState::Inconsistent => Err(Error::TrackingInconsistent {
            queue: queue.to_owned(),
            consumer: consumer.to_owned(),
            batch_id: batch.batch_id,
            prev_tick_id: batch.prev_tick_id,
            tick_id: batch.cur_tick_id,
        }),
    }
}

/// Records `batch` as applied by `consumer` (or its sub-consumer
/// `subconsumer`). Call it in the remote transaction that applies the batch,
/// before committing it. A plain consumer's record never moves back: a batch
/// ending before the recorded one is an error. A cooperative group records
/// each batch once: when another sub-consumer recorded it (it took the batch
/// over from this one), [`Error::BatchAppliedByOther`], and the transaction
/// must roll back.
pub async fn record(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
    batch: &BatchTicks,
) -> Result<()> {
    record_with(client, None, queue, consumer, subconsumer, batch).await
}

/// [`record`], by the statement `prepared` when given.
pub(crate) async fn record_with(
    client: &impl GenericClient,
    prepared: Option<&Prepared>,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
    batch: &BatchTicks,
) -> Result<()> {
    const F: &str = "pgq_consumer.record_applied_batch";
    run_one(
        client,
        prepared.map(|p| &p.record),
        RECORD,
        &RECORD_TYPES,
        &[
            &queue,
            &consumer,
            &subconsumer,
            &batch.batch_id,
            &batch.prev_tick_id,
            &batch.cur_tick_id,
            &batch.cur_tick_time,
        ],
    )
    .await
    .map_err(|source| match subconsumer {
        Some(sub) if source.code() == Some(&SqlState::UNIQUE_VIOLATION) => Error::BatchAppliedByOther {
            queue: queue.to_owned(),
            consumer: consumer.to_owned(),
            subconsumer: sub.to_owned(),
            batch_id: batch.batch_id,
            source,
        },
        _ => sql_error(F, queue, consumer, subconsumer)(source),
    })?;
    Ok(())
}

/// Drops the records of the cooperative group `consumer` of batches ending
/// at or before `finished_tick`, which the queue database reports as
/// finished ([`crate::coop::group_finished_tick`]); returns how many went.
/// A group records each batch it applies once, so that a batch taken over
/// from a stalled sub-consumer cannot be applied twice; once finished, a
/// batch is not delivered again and its record is of no more use.
pub async fn prune_group(client: &impl GenericClient, queue: &str, consumer: &str, finished_tick: i64) -> Result<u64> {
    const F: &str = "pgq_consumer.prune_applied_group_batches";
    let row = client
        .query_one(
            "select pgq_consumer.prune_applied_group_batches($1, $2, $3) as n",
            &[&queue, &consumer, &finished_tick],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    let n: i64 = row.try_get("n").map_err(Error::row(F))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Forgets every batch `consumer` and its sub-consumers recorded on `queue`
/// (after the queue was created again, or the consumer repositioned on
/// purpose); returns how many records were dropped.
pub async fn forget(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<u64> {
    const F: &str = "pgq_consumer.forget_applied_batches";
    let none: Option<&str> = None;
    let row = client
        .query_one(
            "select pgq_consumer.forget_applied_batches($1, $2, $3) as n",
            &[&queue, &consumer, &none],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    let n: i64 = row.try_get("n").map_err(Error::row(F))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// What the first attempt at a remotely applied batch did with one of its
/// events in the queue database: kept in the remote database with the batch
/// ([`record_outcomes`], in the remote transaction), because the queue
/// transaction that held it may be lost in a crash between the two commits.
/// A replay of the batch then stores and retries these events again
/// ([`applied_outcomes`]) instead of losing them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppliedOutcome {
    /// The event was stored as failed, with this reason.
    Failed {
        /// The event.
        ev_id: i64,
        /// The reason it failed.
        reason: String,
    },
    /// The event was set to be retried (`pgq.event_retry`) after this many
    /// seconds.
    Retry {
        /// The event.
        ev_id: i64,
        /// The delay, in seconds.
        seconds: i32,
    },
}

impl AppliedOutcome {
    /// The event this outcome is about.
    pub fn ev_id(&self) -> i64 {
        match self {
            AppliedOutcome::Failed { ev_id, .. } | AppliedOutcome::Retry { ev_id, .. } => *ev_id,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            AppliedOutcome::Failed { ev_id, reason } => serde_json::json!({ "ev_id": ev_id, "failed": reason }),
            AppliedOutcome::Retry { ev_id, seconds } => {
                serde_json::json!({ "ev_id": ev_id, "retry_seconds": seconds })
            }
        }
    }

    fn from_json(v: &serde_json::Value) -> Option<AppliedOutcome> {
        let ev_id = v.get("ev_id")?.as_i64()?;
        if let Some(reason) = v.get("failed").and_then(serde_json::Value::as_str) {
            return Some(AppliedOutcome::Failed {
                ev_id,
                reason: reason.to_owned(),
            });
        }
        let seconds = v.get("retry_seconds")?.as_i64()?;
        Some(AppliedOutcome::Retry {
            ev_id,
            seconds: i32::try_from(seconds).ok()?,
        })
    }
}

/// Keeps the queue-side outcomes of `batch_id`, which `consumer` (or its
/// sub-consumer) recorded with [`record`] in this remote transaction
/// (`pgq_consumer.set_applied_outcomes`). Needs schema version 3 in the
/// remote database.
pub async fn record_outcomes(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
    batch_id: i64,
    outcomes: &[AppliedOutcome],
) -> Result<()> {
    const F: &str = "pgq_consumer.set_applied_outcomes";
    let events = serde_json::Value::Array(outcomes.iter().map(AppliedOutcome::to_json).collect());
    // Typed: parsed, bound and run in one round trip, sent when first
    // polled (the batch loop sends the remote COMMIT right behind it).
    client
        .execute_typed(
            "select pgq_consumer.set_applied_outcomes($1, $2, $3, $4, $5)",
            &[
                (&queue, Type::TEXT),
                (&consumer, Type::TEXT),
                (&subconsumer, Type::TEXT),
                (&batch_id, Type::INT8),
                (&events, Type::JSONB),
            ],
        )
        .await
        .map_err(sql_error(F, queue, consumer, subconsumer))?;
    Ok(())
}

/// The queue-side outcomes kept for the applied batch covering `batch`'s
/// ticks (`pgq_consumer.applied_outcomes`); empty when none were kept. For
/// a plain consumer these are the outcomes of its last recorded batch, which
/// may reach past `batch` when the replay is cut shorter: keep those of
/// events in `batch`.
pub async fn applied_outcomes(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: Option<&str>,
    batch: &BatchTicks,
) -> Result<Vec<AppliedOutcome>> {
    const F: &str = "pgq_consumer.applied_outcomes";
    let row = client
        .query_one(
            "select pgq_consumer.applied_outcomes($1, $2, $3, $4, $5) as outcomes",
            &[&queue, &consumer, &subconsumer, &batch.prev_tick_id, &batch.cur_tick_id],
        )
        .await
        .map_err(sql_error(F, queue, consumer, subconsumer))?;
    let events: serde_json::Value = row.try_get("outcomes").map_err(Error::row(F))?;
    let items = events.as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|v| {
            let outcome = AppliedOutcome::from_json(v);
            if outcome.is_none() {
                log::warn!("{F}: ignoring an outcome that is not one: {v}");
            }
            outcome
        })
        .collect())
}
