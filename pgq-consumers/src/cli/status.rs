//! What `status` says about a consumer besides its pid: lines, or with
//! `--json` one JSON object whose field names are documented and stable.

use crate::batch_loop::application_name;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::net::connect::{connect_control, within_control_timeout, Database};
use crate::queue_state::{self, QueueState};

/// Reads the consumer's queue state: queue, consumer, the age of the
/// queue's last tick (and whether a tick is overdue), the embedded ticker's
/// leader when `[ticker]` is enabled, lag, pending events, last seen,
/// batches in flight, failed-event count. Runs its own small runtime:
/// `status` is a synchronous command. It answers within
/// [`CONTROL_TIMEOUT`](crate::CONTROL_TIMEOUT) whatever the database does.
pub(crate) fn read(config: &Config) -> Result<QueueState> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime { source })?;
    let read = runtime.block_on(within_control_timeout(&config.db, Database::Queue, query(config)));
    // Whatever the connection left behind (a socket to a silent server) is not waited for.
    runtime.shutdown_background();
    read
}

/// The state as `status` prints it; when it cannot be read, the one line
/// saying why, and the error.
pub(crate) fn describe(config: &Config) -> (Vec<String>, Option<Error>) {
    match read(config) {
        Ok(state) => (lines(&state), None),
        Err(e) => (
            vec![format!("cannot read the queue state: {}", pgq_daemon::error_chain(&e))],
            Some(e),
        ),
    }
}

async fn query(config: &Config) -> Result<QueueState> {
    let db = connect_control(
        &config.db,
        &format!("{} status", application_name(config)),
        Database::Queue,
    )
    .await?;
    queue_state::read(&db, config, true).await
}

/// The lines of `status` after the daemon's own.
fn lines(state: &QueueState) -> Vec<String> {
    let mut lines = vec![
        format!("queue: {}", state.queue),
        format!("consumer: {}", state.consumer),
    ];
    if let Some(sub) = &state.subconsumer {
        lines.push(format!("subconsumer: {sub}"));
    }
    if state.queue_exists {
        lines.push(last_tick(state));
    }
    if state.ticker_enabled {
        lines.push(match &state.ticker_leader {
            Some(l) => format!("ticker: led by backend pid {} ({})", l.backend_pid, l.application_name),
            None => "ticker: no process leads".into(),
        });
    }
    if !state.registered {
        lines.push("registered: no (run install)".into());
    } else {
        let secs = |s: Option<f64>| s.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into());
        lines.push(format!("lag: {}", secs(state.lag_seconds)));
        lines.push(format!(
            "pending events: {}",
            state.pending_events.map(|n| n.to_string()).unwrap_or("-".into())
        ));
        lines.push(format!("last seen: {} ago", secs(state.last_seen_seconds)));
        let in_flight: Vec<String> = state
            .batches_in_flight
            .iter()
            .map(|b| format!("{} ({})", b.batch_id, b.consumer))
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
    lines.push(format!("failed events: {}", state.failed_events));
    lines
}

/// `last tick: 12.3s ago`, and why no tick came when one is overdue.
fn last_tick(state: &QueueState) -> String {
    let Some(lag) = state.last_tick_seconds else {
        return "last tick: none".into();
    };
    let mut line = format!("last tick: {lag:.1}s ago");
    if state.ticker_paused {
        line.push_str(" (ticking is paused for this queue)");
    } else if state.tick_overdue {
        line.push_str(&format!(
            ", overdue: a tick was due after {:.0}s{}; no ticker ticks this database (is it running? a stopped \
             leader keeps the lead, see `ticker:`)",
            state.tick_due_seconds.unwrap_or_default(),
            if state.events_waiting {
                " with events waiting"
            } else {
                ""
            }
        ));
    }
    line
}
