//! What `status` says about a consumer besides its pid.

use crate::batch_loop::application_name;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::failed;
use crate::net::connect::{connect_control, within_control_timeout, Database};

/// Lines describing the consumer's queue position: queue, consumer, the age
/// of the queue's last tick (and whether a tick is overdue), the embedded
/// ticker's leader when `[ticker]` is enabled, lag, pending events, last
/// seen, batch in flight, failed-event count. Runs its own small runtime:
/// `status` is a synchronous command. It answers within
/// [`CONTROL_TIMEOUT`](crate::CONTROL_TIMEOUT) whatever the database does;
/// when it cannot read the state, the one line saying why, and the error.
pub(crate) fn describe(config: &Config) -> (Vec<String>, Option<Error>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return (vec![format!("cannot read the queue state: {e}")], None),
    };
    let read = runtime.block_on(within_control_timeout(&config.db, Database::Queue, query(config)));
    // Whatever the connection left behind (a socket to a silent server) is not waited for.
    runtime.shutdown_background();
    match read {
        Ok(lines) => (lines, None),
        Err(e) => (
            vec![format!("cannot read the queue state: {}", pgq_daemon::error_chain(&e))],
            Some(e),
        ),
    }
}

async fn query(config: &Config) -> Result<Vec<String>> {
    let db = connect_control(
        &config.db,
        &format!("{} status", application_name(config)),
        Database::Queue,
    )
    .await?;
    let mut lines = vec![
        format!("queue: {}", config.queue),
        format!("consumer: {}", config.consumer),
    ];
    if let Some(sub) = &config.subconsumer {
        lines.push(format!("subconsumer: {sub}"));
    }
    if let Some(queue) = pgq::get_queue_info(&db, &config.queue).await? {
        lines.push(last_tick(&queue));
    }
    if config.ticker.enabled {
        lines.push(match crate::ticker::leader(&db).await? {
            Some(l) => format!("ticker: led by backend pid {} ({})", l.pid, l.application_name),
            None => "ticker: no process leads".into(),
        });
    }
    let info = pgq::get_consumer_info_queue(&db, &config.queue).await?;
    let me = info.iter().find(|c| c.consumer_name == config.consumer);
    match me {
        None => lines.push("registered: no (run install)".into()),
        Some(c) => {
            let secs = |i: &Option<pgq::Interval>| {
                i.map(|i| format!("{:.1}s", i.as_duration().as_secs_f64()))
                    .unwrap_or_else(|| "-".into())
            };
            lines.push(format!("lag: {}", secs(&c.lag)));
            lines.push(format!(
                "pending events: {}",
                c.pending_events.map(|n| n.to_string()).unwrap_or("-".into())
            ));
            lines.push(format!("last seen: {} ago", secs(&c.last_seen)));
            let in_flight: Vec<String> = info
                .iter()
                .filter(|s| {
                    s.consumer_name == config.consumer || s.consumer_name.starts_with(&format!("{}.", config.consumer))
                })
                .filter_map(|s| s.current_batch.map(|b| format!("{b} ({})", s.consumer_name)))
                .collect();
            lines.push(format!(
                "batch in flight: {}",
                if in_flight.is_empty() {
                    "none".to_string()
                } else {
                    in_flight.join(", ")
                }
            ));
        }
    }
    let failed = failed::count(&db, &config.queue, &config.consumer).await?;
    lines.push(format!("failed events: {failed}"));
    Ok(lines)
}

/// Slack allowed past the queue's own thresholds before a tick counts as
/// overdue: a ticker passes every second or so, and the clock of
/// `pgq.get_queue_info` is the transaction's.
const TICK_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// `last tick: 12.3s ago`, and why no tick came when one is overdue: PgQ
/// ticks a queue once it has events older than `ticker_max_lag`, and at
/// least every `ticker_idle_period`; a ticker that ticks never lets the last
/// tick get older than that. A frozen ticker (a stopped leader) shows here.
fn last_tick(queue: &pgq::QueueInfo) -> String {
    let Some(lag) = queue.ticker_lag.map(|l| l.as_duration()) else {
        return "last tick: none".into();
    };
    let mut line = format!("last tick: {:.1}s ago", lag.as_secs_f64());
    let events_waiting = queue.ev_new.unwrap_or(0) > 0;
    let due = if events_waiting {
        queue
            .queue_ticker_max_lag
            .as_duration()
            .min(queue.queue_ticker_idle_period.as_duration())
    } else {
        queue.queue_ticker_idle_period.as_duration()
    };
    if queue.queue_ticker_paused {
        line.push_str(" (ticking is paused for this queue)");
    } else if !queue.queue_external_ticker && lag > due + TICK_SLACK {
        line.push_str(&format!(
            ", overdue: a tick was due after {:.0}s{}; no ticker ticks this database (is it running? a stopped \
             leader keeps the lead, see `ticker:`)",
            due.as_secs_f64(),
            if events_waiting { " with events waiting" } else { "" }
        ));
    }
    line
}
