//! The charts' figures: sampled by the console every few seconds and kept
//! in memory for the last hour.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::snapshot::Snapshot;

/// How long samples are kept: the charts show the last hour.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// One sample of a queue or consumer.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When.
    pub at: Instant,
    /// Events so far (a queue's: had; a consumer's: read).
    pub events: Option<i64>,
    /// Lag in seconds (a queue's ticker lag; a consumer's lag).
    pub lag: Option<f64>,
}

/// A series of samples, oldest first.
pub type Series = VecDeque<Sample>;

/// The samples of every queue and consumer.
#[derive(Default)]
pub struct History {
    /// By queue name.
    pub queues: HashMap<String, Series>,
    /// By (queue, consumer).
    pub consumers: HashMap<(String, String), Series>,
}

impl History {
    /// Adds a snapshot's figures, and forgets samples older than [`WINDOW`]
    /// and queues and consumers that are gone.
    pub fn record(&mut self, s: &Snapshot, at: Instant) {
        for q in &s.queues {
            self.queues.entry(q.name.clone()).or_default().push_back(Sample {
                at,
                events: q.events_total,
                lag: q.ticker_lag,
            });
        }
        for c in &s.consumers {
            self.consumers
                .entry((c.queue.clone(), c.name.clone()))
                .or_default()
                .push_back(Sample {
                    at,
                    events: c.events_read,
                    lag: c.lag,
                });
        }
        self.queues.retain(|name, _| s.queues.iter().any(|q| &q.name == name));
        self.consumers
            .retain(|(q, n), _| s.consumers.iter().any(|c| &c.queue == q && &c.name == n));
        for series in self.queues.values_mut().chain(self.consumers.values_mut()) {
            while series.front().is_some_and(|x| at.duration_since(x.at) > WINDOW) {
                series.pop_front();
            }
        }
    }
}

/// Events per second between consecutive samples, as (seconds ago, rate).
pub fn throughput(series: &Series, now: Instant) -> Vec<(f64, f64)> {
    series
        .iter()
        .zip(series.iter().skip(1))
        .filter_map(|(a, b)| {
            let dt = b.at.duration_since(a.at).as_secs_f64();
            let (ea, eb) = (a.events?, b.events?);
            (dt > 0.0).then(|| (now.duration_since(b.at).as_secs_f64(), ((eb - ea).max(0) as f64) / dt))
        })
        .collect()
}

/// Lag in seconds, as (seconds ago, lag).
pub fn lag(series: &Series, now: Instant) -> Vec<(f64, f64)> {
    series
        .iter()
        .filter_map(|s| Some((now.duration_since(s.at).as_secs_f64(), s.lag?)))
        .collect()
}
