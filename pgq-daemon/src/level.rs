//! The six log levels of the original SimpleLogger, and how they map onto `log`.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The key-value key that carries a record's six-level name when the `log` level
/// alone cannot tell it (FATAL, and the always-written level-change notices).
pub(crate) const LEVEL_KEY: &str = "pgq_level";

/// A log level, by increasing importance: DEBUG, VERBOSE, NOTICE, WARNING, ERROR, FATAL.
///
/// A logger at level `L` writes the records of level `L` and above. Each level is
/// written through the [`log`] crate at this level:
///
/// | `Level`   | `log::Level`                         |
/// |-----------|--------------------------------------|
/// | `Debug`   | `Trace`                              |
/// | `Verbose` | `Debug`                              |
/// | `Notice`  | `Info`                               |
/// | `Warning` | `Warn`                               |
/// | `Error`   | `Error`                              |
/// | `Fatal`   | `Error`, with key `pgq_level = "FATAL"` |
///
/// so records of other crates that use `log` are written too, under the
/// corresponding name. Use the crate's macros ([`debug!`](crate::debug),
/// [`verbose!`](crate::verbose), [`notice!`](crate::notice), [`warning!`](crate::warning),
/// [`error!`](crate::error), [`fatal!`](crate::fatal)) to log at a given level.
///
/// ```
/// use pgq_daemon::Level;
/// let level: Level = "Verbose".parse().unwrap();
/// assert_eq!(level, Level::Verbose);
/// assert_eq!(level.to_string(), "VERBOSE");
/// assert_eq!(level.more(), Level::Debug);
/// assert_eq!(Level::Debug.more(), Level::Debug);
/// assert_eq!(level.less(), Level::Notice);
/// assert!("loud".parse::<Level>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// Everything, for developers.
    Debug,
    /// What the daemon is doing, in detail.
    Verbose,
    /// Normal but significant events: start, stop, reload. The default.
    #[default]
    Notice,
    /// Something unexpected that the daemon works around.
    Warning,
    /// An operation failed; the daemon goes on.
    Error,
    /// The daemon cannot go on.
    Fatal,
}

impl Level {
    /// The six levels, from the most verbose to the least.
    pub const ALL: [Level; 6] = [
        Level::Debug,
        Level::Verbose,
        Level::Notice,
        Level::Warning,
        Level::Error,
        Level::Fatal,
    ];

    /// The upper-case name written in log lines, e.g. `"NOTICE"`.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Verbose => "VERBOSE",
            Level::Notice => "NOTICE",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }

    /// One level more verbose (toward DEBUG); DEBUG stays DEBUG.
    pub const fn more(self) -> Level {
        match self {
            Level::Debug | Level::Verbose => Level::Debug,
            Level::Notice => Level::Verbose,
            Level::Warning => Level::Notice,
            Level::Error => Level::Warning,
            Level::Fatal => Level::Error,
        }
    }

    /// One level less verbose (toward FATAL); FATAL stays FATAL.
    pub const fn less(self) -> Level {
        match self {
            Level::Debug => Level::Verbose,
            Level::Verbose => Level::Notice,
            Level::Notice => Level::Warning,
            Level::Warning => Level::Error,
            Level::Error | Level::Fatal => Level::Fatal,
        }
    }

    /// The `log` level records of this level are written at.
    pub const fn to_log(self) -> log::Level {
        match self {
            Level::Debug => log::Level::Trace,
            Level::Verbose => log::Level::Debug,
            Level::Notice => log::Level::Info,
            Level::Warning => log::Level::Warn,
            Level::Error | Level::Fatal => log::Level::Error,
        }
    }

    /// The six-level of a `log` record: its `pgq_level` key when it has one,
    /// otherwise the level its `log` level maps to.
    pub fn of_record(record: &log::Record<'_>) -> Level {
        use log::kv::Key;
        if let Some(level) = record
            .key_values()
            .get(Key::from_str(LEVEL_KEY))
            .and_then(|value| value.to_borrowed_str().and_then(|s| s.parse().ok()))
        {
            return level;
        }
        match record.level() {
            log::Level::Trace => Level::Debug,
            log::Level::Debug => Level::Verbose,
            log::Level::Info => Level::Notice,
            log::Level::Warn => Level::Warning,
            log::Level::Error => Level::Error,
        }
    }

    pub(crate) const fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) const fn from_u8(n: u8) -> Level {
        match n {
            0 => Level::Debug,
            1 => Level::Verbose,
            2 => Level::Notice,
            3 => Level::Warning,
            4 => Level::Error,
            _ => Level::Fatal,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Level {
    type Err = Error;

    /// Parses a level name, in any case: `debug`, `verbose`, `notice`, `warning`,
    /// `error`, `fatal`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::UnknownLevel { name: s.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_in_any_case() {
        for level in Level::ALL {
            assert_eq!(level.name().parse::<Level>().ok(), Some(level));
            assert_eq!(level.name().to_lowercase().parse::<Level>().ok(), Some(level));
        }
    }

    #[test]
    fn unknown_name_error_lists_the_valid_levels() {
        let message = "trace"
            .parse::<Level>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("`trace`"), "{message}");
        assert!(
            message.contains("debug, verbose, notice, warning, error, fatal"),
            "{message}"
        );
    }

    #[test]
    fn more_and_less_step_one_level_and_saturate() {
        assert_eq!(Level::Notice.more(), Level::Verbose);
        assert_eq!(Level::Notice.less(), Level::Warning);
        assert_eq!(Level::Debug.more(), Level::Debug);
        assert_eq!(Level::Fatal.less(), Level::Fatal);
        for level in Level::ALL {
            assert_eq!(Level::from_u8(level.to_u8()), level);
        }
    }

    #[test]
    fn fatal_and_error_share_the_log_error_level() {
        assert_eq!(Level::Fatal.to_log(), log::Level::Error);
        assert_eq!(Level::Error.to_log(), log::Level::Error);
        assert_eq!(Level::Debug.to_log(), log::Level::Trace);
    }
}
