//! The crate's one error type.

use std::path::PathBuf;

use crate::exit::ExitCode;

/// A boxed error, as returned by a [`Daemon`](crate::Daemon)'s methods.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the daemon machinery.
///
/// Each variant names the file or the process it is about; the underlying cause,
/// when there is one, is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A log level name that is not one of the six.
    #[error("unknown log level `{name}`: valid levels are debug, verbose, notice, warning, error, fatal")]
    UnknownLevel {
        /// The name that was given.
        name: String,
    },

    /// The pidfile could not be opened or created.
    #[error("cannot open pidfile {}", path.display())]
    PidfileOpen {
        /// The pidfile.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The pidfile is locked by a running daemon.
    #[error("pidfile {} is locked by a running daemon{}", path.display(), pid.map(|p| format!(", pid {p}")).unwrap_or_default())]
    PidfileLocked {
        /// The pidfile.
        path: PathBuf,
        /// The pid written in it, when it could be read.
        pid: Option<u32>,
    },

    /// The pidfile could not be locked, read or written.
    #[error("cannot use pidfile {}", path.display())]
    PidfileIo {
        /// The pidfile.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The pidfile is locked, so a daemon runs, but it holds no pid.
    #[error("pidfile {} is locked by a running daemon but holds no valid pid", path.display())]
    PidfileContent {
        /// The pidfile.
        path: PathBuf,
    },

    /// The log file cannot be opened for appending.
    #[error("cannot open log file {}", path.display())]
    LogfileOpen {
        /// The log file.
        path: PathBuf,
        /// Why: the system's error, or what is wrong with the path.
        #[source]
        source: std::io::Error,
    },

    /// The pidfile is a symbolic link: writing a pid through it would
    /// overwrite whatever it points at.
    #[error("pidfile {} is a symbolic link: refusing to follow it (give the real path, or remove the link)", path.display())]
    PidfileSymlink {
        /// The pidfile.
        path: PathBuf,
    },

    /// The logger could not be started on the log file.
    #[error("cannot log to {}", path.display())]
    Logfile {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: flexi_logger::FlexiLoggerError,
    },

    /// The logger could not be started on stderr (for example, a logger is already set).
    #[error("cannot start the logger on stderr")]
    Logger {
        /// The cause.
        #[source]
        source: flexi_logger::FlexiLoggerError,
    },

    /// The log file could not be reopened.
    #[error("cannot reopen log file {}", path.display())]
    LogReopen {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: flexi_logger::FlexiLoggerError,
    },

    /// A signal could not be sent to the daemon.
    #[error("cannot send {signal} to pid {pid}")]
    Signal {
        /// The daemon's pid.
        pid: u32,
        /// The signal's name, e.g. `SIGTERM`.
        signal: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },

    /// The signal handlers could not be installed.
    #[error("cannot install the signal handlers in pid {pid}")]
    SignalHandlers {
        /// This process.
        pid: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// `start` was asked for while the process already runs threads.
    #[error(
        "cannot daemonize pid {pid}: it already runs {threads} threads (call `execute` before starting any thread)"
    )]
    Threaded {
        /// This process.
        pid: u32,
        /// How many threads it runs.
        threads: usize,
    },

    /// One of the system calls that detach a daemon failed.
    #[error("cannot daemonize pid {pid}: {step} failed")]
    Daemonize {
        /// The process that made the call.
        pid: u32,
        /// The step that failed, e.g. `fork`.
        step: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The async runtime could not be built.
    #[error("cannot build the async runtime in pid {pid}")]
    Runtime {
        /// This process.
        pid: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The exit code a command reports for this error: [`ExitCode::WrongState`] when a
    /// daemon already holds the pidfile, [`ExitCode::Failed`] otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::PidfileLocked { .. } => ExitCode::WrongState,
            _ => ExitCode::Failed,
        }
    }
}
