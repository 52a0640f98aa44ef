//! Signals: turned into state that the loop reads.
//!
//! One task receives the signals (through tokio, no hand-written handler) and only
//! sets state: a cancellation token for a graceful stop, another for an immediate
//! stop, and a reload counter; USR1 and USR2 change the log level there and then.
//! A graceful stop has a deadline: `stop_timeout` after it, the immediate stop
//! follows by itself.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::logger::LogHandle;

/// What the signals asked the loop for.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    /// TERM or INT: finish the round in flight, then stop.
    pub graceful: CancellationToken,
    /// QUIT (or a second TERM/INT): drop the round in flight and stop.
    pub immediate: CancellationToken,
    /// HUP: changes each time a reload is asked for.
    pub reload: watch::Receiver<u64>,
}

/// Whether a reload was asked for since the last call; marks it seen.
pub(crate) fn take_reload(reload: &mut watch::Receiver<u64>) -> bool {
    match reload.has_changed() {
        Ok(true) => {
            reload.borrow_and_update();
            true
        }
        _ => false,
    }
}

/// Completes when a reload is asked for (at once if one is pending and unseen).
pub(crate) async fn reload_requested(reload: &mut watch::Receiver<u64>) {
    if reload.changed().await.is_err() {
        // The signal task is gone: no reload can come any more.
        std::future::pending::<()>().await;
    }
}

struct Streams {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

/// Installs the handlers and spawns the task that serves them. Must run inside the
/// tokio runtime. From here on, the signals no longer have their default effect.
/// `stop_timeout` after a graceful stop begins, the immediate stop follows.
pub(crate) fn install(log: &LogHandle, stop_timeout: Duration) -> Result<Control> {
    let fail = |source| Error::SignalHandlers {
        pid: std::process::id(),
        source,
    };
    let streams = Streams {
        term: signal(SignalKind::terminate()).map_err(fail)?,
        int: signal(SignalKind::interrupt()).map_err(fail)?,
        quit: signal(SignalKind::quit()).map_err(fail)?,
        hup: signal(SignalKind::hangup()).map_err(fail)?,
        usr1: signal(SignalKind::user_defined1()).map_err(fail)?,
        usr2: signal(SignalKind::user_defined2()).map_err(fail)?,
    };
    let (reload_tx, reload_rx) = watch::channel(0_u64);
    let control = Control {
        graceful: CancellationToken::new(),
        immediate: CancellationToken::new(),
        reload: reload_rx,
    };
    tokio::spawn(serve(streams, control.clone(), reload_tx, log.clone()));
    tokio::spawn(deadline(control.clone(), stop_timeout));
    Ok(control)
}

/// The stop deadline: `stop_timeout` after a graceful stop begins, the round in
/// flight is abandoned (the immediate stop).
async fn deadline(control: Control, stop_timeout: Duration) {
    control.graceful.cancelled().await;
    tokio::select! {
        () = control.immediate.cancelled() => {}
        () = tokio::time::sleep(stop_timeout) => {
            crate::warning!(
                "the stop deadline ({:.1}s after the stop was asked for) has passed: abandoning the round in flight",
                stop_timeout.as_secs_f64()
            );
            control.immediate.cancel();
        }
    }
}

async fn serve(mut s: Streams, control: Control, reload: watch::Sender<u64>, log: LogHandle) {
    loop {
        tokio::select! {
            Some(()) = s.term.recv() => stop(&control, "SIGTERM"),
            Some(()) = s.int.recv() => stop(&control, "SIGINT"),
            Some(()) = s.quit.recv() => {
                crate::notice!("received SIGQUIT: stopping now, abandoning the round in flight");
                crate::systemd::stopping();
                control.graceful.cancel();
                control.immediate.cancel();
            }
            Some(()) = s.hup.recv() => {
                crate::notice!("received SIGHUP: reloading");
                crate::systemd::reloading();
                reload.send_modify(|n| *n = n.wrapping_add(1));
            }
            Some(()) = s.usr1.recv() => { log.more(); }
            Some(()) = s.usr2.recv() => { log.less(); }
            else => break,
        }
    }
}

fn stop(control: &Control, name: &str) {
    if control.graceful.is_cancelled() {
        crate::notice!("received {name} again: stopping now, abandoning the round in flight");
        control.immediate.cancel();
    } else {
        crate::notice!("received {name}: stopping after the round in flight");
        crate::systemd::stopping();
        control.graceful.cancel();
    }
}
