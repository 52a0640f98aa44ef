//! What a handler says about one event.

use std::time::Duration;

/// The outcome of processing one event; the batch loop acts on it.
///
/// More outcomes may come: a `match` on one needs a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Outcome {
    /// Done. Its effects commit with the batch.
    Ok,
    /// The event cannot be processed: it goes into the failed-event store with
    /// this reason, in the batch's transaction (see the `failed` command).
    Failed(String),
    /// Try again later: the event is delivered again after this delay
    /// (`pgq.event_retry`), to this consumer only. For a delay that grows
    /// with each retry, [`backoff`](crate::backoff)`(base, event.retries(), cap)`.
    Retry(Duration),
    /// Stop: roll the whole batch back, do not finish it; it is delivered
    /// again on the next round.
    AbortBatch,
}
