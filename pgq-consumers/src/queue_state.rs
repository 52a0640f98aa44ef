//! Where a consumer stands in its queue, read from PgQ in one go: what
//! `status` prints (as lines or as JSON) and what the metrics' gauges show.

use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::config::Config;
use crate::error::Result;
use crate::failed;

/// A consumer's position in its queue. The field names are those of
/// `status --json`, and stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct QueueState {
    /// The queue.
    pub queue: String,
    /// The consumer.
    pub consumer: String,
    /// The sub-consumer, for a cooperative one.
    pub subconsumer: Option<String>,
    /// Whether the queue exists.
    pub queue_exists: bool,
    /// Seconds since the queue's last tick (`None`: no tick yet, or no queue).
    pub last_tick_seconds: Option<f64>,
    /// Seconds after which the next tick was due.
    pub tick_due_seconds: Option<f64>,
    /// Whether a tick is overdue (no ticker ticks the database).
    pub tick_overdue: bool,
    /// Whether ticking is paused for the queue.
    pub ticker_paused: bool,
    /// Events in the queue not yet in a batch, when waiting made the tick due.
    pub events_waiting: bool,
    /// The embedded ticker's leader, when `[ticker]` is enabled (`None`: no
    /// process leads, or no embedded ticker: see `ticker_enabled`).
    pub ticker_enabled: bool,
    /// The session leading the ticking of the database, when one does.
    pub ticker_leader: Option<Leader>,
    /// Whether the consumer is registered on the queue.
    pub registered: bool,
    /// Seconds between the consumer's last finished batch's tick and now.
    pub lag_seconds: Option<f64>,
    /// Events in the queue the consumer has not yet seen.
    pub pending_events: Option<i64>,
    /// Seconds since the consumer last finished a batch.
    pub last_seen_seconds: Option<f64>,
    /// The batches in flight of the consumer and its sub-consumers.
    pub batches_in_flight: Vec<InFlight>,
    /// Events in the failed-event store.
    pub failed_events: u64,
}

/// The session leading the ticking of a database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Leader {
    /// Its PostgreSQL backend's pid.
    pub backend_pid: i32,
    /// Its `application_name`.
    pub application_name: String,
}

/// A batch in flight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct InFlight {
    /// The batch.
    pub batch_id: i64,
    /// Who holds it: the consumer, or `CONSUMER.SUB` for a sub-consumer.
    pub consumer: String,
}

/// Slack allowed past the queue's own thresholds before a tick counts as
/// overdue: a ticker passes every second or so, and the clock of
/// `pgq.get_queue_info` is the transaction's.
const TICK_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the consumer's state. With `ticker_leader` false, the leader is not
/// looked up (the metrics know it from their own ticker).
pub(crate) async fn read(db: &impl GenericClient, config: &Config, ticker_leader: bool) -> Result<QueueState> {
    let mut state = QueueState {
        queue: config.queue.clone(),
        consumer: config.consumer.clone(),
        subconsumer: config.subconsumer.clone(),
        ticker_enabled: config.ticker.enabled,
        ..QueueState::default()
    };
    if let Some(queue) = pgq::get_queue_info(db, &config.queue).await? {
        state.queue_exists = true;
        tick(&mut state, &queue);
    }
    if config.ticker.enabled && ticker_leader {
        state.ticker_leader = crate::ticker::leader(db).await?.map(|l| Leader {
            backend_pid: l.pid,
            application_name: l.application_name,
        });
    }
    let info = pgq::get_consumer_info_queue(db, &config.queue).await?;
    if let Some(c) = info.iter().find(|c| c.consumer_name == config.consumer) {
        let secs = |i: &Option<pgq::Interval>| i.map(|i| i.as_duration().as_secs_f64());
        state.registered = true;
        state.lag_seconds = secs(&c.lag);
        state.pending_events = c.pending_events;
        state.last_seen_seconds = secs(&c.last_seen);
        let group = format!("{}.", config.consumer);
        state.batches_in_flight = info
            .iter()
            .filter(|s| s.consumer_name == config.consumer || s.consumer_name.starts_with(&group))
            .filter_map(|s| {
                s.current_batch.map(|batch_id| InFlight {
                    batch_id,
                    consumer: s.consumer_name.clone(),
                })
            })
            .collect();
    }
    state.failed_events = failed::count(db, &config.queue, &config.consumer).await?;
    Ok(state)
}

/// The age of the queue's last tick, and whether a tick is overdue: PgQ
/// ticks a queue once it has events older than `ticker_max_lag`, and at
/// least every `ticker_idle_period`; a ticker that ticks never lets the last
/// tick get older than that. A frozen ticker (a stopped leader) shows here.
fn tick(state: &mut QueueState, queue: &pgq::QueueInfo) {
    state.ticker_paused = queue.queue_ticker_paused;
    let Some(lag) = queue.ticker_lag.map(|l| l.as_duration()) else {
        return;
    };
    state.last_tick_seconds = Some(lag.as_secs_f64());
    state.events_waiting = queue.ev_new.unwrap_or(0) > 0;
    let due = if state.events_waiting {
        queue
            .queue_ticker_max_lag
            .as_duration()
            .min(queue.queue_ticker_idle_period.as_duration())
    } else {
        queue.queue_ticker_idle_period.as_duration()
    };
    state.tick_due_seconds = Some(due.as_secs_f64());
    state.tick_overdue = !queue.queue_ticker_paused && !queue.queue_external_ticker && lag > due + TICK_SLACK;
}
