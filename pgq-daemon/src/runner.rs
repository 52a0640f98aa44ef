//! The daemon trait and the loop that drives it.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::chain::error_chain;
use crate::command::{Options, RuntimeFlavor};
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

    /// Called when a round in flight was abandoned (its [`process`](Daemon::process)
    /// future dropped) by an immediate stop: SIGQUIT, a second SIGTERM, or the stop
    /// deadline passing. Before [`shutdown`](Daemon::shutdown). A daemon says here what
    /// it abandoned. The default does nothing.
    async fn abandoned(&mut self) {}
}

/// How long after an immediate stop the process may still be running before the
/// control thread ends it: a round whose thread is blocked (a handler in a
/// blocking call) never gives the runtime a chance to drop it.
const BACKSTOP: Duration = Duration::from_millis(800);

/// Builds a runtime, runs `make` and the first `config`, calls `ready`, then runs the
/// loop. `Err` is a startup failure (nothing was reported ready); `Ok` is the exit
/// code of the run. The signals, the stop deadline and the systemd watchdog are served
/// by a control thread of their own, so they act whatever the loop's thread does.
pub(crate) fn serve<D, F, Fut>(
    opts: &Options,
    pidfile: Option<PathBuf>,
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
    let name = &opts.name;
    let pid = std::process::id();
    let mut builder = match opts.runtime {
        RuntimeFlavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        RuntimeFlavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|source| Failure::failed(Error::Runtime { pid, source }))?;
    crate::progress::set_limit(opts.stuck_after);
    let (control, control_thread) = ControlThread::start(log, opts.stop_timeout, pidfile)?;
    let released = control_thread.released.clone();
    let result = runtime.block_on(async {
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
        crate::systemd::ready("running");
        let stopped = run_loop(&mut daemon, log, control, settings.delay, once).await;
        // The loop let go: what is left is shutting down.
        released.cancel();
        if stopped.abandoned {
            daemon.abandoned().await;
        }
        daemon.shutdown().await;
        let code = stopped.code;
        Ok(code)
    });
    control_thread.finish();
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

/// The thread that receives the signals, keeps the stop deadline and feeds the
/// systemd watchdog, on a runtime of its own.
struct ControlThread {
    /// Cancelled when the daemon has stopped: the thread ends.
    done: CancellationToken,
    /// Cancelled when the loop has let go of its rounds (what is left is
    /// shutting down): says which the backstop cut short.
    released: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlThread {
    /// Starts the thread; returns the state the signals set once its handlers are
    /// installed.
    fn start(log: &LogHandle, stop_timeout: Duration, pidfile: Option<PathBuf>) -> Result<(Control, Self), Failure> {
        let pid = std::process::id();
        let done = CancellationToken::new();
        let released = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (log, finished, let_go) = (log.clone(), done.clone(), released.clone());
        let thread = std::thread::Builder::new()
            .name("pgq-daemon control".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(source) => {
                        let _ = tx.send(Err(Failure::failed(Error::Runtime { pid, source })));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let control = match signals::install(&log, stop_timeout) {
                        Ok(control) => control,
                        Err(e) => {
                            let _ = tx.send(Err(Failure::failed(e)));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(control.clone()));
                    crate::systemd::spawn_watchdog();
                    tokio::select! {
                        () = finished.cancelled() => {}
                        () = backstop(&control.immediate, &finished, &let_go, &log, pidfile) => {}
                    }
                });
            })
            .map_err(|source| Failure::failed(Error::Runtime { pid, source }))?;
        let control = rx
            .recv()
            .map_err(|_| Failure::failed("the control thread ended before it installed the signal handlers"))??;
        Ok((
            control,
            ControlThread {
                done,
                released,
                thread: Some(thread),
            },
        ))
    }

    /// The daemon has stopped: ends the thread.
    fn finish(mut self) {
        self.done.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// Ends the process [`BACKSTOP`] after an immediate stop if the daemon has not
/// stopped by then (its round's thread blocked, or its shutdown hanging; the
/// stop meets its deadline either way): logs which, removes the pidfile,
/// exits 1.
async fn backstop(
    immediate: &CancellationToken,
    finished: &CancellationToken,
    released: &CancellationToken,
    log: &LogHandle,
    pidfile: Option<PathBuf>,
) {
    immediate.cancelled().await;
    tokio::select! {
        () = finished.cancelled() => {}
        () = tokio::time::sleep(BACKSTOP) => {
            if released.is_cancelled() {
                crate::fatal!(
                    "shutting down did not finish within {BACKSTOP:?} of the immediate stop: exiting now"
                );
            } else {
                crate::fatal!(
                    "the round in flight did not let go within {BACKSTOP:?} of the immediate stop (its thread is \
                     blocked): exiting now; its transactions end with the connections"
                );
            }
            log.flush();
            if let Some(path) = pidfile {
                let _ = std::fs::remove_file(path);
            }
            std::process::exit(ExitCode::Failed.code());
        }
    }
}

/// How [`run_loop`] ended.
struct Stopped {
    /// The exit code of the run.
    code: ExitCode,
    /// A round in flight was dropped by an immediate stop.
    abandoned: bool,
}

impl From<ExitCode> for Stopped {
    fn from(code: ExitCode) -> Stopped {
        Stopped { code, abandoned: false }
    }
}

/// Rounds, rests, reloads, until a stop.
async fn run_loop<D: Daemon>(
    daemon: &mut D,
    log: &LogHandle,
    control: Control,
    mut delay: Duration,
    once: bool,
) -> Stopped {
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
            return ExitCode::Ok.into();
        }
        if std::mem::take(&mut reload_due) || reload.take() {
            apply_reload(daemon, log, &mut delay, &immediate).await;
            continue;
        }
        crate::progress::round_begins();
        let outcome = tokio::select! {
            biased;
            () = immediate.cancelled() => return Stopped { code: ExitCode::Ok, abandoned: true },
            outcome = daemon.process() => outcome,
        };
        let rest = match outcome {
            Ok(Activity::Busy) => {
                crate::progress::rest_begins(Duration::ZERO);
                continue;
            }
            Ok(Activity::Idle) if once => {
                crate::verbose!("no more work: stopping (run --once)");
                return ExitCode::Ok.into();
            }
            Ok(Activity::Idle) => delay,
            Ok(Activity::Backoff(pause)) if once => {
                crate::notice!("the round asked to back off for {pause:?}: stopping (run --once)");
                return ExitCode::Ok.into();
            }
            Ok(Activity::Backoff(pause)) => pause,
            Err(e) if once => {
                crate::error!("round failed: {}", error_chain(e.as_ref()));
                return ExitCode::Failed.into();
            }
            Err(e) => {
                crate::error!("round failed: {}; next round in {delay:?}", error_chain(e.as_ref()));
                delay
            }
        };
        crate::progress::rest_begins(rest);
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
            crate::systemd::ready("running");
        }
        Err(e) => {
            crate::error!(
                "reload failed, keeping the previous settings: {}",
                error_chain(e.as_ref())
            );
            crate::systemd::ready("running (the last reload failed)");
        }
    }
}
