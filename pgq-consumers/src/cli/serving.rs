//! A consumer daemon's HTTP endpoint (`[http] listen`): its metrics, the
//! probes' state, and the task that reads PgQ's gauges (lag, pending and
//! failed events, the age of the queue's last tick, whether the consumer is
//! registered) every `[http] refresh_period` over a connection of its own,
//! so that no scrape ever waits on the database.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch_loop::application_name;
use crate::config::Config;
use crate::error::Result;
use crate::health::Health;
use crate::http::Endpoint;
use crate::metrics::{self, ConsumerMetrics, TickerMetrics};
use crate::net::connect::{connect, Database};

/// The endpoint of a running consumer daemon, and what it serves.
pub(crate) struct Serving {
    /// The consumer's metrics, which the daemon and its batch loop feed.
    pub metrics: ConsumerMetrics,
    /// The embedded ticker's metrics (0 while no ticker runs here).
    pub ticker: TickerMetrics,
    /// What `/health/ready` answers.
    pub health: Health,
    endpoint: Endpoint,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Serving {
    /// Registers the metrics, starts serving on `address` and starts the
    /// task that reads PgQ's gauges. `remote`: the consumer has a remote database.
    pub async fn start(address: SocketAddr, config: &Config, remote: bool) -> Result<Serving> {
        let mut labels = vec![("queue", config.queue.as_str()), ("consumer", config.consumer.as_str())];
        if let Some(sub) = &config.subconsumer {
            labels.push(("subconsumer", sub.as_str()));
        }
        let registry = metrics::registry(&labels);
        metrics::register_build_info(&registry, &program())?;
        let consumer = ConsumerMetrics::register(&registry, remote)?;
        let ticker = TickerMetrics::register(&registry)?;
        let health = Health::new();
        let endpoint = Endpoint::start(address, registry, health.clone()).await?;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(refresh(config.clone(), consumer.clone(), health.clone(), stop.clone()));
        tracker.close();
        Ok(Serving {
            metrics: consumer,
            ticker,
            health,
            endpoint,
            stop,
            tracker,
        })
    }

    /// Stops the endpoint and the task.
    pub async fn stop(self) {
        self.stop.cancel();
        self.endpoint.stop().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
    }
}

/// The program's name, for `pgq_build_info`.
fn program() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads PgQ's gauges every `[http] refresh_period` until stopped.
async fn refresh(config: Config, metrics: ConsumerMetrics, health: Health, stop: CancellationToken) {
    let period = config.http.refresh_period();
    let app = format!("{} metrics", application_name(&config));
    let mut db = None;
    loop {
        if db.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            db = tokio::select! {
                () = stop.cancelled() => return,
                connected = connect(&config.db, &app, Database::Queue) => match connected {
                    Ok(client) => Some(client),
                    Err(e) => {
                        log::debug!("metrics: cannot connect to read the queue's state: {}", pgq_daemon::error_chain(&e));
                        None
                    }
                },
            };
        }
        if let Some(client) = &db {
            let read = tokio::select! {
                () = stop.cancelled() => return,
                read = crate::queue_state::read(client, &config, false) => read,
            };
            match read {
                Ok(state) => {
                    metrics.queue_state(&state);
                    health.registered(state.registered);
                }
                Err(e) => log::debug!(
                    "metrics: cannot read the queue's state: {}",
                    pgq_daemon::error_chain(&e)
                ),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}
