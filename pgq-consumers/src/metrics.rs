//! The metrics of a consumer daemon (and of the ticker), for Prometheus.
//!
//! Built on the [`prometheus`] crate (TiKV's client): counters and gauges are
//! atomics, histograms lock-free, and the endpoint writes the classic text
//! exposition format that Prometheus, `promtool` and every other scraper
//! read. What the batch loop counts costs a few atomic additions per batch
//! and a histogram observation per event; what comes from PgQ (lag, pending
//! and failed events, the age of the last tick) is read by a task of its own
//! every `[http] refresh_period`, never by a scrape.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `pgq_consumer_events_total` | counter | `outcome` = `ok`, `failed`, `retry` | events of finished batches, by outcome |
//! | `pgq_consumer_batches_total` | counter | `result` = `finished`, `aborted`, `panicked`, `lost`, `error` | batches taken, by how their round ended |
//! | `pgq_consumer_batch_duration_seconds` | histogram | | a batch's round, from taking it to its commit or rollback |
//! | `pgq_consumer_event_duration_seconds` | histogram | | the handler's time per event, from its being handed out to its outcome |
//! | `pgq_consumer_lag_seconds` | gauge | | PgQ's lag of the consumer: the age of the last batch it finished |
//! | `pgq_consumer_pending_events` | gauge | | events in the queue the consumer has not yet read |
//! | `pgq_consumer_failed_events` | gauge | | events in the failed-event store |
//! | `pgq_queue_last_tick_age_seconds` | gauge | | seconds since the queue's last tick |
//! | `pgq_consumer_connection_up` | gauge | `database` = `queue`, `remote` | 1 while connected, 0 during an outage |
//! | `pgq_consumer_outages_total` | counter | `database` | connection losses |
//! | `pgq_consumer_reconnects_total` | counter | | outages that ended |
//! | `pgq_ticker_leader` | gauge | (`database` in `pgq-ticker`) | 1 while this process leads the ticking of the database |
//! | `pgq_ticker_ticks_total` | counter | (`database` in `pgq-ticker`) | ticks this process made |
//! | `pgq_build_info` | gauge | `program`, `version` | always 1 |
//!
//! Every metric of a consumer also carries the labels `queue`, `consumer`
//! and, for a sub-consumer, `subconsumer`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::batch_loop::Round;
use crate::error::{Error, Result};
use crate::queue_state::QueueState;

/// A registry whose metrics all carry these labels (`queue`, `consumer`...).
pub fn registry(labels: &[(&str, &str)]) -> Registry {
    let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    // Only a bad label name fails, and these are ours.
    Registry::new_custom(None, Some(labels)).unwrap_or_default()
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, name: &str, metric: M) -> Result<M> {
    registry
        .register(Box::new(metric.clone()))
        .map_err(|source| Error::Metrics {
            name: name.to_owned(),
            source,
        })?;
    Ok(metric)
}

fn made<M>(name: &str, made: prometheus::Result<M>) -> Result<M> {
    made.map_err(|source| Error::Metrics {
        name: name.to_owned(),
        source,
    })
}

/// Registers `pgq_build_info{program, version}`, always 1.
pub fn register_build_info(registry: &Registry, program: &str) -> Result<()> {
    const NAME: &str = "pgq_build_info";
    let opts = Opts::new(
        NAME,
        "The program and the version of pgq-consumers it was built with; always 1.",
    )
    .const_label("program", program)
    .const_label("version", env!("CARGO_PKG_VERSION"));
    let info = register(registry, NAME, made(NAME, IntGauge::with_opts(opts))?)?;
    info.set(1);
    Ok(())
}

/// The batch durations' buckets, in seconds.
const BATCH_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// The handler's per-event durations' buckets, in seconds.
const EVENT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Which database a connection metric is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    Queue,
    Remote,
}

/// A consumer's metrics, shared by the daemon, its batch loop and the task
/// that reads PgQ's gauges. Cheap to clone.
#[derive(Clone)]
pub struct ConsumerMetrics(Arc<Inner>);

impl std::fmt::Debug for ConsumerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerMetrics").finish_non_exhaustive()
    }
}

struct Inner {
    events_ok: IntCounter,
    events_failed: IntCounter,
    events_retry: IntCounter,
    batches_finished: IntCounter,
    batches_aborted: IntCounter,
    batches_panicked: IntCounter,
    batches_lost: IntCounter,
    batches_error: IntCounter,
    batch_seconds: Histogram,
    event_seconds: Histogram,
    lag_seconds: Gauge,
    pending_events: IntGauge,
    failed_events: IntGauge,
    last_tick_age: Gauge,
    queue_up: IntGauge,
    remote_up: Option<IntGauge>,
    queue_outages: IntCounter,
    remote_outages: IntCounter,
    reconnects: IntCounter,
    /// The batch the round in flight took (0: none).
    in_flight: AtomicI64,
}

impl ConsumerMetrics {
    /// Registers a consumer's metrics; `remote`: it has a remote database.
    pub(crate) fn register(registry: &Registry, remote: bool) -> Result<ConsumerMetrics> {
        let counter_vec = |name: &str, help: &str, label: &str| -> Result<IntCounterVec> {
            register(
                registry,
                name,
                made(name, IntCounterVec::new(Opts::new(name, help), &[label]))?,
            )
        };
        let events = counter_vec(
            "pgq_consumer_events_total",
            "Events of finished batches, by outcome (ok, failed: stored in the failed-event store, retry).",
            "outcome",
        )?;
        let batches = counter_vec(
            "pgq_consumer_batches_total",
            "Batches taken, by how their round ended (finished, aborted by the handler, panicked, lost to another \
             sub-consumer, error: rolled back).",
            "result",
        )?;
        let histogram = |name: &str, help: &str, buckets: &[f64]| -> Result<Histogram> {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            register(registry, name, made(name, Histogram::with_opts(opts))?)
        };
        let gauge =
            |name: &str, help: &str| -> Result<Gauge> { register(registry, name, made(name, Gauge::new(name, help))?) };
        let int_gauge = |name: &str, help: &str| -> Result<IntGauge> {
            register(registry, name, made(name, IntGauge::new(name, help))?)
        };
        let up = {
            const NAME: &str = "pgq_consumer_connection_up";
            let help = "1 while the consumer is connected to the database, 0 during an outage.";
            register(
                registry,
                NAME,
                made(NAME, IntGaugeVec::new(Opts::new(NAME, help), &["database"]))?,
            )?
        };
        let outages = counter_vec(
            "pgq_consumer_outages_total",
            "Connections to the database lost (each outage once).",
            "database",
        )?;
        let remote_up = remote.then(|| up.with_label_values(&["remote"]));
        let inner = Inner {
            events_ok: events.with_label_values(&["ok"]),
            events_failed: events.with_label_values(&["failed"]),
            events_retry: events.with_label_values(&["retry"]),
            batches_finished: batches.with_label_values(&["finished"]),
            batches_aborted: batches.with_label_values(&["aborted"]),
            batches_panicked: batches.with_label_values(&["panicked"]),
            batches_lost: batches.with_label_values(&["lost"]),
            batches_error: batches.with_label_values(&["error"]),
            batch_seconds: histogram(
                "pgq_consumer_batch_duration_seconds",
                "Seconds a batch's round took, from taking the batch to its commit or rollback.",
                BATCH_BUCKETS,
            )?,
            event_seconds: histogram(
                "pgq_consumer_event_duration_seconds",
                "Seconds the handler took per event, from the event being handed out to its outcome.",
                EVENT_BUCKETS,
            )?,
            lag_seconds: gauge(
                "pgq_consumer_lag_seconds",
                "PgQ's lag of the consumer: seconds since the tick of the last batch it finished.",
            )?,
            pending_events: int_gauge(
                "pgq_consumer_pending_events",
                "Events in the queue that the consumer has not read yet.",
            )?,
            failed_events: int_gauge(
                "pgq_consumer_failed_events",
                "Events in the consumer's failed-event store.",
            )?,
            last_tick_age: gauge(
                "pgq_queue_last_tick_age_seconds",
                "Seconds since the queue's last tick.",
            )?,
            queue_up: up.with_label_values(&["queue"]),
            remote_up,
            queue_outages: outages.with_label_values(&["queue"]),
            remote_outages: outages.with_label_values(&["remote"]),
            reconnects: register(
                registry,
                "pgq_consumer_reconnects_total",
                made(
                    "pgq_consumer_reconnects_total",
                    IntCounter::new("pgq_consumer_reconnects_total", "Outages that ended: connected again."),
                )?,
            )?,
            in_flight: AtomicI64::new(0),
        };
        inner.queue_up.set(1);
        if let Some(remote) = &inner.remote_up {
            remote.set(1);
        }
        Ok(ConsumerMetrics(Arc::new(inner)))
    }

    /// A round took batch `batch_id`.
    pub(crate) fn batch_opened(&self, batch_id: i64) {
        self.0.in_flight.store(batch_id, Ordering::Relaxed);
    }

    /// The handler took `elapsed` over an event.
    pub(crate) fn event_done(&self, elapsed: Duration) {
        self.0.event_seconds.observe(elapsed.as_secs_f64());
    }

    /// A round ended after `elapsed`, with `result`.
    pub(crate) fn round_ended(&self, elapsed: Duration, result: &Result<Round>) {
        let m = &self.0;
        let took_batch = m.in_flight.swap(0, Ordering::Relaxed) != 0;
        let counter = match result {
            Ok(Round::Idle) => return,
            Ok(Round::Finished(report)) => {
                let settled = report.failed + report.retried;
                m.events_ok.inc_by(report.events.saturating_sub(settled));
                m.events_failed.inc_by(report.failed);
                m.events_retry.inc_by(report.retried);
                &m.batches_finished
            }
            Ok(Round::Aborted { .. }) => &m.batches_aborted,
            Ok(Round::Panicked { .. }) => &m.batches_panicked,
            Ok(Round::Lost { .. }) => &m.batches_lost,
            Err(_) if took_batch => &m.batches_error,
            Err(_) => return,
        };
        counter.inc();
        m.batch_seconds.observe(elapsed.as_secs_f64());
    }

    /// The connection to `db` was lost.
    pub(crate) fn outage(&self, db: Db) {
        let m = &self.0;
        match db {
            Db::Queue => {
                m.queue_outages.inc();
                m.queue_up.set(0);
            }
            Db::Remote => {
                m.remote_outages.inc();
                if let Some(up) = &m.remote_up {
                    up.set(0);
                }
            }
        }
    }

    /// Connected again after an outage.
    pub(crate) fn reconnected(&self) {
        let m = &self.0;
        m.reconnects.inc();
        m.queue_up.set(1);
        if let Some(up) = &m.remote_up {
            up.set(1);
        }
    }

    /// The gauges read from PgQ.
    pub(crate) fn queue_state(&self, state: &QueueState) {
        let m = &self.0;
        m.lag_seconds.set(state.lag_seconds.unwrap_or(f64::NAN));
        m.pending_events.set(state.pending_events.unwrap_or(0));
        m.failed_events
            .set(i64::try_from(state.failed_events).unwrap_or(i64::MAX));
        m.last_tick_age.set(state.last_tick_seconds.unwrap_or(f64::NAN));
    }
}

/// The ticker's metrics: whether this process leads the ticking of a
/// database, and the ticks it made. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TickerMetrics {
    leader: IntGauge,
    ticks: IntCounter,
}

const LEADER: &str = "pgq_ticker_leader";
const LEADER_HELP: &str = "1 while this process leads the ticking of the database, else 0.";
const TICKS: &str = "pgq_ticker_ticks_total";
const TICKS_HELP: &str = "Ticks this process made (one per queue ticked).";

impl TickerMetrics {
    /// Registers the ticker's metrics of the one database a consumer's
    /// embedded ticker ticks.
    pub fn register(registry: &Registry) -> Result<TickerMetrics> {
        Ok(TickerMetrics {
            leader: register(registry, LEADER, made(LEADER, IntGauge::new(LEADER, LEADER_HELP))?)?,
            ticks: register(registry, TICKS, made(TICKS, IntCounter::new(TICKS, TICKS_HELP))?)?,
        })
    }

    /// Registers the ticker's metrics with a `database` label, for a process
    /// that ticks several databases ([`TickerMetricsByDatabase::database`]).
    pub fn register_by_database(registry: &Registry) -> Result<TickerMetricsByDatabase> {
        let leader = IntGaugeVec::new(Opts::new(LEADER, LEADER_HELP), &["database"]);
        let ticks = IntCounterVec::new(Opts::new(TICKS, TICKS_HELP), &["database"]);
        Ok(TickerMetricsByDatabase {
            leader: register(registry, LEADER, made(LEADER, leader)?)?,
            ticks: register(registry, TICKS, made(TICKS, ticks)?)?,
        })
    }

    /// Whether this process leads.
    pub(crate) fn leading(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// It made `n` ticks.
    pub(crate) fn ticked(&self, n: usize) {
        self.ticks.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// The ticker's metrics of several databases, by a `database` label.
#[derive(Debug, Clone)]
pub struct TickerMetricsByDatabase {
    leader: IntGaugeVec,
    ticks: IntCounterVec,
}

impl TickerMetricsByDatabase {
    /// The metrics of database `name`.
    pub fn database(&self, name: &str) -> TickerMetrics {
        TickerMetrics {
            leader: self.leader.with_label_values(&[name]),
            ticks: self.ticks.with_label_values(&[name]),
        }
    }
}

/// The registry's metrics in Prometheus' text exposition format (0.0.4).
pub fn encode(registry: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_default()
}
