//! Whether the loop makes progress: the one fact both a liveness probe and
//! the systemd watchdog need.
//!
//! The runner notes when each round begins and each rest begins (two atomic
//! stores); [`loop_is_live`] compares the time now with when the loop must
//! next be seen doing something: a round may take up to
//! [`Options::stuck_after`](crate::Options::stuck_after), a rest its own length
//! plus that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process's clock origin for the stored times.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(origin().elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// When the loop must next be seen (ms since the origin); 0 before the loop runs.
static DUE: AtomicU64 = AtomicU64::new(0);
/// When the round in flight began (ms since the origin, plus one); 0 when none.
static ROUND_SINCE: AtomicU64 = AtomicU64::new(0);
/// How long a round may take before the loop counts as stuck (ms).
static LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets how long a round may take before the loop counts as stuck.
pub(crate) fn set_limit(limit: Duration) {
    LIMIT.store(ms(limit), Ordering::Relaxed);
}

/// A round begins.
pub(crate) fn round_begins() {
    let now = now_ms();
    ROUND_SINCE.store(now.saturating_add(1), Ordering::Relaxed);
    DUE.store(now.saturating_add(LIMIT.load(Ordering::Relaxed)), Ordering::Relaxed);
}

/// A rest of `rest` begins (the round before it ended).
pub(crate) fn rest_begins(rest: Duration) {
    let now = now_ms();
    ROUND_SINCE.store(0, Ordering::Relaxed);
    DUE.store(
        now.saturating_add(ms(rest))
            .saturating_add(LIMIT.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
}

/// True while the daemon's loop makes progress: its round in flight began
/// less than [`Options::stuck_after`](crate::Options::stuck_after) ago, or it
/// rests no longer than its rest plus that. True before the loop starts.
pub fn loop_is_live() -> bool {
    let due = DUE.load(Ordering::Relaxed);
    due == 0 || now_ms() <= due
}

/// How long the round in flight has run, `None` between rounds.
pub fn round_in_flight() -> Option<Duration> {
    match ROUND_SINCE.load(Ordering::Relaxed) {
        0 => None,
        since => Some(Duration::from_millis(now_ms().saturating_sub(since - 1))),
    }
}
