//! The consumer's TOML config file, re-read on every reload.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Environment variable that, when set, replaces `db`.
pub const DB_ENV: &str = "PGQ_DB";
/// Environment variable that, when set, replaces `remote_db`.
pub const REMOTE_DB_ENV: &str = "PGQ_REMOTE_DB";

/// A consumer's configuration: the keys every consumer has, plus a
/// `[settings]` table handed untouched to the user's code.
///
/// ```toml
/// db = "host=localhost dbname=app"
/// queue = "orders"
/// consumer = "mailer"
/// pidfile = "/run/mailer.pid"
/// logfile = "/var/log/mailer.log"
/// loglevel = "notice"
/// delay = 1.0
///
/// [settings]
/// smtp = "localhost:25"
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Connection string of the queue database (libpq style, or a URL).
    pub db: ConnString,
    /// Queue name.
    pub queue: String,
    /// Consumer name.
    pub consumer: String,
    /// Pidfile, needed by `start` and the commands that talk to a daemon.
    #[serde(default)]
    pub pidfile: Option<PathBuf>,
    /// Log file; without one, `run` logs to stderr and `start` refuses.
    #[serde(default)]
    pub logfile: Option<PathBuf>,
    /// Log level: debug, verbose, notice, warning, error or fatal.
    #[serde(default = "default_loglevel")]
    pub loglevel: String,
    /// Seconds to wait between polls when there is nothing to do.
    #[serde(default = "default_delay")]
    pub delay: f64,
    /// Connection string of the remote database, for remote consumers.
    #[serde(default)]
    pub remote_db: Option<ConnString>,
    /// Sub-consumer name, for cooperative consumers (`--subconsumer` overrides it).
    #[serde(default)]
    pub subconsumer: Option<String>,
    /// Seconds after which a silent sub-consumer's batch goes to another one.
    #[serde(default)]
    pub dead_interval: Option<f64>,
    /// Open a batch only once it holds at least this many events.
    #[serde(default)]
    pub min_count: Option<i32>,
    /// Open a batch only once it spans at least this many seconds.
    #[serde(default)]
    pub min_interval: Option<f64>,
    /// Only take events at least this many seconds old.
    #[serde(default)]
    pub min_lag: Option<f64>,
    /// Events read from the database at a time.
    #[serde(default = "default_fetch_size")]
    pub fetch_size: u32,
    /// Retries after which an event asking for another one is marked failed.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Only events matching this filter reach the handler.
    #[serde(default)]
    pub filter: Filter,
    /// Seconds a database may stay silent (no answer to a request, no
    /// acknowledgement of sent data, no connection) before its connection is
    /// given up as lost: see [`ConnString::net_timeout`]. Applied to `db` and
    /// `remote_db` when the config is read.
    #[serde(default = "default_net_timeout")]
    pub net_timeout: f64,
    /// The embedded ticker (`[ticker]`): off unless `enabled = true`.
    #[serde(default)]
    pub ticker: crate::ticker::TickerConfig,
    /// The user's own settings, given to `Consumer::config`.
    #[serde(default)]
    pub settings: toml::Table,
}

/// Which events reach the handler. An empty list lets everything through.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Accepted `ev_type` values.
    #[serde(default)]
    pub ev_type: Vec<String>,
    /// Accepted `ev_extra1` values (the table name for trigger events).
    #[serde(default)]
    pub ev_extra1: Vec<String>,
}

fn default_loglevel() -> String {
    "notice".into()
}

fn default_delay() -> f64 {
    1.0
}

fn default_fetch_size() -> u32 {
    1000
}

fn default_net_timeout() -> f64 {
    DEFAULT_NET_TIMEOUT.as_secs_f64()
}

/// The `net_timeout` of a connection string that names none: 30 s.
pub const DEFAULT_NET_TIMEOUT: Duration = Duration::from_secs(30);
/// The range of `net_timeout`, in seconds.
const NET_TIMEOUT_RANGE: std::ops::RangeInclusive<f64> = 1.0..=3600.0;

impl Config {
    /// Reads and checks a config file, then applies the environment
    /// overrides ([`DB_ENV`], [`REMOTE_DB_ENV`]).
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(path, &text)?;
        if let Ok(db) = std::env::var(DB_ENV) {
            config.db = ConnString::new(db);
        }
        if let Ok(db) = std::env::var(REMOTE_DB_ENV) {
            config.remote_db = Some(ConnString::new(db));
        }
        config.apply_net_timeout();
        Ok(config)
    }

    /// Parses and checks config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|source| Error::ConfigSyntax {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        config.check(path)?;
        config.apply_net_timeout();
        Ok(config)
    }

    /// Gives `db` and `remote_db` the config's `net_timeout`.
    fn apply_net_timeout(&mut self) {
        let timeout = self.net_timeout();
        self.db.net_timeout = timeout;
        if let Some(remote) = &mut self.remote_db {
            remote.net_timeout = timeout;
        }
    }

    fn check(&self, path: &Path) -> Result<()> {
        let invalid = |problem: String| Error::ConfigInvalid {
            path: path.to_path_buf(),
            problem,
        };
        for (key, value) in [("queue", &self.queue), ("consumer", &self.consumer)] {
            if value.trim().is_empty() {
                return Err(invalid(format!("`{key}` is empty")));
            }
        }
        if self.db.dsn.trim().is_empty() {
            return Err(invalid("`db` is empty".into()));
        }
        if self.loglevel.parse::<pgq_daemon::Level>().is_err() {
            return Err(invalid(format!(
                "`loglevel` is {:?}; use one of debug, verbose, notice, warning, error, fatal",
                self.loglevel
            )));
        }
        for (key, value) in [
            ("delay", Some(self.delay)),
            ("dead_interval", self.dead_interval),
            ("min_interval", self.min_interval),
            ("min_lag", self.min_lag),
        ] {
            if let Some(v) = value {
                if !v.is_finite() || v < 0.0 {
                    return Err(invalid(format!(
                        "`{key}` is {v}; it must be a number of seconds, 0 or more"
                    )));
                }
            }
        }
        if !NET_TIMEOUT_RANGE.contains(&self.net_timeout) {
            return Err(invalid(format!(
                "`net_timeout` is {}; it must be a number of seconds from {} to {}",
                self.net_timeout,
                NET_TIMEOUT_RANGE.start(),
                NET_TIMEOUT_RANGE.end()
            )));
        }
        if self.fetch_size == 0 {
            return Err(invalid("`fetch_size` is 0; it must be 1 or more".into()));
        }
        if self.min_count.is_some_and(|n| n < 1) {
            return Err(invalid("`min_count` must be 1 or more".into()));
        }
        self.ticker.check().map_err(invalid)?;
        Ok(())
    }

    /// The log level.
    pub fn level(&self) -> pgq_daemon::Level {
        self.loglevel.parse().unwrap_or(pgq_daemon::Level::Notice)
    }

    /// The idle delay between polls.
    pub fn delay(&self) -> Duration {
        Duration::from_secs_f64(self.delay)
    }

    /// The dead interval of cooperative consumers, if set.
    pub fn dead_interval(&self) -> Option<Duration> {
        self.dead_interval.map(Duration::from_secs_f64)
    }

    /// How long a database may stay silent before its connection is given
    /// up (`net_timeout`; the default when out of range).
    pub fn net_timeout(&self) -> Duration {
        if NET_TIMEOUT_RANGE.contains(&self.net_timeout) {
            Duration::from_secs_f64(self.net_timeout)
        } else {
            DEFAULT_NET_TIMEOUT
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("db", &self.db)
            .field("queue", &self.queue)
            .field("consumer", &self.consumer)
            .field("subconsumer", &self.subconsumer)
            .field("remote_db", &self.remote_db)
            .finish_non_exhaustive()
    }
}

/// A connection string, and how long its database may stay silent before a
/// connection to it is given up ([`ConnString::net_timeout`]). It may hold a
/// password, so it shows itself only with the password hidden
/// ([`ConnString::redacted`]).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(from = "String")]
pub struct ConnString {
    dsn: String,
    net_timeout: Duration,
}

impl From<String> for ConnString {
    fn from(dsn: String) -> ConnString {
        ConnString {
            dsn,
            net_timeout: DEFAULT_NET_TIMEOUT,
        }
    }
}

impl ConnString {
    /// Wraps a connection string, with the default `net_timeout` (30 s).
    pub fn new(s: impl Into<String>) -> ConnString {
        ConnString::from(s.into())
    }

    /// The same connection string with another `net_timeout`.
    pub fn with_net_timeout(mut self, timeout: Duration) -> ConnString {
        self.net_timeout = timeout;
        self
    }

    /// How long the database may stay silent before a connection to it is
    /// given up as lost: the connect timeout (unless the string sets
    /// `connect_timeout`), the TCP keepalives and `TCP_USER_TIMEOUT` of the
    /// socket (unless the string sets libpq's keys for them), and how long a
    /// request may go unanswered before the server is asked, on a
    /// connection of its own, whether it is still there.
    pub fn net_timeout(&self) -> Duration {
        self.net_timeout
    }

    /// The connection string itself, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.dsn
    }

    /// The connection string with any password replaced by `***`, in both
    /// the `key=value` and the URL forms.
    pub fn redacted(&self) -> String {
        redact(&self.dsn)
    }
}

impl fmt::Debug for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Keys of a libpq connection string whose values are shown. Every other
/// value is hidden: `password`, and any key libpq does not know, since a
/// mistyped `passwrd=...` holds a password too.
const SHOWN_KEYS: [&str; 38] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "passfile",
    "options",
    "application_name",
    "fallback_application_name",
    "connect_timeout",
    "client_encoding",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requirepeer",
    "require_auth",
    "channel_binding",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// Hides the password of a connection string, in both the `key=value` and
/// the URL forms, and the value of any key libpq does not know.
pub fn redact(dsn: &str) -> String {
    let trimmed = dsn.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        return redact_url(trimmed);
    }
    let mut out = String::with_capacity(dsn.len());
    let mut rest = dsn;
    loop {
        let blank = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..blank]);
        rest = &rest[blank..];
        if rest.is_empty() {
            return out;
        }
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        if key_end == 0 {
            // A stray `=`: copy it and go on.
            out.push('=');
            rest = &rest[1..];
            continue;
        }
        let key = &rest[..key_end];
        let after_key = &rest[key_end..];
        let eq = after_key.len() - after_key.trim_start().len();
        if !after_key[eq..].starts_with('=') {
            // Not `key=value` (libpq refuses it): show the word.
            out.push_str(key);
            rest = after_key;
            continue;
        }
        out.push_str(key);
        out.push_str(&after_key[..=eq]);
        let value_part = &after_key[eq + 1..];
        let after_value = skip_value(value_part.trim_start());
        if SHOWN_KEYS.contains(&key) {
            out.push_str(&value_part[..value_part.len() - after_value.len()]);
        } else {
            out.push_str("***");
        }
        rest = after_value;
    }
}

/// Skips a `key=value` value: quoted with backslash escapes, or up to white space.
fn skip_value(value: &str) -> &str {
    if let Some(inner) = value.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return &inner[i + 1..],
                _ => escaped = false,
            }
        }
        ""
    } else {
        let end = value.find(char::is_whitespace).unwrap_or(value.len());
        &value[end..]
    }
}

fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = &url[scheme_end + 3..];
    let authority_end = after.find(['/', '?']).unwrap_or(after.len());
    let authority = &after[..authority_end];
    let mut out = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{}{}{}", &url[..scheme_end + 3], shown, &authority[at..])
        }
        None => url[..scheme_end + 3 + authority_end].to_string(),
    };
    // The query string may carry password=... too.
    let tail = &after[authority_end..];
    match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if !SHOWN_KEYS.contains(&k) => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            out.push_str(path);
            out.push('?');
            out.push_str(&query.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_key_value_strings() {
        assert_eq!(redact("host=h password=s3cret user=u"), "host=h password=*** user=u");
        assert_eq!(redact("password = 'a b\\' c' host=h"), "password =*** host=h");
        assert_eq!(redact("host=h"), "host=h");
        assert_eq!(redact("user=passwordless host=h"), "user=passwordless host=h");
    }

    #[test]
    fn values_of_keys_libpq_does_not_know_are_hidden_too() {
        assert_eq!(
            redact("host=h passwrd=s3cret dbname=d"),
            "host=h passwrd=*** dbname=d",
            "a mistyped password key"
        );
        assert_eq!(redact("PASSWORD='x y' port=5"), "PASSWORD=*** port=5");
        assert_eq!(redact("host = h  sslmode=require"), "host = h  sslmode=require");
        assert_eq!(redact("host=h junk = =x"), "host=h junk =***", "the value is `=x`");
        assert_eq!(
            redact("postgres://u@h/db?passwrd=x&sslmode=require"),
            "postgres://u@h/db?passwrd=***&sslmode=require"
        );
    }

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(redact("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(
            redact("postgresql://u@h/db?password=x&sslmode=require"),
            "postgresql://u@h/db?password=***&sslmode=require"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse(Path::new("c.toml"), "db='x'\nqueue='q'\nconsumer='c'\nqeue='z'\n")
            .err()
            .map(|e| {
                format!(
                    "{e}: {}",
                    std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
                )
            });
        let msg = err.unwrap_or_default();
        assert!(msg.contains("qeue"), "{msg}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = Config::parse(Path::new("c.toml"), "db='x'\nqueue = = 'q'\n").err();
        let msg = e
            .and_then(|e| std::error::Error::source(&e).map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn net_timeout_defaults_to_30s_is_checked_and_goes_with_both_connection_strings() {
        let base = "db='host=a'\nremote_db='host=b'\nqueue='q'\nconsumer='c'\n";
        let c = Config::parse(Path::new("c.toml"), base).expect("parses");
        assert_eq!(c.db.net_timeout(), Duration::from_secs(30));
        let c = Config::parse(Path::new("c.toml"), &format!("{base}net_timeout = 3\n")).expect("parses");
        assert_eq!(c.net_timeout(), Duration::from_secs(3));
        assert_eq!(c.db.net_timeout(), Duration::from_secs(3));
        assert_eq!(c.remote_db.map(|r| r.net_timeout()), Some(Duration::from_secs(3)));
        for bad in ["0", "0.5", "-1", "3601", "nan", "inf"] {
            let e = Config::parse(Path::new("c.toml"), &format!("{base}net_timeout = {bad}\n")).err();
            let msg = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("net_timeout"), "{bad}: {msg}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let e = Config::parse(Path::new("c.toml"), "db='x'\nqueue='q'\nconsumer='c'\ndelay=-1\n").err();
        assert!(e.map(|e| e.to_string()).unwrap_or_default().contains("delay"));
        let e = Config::parse(
            Path::new("c.toml"),
            "db='x'\nqueue='q'\nconsumer='c'\nloglevel='loud'\n",
        )
        .err();
        assert!(e.map(|e| e.to_string()).unwrap_or_default().contains("loglevel"));
    }
}
