//! The heartbeat of a cooperative sub-consumer.
//!
//! A sub-consumer silent for longer than `dead_interval` loses its batch to
//! another member of its group ([`coop::next_batch_info`]). Taking a batch
//! and finishing it mark the sub-consumer as seen; in between, while the
//! handler works on the batch, the heartbeat does: about every third of
//! `dead_interval` it calls [`coop::touch_subconsumer`] over a connection of
//! its own (the batch's connection is inside the batch's transaction, whose
//! writes nobody sees before it commits, and the reader connection is busy
//! streaming the batch).
//!
//! It beats from a task of its own for as long as the round lasts, so a
//! batch that takes longer than `dead_interval` stays with the sub-consumer
//! working on it, whether the handler awaits or computes. A killed process
//! stops beating, and so does one whose runtime no longer runs (stopped,
//! wedged): their batches go to another member after `dead_interval`, as
//! before. A handler that awaits something that never comes keeps its batch:
//! give its waits timeouts.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::Config;
use crate::connect::{connect, Database};
use crate::coop;

/// The shortest time between two beats.
const MIN_PERIOD: Duration = Duration::from_millis(50);

/// Time between two beats of a sub-consumer whose dead interval is `dead`:
/// a third of it, so a beat delayed by a busy database or machine still
/// comes in time.
pub(crate) fn period(dead: Duration) -> Duration {
    (dead / 3).max(MIN_PERIOD)
}

/// The heartbeat of a batch loop: its connection, kept from round to round
/// and opened again when lost.
#[derive(Default)]
pub(crate) struct Heartbeat {
    client: Option<Arc<Client>>,
}

/// A heartbeat in progress; it stops when this is dropped.
pub(crate) struct Beating {
    _stop: DropGuard,
}

impl Heartbeat {
    /// Starts beating for the sub-consumer of `config` while it processes a
    /// batch. The beat stops when the returned guard is dropped: at the end of
    /// the round, however it ends (a round dropped midway included).
    ///
    /// `None`, and no beat, for a consumer that is not a sub-consumer or has
    /// no `dead_interval` (its group takes no batch over), and when the
    /// heartbeat's connection cannot be opened (logged; the batch is
    /// processed all the same, as without a heartbeat).
    pub(crate) async fn start(&mut self, config: &Config) -> Option<Beating> {
        let sub = config.subconsumer.clone()?;
        let every = period(config.dead_interval()?);
        let client = match &self.client {
            Some(c) if !c.is_closed() => Arc::clone(c),
            _ => {
                self.client = None;
                let app = crate::batch_loop::application_name(config);
                match connect(&config.db, &app, Database::Queue).await {
                    Ok(c) => Arc::clone(self.client.insert(Arc::new(c))),
                    Err(e) => {
                        log::warn!(
                            "sub-consumer {sub:?}: cannot open the heartbeat connection, so a batch taking \
                             longer than dead_interval may go to another sub-consumer: {}",
                            crate::cli::error_chain(&e)
                        );
                        return None;
                    }
                }
            }
        };
        let stop = CancellationToken::new();
        let beat = Beat {
            client,
            queue: config.queue.clone(),
            consumer: config.consumer.clone(),
            subconsumer: sub,
            every,
        };
        tokio::spawn(beat.run(stop.clone()));
        Some(Beating {
            _stop: stop.drop_guard(),
        })
    }
}

/// What the heartbeat's task needs.
struct Beat {
    client: Arc<Client>,
    queue: String,
    consumer: String,
    subconsumer: String,
    every: Duration,
}

impl Beat {
    /// Touches the sub-consumer every `every` until `stop` is cancelled, or
    /// until a touch fails (the next round tries again).
    async fn run(self, stop: CancellationToken) {
        let Beat {
            client,
            queue,
            consumer,
            subconsumer,
            every,
        } = self;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let touched = tokio::select! {
                () = stop.cancelled() => return,
                touched = coop::touch_subconsumer(&*client, &queue, &consumer, &subconsumer) => touched,
            };
            match touched {
                Ok(true) => log::trace!("sub-consumer {subconsumer:?} of {consumer:?}: heartbeat"),
                Ok(false) => {
                    log::warn!(
                        "sub-consumer {subconsumer:?} of {consumer:?} on queue {queue:?} is no longer \
                         registered: its heartbeat stops"
                    );
                    return;
                }
                // Gone with the connection: the batch's connection is likely
                // gone too, and the loop reports that once.
                Err(e) if client.is_closed() => {
                    log::debug!(
                        "sub-consumer {subconsumer:?}: heartbeat stopped, its connection is lost: {}",
                        crate::cli::error_chain(&e)
                    );
                    return;
                }
                Err(e) => {
                    log::warn!(
                        "sub-consumer {subconsumer:?}: heartbeat stopped, so its batch may go to another \
                         sub-consumer after dead_interval: {}",
                        crate::cli::error_chain(&e)
                    );
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_three_times_per_dead_interval_and_never_in_a_busy_loop() {
        assert_eq!(period(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(period(Duration::from_millis(900)), Duration::from_millis(300));
        assert_eq!(period(Duration::ZERO), MIN_PERIOD);
    }
}
