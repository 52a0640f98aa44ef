//! The state of every queue and consumer of a database, read at once: what
//! `status`, `queues`, `consumers` and the console's pages show.
//!
//! PgQ's own functions (`pgq.get_queue_info`, `pgq.get_consumer_info`) give
//! the figures; the framework's (`pgq_consumer`, when installed) the failed
//! events and the cooperative groups. Consumers that are not ours (Skytools'
//! Python consumers, Londiste) are PgQ consumers like any: they show too,
//! without failed events. A few figures PgQ has no function for come from
//! its tables, which every role may read: the size of each queue's event
//! tables, how many events a queue has had (its event sequence) and how far
//! a consumer has read (the event sequence at its last tick).

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::failure::WrongState;
use crate::ticking::{self, Ticking};

/// Everything at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When it was read (the database's clock).
    pub taken_at: DateTime<Utc>,
    /// The database's name.
    pub database: String,
    /// The framework's schema version, `None` when `pgq_consumer` is not installed.
    pub framework_version: Option<i32>,
    /// Who ticks.
    pub ticking: Ticking,
    /// Every queue, by name.
    pub queues: Vec<Queue>,
    /// Every consumer (not the sub-consumers, which are in their group), by queue and name.
    pub consumers: Vec<Consumer>,
}

/// A queue.
#[derive(Debug, Clone, Serialize)]
pub struct Queue {
    /// Its name.
    pub name: String,
    /// Events per second over the last ticks (PgQ's estimate).
    pub ev_per_sec: Option<f64>,
    /// Events inserted since the last tick.
    pub ev_new: Option<i64>,
    /// Seconds since the last tick.
    pub ticker_lag: Option<f64>,
    /// The last tick's id.
    pub last_tick_id: Option<i64>,
    /// Seconds between rotations of the event tables.
    pub rotation_period: f64,
    /// The event table in use, `0..ntables`.
    pub cur_table: i32,
    /// How many event tables it rotates through.
    pub ntables: i32,
    /// The bytes of its event tables together (indexes included).
    pub table_bytes: Option<i64>,
    /// How many events it has had (its event sequence).
    pub events_total: Option<i64>,
    /// Whether ticking is paused.
    pub ticker_paused: bool,
    /// Whether its ticks come from elsewhere.
    pub external_ticker: bool,
    /// Events after which a tick is due.
    pub ticker_max_count: i32,
    /// Seconds after which a tick is due when events wait.
    pub ticker_max_lag: f64,
    /// Seconds after which a tick is due anyway.
    pub ticker_idle_period: f64,
}

/// A consumer (a plain one, or a cooperative group's).
#[derive(Debug, Clone, Serialize)]
pub struct Consumer {
    /// The queue.
    pub queue: String,
    /// Its name.
    pub name: String,
    /// Seconds between now and its last finished tick.
    pub lag: Option<f64>,
    /// Seconds since it last asked for or finished a batch.
    pub last_seen: Option<f64>,
    /// Events waiting for it.
    pub pending_events: Option<i64>,
    /// The batch it holds open.
    pub batch: Option<i64>,
    /// How many events it has read (the event sequence at its last tick).
    pub events_read: Option<i64>,
    /// Its failed events, `None` without the framework's schema.
    pub failed: Option<u64>,
    /// Sessions connected under its name (the framework's consumers name
    /// their connections after their consumer).
    pub sessions: i64,
    /// Its sub-consumers, when it is a cooperative group.
    pub subconsumers: Vec<Subconsumer>,
}

/// A sub-consumer of a cooperative group.
#[derive(Debug, Clone, Serialize)]
pub struct Subconsumer {
    /// Its name in the group.
    pub name: String,
    /// The batch it holds.
    pub batch: Option<i64>,
    /// Seconds since it was last seen, `None` when never or handed back.
    pub last_seen: Option<f64>,
    /// Whether its batch waits to be taken over (it was unregistered).
    pub handed_back: bool,
}

/// Per queue: the event sequence and the event tables' size.
const QUEUE_EXTRA: &str = "select q.queue_name, pgq.seq_getval(q.queue_event_seq) as events_total, \
       (select sum(pg_total_relation_size(to_regclass(q.queue_data_pfx || '_' || g)))::int8 \
          from generate_series(0, q.queue_ntables - 1) g) as table_bytes \
  from pgq.queue q";

/// Per consumer (sub-consumers too): the event sequence at its last tick.
const CONSUMER_READ: &str = "select q.queue_name, c.co_name, t.tick_event_seq \
  from pgq.subscription s \
  join pgq.queue q on q.queue_id = s.sub_queue \
  join pgq.consumer c on c.co_id = s.sub_consumer \
  left join pgq.tick t on t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick";

/// Sessions in this database by `application_name`.
const SESSIONS: &str = "select coalesce(application_name, '') as name, count(*) as n from pg_stat_activity \
  where datname = current_database() and pid <> pg_backend_pid() group by 1";

/// Fails with [`WrongState`] when the database has no PgQ.
pub async fn require_pgq(client: &impl GenericClient) -> anyhow::Result<String> {
    let row = client
        .query_one(
            "select current_database() as db, to_regnamespace('pgq') is not null \
                    and to_regprocedure('pgq.get_queue_info()') is not null as has_pgq",
            &[],
        )
        .await
        .context("checking for PgQ")?;
    let db: String = row.try_get("db")?;
    let has: bool = row.try_get("has_pgq")?;
    if !has {
        return Err(WrongState(format!(
            "database {db:?} has no PgQ: install it with `create extension pgq` (or connect to the database that has it)"
        ))
        .into());
    }
    Ok(db)
}

/// Reads everything.
pub async fn read(client: &impl GenericClient) -> anyhow::Result<Snapshot> {
    let database = require_pgq(client).await?;
    let taken_at: DateTime<Utc> = client.query_one("select now()", &[]).await?.try_get(0)?;
    let framework_version = pgq_consumers::schema::installed_version(client).await?;
    let ticking = ticking::read(client).await?;

    let mut extra: HashMap<String, (Option<i64>, Option<i64>)> = HashMap::new();
    for row in client
        .query(QUEUE_EXTRA, &[])
        .await
        .context("reading the queues' tables")?
    {
        extra.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
    }
    let mut queues: Vec<Queue> = pgq::get_queue_info_all(client)
        .await?
        .into_iter()
        .map(|q| {
            let (events_total, table_bytes) = extra.get(&q.queue_name).copied().unwrap_or((None, None));
            Queue {
                ev_per_sec: q.ev_per_sec,
                ev_new: q.ev_new,
                ticker_lag: q.ticker_lag.map(secs),
                last_tick_id: q.last_tick_id,
                rotation_period: secs(q.queue_rotation_period),
                cur_table: q.queue_cur_table,
                ntables: q.queue_ntables,
                table_bytes,
                events_total,
                ticker_paused: q.queue_ticker_paused,
                external_ticker: q.queue_external_ticker,
                ticker_max_count: q.queue_ticker_max_count,
                ticker_max_lag: secs(q.queue_ticker_max_lag),
                ticker_idle_period: secs(q.queue_ticker_idle_period),
                name: q.queue_name,
            }
        })
        .collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));

    let mut read_seq: HashMap<(String, String), Option<i64>> = HashMap::new();
    for row in client
        .query(CONSUMER_READ, &[])
        .await
        .context("reading the consumers' ticks")?
    {
        read_seq.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
    }
    let mut sessions: HashMap<String, i64> = HashMap::new();
    for row in client.query(SESSIONS, &[]).await.context("reading pg_stat_activity")? {
        sessions.insert(row.try_get(0)?, row.try_get(1)?);
    }

    let all = pgq::get_consumer_info_all(client).await?;
    // A sub-consumer is the PgQ consumer `group.sub` beside its group
    // `group`: each consumer's group, if it has one.
    let groups: Vec<Option<&str>> = all
        .iter()
        .map(|c| {
            let on_queue = all
                .iter()
                .filter(|o| o.queue_name == c.queue_name)
                .map(|o| o.consumer_name.as_str());
            pgq_consumers::coop::group_of(&c.consumer_name, on_queue)
        })
        .collect();
    let mut consumers = Vec::new();
    for c in all.iter().zip(&groups).filter(|(_, g)| g.is_none()).map(|(c, _)| c) {
        let groups_subs: Vec<&pgq::ConsumerInfo> = all
            .iter()
            .zip(&groups)
            .filter(|(s, g)| s.queue_name == c.queue_name && **g == Some(c.consumer_name.as_str()))
            .map(|(s, _)| s)
            .collect();
        let mut subconsumers = Vec::new();
        if !groups_subs.is_empty() {
            if framework_version.is_some() {
                for s in pgq_consumers::coop::info(client, &c.queue_name, &c.consumer_name).await? {
                    subconsumers.push(Subconsumer {
                        name: s.subconsumer.clone(),
                        batch: s.batch_id,
                        last_seen: s
                            .last_seen
                            .map(|t| (taken_at - t).num_milliseconds().max(0) as f64 / 1000.0),
                        handed_back: s.handed_back,
                    });
                }
            } else {
                for s in groups_subs {
                    subconsumers.push(Subconsumer {
                        name: s
                            .consumer_name
                            .get(c.consumer_name.len() + 1..)
                            .unwrap_or_default()
                            .to_string(),
                        batch: s.current_batch,
                        last_seen: s.last_seen.map(secs),
                        handed_back: false,
                    });
                }
            }
        }
        let failed = match framework_version {
            Some(_) => Some(pgq_consumers::failed::count(client, &c.queue_name, &c.consumer_name).await?),
            None => None,
        };
        let prefix = format!("{}.", c.consumer_name);
        let n_sessions = sessions
            .iter()
            .filter(|(name, _)| **name == c.consumer_name || name.starts_with(&prefix))
            .map(|(_, n)| n)
            .sum();
        consumers.push(Consumer {
            queue: c.queue_name.clone(),
            name: c.consumer_name.clone(),
            lag: c.lag.map(secs),
            last_seen: c.last_seen.map(secs),
            pending_events: c.pending_events,
            batch: c.current_batch,
            events_read: read_seq
                .get(&(c.queue_name.clone(), c.consumer_name.clone()))
                .copied()
                .flatten(),
            failed,
            sessions: n_sessions,
            subconsumers,
        });
    }
    consumers.sort_by(|a, b| (&a.queue, &a.name).cmp(&(&b.queue, &b.name)));
    Ok(Snapshot {
        taken_at,
        database,
        framework_version,
        ticking,
        queues,
        consumers,
    })
}

fn secs(i: pgq::Interval) -> f64 {
    i.as_duration().as_secs_f64()
}
