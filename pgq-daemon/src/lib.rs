//! A Unix daemon around an async loop: fork, a locked pidfile, signals, six-level
//! logging that logrotate can rotate, and the control commands
//! `start | run [--once] | stop | kill | reload | restart | status | logmore | logless`.
//!
//! This is the SystemDaemon and SimpleLogger of libphp-pgq, for tokio. It knows
//! processes and nothing about queues or databases: implement [`Daemon`] (a
//! [`config`](Daemon::config) read at start and on reload, and a
//! [`process`](Daemon::process) called round after round) and hand a
//! [`DaemonCommand`] to [`execute`].
//!
//! ```no_run
//! use std::time::Duration;
//! use clap::Parser;
//! use pgq_daemon::{async_trait, Activity, BoxError, Daemon, DaemonCommand, ExitCode, Level, Options, Settings};
//!
//! /// Counts rounds, one every five seconds.
//! struct Counter {
//!     rounds: u64,
//! }
//!
//! #[async_trait]
//! impl Daemon for Counter {
//!     async fn config(&mut self) -> Result<Settings, BoxError> {
//!         // A real daemon re-reads its configuration file here.
//!         Ok(Settings { delay: Duration::from_secs(5), level: Level::Notice })
//!     }
//!
//!     async fn process(&mut self) -> Result<Activity, BoxError> {
//!         self.rounds += 1;
//!         pgq_daemon::notice!("round {}", self.rounds);
//!         Ok(Activity::Idle)
//!     }
//! }
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(subcommand)]
//!     command: DaemonCommand,
//! }
//!
//! fn main() -> ExitCode {
//!     let cli = Cli::parse();
//!     let mut opts = Options::new("counter");
//!     opts.pidfile = Some("/tmp/counter.pid".into());
//!     opts.logfile = Some("/tmp/counter.log".into());
//!     // Runs before any thread exists: `start` forks.
//!     let make = || async { Ok(Counter { rounds: 0 }) };
//!     // `status` prints one line; a daemon with more to tell returns its lines here.
//!     let details = Vec::new;
//!     pgq_daemon::execute(&cli.command, &opts, make, details)
//! }
//! ```
//!
//! # The loop
//!
//! After `make` has built the daemon and the first [`Daemon::config`] has returned
//! its [`Settings`], the runner calls [`Daemon::process`] again and again. A round that
//! returns [`Activity::Busy`] is followed by the next one at once; [`Activity::Idle`]
//! rests `delay`; [`Activity::Backoff`] rests the given time. A round that fails is
//! logged at ERROR and followed by a rest of `delay`: the daemon never dies of it. The
//! rest ends early when [`Daemon::wait_for_work`] completes, and on every signal below.
//! When the loop ends, [`Daemon::shutdown`] is called, then the process exits.
//!
//! # Signals
//!
//! | signal      | effect |
//! |-------------|--------|
//! | TERM, INT   | graceful stop: the round in flight completes, then exit 0; one still running [`Options::stop_timeout`] later is abandoned as on QUIT. A second one stops at once, like QUIT. |
//! | QUIT        | immediate stop: the round in flight (its `process()` future) is dropped, then exit 0. |
//! | HUP         | reload at the next loop boundary (at once when resting): reopen the log file, call `config()`, apply its level and delay. A failing `config()` is logged and the previous settings stay. |
//! | USR1 / USR2 | log one level more / less, at once. |
//!
//! The signals are received by one tokio task that only sets state the loop reads:
//! two [`CancellationToken`](tokio_util::sync::CancellationToken)s (graceful and
//! immediate stop) and a reload counter. That task, the stop deadline and the systemd
//! watchdog run on a control thread of their own (a runtime of their own), so they act
//! whatever the loop's thread does: a round that does not let go within 0.8 s of an
//! immediate stop (its thread blocked) ends the process there (logged at FATAL, the
//! pidfile removed, exit 1).
//!
//! # Runtime
//!
//! The loop runs on a current-thread tokio runtime unless [`Options::runtime`] says
//! [`RuntimeFlavor::MultiThread`]: a loop of database round trips is fastest with
//! nothing crossing threads.
//!
//! # systemd
//!
//! Under systemd (`NOTIFY_SOCKET` set) the daemon says `READY=1` once running,
//! `STOPPING=1` when asked to stop, `RELOADING=1` then `READY=1` around a reload, and
//! `WATCHDOG=1` every half of `WatchdogSec` while [`loop_is_live`]: a round running
//! longer than [`Options::stuck_after`] starves the watchdog.
//!
//! # Commands and exit codes
//!
//! See [`DaemonCommand`] and [`execute`]. `start` refuses without a pidfile or a
//! logfile, forks, and returns only once the daemon is up (`NAME started, pid N`), or
//! with the startup failure the daemon reported (printed on stderr, with its code).
//! `run` does the same work in the foreground; `run --once` stops at the first round
//! that is not [`Activity::Busy`] (exit 0), or that fails (exit 1). `stop`, `kill`,
//! `reload`, `restart`, `logmore` and `logless` signal the daemon found through the
//! pidfile; `status` prints whether it runs, then the lines of the `details`
//! callback given to [`execute`].
//!
//! Commands print with [`outln!`] and [`errln!`], which never panic: a closed
//! standard output (`NAME status | head -1`) ends a command quietly.
//!
//! Exit codes ([`ExitCode`]): 0 ok, 1 usage error or operation failed, 3 cannot
//! connect, 4 the daemon is in the wrong state (not running, or already running).
//!
//! # Pidfile
//!
//! The daemon holds an exclusive lock ([`std::fs::File::try_lock`], `flock`) on its
//! [`Pidfile`] while it lives. The lock decides whether a daemon runs, never the pid in
//! the file, so a stale pidfile (process gone, pid reused) never blocks a start. The
//! pidfile is removed when the daemon exits normally, as the last thing before it
//! exits. A pidfile that is a symbolic link is refused ([`Error::PidfileSymlink`]).
//!
//! # Logging
//!
//! Six levels ([`Level`]): DEBUG, VERBOSE, NOTICE, WARNING, ERROR, FATAL, with the
//! macros [`debug!`], [`verbose!`], [`notice!`], [`warning!`], [`error!`], [`fatal!`],
//! written through the [`log`] crate (so other crates' `log` records appear too, under
//! the mapped name) and flexi_logger. Every line reads
//!
//! ```text
//! 2026-01-31 12:00:00.123 +01:00 [4242] NOTICE counter started, pid 4242, log level NOTICE, delay 5s
//! ```
//!
//! to the log file (appended) or to stderr. A log file that cannot be opened for
//! appending (a directory, a missing directory, no permission) is a startup failure
//! naming it ([`Error::LogfileOpen`]); no directory is created. A reload reopens the file, so logrotate
//! only needs `postrotate NAME -c CONF reload` (no `copytruncate`). Level changes
//! (`logmore`, `logless`, a reload with a new level) are announced by a NOTICE line
//! written whatever the level. A reload sets the level the config says, undoing
//! `logmore` and `logless`. A panic is logged at FATAL, with its location, before
//! the process goes; a panic that the daemon's code catches and survives (a
//! poisoned job it marks failed) is logged at ERROR as `panic caught ...` when the
//! future it comes from is wrapped in [`catching`].

mod backoff;
mod catching;
mod chain;
mod command;
mod control;
mod daemonize;
mod error;
mod exit;
mod foreground;
mod level;
mod logger;
mod macros;
pub mod output;
mod pidfile;
mod progress;
mod runner;
mod signals;
mod systemd;

pub use async_trait::async_trait;
/// The command-line parser [`DaemonCommand`] is built with: a program's own
/// `#[derive(clap::Parser)]` can use it from here.
pub use clap;
/// The logging facade the level macros write through (and
/// [`Level::of_record`] reads).
pub use log;

pub use backoff::backoff;
pub use catching::catching;
pub use chain::error_chain;
pub use command::{execute, DaemonCommand, Options, RuntimeFlavor};
pub use control::{running, status};
pub use error::{BoxError, Error, Result};
pub use exit::{ExitCode, Failure};
pub use level::Level;
pub use logger::{init_logger, LogHandle};
pub use pidfile::{running_pid, Pidfile};
pub use progress::{loop_is_live, round_in_flight};
pub use runner::{Activity, Daemon, Settings};

/// The examples of the crate's README, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
