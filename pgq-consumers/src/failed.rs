//! The failed-event store: events a consumer gave up on, kept with the
//! reason, to be listed, deleted, or retried for that consumer only.
//!
//! PgQ 3 dropped the failed-event queue libphp-pgq used; the store is the
//! table `pgq_consumer.failed_event` and its functions (see
//! `sql/pgq_consumer/v1.sql`). Store an event from inside the batch's
//! transaction, so the event is stored exactly when the batch is finished.

use chrono::{DateTime, Utc};
use pgq::Event;
use tokio_postgres::{GenericClient, Row};

use crate::error::{Error, Result};

/// A stored failed event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedEvent {
    /// The event as it was delivered (`ev_retry` counts earlier retries).
    /// Text that is not UTF-8 (only an `SQL_ASCII` database holds such)
    /// shows with U+FFFD in place of the bytes that are not; the stored
    /// event keeps them, and `retry` puts them back as they were.
    pub event: Event,
    /// When it was stored.
    pub failed_time: DateTime<Utc>,
    /// Why the consumer gave up on it.
    pub reason: String,
}

impl FailedEvent {
    /// The event as JSON, with the field names of `failed --json` (the
    /// consumer commands' and `pgq-admin`'s): `ev_id`, `failed_time`,
    /// `ev_retry`, `ev_type`, `ev_data`, `ev_extra1`..`ev_extra4`, `ev_time`
    /// (times in RFC 3339), `reason`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ev_id": self.event.ev_id,
            "failed_time": self.failed_time.to_rfc3339(),
            "ev_retry": self.event.ev_retry,
            "ev_type": self.event.ev_type,
            "ev_data": self.event.ev_data,
            "ev_extra1": self.event.ev_extra1,
            "ev_extra2": self.event.ev_extra2,
            "ev_extra3": self.event.ev_extra3,
            "ev_extra4": self.event.ev_extra4,
            "ev_time": self.event.ev_time.to_rfc3339(),
            "reason": self.reason,
        })
    }

    /// Reads a row of [`LIST`]: the ten event columns in PgQ's order
    /// (`ev_id` .. `ev_extra4`, the text ones as bytes), then `failed_time`
    /// and `failed_reason` (bytes too).
    fn from_row(row: &Row) -> std::result::Result<FailedEvent, tokio_postgres::Error> {
        let text = |i: usize| -> std::result::Result<Option<String>, tokio_postgres::Error> {
            let bytes: Option<&[u8]> = row.try_get(i)?;
            Ok(bytes.map(|b| String::from_utf8_lossy(b).into_owned()))
        };
        Ok(FailedEvent {
            event: Event {
                ev_id: row.try_get(0)?,
                ev_time: row.try_get(1)?,
                ev_txid: row.try_get(2)?,
                ev_retry: row.try_get(3)?,
                ev_type: text(4)?,
                ev_data: text(5)?,
                ev_extra1: text(6)?,
                ev_extra2: text(7)?,
                ev_extra3: text(8)?,
                ev_extra4: text(9)?,
            },
            failed_time: row.try_get(10)?,
            reason: text(11)?.unwrap_or_default(),
        })
    }
}

/// The failed events of a consumer, their text as bytes: in a database
/// whose encoding is `SQL_ASCII`, an event whose bytes are not UTF-8 may be
/// stored (the batch loop stores such events as failed), and PostgreSQL
/// refuses to send them as text.
const LIST: &str = "select f.ev_id, f.ev_time, f.ev_txid, f.ev_retry, \
       convert_to(f.ev_type, 'SQL_ASCII'), convert_to(f.ev_data, 'SQL_ASCII'), \
       convert_to(f.ev_extra1, 'SQL_ASCII'), convert_to(f.ev_extra2, 'SQL_ASCII'), \
       convert_to(f.ev_extra3, 'SQL_ASCII'), convert_to(f.ev_extra4, 'SQL_ASCII'), \
       f.failed_time, convert_to(f.failed_reason, 'SQL_ASCII') \
     from pgq_consumer.failed_event_list($1, $2, $3, $4) f";

/// Stores `event` as failed for `consumer` on `queue`, with `reason`.
///
/// Call it with the batch's transaction, before finishing the batch. For a
/// cooperative group, pass the group's consumer, not the sub-consumer. An
/// event stored already is replaced (new reason and time).
pub async fn add(client: &impl GenericClient, queue: &str, consumer: &str, event: &Event, reason: &str) -> Result<()> {
    const F: &str = "pgq_consumer.failed_event_add";
    client
        .execute(
            "select pgq_consumer.failed_event_add($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &queue,
                &consumer,
                &event.ev_id,
                &event.ev_time,
                &event.ev_txid,
                &event.ev_retry,
                &event.ev_type,
                &event.ev_data,
                &event.ev_extra1,
                &event.ev_extra2,
                &event.ev_extra3,
                &event.ev_extra4,
                &reason,
            ],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    Ok(())
}

/// Stores event `ev_id` of the active batch `batch_id` as failed, for the
/// batch's consumer (the group's consumer when a sub-consumer holds the
/// batch). Reads the batch's events again to find it: prefer [`add`] when
/// the event is at hand.
///
/// [`Error::BatchNotActive`] when the batch is not active; an event that is
/// not in the batch is an [`Error::Batch`].
pub async fn add_from_batch(client: &impl GenericClient, batch_id: i64, ev_id: i64, reason: &str) -> Result<()> {
    const F: &str = "pgq_consumer.failed_event_add";
    client
        .execute(
            "select pgq_consumer.failed_event_add($1, $2, $3)",
            &[&batch_id, &ev_id, &reason],
        )
        .await
        .map_err(Error::batch(F, batch_id))?;
    Ok(())
}

/// All failed events of `consumer` on `queue`, in event id order.
pub async fn list(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<Vec<FailedEvent>> {
    list_page(client, queue, consumer, None, 0).await
}

/// Failed events of `consumer` on `queue` in event id order: `limit` of them
/// (`None`: all) after skipping `offset`.
pub async fn list_page(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    limit: Option<i64>,
    offset: i64,
) -> Result<Vec<FailedEvent>> {
    const F: &str = "pgq_consumer.failed_event_list";
    let rows = client
        .query(LIST, &[&queue, &consumer, &limit, &offset])
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    rows.iter()
        .map(|r| FailedEvent::from_row(r).map_err(Error::row(F)))
        .collect()
}

/// Which failed events [`list_matching`] and [`count_matching`] return:
/// all of them by default; [`Filter::with_type`] keeps those of one event
/// type, [`Filter::with_text`] those whose data, type, extra fields or
/// reason contain a text (case-sensitive, as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    ev_type: Option<String>,
    text: Option<String>,
}

impl Filter {
    /// Every failed event.
    pub fn new() -> Filter {
        Filter::default()
    }

    /// Only the events whose `ev_type` is `ev_type`.
    pub fn with_type(mut self, ev_type: impl Into<String>) -> Filter {
        self.ev_type = Some(ev_type.into());
        self
    }

    /// Only the events with `text` in their data, type, extra fields or reason.
    pub fn with_text(mut self, text: impl Into<String>) -> Filter {
        self.text = Some(text.into());
        self
    }

    /// The event type asked for, if any.
    pub fn ev_type(&self) -> Option<&str> {
        self.ev_type.as_deref()
    }

    /// The text asked for, if any.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }
}

/// The failed events of a consumer that match a [`Filter`], their text as
/// bytes (see [`LIST`]); `$3` the type or NULL, `$4` the text or NULL. Reads
/// the table, which `pgq_reader` may read.
const MATCHING: &str = "select f.ev_id, f.ev_time, f.ev_txid, f.ev_retry, \
       convert_to(f.ev_type, 'SQL_ASCII'), convert_to(f.ev_data, 'SQL_ASCII'), \
       convert_to(f.ev_extra1, 'SQL_ASCII'), convert_to(f.ev_extra2, 'SQL_ASCII'), \
       convert_to(f.ev_extra3, 'SQL_ASCII'), convert_to(f.ev_extra4, 'SQL_ASCII'), \
       f.failed_time, convert_to(f.failed_reason, 'SQL_ASCII') \
     from pgq_consumer.failed_event f \
    where f.queue_name = $1 and f.consumer_name = $2 \
      and ($3::text is null or f.ev_type = $3) \
      and ($4::text is null or strpos(concat_ws(chr(10), f.ev_type, f.ev_data, f.ev_extra1, f.ev_extra2, \
                                                f.ev_extra3, f.ev_extra4, f.failed_reason), $4) > 0) \
    order by f.ev_id limit $5 offset $6";

/// The failed events of `consumer` on `queue` that match `filter`, in event
/// id order: `limit` of them (`None`: all) after skipping `offset`.
pub async fn list_matching(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    filter: &Filter,
    limit: Option<i64>,
    offset: i64,
) -> Result<Vec<FailedEvent>> {
    const F: &str = "pgq_consumer.failed_event";
    let rows = client
        .query(
            MATCHING,
            &[&queue, &consumer, &filter.ev_type, &filter.text, &limit, &offset],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    rows.iter()
        .map(|r| FailedEvent::from_row(r).map_err(Error::row(F)))
        .collect()
}

/// How many failed events of `consumer` on `queue` match `filter`.
pub async fn count_matching(client: &impl GenericClient, queue: &str, consumer: &str, filter: &Filter) -> Result<u64> {
    const F: &str = "pgq_consumer.failed_event";
    let row = client
        .query_one(
            "select count(*) as n from pgq_consumer.failed_event f \
              where f.queue_name = $1 and f.consumer_name = $2 \
                and ($3::text is null or f.ev_type = $3) \
                and ($4::text is null or strpos(concat_ws(chr(10), f.ev_type, f.ev_data, f.ev_extra1, \
                                                          f.ev_extra2, f.ev_extra3, f.ev_extra4, \
                                                          f.failed_reason), $4) > 0)",
            &[&queue, &consumer, &filter.ev_type, &filter.text],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    let n: i64 = row.try_get("n").map_err(Error::row(F))?;
    Ok(non_negative(n))
}

/// How many failed events `consumer` has on `queue`.
pub async fn count(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<u64> {
    const F: &str = "pgq_consumer.failed_event_count";
    let row = client
        .query_one(
            "select pgq_consumer.failed_event_count($1, $2) as n",
            &[&queue, &consumer],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    let n: i64 = row.try_get("n").map_err(Error::row(F))?;
    Ok(non_negative(n))
}

/// Drops the failed events `ids` of `consumer` on `queue` for good, and
/// returns how many of them were stored (ids that are not are skipped).
pub async fn delete(client: &impl GenericClient, queue: &str, consumer: &str, ids: &[i64]) -> Result<u64> {
    const F: &str = "pgq_consumer.failed_event_delete";
    let row = client
        .query_one(
            "select coalesce(sum(pgq_consumer.failed_event_delete($1, $2, id)), 0)::bigint as n \
               from unnest($3::bigint[]) as id",
            &[&queue, &consumer, &ids],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    let n: i64 = row.try_get("n").map_err(Error::row(F))?;
    Ok(non_negative(n))
}

/// Drops all failed events of `consumer` on `queue` for good, and returns how
/// many there were.
pub async fn delete_all(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<u64> {
    const F: &str = "pgq_consumer.failed_event_delete_all";
    let row = client
        .query_one(
            "select pgq_consumer.failed_event_delete_all($1, $2) as n",
            &[&queue, &consumer],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    let n: i64 = row.try_get("n").map_err(Error::row(F))?;
    Ok(non_negative(n))
}

/// Takes the failed events `ids` out of the store and puts them back into
/// `queue` for `consumer` only (`pgq.event_retry_raw`, `ev_retry` one
/// higher), due now; returns how many of them were stored.
///
/// They are delivered again once the ticker's `pgq.maint_retry_events()` has
/// moved them back and the next tick came. Other consumers of the queue do
/// not see them again. The consumer must be registered
/// ([`Error::NotRegistered`]).
pub async fn retry(client: &impl GenericClient, queue: &str, consumer: &str, ids: &[i64]) -> Result<u64> {
    retry_ids(client, queue, consumer, ids, None).await
}

/// [`retry`], due at `at` instead of now.
pub async fn retry_at(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<u64> {
    retry_ids(client, queue, consumer, ids, Some(at)).await
}

async fn retry_ids(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    ids: &[i64],
    at: Option<DateTime<Utc>>,
) -> Result<u64> {
    const F: &str = "pgq_consumer.failed_event_retry";
    let row = client
        .query_one(
            "select coalesce(sum(pgq_consumer.failed_event_retry($1, $2, id, $4)), 0)::bigint as n \
               from unnest($3::bigint[]) as id",
            &[&queue, &consumer, &ids, &at],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    let n: i64 = row.try_get("n").map_err(Error::row(F))?;
    Ok(non_negative(n))
}

/// Puts all failed events of `consumer` on `queue` back into the queue for
/// this consumer only, due now (see [`retry`]); returns how many.
pub async fn retry_all(client: &impl GenericClient, queue: &str, consumer: &str) -> Result<u64> {
    retry_all_inner(client, queue, consumer, None).await
}

/// [`retry_all`], due at `at` instead of now.
pub async fn retry_all_at(client: &impl GenericClient, queue: &str, consumer: &str, at: DateTime<Utc>) -> Result<u64> {
    retry_all_inner(client, queue, consumer, Some(at)).await
}

async fn retry_all_inner(
    client: &impl GenericClient,
    queue: &str,
    consumer: &str,
    at: Option<DateTime<Utc>>,
) -> Result<u64> {
    const F: &str = "pgq_consumer.failed_event_retry_all";
    let row = client
        .query_one(
            "select pgq_consumer.failed_event_retry_all($1, $2, $3) as n",
            &[&queue, &consumer, &at],
        )
        .await
        .map_err(Error::consumer(F, queue, consumer))?;
    let n: i64 = row.try_get("n").map_err(Error::row(F))?;
    Ok(non_negative(n))
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
