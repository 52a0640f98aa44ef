//! The commands that act on a running daemon: status, stop, kill, reload, logmore,
//! logless, and the stopping half of restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;

use crate::chain::error_chain;
use crate::command::Options;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::pidfile::running_pid;

const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long a process may take to go after SIGKILL, which it cannot ignore.
const SIGKILL_WAIT: Duration = Duration::from_secs(5);

/// Prints whether the daemon runs: `NAME is running, pid N` (exit 0) or
/// `NAME is not running` (exit 4), on stdout. Problems finding out (no pidfile
/// configured, an unreadable pidfile) go to stderr, with exit 1.
///
/// This is what `status` does in [`execute`](crate::execute), before it prints the
/// lines of its `details` callback.
pub fn status(opts: &Options) -> ExitCode {
    let name = &opts.name;
    let Some(path) = &opts.pidfile else {
        crate::errln!("{name}: no pidfile is configured: cannot tell whether it runs");
        return ExitCode::Failed;
    };
    match running_pid(path) {
        Ok(Some(pid)) => {
            crate::outln!("{name} is running, pid {pid}");
            ExitCode::Ok
        }
        Ok(None) => {
            crate::outln!("{name} is not running");
            ExitCode::WrongState
        }
        Err(e) => {
            crate::errln!("{name}: {}", error_chain(&e));
            ExitCode::Failed
        }
    }
}

/// `status --json`: `{"name": NAME, "running": true, "pid": N}` (exit 0) or
/// `{"name": NAME, "running": false, "pid": null}` (exit 4) on one line; problems
/// finding out go to stderr, with exit 1.
pub(crate) fn status_json(opts: &Options) -> ExitCode {
    let (code, pid) = match running(opts) {
        Ok(pid) => (
            if pid.is_some() {
                ExitCode::Ok
            } else {
                ExitCode::WrongState
            },
            pid,
        ),
        Err(code) => return code,
    };
    let object = serde_json::json!({ "name": opts.name, "running": pid.is_some(), "pid": pid });
    crate::outln!("{object}");
    code
}

/// The pid of the running daemon, `None` when it does not run; prints why it
/// cannot tell on stderr (exit 1).
pub fn running(opts: &Options) -> Result<Option<u32>, ExitCode> {
    let name = &opts.name;
    let Some(path) = &opts.pidfile else {
        crate::errln!("{name}: no pidfile is configured: cannot tell whether it runs");
        return Err(ExitCode::Failed);
    };
    running_pid(path).map_err(|e| {
        crate::errln!("{name}: {}", error_chain(&e));
        ExitCode::Failed
    })
}

pub(crate) fn reload(opts: &Options) -> ExitCode {
    notify(opts, Signal::SIGHUP, "reload")
}

pub(crate) fn logmore(opts: &Options) -> ExitCode {
    notify(opts, Signal::SIGUSR1, "log more")
}

pub(crate) fn logless(opts: &Options) -> ExitCode {
    notify(opts, Signal::SIGUSR2, "log less")
}

fn notify(opts: &Options, signal: Signal, what: &str) -> ExitCode {
    let name = &opts.name;
    let result = find(opts).and_then(|(_, pid)| send(name, pid, signal).map(|()| pid));
    match result {
        Ok(pid) => {
            crate::outln!("{name}, pid {pid}: asked to {what} ({})", signal.as_str());
            ExitCode::Ok
        }
        Err(code) => code,
    }
}

/// SIGTERM, then waits for the daemon to be gone: `stop_timeout` (the daemon's
/// own deadline for its round) plus [`Options::STOP_GRACE`]. With `timeout`,
/// sends SIGQUIT (the round in flight is abandoned) when the daemon is still
/// there after that long, and waits [`Options::KILL_WAIT`] more.
pub(crate) fn stop(opts: &Options, timeout: Option<Duration>) -> ExitCode {
    let name = &opts.name;
    let (path, pid) = match find(opts) {
        Ok(found) => found,
        Err(code) => return code,
    };
    if let Err(code) = send(name, pid, Signal::SIGTERM) {
        return code;
    }
    let wait = timeout.unwrap_or(opts.stop_timeout.saturating_add(Options::STOP_GRACE));
    if wait_gone(&path, pid, wait) {
        crate::outln!("{name} stopped, pid {pid}");
        return ExitCode::Ok;
    }
    let Some(timeout) = timeout else {
        crate::errln!(
            "{name} is still running, pid {pid}, {wait:?} after SIGTERM, past its stop deadline: use `kill` to stop it at once"
        );
        return ExitCode::Failed;
    };
    crate::errln!("{name}, pid {pid}, did not stop within {timeout:?}: abandoning its round in flight (SIGQUIT)");
    match send(name, pid, Signal::SIGQUIT) {
        Ok(()) | Err(ExitCode::WrongState) => {}
        Err(code) => return code,
    }
    if wait_gone(&path, pid, Options::KILL_WAIT) {
        crate::outln!("{name} stopped, pid {pid}, its round in flight abandoned");
        ExitCode::Ok
    } else {
        crate::errln!("{name} is still running, pid {pid}, after SIGQUIT: use `kill` to stop it at once");
        ExitCode::Failed
    }
}

/// Finds the daemon, sends SIGTERM and waits up to `stop_timeout` (plus
/// [`Options::STOP_GRACE`]) for it to be gone. `Ok(None)` when it stopped (and
/// said so), `Ok(Some((pidfile, pid)))` when it still runs, `Err` when there was
/// none to stop.
fn terminate(opts: &Options) -> Result<Option<(PathBuf, u32)>, ExitCode> {
    let name = &opts.name;
    let (path, pid) = find(opts)?;
    send(name, pid, Signal::SIGTERM)?;
    if wait_gone(&path, pid, opts.stop_timeout.saturating_add(Options::STOP_GRACE)) {
        crate::outln!("{name} stopped, pid {pid}");
        Ok(None)
    } else {
        Ok(Some((path, pid)))
    }
}

/// SIGQUIT, then SIGKILL if the daemon is still there after [`Options::kill_wait`].
pub(crate) fn kill(opts: &Options) -> ExitCode {
    let (path, pid) = match find(opts) {
        Ok(found) => found,
        Err(code) => return code,
    };
    kill_found(opts, &path, pid)
}

fn kill_found(opts: &Options, path: &Path, pid: u32) -> ExitCode {
    let name = &opts.name;
    if let Err(code) = send(name, pid, Signal::SIGQUIT) {
        return code;
    }
    let wait = opts.kill_wait();
    if wait_gone(path, pid, wait) {
        crate::outln!("{name} killed, pid {pid}");
        return ExitCode::Ok;
    }
    crate::errln!("{name}, pid {pid}, did not quit {wait:?} after SIGQUIT: sending SIGKILL");
    match send(name, pid, Signal::SIGKILL) {
        Ok(()) | Err(ExitCode::WrongState) => {}
        Err(code) => return code,
    }
    if wait_gone(path, pid, SIGKILL_WAIT) {
        crate::outln!("{name} killed with SIGKILL, pid {pid}");
        ExitCode::Ok
    } else {
        crate::errln!("{name} is still running, pid {pid}, after SIGKILL");
        ExitCode::Failed
    }
}

/// The first half of `restart`: a graceful stop, escalating to `kill` after
/// `stop_timeout`. `Ok` once the daemon is gone.
pub(crate) fn stop_for_restart(opts: &Options) -> ExitCode {
    match terminate(opts) {
        Ok(None) => ExitCode::Ok,
        Ok(Some((path, pid))) => {
            crate::errln!(
                "{}, pid {pid}, did not stop {:?} after SIGTERM: killing it",
                opts.name,
                opts.stop_timeout
            );
            kill_found(opts, &path, pid)
        }
        Err(code) => code,
    }
}

/// The pidfile and the pid of the running daemon; prints why not, otherwise.
fn find(opts: &Options) -> Result<(PathBuf, u32), ExitCode> {
    let name = &opts.name;
    let Some(path) = &opts.pidfile else {
        crate::errln!("{name}: no pidfile is configured: cannot find the daemon");
        return Err(ExitCode::Failed);
    };
    match running_pid(path) {
        Ok(Some(pid)) => Ok((path.clone(), pid)),
        Ok(None) => {
            crate::errln!("{name} is not running");
            Err(ExitCode::WrongState)
        }
        Err(e) => {
            crate::errln!("{name}: {}", error_chain(&e));
            Err(ExitCode::Failed)
        }
    }
}

fn send(name: &str, pid: u32, signal: Signal) -> Result<(), ExitCode> {
    let Ok(raw) = i32::try_from(pid) else {
        crate::errln!("{name}: pid {pid} is out of range");
        return Err(ExitCode::Failed);
    };
    match send_signal(Pid::from_raw(raw), signal) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => {
            crate::errln!("{name} is not running (pid {pid} is gone)");
            Err(ExitCode::WrongState)
        }
        Err(source) => {
            let e = Error::Signal {
                pid,
                signal: signal.as_str(),
                source,
            };
            crate::errln!("{name}: {}", error_chain(&e));
            Err(ExitCode::Failed)
        }
    }
}

/// Polls until the daemon `pid` no longer holds the pidfile, for at most `timeout`.
/// Waits until the daemon has let go of its pidfile and its process has
/// ended: the lock goes a moment before the process does, and "stopped"
/// must mean the process is gone.
fn wait_gone(path: &Path, pid: u32, timeout: Duration) -> bool {
    // No deadline for a timeout too long to reach: wait as long as it takes.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let released = match running_pid(path) {
            Ok(Some(holder)) => holder != pid,
            Ok(None) => true,
            // Unreadable for a moment (a new daemon writing its pid): look again.
            Err(_) => false,
        };
        if released && process_ended(pid) {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// True when no process has this pid, or only a zombie waiting to be reaped
/// by its parent (the daemon's parent is init, not us).
fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) STATE ...`: the state follows the last parenthesis.
        Ok(stat) => matches!(
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()),
            Some('Z') | None
        ),
        Err(_) => match i32::try_from(pid) {
            Ok(raw) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_err(),
            Err(_) => true,
        },
    }
}
