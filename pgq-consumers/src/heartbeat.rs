//! The heartbeat of a cooperative sub-consumer, and the lease it keeps on
//! its batch.
//!
//! A sub-consumer silent for longer than `dead_interval` loses its batch to
//! another member of its group ([`coop::next_batch_info`]). Taking a batch
//! marks the sub-consumer as seen; then, while the handler works on the
//! batch, the heartbeat does: about every third of `dead_interval` it calls
//! `pgq_consumer.touch_subconsumer` for the batch over a connection of its
//! own (the batch's connection is inside the batch's transaction, whose
//! writes nobody sees before it commits, and the reader connection is busy
//! streaming the batch). It beats from a task of its own for as long as the
//! round lasts, so a batch that takes longer than `dead_interval` stays with
//! the sub-consumer working on it, whether the handler awaits or computes.
//!
//! Each beat that the queue database confirms (the sub-consumer still holds
//! the batch) renews the [`Lease`]: the sub-consumer can prove it holds its
//! batch for `dead_interval` after the beat was sent, since no other member
//! can take the batch over before then. When no beat is confirmed for that
//! long (the process was stopped, the heartbeat's connection is lost or
//! silent, the database is unreachable), or a beat finds the batch taken
//! over, the lease is lost and the batch loop stops working on the batch and
//! rolls it back: another member may be applying it. (Whatever slips between
//! the last check and a commit is caught by the commit itself: a taken-over
//! batch cannot be finished in the queue database, and a cooperative
//! group's remote database records each batch once.)
//!
//! A killed process stops beating, and so does one whose runtime no longer
//! runs (stopped, wedged): their batches go to another member after
//! `dead_interval`. A handler that awaits something that never comes keeps
//! its batch: give its waits timeouts.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::Config;
use crate::coop;
use crate::net::connect::{connect, Database};

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
    client: Arc<Mutex<Option<Arc<Client>>>>,
}

/// Why a [`Lease`] was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// No beat was confirmed for `dead_interval`: another sub-consumer may
    /// have taken the batch over.
    Expired(Duration),
    /// A beat found that the sub-consumer no longer holds the batch.
    TakenOver,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::Expired(d) => write!(
                f,
                "its hold on the batch was last confirmed {:.1}s ago, longer than dead_interval, so another \
                 sub-consumer may have taken it over",
                d.as_secs_f64()
            ),
            Loss::TakenOver => f.write_str("the queue database says another sub-consumer has taken the batch over"),
        }
    }
}

/// A sub-consumer's hold on the batch it works on, renewed by its heartbeat.
/// The heartbeat stops when this is dropped: at the end of the round,
/// however it ends (a round dropped midway included).
pub(crate) struct Lease {
    dead: Duration,
    /// When the last confirmed beat (or the taking of the batch) was sent.
    confirmed: watch::Receiver<Instant>,
    /// Cancelled when a beat finds the batch taken over.
    taken_over: CancellationToken,
    _stop: DropGuard,
}

impl Lease {
    /// `Ok` while the sub-consumer can prove it holds the batch.
    pub(crate) fn check(&self) -> Result<(), Loss> {
        if self.taken_over.is_cancelled() {
            return Err(Loss::TakenOver);
        }
        let age = self.confirmed.borrow().elapsed();
        if age >= self.dead {
            return Err(Loss::Expired(age));
        }
        Ok(())
    }

    /// Completes when the lease is lost.
    ///
    /// Cancellation-safe.
    pub(crate) async fn lost(&self) -> Loss {
        loop {
            let deadline = *self.confirmed.borrow() + self.dead;
            tokio::select! {
                () = self.taken_over.cancelled() => return Loss::TakenOver,
                () = tokio::time::sleep_until(deadline) => {
                    if let Err(loss) = self.check() {
                        return loss;
                    }
                }
            }
        }
    }
}

impl Heartbeat {
    /// Starts beating for the sub-consumer of `config` while it processes
    /// batch `batch_id`, which it asked for at `asked_at`, and returns its
    /// lease on the batch.
    ///
    /// `None`, and no beat, for a consumer that is not a sub-consumer or has
    /// no `dead_interval` (its group takes no batch over, so it holds its
    /// batches for good).
    pub(crate) fn start(&mut self, config: &Config, batch_id: i64, asked_at: Instant) -> Option<Lease> {
        let sub = config.subconsumer.clone()?;
        let dead = config.dead_interval()?;
        let (confirm, confirmed) = watch::channel(asked_at);
        let taken_over = CancellationToken::new();
        let stop = CancellationToken::new();
        let beat = Beat {
            slot: Arc::clone(&self.client),
            config: config.clone(),
            subconsumer: sub,
            batch_id,
            every: period(dead),
            confirm,
            taken_over: taken_over.clone(),
        };
        tokio::spawn(beat.run(stop.clone()));
        Some(Lease {
            dead,
            confirmed,
            taken_over,
            _stop: stop.drop_guard(),
        })
    }
}

/// What the heartbeat's task needs.
struct Beat {
    slot: Arc<Mutex<Option<Arc<Client>>>>,
    config: Config,
    subconsumer: String,
    batch_id: i64,
    every: Duration,
    confirm: watch::Sender<Instant>,
    taken_over: CancellationToken,
}

impl Beat {
    /// Touches the sub-consumer every `every` until `stop` is cancelled or
    /// the batch is found taken over. A failed beat is logged (once, at
    /// WARNING, until one succeeds again) and the next one opens a new
    /// connection if the old one is gone.
    async fn run(self, stop: CancellationToken) {
        let (queue, consumer, sub, batch_id) = (
            &self.config.queue,
            &self.config.consumer,
            &self.subconsumer,
            self.batch_id,
        );
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
            let sent = Instant::now();
            let beat = async {
                let client = self.client().await?;
                coop::touch_batch(&*client, queue, consumer, sub, batch_id).await
            };
            let touched = tokio::select! {
                () = stop.cancelled() => return,
                touched = beat => touched,
            };
            match touched {
                Ok(true) => {
                    self.confirm.send_replace(sent);
                    if std::mem::take(&mut failing) {
                        log::warn!("sub-consumer {sub:?} of {consumer:?}: heartbeat confirmed again");
                    } else {
                        log::trace!("sub-consumer {sub:?} of {consumer:?}: heartbeat");
                    }
                }
                Ok(false) => {
                    log::warn!(
                        "sub-consumer {sub:?} of {consumer:?} on queue {queue:?} no longer holds batch {batch_id} \
                         (taken over by another sub-consumer, or unregistered): stopping work on it"
                    );
                    self.taken_over.cancel();
                    return;
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        log::warn!(
                            "sub-consumer {sub:?} of {consumer:?}: heartbeat failed ({}); unless a beat gets \
                             through within dead_interval, batch {batch_id} is given up and rolled back",
                            pgq_daemon::error_chain(&e)
                        );
                    }
                    self.forget_lost_client();
                }
            }
        }
    }

    /// The heartbeat's connection, opened when there is none.
    async fn client(&self) -> crate::error::Result<Arc<Client>> {
        let kept = self.slot.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(c) = kept.filter(|c| !c.is_closed()) {
            return Ok(c);
        }
        let app = format!("{} heartbeat", crate::batch_loop::application_name(&self.config));
        let client = Arc::new(connect(&self.config.db, &app, Database::Queue).await?);
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&client));
        Ok(client)
    }

    fn forget_lost_client(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|c| c.is_closed()) {
            *slot = None;
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
