//! What a handler says about one event.

use std::time::Duration;

/// The outcome of processing one event; the batch loop acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Done. Its effects commit with the batch.
    Ok,
    /// The event cannot be processed: it goes into the failed-event store with
    /// this reason, in the batch's transaction (see the `failed` command).
    Failed(String),
    /// Try again later: the event is delivered again after this delay
    /// (`pgq.event_retry`), to this consumer only.
    Retry(Duration),
    /// Stop: roll the whole batch back, do not finish it; it is delivered
    /// again on the next round.
    AbortBatch,
}

/// Exponential back-off for [`Outcome::Retry`]: `base × 2^retries`, capped.
/// `retries` is the event's `ev_retry` (`None` on first delivery counts as 0).
///
/// ```
/// use std::time::Duration;
/// use pgq_consumers::backoff;
/// let d = backoff(Duration::from_secs(2), Some(3), Duration::from_secs(60));
/// assert_eq!(d, Duration::from_secs(16));
/// ```
pub fn backoff(base: Duration, retries: Option<i32>, cap: Duration) -> Duration {
    let n = u32::try_from(retries.unwrap_or(0).max(0)).unwrap_or(0).min(30);
    base.saturating_mul(1u32 << n).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), None, s(100)), s(1));
        assert_eq!(backoff(s(1), Some(1), s(100)), s(2));
        assert_eq!(backoff(s(1), Some(5), s(100)), s(32));
        assert_eq!(backoff(s(1), Some(10), s(100)), s(100));
        assert_eq!(backoff(s(1), Some(i32::MAX), s(100)), s(100));
    }
}
