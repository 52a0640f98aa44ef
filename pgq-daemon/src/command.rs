//! The daemon commands, as a clap subcommand, and the entry point that runs them.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::exit::{ExitCode, Failure};
use crate::level::Level;
use crate::runner::Daemon;
use crate::{control, daemonize, foreground};

/// The commands every daemon binary has.
///
/// Flatten it into the binary's own subcommands:
///
/// ```
/// #[derive(clap::Subcommand)]
/// enum Command {
///     /// Create what the daemon needs.
///     Install,
///     #[command(flatten)]
///     Daemon(pgq_daemon::DaemonCommand),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
#[non_exhaustive]
pub enum DaemonCommand {
    /// Start the daemon in the background; returns once it is up (exit 4 if it already runs)
    Start,
    /// Run the daemon in the foreground, logging to stderr unless a logfile is set
    Run {
        /// Stop at the first round that finds no work (for cron)
        #[arg(long)]
        once: bool,
    },
    /// Stop the daemon after the round in flight (SIGTERM), and wait until it is gone; the daemon
    /// abandons a round still running `stop_timeout` after SIGTERM (it is rolled back)
    Stop {
        /// Abandon the round in flight after this many seconds (SIGQUIT), if the daemon is still there
        #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
        timeout: Option<Duration>,
    },
    /// Stop the daemon at once, abandoning the round in flight (SIGQUIT, then SIGKILL)
    Kill,
    /// Make the daemon reopen its log file and re-read its configuration (SIGHUP)
    Reload,
    /// Stop the daemon (escalating to kill if it takes too long) and start it again
    Restart,
    /// Tell whether the daemon runs, and its pid (exit 0 running, 4 not running)
    Status {
        /// One JSON object instead of lines (fields documented in the README)
        #[arg(long)]
        json: bool,
    },
    /// Make the daemon log one level more (SIGUSR1)
    Logmore,
    /// Make the daemon log one level less (SIGUSR2)
    Logless,
}

/// `stop --timeout SECS`: a number of seconds from 0 to a year.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=MAX_STOP_TIMEOUT.as_secs_f64()).contains(&secs) {
        return Err(format!(
            "{s} is out of range: give 0 to {} seconds",
            MAX_STOP_TIMEOUT.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The longest `stop --timeout`: a year.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(31_536_000);

/// The tokio runtime the daemon's loop runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RuntimeFlavor {
    /// One thread: every task of the daemon (the loop, its connections, the
    /// signal task, an HTTP endpoint) shares it. The fastest for a loop of
    /// round trips, where nothing crosses threads. The default.
    #[default]
    CurrentThread,
    /// tokio's multi-threaded runtime, a worker per core: for a daemon whose
    /// rounds do CPU work of their own, or block, while its other tasks must go on.
    MultiThread,
}

/// How to run and find the daemon.
///
/// Build it with [`Options::new`] and set the fields, or write it out in full:
///
/// ```
/// use std::time::Duration;
/// let mut opts = pgq_daemon::Options::new("mydaemon");
/// opts.pidfile = Some("/run/mydaemon.pid".into());
/// opts.logfile = Some("/var/log/mydaemon.log".into());
/// opts.stop_timeout = Duration::from_secs(10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The daemon's name, in messages (`NAME started, pid N`).
    pub name: String,
    /// The pidfile. Required by `start` and by the commands that find the daemon;
    /// optional for `run`, which holds it when it is set.
    pub pidfile: Option<PathBuf>,
    /// The log file. Required by `start`; `run` logs to stderr without one.
    pub logfile: Option<PathBuf>,
    /// The log level until the first [`Daemon::config`] returns one. Default NOTICE.
    pub level: Level,
    /// The stop deadline. Default 30 s.
    ///
    /// After SIGTERM (or SIGINT), the daemon lets the round in flight finish for this long
    /// at most; past it, the round is abandoned as on SIGQUIT (its future dropped), and
    /// the daemon exits. `stop` and `restart` wait this long, plus [`Options::STOP_GRACE`],
    /// for the daemon to be gone. `kill` (and `restart`, escalating) waits after SIGQUIT
    /// for this long too, but at most [`Options::KILL_WAIT`], before it sends SIGKILL.
    pub stop_timeout: Duration,
    /// How long a round may run before the loop counts as stuck
    /// ([`loop_is_live`](crate::loop_is_live) turns false and the systemd watchdog is
    /// no longer notified). Default 300 s.
    pub stuck_after: Duration,
    /// The runtime the loop runs on. Default [`RuntimeFlavor::CurrentThread`].
    pub runtime: RuntimeFlavor,
}

impl Options {
    /// The longest `kill` waits after SIGQUIT before it sends SIGKILL.
    pub const KILL_WAIT: Duration = Duration::from_secs(5);
    /// What `stop` waits beyond `stop_timeout`: for the daemon to roll back the
    /// round it abandoned, close its connections and exit.
    pub const STOP_GRACE: Duration = Duration::from_secs(5);

    /// Options with the given name, no pidfile, no logfile, level NOTICE, a 30 s
    /// `stop_timeout`, a 300 s `stuck_after`, on a current-thread runtime.
    pub fn new(name: impl Into<String>) -> Self {
        Options {
            name: name.into(),
            pidfile: None,
            logfile: None,
            level: Level::Notice,
            stop_timeout: Duration::from_secs(30),
            stuck_after: Duration::from_secs(300),
            runtime: RuntimeFlavor::CurrentThread,
        }
    }

    /// How long `kill` waits after SIGQUIT: `stop_timeout`, at most [`Options::KILL_WAIT`].
    pub fn kill_wait(&self) -> Duration {
        self.stop_timeout.min(Self::KILL_WAIT)
    }
}

/// Runs a daemon command, printing its outcome, and returns its exit code.
///
/// `make` builds the daemon (connects, checks...); it runs inside the tokio runtime,
/// only for `start`, `run` and `restart`. A [`Failure`] from it, or an error from the
/// first [`Daemon::config`], is a startup failure: printed on stderr, with its exit
/// code (for `start`, the parent prints it, having waited for the daemon's report).
///
/// `details` is called by `status` only (not by `status --json`, which prints
/// `{"name": ..., "running": ..., "pid": ...}`), after the `NAME is running, pid N` (or `NAME is
/// not running`) line: each line it returns is printed as is. A consumer lists its
/// queue, lag and pending events there; pass `Vec::new` when there is nothing to add.
/// The exit code stays the one of [`status`](crate::status).
///
/// This function is synchronous and must be called **before any thread is started**
/// (no tokio runtime yet): `start` forks. The daemon process started by `start`
/// never returns from it: it exits when it stops. In every other case it returns.
pub fn execute<D, F, Fut, S>(cmd: &DaemonCommand, opts: &Options, make: F, details: S) -> ExitCode
where
    D: Daemon,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<D, Failure>>,
    S: FnOnce() -> Vec<String>,
{
    match cmd {
        DaemonCommand::Start => daemonize::start(opts, make),
        DaemonCommand::Run { once } => foreground::run(opts, *once, make),
        DaemonCommand::Stop { timeout } => control::stop(opts, *timeout),
        DaemonCommand::Kill => control::kill(opts),
        DaemonCommand::Reload => control::reload(opts),
        DaemonCommand::Restart => match control::stop_for_restart(opts) {
            ExitCode::Ok => daemonize::start(opts, make),
            code => code,
        },
        DaemonCommand::Status { json: true } => control::status_json(opts),
        DaemonCommand::Status { json: false } => {
            let code = control::status(opts);
            if code != ExitCode::Failed {
                for line in details() {
                    crate::outln!("{line}");
                }
            }
            code
        }
        DaemonCommand::Logmore => control::logmore(opts),
        DaemonCommand::Logless => control::logless(opts),
    }
}
