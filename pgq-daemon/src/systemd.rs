//! systemd's notify protocol (`Type=notify`), through the `sd-notify` crate:
//! `READY=1` once the daemon runs its loop, `STOPPING=1` when it is asked to
//! stop, `RELOADING=1` (then `READY=1`) around a reload, and `WATCHDOG=1`
//! every half of `WatchdogSec` while the loop makes progress
//! ([`loop_is_live`](crate::loop_is_live)), so that systemd restarts a stuck
//! loop. Without `NOTIFY_SOCKET` in the environment nothing is sent.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        crate::warning!("cannot notify systemd ({states:?}): {e}");
    }
}

/// `READY=1`, with the process's pid (`MAINPID`), and a status line.
pub(crate) fn ready(status: &str) {
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(status),
    ]);
}

/// `STOPPING=1`.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `RELOADING=1` with the monotonic clock, as `Type=notify-reload` wants it too.
pub(crate) fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// The watchdog period systemd asks for (`WATCHDOG_USEC`, for this process),
/// if any.
fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// When systemd asks for a watchdog, spawns the task that feeds it every half
/// of its period while the loop makes progress. Must run inside the runtime.
pub(crate) fn spawn_watchdog() {
    let Some(period) = watchdog_period() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(10));
    crate::verbose!("systemd watchdog: {period:?}; notifying every {every:?} while the loop makes progress");
    tokio::spawn(async move {
        let mut said_stuck = false;
        loop {
            if crate::progress::loop_is_live() {
                said_stuck = false;
                send(&[NotifyState::Watchdog]);
            } else if !said_stuck {
                said_stuck = true;
                crate::error!(
                    "the loop makes no progress (a round has run for {:.0}s): no longer notifying the systemd watchdog",
                    crate::progress::round_in_flight().unwrap_or_default().as_secs_f64()
                );
            }
            tokio::time::sleep(every).await;
        }
    });
}
