//! The commands other than `serve`: each reads or changes the database and
//! prints a table (or JSON with `--json`).

use pgq_consumers::failed::{self, FailedEvent, Filter};
use pgq_consumers::pgq_daemon::outln;
use serde_json::json;
use tokio_postgres::Client;

use crate::cli::Command;
use crate::failure::Usage;
use crate::format;
use crate::snapshot::{self, Consumer, Queue, Snapshot};
use crate::table::{Align, Table};

/// Runs a command on `db`.
pub async fn run(db: &Client, command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Status => {
            let s = snapshot::read(db).await?;
            if json {
                print_json(&serde_json::to_value(&s)?);
            } else {
                out(&status_text(&s));
            }
        }
        Command::Queues => {
            let s = snapshot::read(db).await?;
            if json {
                print_json(&serde_json::to_value(&s.queues)?);
            } else {
                out(&queues_table(&s.queues).render());
            }
        }
        Command::Consumers { queue } => {
            let s = snapshot::read(db).await?;
            if let Some(q) = &queue {
                if !s.queues.iter().any(|x| &x.name == q) {
                    return Err(no_queue(q, &s));
                }
            }
            let list: Vec<&Consumer> = s
                .consumers
                .iter()
                .filter(|c| queue.as_ref().is_none_or(|q| &c.queue == q))
                .collect();
            if json {
                print_json(&serde_json::to_value(&list)?);
            } else {
                out(&consumers_table(&list).render());
            }
        }
        Command::Failed {
            queue,
            consumer,
            ev_type,
            grep,
            limit,
            offset,
        } => {
            require_framework(db).await?;
            let mut filter = Filter::new();
            if let Some(t) = ev_type {
                filter = filter.with_type(t);
            }
            if let Some(g) = grep {
                filter = filter.with_text(g);
            }
            let events = failed::list_matching(db, &queue, &consumer, &filter, limit, offset).await?;
            if events.is_empty() {
                // A mistyped name finds nothing too: say so rather than
                // "no failed events". (Events of a consumer since unregistered
                // are still listed.)
                require_consumer(db, &queue, &consumer).await?;
            }
            if json {
                print_json(&serde_json::Value::Array(
                    events.iter().map(FailedEvent::to_json).collect(),
                ));
            } else if events.is_empty() {
                outln!("no failed events for consumer {consumer:?} on queue {queue:?}");
            } else {
                out(&failed_table(&events).render());
            }
        }
        Command::Retry { queue, consumer, ids } => {
            require_framework(db).await?;
            let ids = selection(&ids)?;
            let n = match &ids {
                None => failed::retry_all(db, &queue, &consumer).await?,
                Some(ids) => failed::retry(db, &queue, &consumer, ids).await?,
            };
            if n == 0 {
                // A mistyped name finds nothing too.
                require_consumer(db, &queue, &consumer).await?;
            }
            report(
                json,
                "retried",
                n,
                &format!("{n} failed event(s) put back into queue {queue:?} for consumer {consumer:?}"),
            );
            missing_ids(ids.as_deref(), n)?;
        }
        Command::Delete { queue, consumer, ids } => {
            require_framework(db).await?;
            let ids = selection(&ids)?;
            let n = match &ids {
                None => failed::delete_all(db, &queue, &consumer).await?,
                Some(ids) => failed::delete(db, &queue, &consumer, ids).await?,
            };
            if n == 0 {
                require_consumer(db, &queue, &consumer).await?;
            }
            report(json, "deleted", n, &format!("{n} failed event(s) deleted"));
            missing_ids(ids.as_deref(), n)?;
        }
        Command::Tick { queue } => {
            snapshot::require_pgq(db).await?;
            let tick = tick(db, &queue).await?;
            if json {
                print_json(&json!({ "queue": queue, "tick_id": tick }));
            } else {
                outln!("queue {queue:?} ticked: tick {tick}");
            }
        }
        Command::Config { queue, key, value } => config(db, &queue, key, value, json).await?,
        Command::Serve(_) => return Err(Usage("serve is not a database command".into()).into()),
    }
    Ok(())
}

/// Ticks `queue` at once (`pgq.ticker` needs pgq_admin).
pub async fn tick(db: &Client, queue: &str) -> anyhow::Result<i64> {
    let Some(info) = pgq::get_queue_info(db, queue).await? else {
        return Err(Usage(format!("there is no queue {queue:?} (see `pgq-admin queues`)")).into());
    };
    if info.queue_ticker_paused || info.queue_external_ticker {
        return Err(Usage(format!(
            "queue {queue:?} is not ticked here: {} (see `pgq-admin config {queue}`)",
            if info.queue_ticker_paused {
                "its ticking is paused (ticker_paused)"
            } else {
                "its ticks come from elsewhere (external_ticker)"
            }
        ))
        .into());
    }
    // pgq.ticker(queue) ticks only when a tick is due; pgq.force_tick makes
    // one due by advancing the event sequence past ticker_max_count, so, as
    // with PgQ's own tools, the pending-event estimates of consumers that do
    // not read the tick's batch grow by that much.
    db.batch_execute("begin").await?;
    let done = async {
        pgq::force_tick(db, queue).await?;
        let tick = pgq::ticker_queue(db, queue).await?;
        db.batch_execute("commit").await?;
        anyhow::Ok(tick)
    }
    .await;
    match done {
        Ok(Some(tick)) => Ok(tick),
        Ok(None) => Err(anyhow::anyhow!("PgQ made no tick for queue {queue:?}")),
        Err(e) => {
            let _ = db.batch_execute("rollback").await;
            Err(e)
        }
    }
}

/// PgQ's queue settings: the key `pgq.set_queue_config` takes, and what it means.
pub const SETTINGS: &[(&str, &str)] = &[
    ("ticker_max_count", "a tick is due once this many events wait (integer)"),
    (
        "ticker_max_lag",
        "a tick is due once events have waited this long (interval)",
    ),
    (
        "ticker_idle_period",
        "a tick is due after this long even without events (interval)",
    ),
    ("ticker_paused", "no ticks at all while true (boolean)"),
    ("rotation_period", "how often the event tables rotate (interval)"),
    (
        "external_ticker",
        "ticks come from elsewhere, e.g. a replica's provider (boolean)",
    ),
];

async fn config(
    db: &Client,
    queue: &str,
    key: Option<String>,
    value: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    snapshot::require_pgq(db).await?;
    let Some(before) = pgq::get_queue_info(db, queue).await? else {
        return Err(Usage(format!("there is no queue {queue:?} (see `pgq-admin queues`)")).into());
    };
    match (key, value) {
        (None, _) => {
            let values = setting_values(&before);
            if json {
                let map: serde_json::Map<String, serde_json::Value> = values
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), serde_json::Value::String(v.clone())))
                    .collect();
                print_json(&serde_json::Value::Object(map));
            } else {
                let mut t = Table::new(&[("KEY", Align::Left), ("VALUE", Align::Left), ("MEANING", Align::Left)]);
                for ((k, v), (_, meaning)) in values.iter().zip(SETTINGS) {
                    t.row(vec![(*k).to_string(), v.clone(), (*meaning).to_string()]);
                }
                out(&t.render());
            }
            Ok(())
        }
        (Some(key), None) => Err(Usage(format!(
            "give {key}'s new value: `pgq-admin config {queue} {key} VALUE`"
        ))
        .into()),
        (Some(key), Some(value)) => {
            let key = key.strip_prefix("queue_").unwrap_or(&key).to_string();
            if !SETTINGS.iter().any(|(k, _)| *k == key) {
                return Err(Usage(format!(
                    "{key:?} is not a PgQ queue setting; the settings are {}",
                    SETTINGS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                ))
                .into());
            }
            pgq::set_queue_config(db, queue, &key, &value).await?;
            let after = pgq::get_queue_info(db, queue).await?.unwrap_or(before);
            let now = setting_values(&after)
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v)
                .unwrap_or(value);
            if json {
                print_json(&json!({ "queue": queue, "key": key, "value": now }));
            } else {
                outln!("queue {queue:?}: {key} = {now}");
            }
            Ok(())
        }
    }
}

fn setting_values(q: &pgq::QueueInfo) -> Vec<(&'static str, String)> {
    let iv = |i: pgq::Interval| format::secs(Some(i.as_duration().as_secs_f64()));
    vec![
        ("ticker_max_count", q.queue_ticker_max_count.to_string()),
        ("ticker_max_lag", iv(q.queue_ticker_max_lag)),
        ("ticker_idle_period", iv(q.queue_ticker_idle_period)),
        ("ticker_paused", q.queue_ticker_paused.to_string()),
        ("rotation_period", iv(q.queue_rotation_period)),
        ("external_ticker", q.queue_external_ticker.to_string()),
    ]
}

fn report(json: bool, what: &str, n: u64, text: &str) {
    if json {
        print_json(&json!({ what: n }));
    } else {
        outln!("{text}");
    }
}

/// `None` for `all`, else the ids; a word that is neither is a usage error.
pub fn selection(words: &[String]) -> anyhow::Result<Option<Vec<i64>>> {
    let mut ids = Vec::with_capacity(words.len());
    for w in words {
        if w == "all" {
            if words.len() > 1 {
                return Err(Usage("give either `all` or event ids, not both".into()).into());
            }
            return Ok(None);
        }
        match w.parse::<i64>() {
            Ok(id) => ids.push(id),
            Err(_) => {
                return Err(Usage(format!(
                    "{w:?} is not an event id: give event ids (see `pgq-admin failed QUEUE CONSUMER`) or `all`"
                ))
                .into())
            }
        }
    }
    Ok(Some(ids))
}

fn missing_ids(ids: Option<&[i64]>, found: u64) -> anyhow::Result<()> {
    match ids {
        Some(ids) if ids.len() as u64 > found => Err(Usage(format!(
            "{} of the {} event id(s) given are not failed events of this consumer (see `pgq-admin failed`)",
            ids.len() as u64 - found,
            ids.len()
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Fails with a usage error naming what exists when `queue` does not, or
/// `consumer` is not registered on it.
async fn require_consumer(db: &Client, queue: &str, consumer: &str) -> anyhow::Result<()> {
    if pgq::get_queue_info(db, queue).await?.is_none() {
        return Err(Usage(format!("there is no queue {queue:?} (`pgq-admin queues` lists them)")).into());
    }
    let consumers = pgq::get_consumer_info_queue(db, queue).await?;
    if !consumers.iter().any(|c| c.consumer_name == consumer) {
        let names: Vec<&str> = consumers.iter().map(|c| c.consumer_name.as_str()).collect();
        return Err(Usage(format!(
            "consumer {consumer:?} is not registered on queue {queue:?} (and has no failed events there); its consumers \
             are: {}",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ))
        .into());
    }
    Ok(())
}

async fn require_framework(db: &Client) -> anyhow::Result<()> {
    let name = snapshot::require_pgq(db).await?;
    if pgq_consumers::schema::installed_version(db).await?.is_none() {
        return Err(Usage(format!(
            "database {name:?} has no failed events: the framework's schema pgq_consumer (which keeps them) is not \
             installed (a consumer's `install` installs it)"
        ))
        .into());
    }
    Ok(())
}

fn no_queue(q: &str, s: &Snapshot) -> anyhow::Error {
    Usage(format!(
        "there is no queue {q:?}; the queues are: {}",
        if s.queues.is_empty() {
            "none".to_string()
        } else {
            s.queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>().join(", ")
        }
    ))
    .into()
}

fn print_json(v: &serde_json::Value) {
    outln!("{v}");
}

/// `status`: queues, consumers, sub-consumers, who ticks.
pub fn status_text(s: &Snapshot) -> String {
    let mut out = format!("database: {}\n", s.database);
    out.push_str(&format!("ticking: {}\n", s.ticking.describe()));
    out.push_str(&format!(
        "framework schema: {}\n\n",
        s.framework_version
            .map(|v| format!("pgq_consumer version {v}"))
            .unwrap_or_else(|| "not installed (no failed events, no cooperative groups of ours)".into())
    ));
    out.push_str("queues\n");
    out.push_str(&queues_table(&s.queues).render());
    out.push_str("\nconsumers\n");
    let all: Vec<&Consumer> = s.consumers.iter().collect();
    out.push_str(&consumers_table(&all).render());
    let mut subs = Table::new(&[
        ("QUEUE", Align::Left),
        ("CONSUMER", Align::Left),
        ("SUBCONSUMER", Align::Left),
        ("BATCH", Align::Right),
        ("LAST SEEN", Align::Right),
        ("STATE", Align::Left),
    ]);
    for c in &s.consumers {
        for sub in &c.subconsumers {
            subs.row(vec![
                c.queue.clone(),
                c.name.clone(),
                sub.name.clone(),
                format::num(sub.batch),
                format::secs(sub.last_seen),
                if sub.handed_back {
                    "handed back".into()
                } else {
                    "registered".into()
                },
            ]);
        }
    }
    if !subs.is_empty() {
        out.push_str("\ncooperative sub-consumers\n");
        out.push_str(&subs.render());
    }
    out
}

fn queues_table(queues: &[Queue]) -> Table {
    let mut t = Table::new(&[
        ("QUEUE", Align::Left),
        ("EV/S", Align::Right),
        ("NEW", Align::Right),
        ("TICKER LAG", Align::Right),
        ("LAST TICK", Align::Right),
        ("ROTATION", Align::Right),
        ("TABLE", Align::Right),
        ("TABLES SIZE", Align::Right),
        ("TICKING", Align::Left),
    ]);
    for q in queues {
        t.row(vec![
            q.name.clone(),
            format::rate(q.ev_per_sec),
            format::num(q.ev_new),
            format::secs(q.ticker_lag),
            format::num(q.last_tick_id),
            format::secs(Some(q.rotation_period)),
            format!("{}/{}", q.cur_table, q.ntables),
            format::bytes(q.table_bytes),
            if q.ticker_paused {
                "paused".into()
            } else if q.external_ticker {
                "external".into()
            } else {
                "on".into()
            },
        ]);
    }
    t
}

fn consumers_table(consumers: &[&Consumer]) -> Table {
    let mut t = Table::new(&[
        ("QUEUE", Align::Left),
        ("CONSUMER", Align::Left),
        ("LAG", Align::Right),
        ("LAST SEEN", Align::Right),
        ("PENDING", Align::Right),
        ("BATCH", Align::Right),
        ("FAILED", Align::Right),
        ("SUBS", Align::Right),
        ("SESSIONS", Align::Right),
    ]);
    for c in consumers {
        t.row(vec![
            c.queue.clone(),
            c.name.clone(),
            format::secs(c.lag),
            format::secs(c.last_seen),
            format::num(c.pending_events),
            format::num(c.batch),
            format::num(c.failed),
            c.subconsumers.len().to_string(),
            c.sessions.to_string(),
        ]);
    }
    t
}

fn failed_table(events: &[FailedEvent]) -> Table {
    let mut t = Table::new(&[
        ("EV_ID", Align::Right),
        ("FAILED AT", Align::Left),
        ("RETRY", Align::Right),
        ("TYPE", Align::Left),
        ("DATA", Align::Left),
        ("REASON", Align::Left),
    ]);
    for f in events {
        t.row(vec![
            f.event.ev_id.to_string(),
            f.failed_time.format("%Y-%m-%d %H:%M:%S").to_string(),
            f.event.ev_retry.unwrap_or(0).to_string(),
            one_line(f.event.kind()),
            one_line(f.event.data()),
            one_line(&f.reason),
        ]);
    }
    t
}

/// Text on one line: control characters shown escaped, so a payload cannot
/// break the table or drive the terminal.
fn one_line(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Prints a block of lines (a table, a report) to standard output; a closed
/// output (`| head`) ends the command quietly, as `outln!` does.
fn out(text: &str) {
    if !text.is_empty() {
        outln!("{}", text.trim_end_matches('\n'));
    }
}
