//! Why a command failed, and its exit code.

use std::fmt;

use pgq_consumers::tokio_postgres::error::SqlState;
use pgq_consumers::ExitCode;

/// A mistake in what was asked (exit 1): the message says what to do.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The database is not in a state the command can work with (exit 4): it
/// has no PgQ.
#[derive(Debug)]
pub struct WrongState(pub String);

impl fmt::Display for WrongState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WrongState {}

/// The database did not answer in time (exit 3).
#[derive(Debug)]
pub struct NoAnswer(pub std::time::Duration);

impl fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the database did not answer within {:?}", self.0)
    }
}

impl std::error::Error for NoAnswer {}

/// The database refused a command for lack of a privilege (exit 1); says
/// which role the command needs.
#[derive(Debug)]
pub struct Refused {
    /// The command, as typed.
    pub command: &'static str,
    /// The PgQ role it needs.
    pub role: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} was refused: it needs the role {} (an administrator grants it with `grant {} to <your role>`)",
            self.command, self.role, self.role
        )
    }
}

impl std::error::Error for Refused {}

/// The PgQ role a command needs: reading needs `pgq_reader` (which may also
/// list, retry and delete failed events through the framework's functions);
/// ticking and configuring a queue need `pgq_admin`.
pub fn role_for(command: &'static str) -> &'static str {
    match command {
        "tick" | "config" => "pgq_admin",
        _ => "pgq_reader",
    }
}

/// The SQLSTATE of the first PostgreSQL error in `error`'s chain.
pub fn sqlstate(error: &anyhow::Error) -> Option<SqlState> {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<pgq_consumers::Error>() {
            if let Some(c) = e.code() {
                return Some(c.clone());
            }
        }
        if let Some(e) = cause.downcast_ref::<pgq::Error>() {
            if let Some(c) = e.code() {
                return Some(c.clone());
            }
        }
        if let Some(e) = cause.downcast_ref::<pgq_consumers::tokio_postgres::Error>() {
            if let Some(c) = e.code() {
                return Some(c.clone());
            }
        }
    }
    None
}

/// A refusal for lack of privilege becomes [`Refused`], naming the role.
pub fn explain(command: &'static str, error: anyhow::Error) -> anyhow::Error {
    if sqlstate(&error) == Some(SqlState::INSUFFICIENT_PRIVILEGE) {
        return error.context(Refused {
            command,
            role: role_for(command),
        });
    }
    error
}

/// The documented exit code for `error`.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if cause.is::<Usage>() || cause.is::<Refused>() {
            return ExitCode::Failed;
        }
        if cause.is::<WrongState>() {
            return ExitCode::WrongState;
        }
        if cause.is::<NoAnswer>() {
            return ExitCode::CannotConnect;
        }
        if let Some(e) = cause.downcast_ref::<pgq_consumers::Error>() {
            if e.exit_code() == ExitCode::CannotConnect || e.is_connection_error() {
                return ExitCode::CannotConnect;
            }
        }
        if let Some(e) = cause.downcast_ref::<pgq::Error>() {
            if e.is_connection_error() {
                return ExitCode::CannotConnect;
            }
        }
    }
    ExitCode::Failed
}
