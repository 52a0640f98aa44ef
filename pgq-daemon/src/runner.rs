//! The daemon trait and the loop that drives it.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::chain::error_chain;
use crate::error::{BoxError, Error};
use crate::exit::{ExitCode, Failure};
use crate::level::Level;
use crate::logger::LogHandle;
use crate::signals::{self, Control};

/// What [`Daemon::config`] returns, applied by the runner at start and on every reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long to rest between two rounds when there is no work
    /// ([`Activity::Idle`], or an error from [`Daemon::process`]).
    pub delay: Duration,
    /// The log level.
    pub level: Level,
}

/// What a round of [`Daemon::process`] says about the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activity {
    /// There may be more work: run the next round at once.
    Busy,
    /// No work for now: rest for the configured `delay` (or until
    /// [`Daemon::wait_for_work`] completes).
    Idle,
    /// Rest this long before the next round (e.g. back off after a failure).
    Backoff(Duration),
}

/// A daemon: a loop of rounds of work, with a rest between them.
///
/// The runner calls [`config`](Daemon::config) once at start and again on every
/// reload (SIGHUP, the `reload` command), then [`process`](Daemon::process) round after
/// round. See the [crate documentation](crate) for how the signals act on the loop.
#[async_trait]
pub trait Daemon: Send {
    /// Reads the daemon's configuration (again) and returns the settings the runner
    /// applies: the log level, and the delay between idle rounds.
    ///
    /// At start, an error is a startup failure ([`ExitCode::Failed`]); on reload, it
    /// is logged and the previous settings stay.
    async fn config(&mut self) -> Result<Settings, BoxError>;

    /// One round of work.
    ///
    /// An error is logged at ERROR and the loop rests for `delay` before the next
    /// round: the daemon does not die of it. On an immediate stop (SIGQUIT, `kill`)
    /// the future is dropped where it stands.
    async fn process(&mut self) -> Result<Activity, BoxError>;

    /// Completes when there is work to do: the rest between rounds ends early when it
    /// does. The default never completes, so the rest lasts its full length.
    async fn wait_for_work(&mut self) {
        std::future::pending::<()>().await
    }

    /// Called once when the loop has stopped, gracefully or not, before the process
    /// exits. The default does nothing.
    async fn shutdown(&mut self) {}
}

/// Builds a runtime, runs `make` and the first `config`, calls `ready`, then runs the
/// loop. `Err` is a startup failure (nothing was reported ready); `Ok` is the exit
/// code of the run.
pub(crate) fn serve<D, F, Fut>(
    name: &str,
    log: &LogHandle,
    once: bool,
    make: F,
    ready: impl FnOnce(),
) -> Result<ExitCode, Failure>
where
    D: Daemon,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<D, Failure>>,
{
    let pid = std::process::id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Failure::failed(Error::Runtime { pid, source }))?;
    let result = runtime.block_on(async {
        let control = signals::install(log).map_err(Failure::failed)?;
        let startup = async {
            let mut daemon = make().await?;
            let settings = daemon.config().await.map_err(Failure::failed)?;
            Ok::<_, Failure>((daemon, settings))
        };
        let (mut daemon, settings) = tokio::select! {
            biased;
            () = control.immediate.cancelled() => {
                return Err(Failure::failed("startup interrupted by SIGQUIT"));
            }
            started = startup => started?,
        };
        log.set_level(settings.level);
        crate::notice!(
            "{name} started, pid {pid}, log level {}, delay {:?}",
            settings.level,
            settings.delay
        );
        ready();
        let code = run_loop(&mut daemon, log, control, settings.delay, once).await;
        daemon.shutdown().await;
        Ok(code)
    });
    // Tasks the daemon left behind (connections...) get a moment, not forever.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if result.is_ok() {
        // Last, so that a daemon that says it stopped has nothing left to do
        // but let go of its pidfile and exit.
        crate::notice!("{name} stopped, pid {pid}");
    }
    log.flush();
    result
}

/// Rounds, rests, reloads, until a stop. Returns the exit code of the run.
async fn run_loop<D: Daemon>(
    daemon: &mut D,
    log: &LogHandle,
    control: Control,
    mut delay: Duration,
    once: bool,
) -> ExitCode {
    let Control {
        graceful,
        immediate,
        reload,
    } = control;
    let mut reload = Reload(reload);
    // Set when the rest was cut short by a reload request (which marks it seen).
    let mut reload_due = false;
    loop {
        if graceful.is_cancelled() {
            return ExitCode::Ok;
        }
        if std::mem::take(&mut reload_due) || reload.take() {
            apply_reload(daemon, log, &mut delay, &immediate).await;
            continue;
        }
        let outcome = tokio::select! {
            biased;
            () = immediate.cancelled() => return ExitCode::Ok,
            outcome = daemon.process() => outcome,
        };
        let rest = match outcome {
            Ok(Activity::Busy) => continue,
            Ok(Activity::Idle) if once => {
                crate::verbose!("no more work: stopping (run --once)");
                return ExitCode::Ok;
            }
            Ok(Activity::Idle) => delay,
            Ok(Activity::Backoff(pause)) if once => {
                crate::notice!("the round asked to back off for {pause:?}: stopping (run --once)");
                return ExitCode::Ok;
            }
            Ok(Activity::Backoff(pause)) => pause,
            Err(e) if once => {
                crate::error!("round failed: {}", error_chain(e.as_ref()));
                return ExitCode::Failed;
            }
            Err(e) => {
                crate::error!("round failed: {}; next round in {delay:?}", error_chain(e.as_ref()));
                delay
            }
        };
        crate::debug!("resting for {rest:?}");
        tokio::select! {
            biased;
            () = immediate.cancelled() => {}
            () = graceful.cancelled() => {}
            () = reload.requested() => reload_due = true,
            () = tokio::time::sleep(rest) => {}
            () = daemon.wait_for_work() => crate::debug!("woken up: work to do"),
        }
    }
}

/// The reload side of [`Control`].
struct Reload(tokio::sync::watch::Receiver<u64>);

impl Reload {
    fn take(&mut self) -> bool {
        signals::take_reload(&mut self.0)
    }

    async fn requested(&mut self) {
        signals::reload_requested(&mut self.0).await
    }
}

async fn apply_reload<D: Daemon>(daemon: &mut D, log: &LogHandle, delay: &mut Duration, immediate: &CancellationToken) {
    // First, so that what follows goes to the new file after a logrotate.
    if let Err(e) = log.reopen() {
        crate::error!("{}", error_chain(&e));
    }
    let config = tokio::select! {
        biased;
        () = immediate.cancelled() => return,
        config = daemon.config() => config,
    };
    match config {
        Ok(settings) => {
            log.set_level(settings.level);
            *delay = settings.delay;
            crate::notice!("reloaded: log level {}, delay {:?}", settings.level, settings.delay);
        }
        Err(e) => crate::error!(
            "reload failed, keeping the previous settings: {}",
            error_chain(e.as_ref())
        ),
    }
}
