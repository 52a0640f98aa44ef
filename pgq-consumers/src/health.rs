//! What the probes of the HTTP endpoint answer: `/health/live` from the
//! daemon's loop ([`pgq_daemon::loop_is_live`]), `/health/ready` from this
//! state, which the daemon sets as its connections come and go.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// Whether the daemon is ready: connected to its databases and, for a
/// consumer, registered on its queue. Cheap to clone; every clone shares it.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// 0 connected, 1 the queue database is down, 2 the remote one.
    down: AtomicU8,
    /// The consumer is found unregistered.
    unregistered: AtomicBool,
}

impl Health {
    /// A state that says ready until told otherwise.
    pub fn new() -> Health {
        Health::default()
    }

    /// Why the daemon is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        match self.0.down.load(Ordering::Relaxed) {
            1 => return Some("the connection to the queue database is lost"),
            2 => return Some("the connection to the remote database is lost"),
            _ => {}
        }
        self.0
            .unregistered
            .load(Ordering::Relaxed)
            .then_some("the consumer is not registered on its queue")
    }

    /// A connection was lost (`remote`: the remote database's).
    pub(crate) fn lost(&self, remote: bool) {
        self.0.down.store(if remote { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Connected again.
    pub(crate) fn connected(&self) {
        self.0.down.store(0, Ordering::Relaxed);
    }

    /// Whether the consumer is registered, as PgQ last said.
    pub(crate) fn registered(&self, registered: bool) {
        self.0.unregistered.store(!registered, Ordering::Relaxed);
    }
}
