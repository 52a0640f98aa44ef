//! How long to wait after failures: the one back-off of the workspace.

use std::time::Duration;

/// Exponential back-off: `base × 2^doublings`, at most `cap`.
///
/// A loop that failed `n` times in a row rests `backoff(base, n - 1, cap)`:
/// `base` after the first failure, doubling from there (what
/// [`Activity::Backoff`](crate::Activity::Backoff) is for). A job tried again
/// after `n` retries waits `backoff(base, n, cap)`.
///
/// ```
/// use std::time::Duration;
/// let s = Duration::from_secs;
/// assert_eq!(pgq_daemon::backoff(s(2), 0, s(60)), s(2));
/// assert_eq!(pgq_daemon::backoff(s(2), 3, s(60)), s(16));
/// assert_eq!(pgq_daemon::backoff(s(2), 10, s(60)), s(60));
/// ```
pub fn backoff(base: Duration, doublings: u32, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << doublings.min(31)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), 0, s(100)), s(1));
        assert_eq!(backoff(s(1), 1, s(100)), s(2));
        assert_eq!(backoff(s(1), 5, s(100)), s(32));
        assert_eq!(backoff(s(1), 10, s(100)), s(100));
        assert_eq!(backoff(s(1), u32::MAX, s(100)), s(100));
        assert_eq!(backoff(Duration::MAX, 3, Duration::MAX), Duration::MAX);
    }
}
