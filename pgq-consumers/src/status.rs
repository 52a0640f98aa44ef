//! What `status` says about a consumer besides its pid.

use crate::batch_loop::application_name;
use crate::config::Config;
use crate::connect::{connect_control, within_control_timeout, Database};
use crate::error::{Error, Result};
use crate::failed;

/// Lines describing the consumer's queue position: queue, consumer, lag,
/// pending events, last seen, batch in flight, failed-event count. Runs its
/// own small runtime: `status` is a synchronous command. It answers within
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
            vec![format!("cannot read the queue state: {}", crate::cli::error_chain(&e))],
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
