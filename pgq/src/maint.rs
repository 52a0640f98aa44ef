//! Ticking and maintenance: what `pgqd` does, callable from Rust.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::call::{map_rows, rows, scalar};
use crate::error::{on_queue, Error, Result};
use crate::ident::quote_qualified;
use crate::interval::Interval;

/// Ticks every queue that is due (`pgq.ticker(0)`), skipping paused queues
/// and queues with an external ticker. Returns how many queues were ticked.
pub async fn ticker(client: &impl GenericClient) -> Result<i64> {
    scalar(client, "pgq.ticker", String::new(), "select pgq.ticker()", &[]).await
}

/// Ticks one queue if a tick is due (`pgq.ticker(1)`): events are waiting and
/// `ticker_max_count` or `ticker_max_lag` is reached, or `ticker_idle_period`
/// has passed. Returns the new tick's id, `None` when no tick was due.
pub async fn ticker_queue(client: &impl GenericClient, queue: &str) -> Result<Option<i64>> {
    scalar(
        client,
        "pgq.ticker",
        on_queue(queue),
        "select pgq.ticker($1)",
        &[&queue],
    )
    .await
}

/// Inserts a given tick into a queue whose ticks come from elsewhere
/// (`pgq.ticker(4)`, for queues with `external_ticker`). Returns the tick id.
pub async fn ticker_external(
    client: &impl GenericClient,
    queue: &str,
    tick_id: i64,
    orig_timestamp: DateTime<Utc>,
    event_seq: i64,
) -> Result<Option<i64>> {
    scalar(
        client,
        "pgq.ticker",
        on_queue(queue),
        "select pgq.ticker($1, $2, $3, $4)",
        &[&queue, &tick_id, &orig_timestamp, &event_seq],
    )
    .await
}

/// Makes the next [`ticker`] call tick this queue whatever its thresholds
/// (`pgq.force_tick`). Returns the queue's last tick id, `None` when there is
/// no such queue (PgQ raises no error for that). On a paused queue or one
/// with an external ticker it changes nothing.
pub async fn force_tick(client: &impl GenericClient, queue: &str) -> Result<Option<i64>> {
    scalar(
        client,
        "pgq.force_tick",
        on_queue(queue),
        "select pgq.force_tick($1)",
        &[&queue],
    )
    .await
}

/// Moves retried events whose time has come back into their queues
/// (`pgq.maint_retry_events`). Returns how many were moved; call again while
/// it returns a non-zero count.
pub async fn maint_retry_events(client: &impl GenericClient) -> Result<i32> {
    scalar(
        client,
        "pgq.maint_retry_events",
        String::new(),
        "select pgq.maint_retry_events()",
        &[],
    )
    .await
}

/// First step of rotating a queue's event tables (`pgq.maint_rotate_tables_step1`).
pub async fn maint_rotate_tables_step1(client: &impl GenericClient, queue: &str) -> Result<i32> {
    scalar(
        client,
        "pgq.maint_rotate_tables_step1",
        on_queue(queue),
        "select pgq.maint_rotate_tables_step1($1)",
        &[&queue],
    )
    .await
}

/// Second step of rotating event tables, in its own transaction after step
/// one (`pgq.maint_rotate_tables_step2`).
pub async fn maint_rotate_tables_step2(client: &impl GenericClient) -> Result<i32> {
    scalar(
        client,
        "pgq.maint_rotate_tables_step2",
        String::new(),
        "select pgq.maint_rotate_tables_step2()",
        &[],
    )
    .await
}

/// PgQ's tables that want vacuuming (`pgq.maint_tables_to_vacuum`).
pub async fn maint_tables_to_vacuum(client: &impl GenericClient) -> Result<Vec<String>> {
    map_rows(
        client,
        "pgq.maint_tables_to_vacuum",
        String::new(),
        "select * from pgq.maint_tables_to_vacuum()",
        &[],
        |r| r.try_get(0),
    )
    .await
}

/// One maintenance step, a row of `pgq.maint_operations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintOperation {
    /// The function to call, e.g. `pgq.maint_rotate_tables_step1`, or `vacuum`.
    pub func_name: String,
    /// Its argument (a queue or table name), if it takes one.
    pub func_arg: Option<String>,
}

/// The maintenance steps due now (`pgq.maint_operations`). Run each with
/// [`run_maint_operation`], each in its own transaction, as `pgqd` does.
pub async fn maint_operations(client: &impl GenericClient) -> Result<Vec<MaintOperation>> {
    map_rows(
        client,
        "pgq.maint_operations",
        String::new(),
        "select func_name, func_arg from pgq.maint_operations()",
        &[],
        |r| {
            Ok(MaintOperation {
                func_name: r.try_get(0)?,
                func_arg: r.try_get(1)?,
            })
        },
    )
    .await
}

/// Runs one maintenance step. For a function, returns `true` when it asks to
/// be called again at once. `vacuum` steps must run outside a transaction
/// (pass a plain client); they return `false`.
pub async fn run_maint_operation(client: &impl GenericClient, op: &MaintOperation) -> Result<bool> {
    if op.func_name.eq_ignore_ascii_case("vacuum") {
        let table = op.func_arg.as_deref().ok_or_else(|| Error::InvalidArgument {
            what: "maintenance step",
            problem: "vacuum without a table".into(),
        })?;
        let sql = format!("vacuum {}", quote_qualified(table)?);
        client
            .batch_execute(&sql)
            .await
            .map_err(Error::sql("vacuum", format!("table {table:?}")))?;
        return Ok(false);
    }
    let function = quote_qualified(&op.func_name)?;
    let context = format!("maintenance step {}", op.func_name);
    let rows = match &op.func_arg {
        Some(arg) => {
            rows(
                client,
                "maintenance step",
                &context,
                &format!("select {function}($1)"),
                &[arg],
            )
            .await?
        }
        None => {
            rows(
                client,
                "maintenance step",
                &context,
                &format!("select {function}()"),
                &[],
            )
            .await?
        }
    };
    let again = match rows.first() {
        Some(r) => r
            .try_get::<_, Option<i32>>(0)
            .map_err(Error::row("maintenance step", context))?
            .unwrap_or(0),
        None => 0,
    };
    Ok(again == 1)
}

/// The tick found by [`find_tick_helper`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTick {
    /// Tick id.
    pub next_tick_id: i64,
    /// Tick time.
    pub next_tick_time: DateTime<Utc>,
    /// Event sequence at the tick.
    pub next_tick_seq: i64,
}

/// The tick search `next_batch_custom` uses (`pgq.find_tick_helper`): a tick
/// after `prev_tick_id` that ends a batch of at least `min_count` events or
/// `min_interval` time. The queue's latest tick when it is within twice the
/// limits, otherwise the first tick that satisfies them; `None` when no tick
/// does yet.
#[allow(clippy::too_many_arguments)]
pub async fn find_tick_helper(
    client: &impl GenericClient,
    queue_id: i32,
    prev_tick_id: i64,
    prev_tick_time: DateTime<Utc>,
    prev_tick_seq: i64,
    min_count: Option<i64>,
    min_interval: Option<Interval>,
) -> Result<Option<FoundTick>> {
    let context = format!("queue id {queue_id}, tick {prev_tick_id}");
    let found = map_rows(
        client,
        "pgq.find_tick_helper",
        context,
        "select * from pgq.find_tick_helper($1, $2, $3, $4, $5, $6)",
        &[
            &queue_id,
            &prev_tick_id,
            &prev_tick_time,
            &prev_tick_seq,
            &min_count,
            &min_interval,
        ],
        |r| {
            let Some(next_tick_id) = r.try_get::<_, Option<i64>>("next_tick_id")? else {
                return Ok(None);
            };
            Ok(Some(FoundTick {
                next_tick_id,
                next_tick_time: r.try_get("next_tick_time")?,
                next_tick_seq: r.try_get("next_tick_seq")?,
            }))
        },
    )
    .await?;
    Ok(found.into_iter().flatten().next())
}
