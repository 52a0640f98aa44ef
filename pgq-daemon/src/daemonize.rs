//! `start`: detach a daemon from the terminal, and tell the terminal how it went.
//!
//! The command forks before any thread or runtime exists. The child makes a new
//! session, forks again (so the daemon can never get a controlling terminal back),
//! points its stdio at /dev/null, takes the pidfile, starts the logger, builds the
//! runtime, makes the daemon and reads its config. Only then does it report ready,
//! through a pipe the parent waits on; a failure before that goes through the same
//! pipe, so the parent prints it and exits with its code, once the failed daemon
//! has exited (the pipe closes with it).

use std::cell::Cell;
use std::future::Future;
use std::io::{PipeReader, PipeWriter, Read, Write};
use std::path::{Path, PathBuf};

use nix::sys::wait::waitpid;
use nix::unistd::{fork, setsid, ForkResult};

use crate::chain::error_chain;
use crate::command::Options;
use crate::error::{Error, Result};
use crate::exit::{ExitCode, Failure};
use crate::logger::init_logger;
use crate::pidfile::{running_pid, Pidfile};
use crate::runner::{serve, Daemon};

/// Runs `start`: returns in the parent, with the exit code to report. The daemon
/// process never returns from here: it exits when it stops.
pub(crate) fn start<D, F, Fut>(opts: &Options, make: F) -> ExitCode
where
    D: Daemon,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<D, Failure>>,
{
    let name = &opts.name;
    let Some(pidfile) = &opts.pidfile else {
        crate::errln!("{name}: cannot start without a pidfile: set pidfile, or use `run` to stay in the foreground");
        return ExitCode::Failed;
    };
    let pidfile = match absolute(pidfile) {
        Ok(path) => path,
        Err(e) => {
            crate::errln!("{name}: {e}");
            return ExitCode::Failed;
        }
    };
    match running_pid(&pidfile) {
        Ok(None) => {}
        Ok(Some(pid)) => {
            crate::errln!("{name} is already running, pid {pid}");
            return ExitCode::WrongState;
        }
        Err(e) => {
            crate::errln!("{name}: {}", error_chain(&e));
            return e.exit_code();
        }
    }
    let Some(logfile) = &opts.logfile else {
        crate::errln!(
            "{name}: cannot start without a logfile: a daemon has no terminal: set logfile, or use `run` to log to stderr"
        );
        return ExitCode::Failed;
    };
    let logfile = match absolute(logfile) {
        Ok(path) => path,
        Err(e) => {
            crate::errln!("{name}: {e}");
            return ExitCode::Failed;
        }
    };
    let pipe = single_threaded().and_then(|()| std::io::pipe().map_err(|source| daemonize_error("pipe", source)));
    let (reader, writer) = match pipe {
        Ok(pipe) => pipe,
        Err(e) => {
            crate::errln!("{name}: {}", error_chain(&e));
            return ExitCode::Failed;
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    match fork_process() {
        Err(e) => {
            crate::errln!("{name}: {}", error_chain(&e));
            ExitCode::Failed
        }
        Ok(ForkResult::Parent { child }) => {
            drop(writer);
            let code = await_report(name, &logfile, reader);
            // The first child exits as soon as it has forked the daemon.
            let _ = waitpid(child, None);
            code
        }
        Ok(ForkResult::Child) => {
            drop(reader);
            let code = daemon_process(opts, &pidfile, &logfile, Reporter::new(writer), make);
            std::process::exit(code.code())
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("cannot resolve path {}: {e}", path.display()))
}

fn daemonize_error(step: &'static str, source: std::io::Error) -> Error {
    Error::Daemonize {
        pid: std::process::id(),
        step,
        source,
    }
}

/// Refuses to fork a process that runs threads (Linux tells through /proc; elsewhere
/// the caller is trusted, as `execute` documents).
fn single_threaded() -> Result<()> {
    match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => match tasks.count() {
            0 | 1 => Ok(()),
            threads => Err(Error::Threaded {
                pid: std::process::id(),
                threads,
            }),
        },
        Err(_) => Ok(()),
    }
}

/// Forks this process.
#[allow(unsafe_code)]
fn fork_process() -> Result<ForkResult> {
    // SAFETY: `fork` is unsound only when other threads exist, because the child then
    // inherits locks (the allocator's, stdio's...) held by threads that do not exist
    // in it. `start` is called before any runtime or thread is created, and checks it
    // (`single_threaded`) before the first fork; the first child is single-threaded
    // too when it forks again. So the child may run any code, allocation included.
    unsafe { fork() }.map_err(|e| daemonize_error("fork", e.into()))
}

/// Waits for the daemon's report and turns it into the parent's exit code.
fn await_report(name: &str, logfile: &Path, mut reader: PipeReader) -> ExitCode {
    let mut report = String::new();
    if let Err(e) = reader.read_to_string(&mut report) {
        crate::errln!("{name}: cannot read the daemon's startup report: {e}");
        return ExitCode::Failed;
    }
    match Report::parse(&report) {
        Some(Report::Ready(pid)) => {
            crate::outln!("{name} started, pid {pid}");
            ExitCode::Ok
        }
        Some(Report::Failed(code, message)) => {
            crate::errln!("{name}: cannot start: {message}");
            code
        }
        None => {
            crate::errln!(
                "{name}: the daemon exited during startup without saying why; see {}",
                logfile.display()
            );
            ExitCode::Failed
        }
    }
}

/// The daemon's side: detach, set up, run. Returns the exit code of the daemon.
fn daemon_process<D, F, Fut>(opts: &Options, pidfile: &Path, logfile: &Path, reporter: Reporter, make: F) -> ExitCode
where
    D: Daemon,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<D, Failure>>,
{
    if let Err(e) = detach() {
        reporter.failed(ExitCode::Failed, &error_chain(&e));
        return ExitCode::Failed;
    }
    let pidfile = match Pidfile::acquire(pidfile) {
        Ok(held) => held,
        Err(e) => {
            reporter.failed(e.exit_code(), &error_chain(&e));
            return e.exit_code();
        }
    };
    let log = match init_logger(Some(logfile), opts.level) {
        Ok(log) => log,
        Err(e) => {
            reporter.failed(ExitCode::Failed, &error_chain(&e));
            return ExitCode::Failed;
        }
    };
    let ready = || reporter.ready();
    match serve(opts, Some(pidfile.path().to_path_buf()), &log, false, make, ready) {
        Ok(code) => code,
        Err(failure) => {
            crate::fatal!("cannot start: {failure}");
            log.flush();
            // Let go of the pidfile first: whoever hears "cannot start"
            // finds no daemon holding it.
            drop(pidfile);
            reporter.failed(failure.code, &failure.to_string());
            failure.code
        }
    }
}

/// New session, second fork, stdio to /dev/null. Returns in the daemon process.
fn detach() -> Result<()> {
    setsid().map_err(|e| daemonize_error("setsid", e.into()))?;
    match fork_process()? {
        // The session leader goes: the daemon, not a session leader, can never
        // acquire a controlling terminal.
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| daemonize_error("opening /dev/null", source))?;
    nix::unistd::dup2_stdin(&null)
        .and_then(|()| nix::unistd::dup2_stdout(&null))
        .and_then(|()| nix::unistd::dup2_stderr(&null))
        .map_err(|e| daemonize_error("redirecting stdio to /dev/null", e.into()))
}

/// What the daemon tells the parent, one line: `READY <pid>` or
/// `FAILED <code> <message>`.
enum Report {
    Ready(u32),
    Failed(ExitCode, String),
}

impl Report {
    fn parse(text: &str) -> Option<Report> {
        if let Some(pid) = text.strip_prefix("READY ") {
            return pid.trim().parse().ok().map(Report::Ready);
        }
        let rest = text.strip_prefix("FAILED ")?;
        let (code, message) = rest.split_once(' ')?;
        let code = match code {
            "3" => ExitCode::CannotConnect,
            "4" => ExitCode::WrongState,
            _ => ExitCode::Failed,
        };
        Some(Report::Failed(code, message.trim_end().to_string()))
    }
}

/// The write end of the report pipe; reports once, then closes it.
struct Reporter(Cell<Option<PipeWriter>>);

impl Reporter {
    fn new(writer: PipeWriter) -> Self {
        Reporter(Cell::new(Some(writer)))
    }

    fn ready(&self) {
        drop(self.send(&format!("READY {}\n", std::process::id())));
    }

    /// Reports a startup failure. The pipe is left open until this process
    /// exits: the parent reads to its end, so `start` reports the failure only
    /// once the daemon is gone and its pidfile released, and a `start` right
    /// after it never finds the failed one still there.
    fn failed(&self, code: ExitCode, message: &str) {
        if let Some(writer) = self.send(&format!("FAILED {code} {message}\n")) {
            std::mem::forget(writer);
        }
    }

    /// Writes the line, once; returns the pipe.
    fn send(&self, line: &str) -> Option<PipeWriter> {
        let mut writer = self.0.take()?;
        // If the parent is gone, there is nobody to tell.
        let _ = writer.write_all(line.as_bytes());
        Some(writer)
    }
}
