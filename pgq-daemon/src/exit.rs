//! Exit codes of the commands, and the startup failure that carries one.

use std::fmt;

use crate::chain::error_chain;
use crate::error::BoxError;

/// The exit code of a command, as documented for every daemon binary.
///
/// It converts into [`std::process::ExitCode`] and implements
/// [`Termination`](std::process::Termination), so `main` can return it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitCode {
    /// 0: the command did what was asked.
    Ok = 0,
    /// 1: a usage error, or the operation failed.
    Failed = 1,
    /// 3: cannot connect (to a database, or whatever the daemon needs to reach).
    CannotConnect = 3,
    /// 4: the daemon is in the wrong state: not running, or already running.
    WrongState = 4,
}

impl ExitCode {
    /// The numeric code, e.g. for [`std::process::exit`].
    pub const fn code(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

impl std::process::Termination for ExitCode {
    fn report(self) -> std::process::ExitCode {
        self.into()
    }
}

/// A startup failure: why the daemon could not be built or configured, and the
/// exit code `start` or `run` reports for it.
///
/// Any `std::error::Error` converts into a `Failure` with [`ExitCode::Failed`], so
/// `?` works in the `make` future; choose another code with [`Failure::new`] or
/// [`Failure::cannot_connect`].
pub struct Failure {
    /// The exit code to report.
    pub code: ExitCode,
    /// What went wrong.
    pub error: BoxError,
}

impl Failure {
    /// A failure with the given exit code.
    pub fn new(code: ExitCode, error: impl Into<BoxError>) -> Self {
        Failure {
            code,
            error: error.into(),
        }
    }

    /// A failure with [`ExitCode::Failed`] (1).
    pub fn failed(error: impl Into<BoxError>) -> Self {
        Failure::new(ExitCode::Failed, error)
    }

    /// A failure with [`ExitCode::CannotConnect`] (3).
    pub fn cannot_connect(error: impl Into<BoxError>) -> Self {
        Failure::new(ExitCode::CannotConnect, error)
    }
}

impl<E> From<E> for Failure
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Failure::failed(error)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("code", &self.code)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for Failure {
    /// The error with its chain of causes, `outer: inner`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&error_chain(self.error.as_ref()))
    }
}
