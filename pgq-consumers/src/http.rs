//! The HTTP endpoint of a daemon: `/metrics` (Prometheus' text format),
//! `/health/live` and `/health/ready`, with short JSON bodies. Nothing else
//! is served: another path is 404, another method than GET (or HEAD) 405.
//! Nothing it serves comes from the config: no connection string, no
//! password.
//!
//! It runs on the daemon's runtime, with axum, and stops with the daemon
//! (a [`CancellationToken`] and a [`TaskTracker`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::health::Health;

/// How long [`Endpoint::stop`] waits for the requests in flight.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The endpoint, serving until stopped.
#[derive(Debug)]
pub struct Endpoint {
    address: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

#[derive(Clone)]
struct Served {
    registry: Registry,
    health: Health,
}

impl Endpoint {
    /// Listens on `address` and serves the metrics of `registry` and the
    /// probes (`health` for readiness) on the current runtime. Fails when it
    /// cannot listen there ([`Error::HttpListen`]).
    pub async fn start(address: SocketAddr, registry: Registry, health: Health) -> Result<Endpoint> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| Error::HttpListen {
                address: address.to_string(),
                source,
            })?;
        let address = listener.local_addr().unwrap_or(address);
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .with_state(Served { registry, health });
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let stopped = stop.clone().cancelled_owned();
        tracker.spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                log::error!("the HTTP endpoint on {address} failed: {e}");
            }
        });
        tracker.close();
        log::info!("serving /metrics, /health/live and /health/ready on http://{address}");
        Ok(Endpoint { address, stop, tracker })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving; waits a moment for the requests in flight.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(STOP_WAIT, self.tracker.wait()).await;
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn metrics(State(served): State<Served>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        crate::metrics::encode(&served.registry),
    )
        .into_response()
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn live() -> Response {
    if pgq_daemon::loop_is_live() {
        json(StatusCode::OK, serde_json::json!({ "status": "live" }))
    } else {
        let round = pgq_daemon::round_in_flight().map(|d| d.as_secs_f64());
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "stuck", "round_seconds": round }),
        )
    }
}

async fn ready(State(served): State<Served>) -> Response {
    match served.health.not_ready() {
        None => json(StatusCode::OK, serde_json::json!({ "status": "ready" })),
        Some(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "not ready", "reason": reason }),
        ),
    }
}
