//! Six-level logging on top of `log` and flexi_logger, to a file or to stderr.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use flexi_logger::filter::{LogLineFilter, LogLineWriter};
use flexi_logger::{DeferredNow, FileSpec, LogSpecification, Logger, LoggerHandle};

use crate::error::{Error, Result};
use crate::level::Level;

/// The key-value key that makes a record bypass the level filter.
const ALWAYS_KEY: &str = "pgq_always";

/// The running logger: its level, and its log file.
///
/// Cheap to clone; all clones act on the same logger. The logger is flushed and
/// shut down when the last clone is dropped, so keep one until the process ends.
///
/// Level changes are announced with a NOTICE line (`log level is now VERBOSE`) that is
/// written whatever the new level, so an operator who sends `logless` sees it took
/// effect.
#[derive(Clone)]
pub struct LogHandle {
    inner: Arc<Inner>,
}

struct Inner {
    flexi: LoggerHandle,
    level: Arc<AtomicU8>,
    logfile: Option<PathBuf>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("level", &self.level())
            .field("logfile", &self.inner.logfile)
            .finish()
    }
}

/// Starts the process's logger: lines go to `logfile` (appended to, created if
/// missing) or, when it is `None`, to stderr. Every line reads
/// `2026-01-31 12:00:00.123 +01:00 [PID] LEVEL message`.
///
/// Also installs a panic hook that logs any panic at FATAL, with its thread and
/// location (and a backtrace when `RUST_BACKTRACE` asks for one), before the
/// process goes. When logging to a file, the previous hook runs too (by default it
/// prints the panic on stderr). A panic raised inside [`catching`](crate::catching),
/// which its caller catches and survives, is logged at ERROR as `panic caught ...`
/// instead, and the previous hook is not called for it.
///
/// Lines of the PostgreSQL, TLS and HTTP client libraries below NOTICE are left
/// out whatever the level: they log every statement with its parameters and every
/// handshake, which would bury the daemon's own DEBUG and VERBOSE lines and put
/// event data in the log. Their warnings and errors are kept.
///
/// A log file that cannot be opened for appending (a directory, a missing
/// directory, no permission, a file system that takes no files) fails with
/// [`Error::LogfileOpen`], naming it and saying why.
///
/// A process has one logger: a second call fails with [`Error::Logger`] or
/// [`Error::Logfile`]. [`execute`](crate::execute) calls this itself for `start` and `run`.
pub fn init_logger(logfile: Option<&Path>, level: Level) -> Result<LogHandle> {
    let shared_level = Arc::new(AtomicU8::new(level.to_u8()));
    let logger = Logger::with(spec_for(level))
        .format(format_line)
        .filter(Box::new(SixLevelFilter {
            level: Arc::clone(&shared_level),
        }));
    let flexi = match logfile {
        Some(path) => {
            check_logfile(path)?;
            let fail = |source| Error::Logfile {
                path: path.to_path_buf(),
                source,
            };
            let spec = FileSpec::try_from(path).map_err(fail)?;
            logger.log_to_file(spec).append().start().map_err(fail)?
        }
        None => logger
            .log_to_stderr()
            .start()
            .map_err(|source| Error::Logger { source })?,
    };
    install_panic_hook(logfile.is_some());
    Ok(LogHandle {
        inner: Arc::new(Inner {
            flexi,
            level: shared_level,
            logfile: logfile.map(Path::to_path_buf),
        }),
    })
}

/// Opens the log file (appending, creating it) once before the logger
/// does, so that a file that cannot be written is an error with its path and
/// the reason, not a daemon logging nowhere: flexi_logger only reports such
/// a failure to a standard error that a daemon has pointed at /dev/null, and
/// creates missing directories on its own (a typo in the path would make a
/// new directory tree).
fn check_logfile(path: &Path) -> Result<()> {
    let fail = |source| Error::LogfileOpen {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory; give a file's path",
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("its directory {} does not exist (or is not a directory)", dir.display()),
            )));
        }
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map(drop)
        .map_err(fail)
}

impl LogHandle {
    /// The current level.
    pub fn level(&self) -> Level {
        Level::from_u8(self.inner.level.load(Ordering::Relaxed))
    }

    /// Sets the level; when it changes, logs `log level is now LEVEL` at NOTICE (a
    /// line written whatever the level).
    pub fn set_level(&self, level: Level) {
        let old = Level::from_u8(self.inner.level.swap(level.to_u8(), Ordering::Relaxed));
        if old != level {
            self.inner.flexi.set_new_spec(spec_for(level));
            announce(format_args!("log level is now {level}"));
        }
    }

    /// One level more verbose (USR1, `logmore`); returns the new level.
    pub fn more(&self) -> Level {
        self.step(Level::more, "the most verbose")
    }

    /// One level less verbose (USR2, `logless`); returns the new level.
    pub fn less(&self) -> Level {
        self.step(Level::less, "the least verbose")
    }

    fn step(&self, next: fn(Level) -> Level, limit: &str) -> Level {
        let result = self
            .inner
            .level
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                let level = Level::from_u8(n);
                (next(level) != level).then(|| next(level).to_u8())
            });
        match result {
            Ok(old) => {
                let level = next(Level::from_u8(old));
                self.inner.flexi.set_new_spec(spec_for(level));
                announce(format_args!("log level is now {level}"));
                level
            }
            Err(unchanged) => {
                let level = Level::from_u8(unchanged);
                announce(format_args!("log level is already {level}, {limit}"));
                level
            }
        }
    }

    /// Reopens the log file, so that lines go to a new file at the configured path
    /// after logrotate renamed the old one. Does nothing when logging to stderr.
    pub fn reopen(&self) -> Result<()> {
        match &self.inner.logfile {
            Some(path) => self.inner.flexi.reopen_output().map_err(|source| Error::LogReopen {
                path: path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// The log file, or `None` when logging to stderr.
    pub fn logfile(&self) -> Option<&Path> {
        self.inner.logfile.as_deref()
    }

    /// Writes out anything buffered.
    pub fn flush(&self) {
        self.inner.flexi.flush();
    }
}

/// The `log` specification that lets through everything the six-level `level` writes
/// (the finer cut, ERROR versus FATAL, is the filter's).
fn spec_for(level: Level) -> LogSpecification {
    LogSpecification::from(level.to_log().to_level_filter())
}

/// Logs a NOTICE line that the level filter lets through whatever the level.
fn announce(message: fmt::Arguments<'_>) {
    log::log!(log::Level::Error, pgq_level = "NOTICE", pgq_always = true; "{message}");
}

struct SixLevelFilter {
    level: Arc<AtomicU8>,
}

impl LogLineFilter for SixLevelFilter {
    fn write(
        &self,
        now: &mut DeferredNow,
        record: &log::Record<'_>,
        writer: &dyn LogLineWriter,
    ) -> std::io::Result<()> {
        use log::kv::Key;
        let current = Level::from_u8(self.level.load(Ordering::Relaxed));
        let always = record.key_values().get(Key::from_str(ALWAYS_KEY)).is_some();
        if always || shown(Level::of_record(record), record.target(), current) {
            writer.write(now, record)
        } else {
            Ok(())
        }
    }
}

/// Libraries whose own lines below NOTICE are left out at every level: the
/// PostgreSQL client logs each statement with its parameters (event data,
/// whatever a handler binds) and every socket poll, the TLS library dumps its
/// handshakes, the HTTP stack its frames. They would bury the daemon's own
/// DEBUG and VERBOSE lines and put data in the log that does not belong there.
const QUIET_LIBRARIES: [&str; 9] = [
    "tokio_postgres",
    "postgres_protocol",
    "tokio_postgres_rustls",
    "rustls",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
    "mio",
];

/// Whether a line at `level` from `target` is written at log level `current`.
fn shown(level: Level, target: &str, current: Level) -> bool {
    if level < current {
        return false;
    }
    let library = target.split("::").next().unwrap_or(target);
    level >= Level::Notice || !QUIET_LIBRARIES.contains(&library)
}

fn format_line(w: &mut dyn Write, now: &mut DeferredNow, record: &log::Record<'_>) -> std::io::Result<()> {
    write!(
        w,
        "{} [{}] {} {}",
        now.format("%Y-%m-%d %H:%M:%S%.3f %:z"),
        std::process::id(),
        Level::of_record(record),
        record.args()
    )
}

fn install_panic_hook(chain_previous: bool) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a non-string payload)");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "an unknown location".to_string());
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        if crate::catching::panic_is_caught() {
            // The caller catches it and goes on (see `catching`): not the end of the
            // process, so neither FATAL nor the previous hook's "panicked" on stderr.
            log::error!("panic caught in thread '{name}' at {location}: {payload}{backtrace}");
            return;
        }
        log::log!(
            log::Level::Error, pgq_level = "FATAL";
            "panic in thread '{name}' at {location}: {payload}{backtrace}"
        );
        log::logger().flush();
        if chain_previous {
            previous(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::level::LEVEL_KEY;

    fn six_level_of(level: log::Level, kvs: &[(&str, &str)]) -> Level {
        let record = log::Record::builder()
            .level(level)
            .key_values(&kvs)
            .args(format_args!("x"))
            .build();
        Level::of_record(&record)
    }

    #[test]
    fn the_level_key_overrides_the_log_level() {
        assert_eq!(six_level_of(log::Level::Error, &[]), Level::Error);
        assert_eq!(six_level_of(log::Level::Error, &[(LEVEL_KEY, "FATAL")]), Level::Fatal);
        assert_eq!(six_level_of(log::Level::Trace, &[]), Level::Debug);
        assert_eq!(six_level_of(log::Level::Info, &[]), Level::Notice);
    }

    #[test]
    fn connection_libraries_lines_below_notice_are_left_out_at_every_level() {
        for target in [
            "tokio_postgres::query",
            "tokio_postgres",
            "rustls::client::hs",
            "hyper_util::client",
        ] {
            assert!(!shown(Level::Verbose, target, Level::Debug), "{target}");
            assert!(!shown(Level::Debug, target, Level::Debug), "{target}");
            assert!(
                shown(Level::Warning, target, Level::Debug),
                "{target}: warnings still show"
            );
            assert!(shown(Level::Notice, target, Level::Notice), "{target}");
        }
        for target in [
            "pgq_consumers::daemon",
            "testq",
            "pgq_daemon::runner",
            "tokio_postgresql_helper",
        ] {
            assert!(
                shown(Level::Debug, target, Level::Debug),
                "{target}: the program's own lines show"
            );
            assert!(
                !shown(Level::Debug, target, Level::Verbose),
                "{target}: below the level"
            );
        }
    }

    #[test]
    fn a_log_file_that_cannot_be_opened_is_an_error_naming_it_and_saying_why() {
        let dir = std::env::temp_dir().join(format!("pgq-daemon-logfile-{}", std::process::id()));
        let made = std::fs::create_dir_all(&dir);
        assert!(made.is_ok(), "{made:?}");
        let cases = [
            (dir.clone(), "directory"),
            (dir.join("missing/x.log"), "does not exist"),
        ];
        for (path, why) in cases {
            let message = check_logfile(&path)
                .err()
                .map(|e| crate::chain::error_chain(&e))
                .unwrap_or_default();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(why), "{message}");
        }
        assert!(!dir.join("missing").exists(), "no directory is made");
        assert!(check_logfile(&dir.join("ok.log")).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_log_handle_can_be_shared_between_threads() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<LogHandle>();
    }

    #[test]
    fn a_line_names_its_six_level_and_pid() {
        let mut out = Vec::new();
        let record = log::Record::builder()
            .level(log::Level::Debug)
            .args(format_args!("hello"))
            .build();
        let result = format_line(&mut out, &mut DeferredNow::new(), &record);
        assert!(result.is_ok());
        let line = String::from_utf8_lossy(&out);
        let expected = format!("[{}] VERBOSE hello", std::process::id());
        assert!(line.ends_with(&expected), "{line}");
    }
}
