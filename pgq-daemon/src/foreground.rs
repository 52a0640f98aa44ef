//! `run`: the daemon in the foreground (systemd `Type=simple`, containers, cron).

use std::future::Future;

use crate::chain::error_chain;
use crate::command::Options;
use crate::error::Error;
use crate::exit::{ExitCode, Failure};
use crate::logger::init_logger;
use crate::pidfile::Pidfile;
use crate::runner::{serve, Daemon};

/// Runs the daemon in this process: logs to stderr unless a logfile is set, holds
/// the pidfile when one is set. With `once`, stops at the first round that finds no
/// work.
pub(crate) fn run<D, F, Fut>(opts: &Options, once: bool, make: F) -> ExitCode
where
    D: Daemon,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<D, Failure>>,
{
    let name = &opts.name;
    let pidfile_held = match opts.pidfile.as_deref().map(Pidfile::acquire) {
        None => None,
        Some(Ok(held)) => Some(held),
        Some(Err(Error::PidfileLocked { pid: Some(pid), .. })) => {
            crate::errln!("{name} is already running, pid {pid}");
            return ExitCode::WrongState;
        }
        Some(Err(e)) => {
            crate::errln!("{name}: {}", error_chain(&e));
            return e.exit_code();
        }
    };
    let log = match init_logger(opts.logfile.as_deref(), opts.level) {
        Ok(log) => log,
        Err(e) => {
            crate::errln!("{name}: {}", error_chain(&e));
            return ExitCode::Failed;
        }
    };
    let pidfile = pidfile_held.as_ref().map(|p| p.path().to_path_buf());
    match serve(opts, pidfile, &log, once, make, || {}) {
        Ok(code) => code,
        Err(failure) => {
            crate::fatal!("cannot start: {failure}");
            log.flush();
            if log.logfile().is_some() {
                crate::errln!("{name}: cannot start: {failure}");
            }
            failure.code
        }
    }
}
