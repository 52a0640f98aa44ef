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
/// `[settings]` table read into the consumer's settings type.
///
/// Read from a file ([`Config::load`]), or built in code, with durations as
/// [`Duration`] and the log level as a [`Level`](pgq_daemon::Level):
///
/// ```
/// use std::time::Duration;
/// use pgq_consumers::Config;
///
/// let config = Config::new("host=localhost dbname=app", "orders", "mailer")
///     .with_delay(Duration::from_millis(250))
///     .with_dead_interval(Duration::from_secs(30))
///     .with_level(pgq_consumers::Level::Verbose);
/// assert_eq!(config.delay(), Duration::from_millis(250));
/// ```
///
/// The file:
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
    /// Log level: debug, verbose, notice, warning, error or fatal
    /// ([`Config::level`]).
    #[serde(default = "default_loglevel")]
    loglevel: String,
    /// Seconds to wait between polls when there is nothing to do
    /// ([`Config::delay`]).
    #[serde(default = "default_delay")]
    delay: f64,
    /// Connection string of the remote database, for remote consumers.
    #[serde(default)]
    pub remote_db: Option<ConnString>,
    /// A cascaded consumer (`pgq_node`): `db` is its target node, where its
    /// work and position commit; batches come from the provider its state
    /// there names.
    #[serde(default)]
    pub cascade: bool,
    /// Sub-consumer name, for cooperative consumers (`--subconsumer` overrides it).
    #[serde(default)]
    pub subconsumer: Option<String>,
    /// Seconds after which a silent sub-consumer's batch goes to another one
    /// ([`Config::dead_interval`]).
    #[serde(default)]
    dead_interval: Option<f64>,
    /// Open a batch only once it holds at least this many events.
    #[serde(default)]
    pub min_count: Option<i32>,
    /// Open a batch only once it spans at least this many seconds
    /// ([`Config::min_interval`]).
    #[serde(default)]
    min_interval: Option<f64>,
    /// Only take events at least this many seconds old ([`Config::min_lag`]).
    #[serde(default)]
    min_lag: Option<f64>,
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
    /// `remote_db` when the config is read ([`Config::net_timeout`]).
    #[serde(default = "default_net_timeout")]
    net_timeout: f64,
    /// The embedded ticker (`[ticker]`): off unless `enabled = true`.
    #[serde(default)]
    pub ticker: crate::ticker::TickerConfig,
    /// Seconds a stop (SIGTERM) gives the batch in flight before it is rolled
    /// back and the daemon exits ([`Config::stop_timeout`]).
    #[serde(default = "default_stop_timeout")]
    stop_timeout: f64,
    /// Seconds a round may run before the loop counts as stuck: `/health/live`
    /// answers 503 and the systemd watchdog is no longer notified
    /// ([`Config::stuck_after`]).
    #[serde(default = "default_stuck_after")]
    stuck_after: f64,
    /// The runtime the daemon's loop runs on.
    #[serde(default)]
    pub runtime: Runtime,
    /// The HTTP endpoint (`[http]`): metrics and probes, off unless `listen` is set.
    #[serde(default)]
    pub http: HttpConfig,
    /// The user's own settings, read into `Consumer::Settings`.
    #[serde(default)]
    pub settings: toml::Table,
    /// The file the config was read from, for messages.
    #[serde(skip)]
    origin: PathBuf,
}

/// The runtime the daemon's loop runs on (`runtime` in the config).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Runtime {
    /// One thread for everything: the fastest for the loop's round trips. The default.
    #[default]
    CurrentThread,
    /// A worker thread per core: for handlers that do CPU work of their own,
    /// or block, while the endpoint, the heartbeat and the ticker must go on.
    MultiThread,
}

/// The `[http]` table: the endpoint serving `/metrics`, `/health/live` and
/// `/health/ready`.
///
/// ```toml
/// [http]
/// listen = "127.0.0.1:9187"   # off when unset
/// refresh_period = 5.0        # seconds between two reads of the lag, pending and failed events
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The address to listen on (`IP:PORT`); none: no endpoint.
    #[serde(default)]
    pub listen: Option<String>,
    /// Seconds between two reads of the gauges that come from PgQ.
    #[serde(default = "default_refresh_period")]
    pub refresh_period: f64,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: None,
            refresh_period: default_refresh_period(),
        }
    }
}

fn default_refresh_period() -> f64 {
    5.0
}

impl HttpConfig {
    /// The address to listen on, when the endpoint is on.
    pub fn address(&self) -> Option<std::result::Result<std::net::SocketAddr, String>> {
        self.listen.as_ref().map(|l| {
            l.parse().map_err(|_| {
                format!(
                    "`http.listen` is {l:?}; give an IP address and a port, e.g. \"127.0.0.1:9187\" or \"[::]:9187\""
                )
            })
        })
    }

    /// The period of the gauges read from PgQ.
    pub fn refresh_period(&self) -> Duration {
        crate::seconds::duration(self.refresh_period)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if let Some(Err(problem)) = self.address() {
            return Err(problem);
        }
        crate::seconds::check("http.refresh_period", self.refresh_period, false).map(|_| ())
    }
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

fn default_stop_timeout() -> f64 {
    30.0
}

fn default_stuck_after() -> f64 {
    300.0
}

fn default_net_timeout() -> f64 {
    DEFAULT_NET_TIMEOUT.as_secs_f64()
}

/// The `net_timeout` of a connection string that names none: 30 s.
pub const DEFAULT_NET_TIMEOUT: Duration = Duration::from_secs(30);
/// The range of `net_timeout`, in seconds.
const NET_TIMEOUT_RANGE: std::ops::RangeInclusive<f64> = 1.0..=3600.0;

impl Config {
    /// A config built in code, for `queue` and `consumer` in the database
    /// `db`, every other key at its default (as in a file that gives only
    /// these three); the `with_*` methods set the others. A config built so
    /// is checked like a file's when a [`BatchLoop`](crate::BatchLoop)
    /// connects with it.
    pub fn new(db: impl Into<ConnString>, queue: impl Into<String>, consumer: impl Into<String>) -> Config {
        let mut config = Config {
            db: db.into(),
            queue: queue.into(),
            consumer: consumer.into(),
            pidfile: None,
            logfile: None,
            loglevel: default_loglevel(),
            delay: default_delay(),
            remote_db: None,
            cascade: false,
            subconsumer: None,
            dead_interval: None,
            min_count: None,
            min_interval: None,
            min_lag: None,
            fetch_size: default_fetch_size(),
            max_retries: None,
            filter: Filter::default(),
            net_timeout: default_net_timeout(),
            ticker: crate::ticker::TickerConfig::default(),
            stop_timeout: default_stop_timeout(),
            stuck_after: default_stuck_after(),
            runtime: Runtime::default(),
            http: HttpConfig::default(),
            settings: toml::Table::new(),
            origin: PathBuf::from("(config built in code)"),
        };
        config.apply_net_timeout();
        config
    }

    /// Sets `remote_db`, the remote database of a remote consumer.
    pub fn with_remote_db(mut self, db: impl Into<ConnString>) -> Config {
        self.remote_db = Some(db.into());
        self.apply_net_timeout();
        self
    }

    /// Sets `subconsumer`: this is a sub-consumer of the cooperative group
    /// `consumer`.
    pub fn with_subconsumer(mut self, name: impl Into<String>) -> Config {
        self.subconsumer = Some(name.into());
        self
    }

    /// Sets `delay`, the rest between polls when there is nothing to do.
    pub fn with_delay(mut self, delay: Duration) -> Config {
        self.delay = delay.as_secs_f64();
        self
    }

    /// Sets `dead_interval`: how long a silent sub-consumer keeps its batch.
    pub fn with_dead_interval(mut self, dead_interval: Duration) -> Config {
        self.dead_interval = Some(dead_interval.as_secs_f64());
        self
    }

    /// Sets the batch tuning of `pgq.next_batch_custom`: `min_count`,
    /// `min_interval`, `min_lag` (`None` leaves one out).
    pub fn with_batch_limits(
        mut self,
        min_count: Option<i32>,
        min_interval: Option<Duration>,
        min_lag: Option<Duration>,
    ) -> Config {
        self.min_count = min_count;
        self.min_interval = min_interval.map(|d| d.as_secs_f64());
        self.min_lag = min_lag.map(|d| d.as_secs_f64());
        self
    }

    /// Sets `fetch_size`, the events read at a time through a cursor.
    pub fn with_fetch_size(mut self, fetch_size: u32) -> Config {
        self.fetch_size = fetch_size;
        self
    }

    /// Sets `max_retries`.
    pub fn with_max_retries(mut self, max_retries: u32) -> Config {
        self.max_retries = Some(max_retries);
        self
    }

    /// Sets `[filter]`.
    pub fn with_filter(mut self, filter: Filter) -> Config {
        self.filter = filter;
        self
    }

    /// Sets `net_timeout`, for `db` and `remote_db`.
    pub fn with_net_timeout(mut self, timeout: Duration) -> Config {
        self.net_timeout = timeout.as_secs_f64();
        self.apply_net_timeout();
        self
    }

    /// Sets the log level.
    pub fn with_level(mut self, level: pgq_daemon::Level) -> Config {
        self.loglevel = level.to_string();
        self
    }

    /// Sets `pidfile` and `logfile`, which a daemon needs.
    pub fn with_files(mut self, pidfile: impl Into<PathBuf>, logfile: impl Into<PathBuf>) -> Config {
        self.pidfile = Some(pidfile.into());
        self.logfile = Some(logfile.into());
        self
    }

    /// Sets `[http]`: the endpoint of metrics and probes.
    pub fn with_http(mut self, http: HttpConfig) -> Config {
        self.http = http;
        self
    }

    /// Sets `stop_timeout`.
    pub fn with_stop_timeout(mut self, timeout: Duration) -> Config {
        self.stop_timeout = timeout.as_secs_f64();
        self
    }

    /// Sets `[ticker]`.
    pub fn with_ticker(mut self, ticker: crate::ticker::TickerConfig) -> Config {
        self.ticker = ticker;
        self
    }

    /// Sets `[settings]` from a value of the consumer's settings type (or
    /// anything that serializes to a table), as a file would give them.
    pub fn with_settings(mut self, settings: impl serde::Serialize) -> Result<Config> {
        self.settings = toml::Table::try_from(settings).map_err(|e| Error::ConfigInvalid {
            path: self.origin.clone(),
            problem: format!("the settings given are not a table: {e}"),
        })?;
        Ok(self)
    }

    /// Reads a config file, applies the environment overrides ([`DB_ENV`],
    /// [`REMOTE_DB_ENV`]) and checks it ([`Config::check`]).
    pub fn load(path: &Path) -> Result<Config> {
        let config = Config::read(path)?;
        config.check(path)?;
        Ok(config)
    }

    /// Reads a config file and applies the environment overrides, without
    /// checking the values ([`Config::check`] does): for the commands that
    /// only need to find a running daemon, which must work even when the
    /// file now holds a value the daemon would refuse.
    pub fn read(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse_unchecked(path, &text)?;
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
        let mut config = Config::parse_unchecked(path, text)?;
        config.check(path)?;
        config.apply_net_timeout();
        Ok(config)
    }

    /// The file the config was read from (as given to [`Config::load`] or
    /// [`Config::parse`]), for messages.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    fn parse_unchecked(path: &Path, text: &str) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| Error::ConfigSyntax {
            path: path.to_path_buf(),
            source: TomlSyntax::new(&e, text),
        })?;
        config.origin = path.to_path_buf();
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

    /// Checks the values, naming the key of the first that is wrong: names
    /// not empty and without control characters (they go into log lines),
    /// a sub-consumer's name fit for a file name ([`check_subconsumer_name`]),
    /// every duration a number of seconds from 0 to
    /// [`MAX_SECONDS`](crate::seconds::MAX_SECONDS) (a year), the log level one of the
    /// six, and the `[ticker]` table.
    pub fn check(&self, path: &Path) -> Result<()> {
        let invalid = |problem: String| Error::ConfigInvalid {
            path: path.to_path_buf(),
            problem,
        };
        for (key, value) in [("queue", &self.queue), ("consumer", &self.consumer)] {
            if value.trim().is_empty() {
                return Err(invalid(format!("`{key}` is empty")));
            }
            if value.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "`{key}` {value:?} has a control character (a newline, a tab...): names go into log lines"
                )));
            }
        }
        if let Some(sub) = &self.subconsumer {
            check_subconsumer_name(sub).map_err(|problem| invalid(format!("`subconsumer`: {problem}")))?;
        }
        if self.db.dsn.trim().is_empty() {
            return Err(invalid("`db` is empty".into()));
        }
        if self.cascade && self.remote_db.is_some() {
            return Err(invalid(
                "a cascaded consumer (`cascade = true`) commits its work on its target node, `db`: remove `remote_db`"
                    .into(),
            ));
        }
        if self.cascade && self.subconsumer.is_some() {
            return Err(invalid(
                "a cascaded consumer (`cascade = true`) cannot be cooperative: remove `subconsumer`".into(),
            ));
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
            ("stop_timeout", Some(self.stop_timeout)),
            ("stuck_after", Some(self.stuck_after)),
        ] {
            if let Some(v) = value {
                crate::seconds::check(key, v, true).map_err(invalid)?;
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
        self.http.check().map_err(invalid)?;
        Ok(())
    }

    /// The log level.
    pub fn level(&self) -> pgq_daemon::Level {
        self.loglevel.parse().unwrap_or(pgq_daemon::Level::Notice)
    }

    /// The idle delay between polls.
    pub fn delay(&self) -> Duration {
        crate::seconds::duration(self.delay)
    }

    /// The dead interval of cooperative consumers, if set.
    pub fn dead_interval(&self) -> Option<Duration> {
        self.dead_interval.map(crate::seconds::duration)
    }

    /// `min_interval`, if set.
    pub fn min_interval(&self) -> Option<Duration> {
        self.min_interval.map(crate::seconds::duration)
    }

    /// `min_lag`, if set.
    pub fn min_lag(&self) -> Option<Duration> {
        self.min_lag.map(crate::seconds::duration)
    }

    /// How long a stop (SIGTERM, `stop`) gives the batch in flight before it
    /// is rolled back and the daemon exits (`stop_timeout`, 30 s by default).
    pub fn stop_timeout(&self) -> Duration {
        crate::seconds::duration(self.stop_timeout)
    }

    /// How long a round may run before the loop counts as stuck
    /// (`stuck_after`, 300 s by default).
    pub fn stuck_after(&self) -> Duration {
        crate::seconds::duration(self.stuck_after)
    }

    /// How long a database may stay silent before its connection is given
    /// up (`net_timeout`; the default when out of range).
    pub fn net_timeout(&self) -> Duration {
        if NET_TIMEOUT_RANGE.contains(&self.net_timeout) {
            crate::seconds::duration(self.net_timeout)
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
            .field("cascade", &self.cascade)
            .finish_non_exhaustive()
    }
}

/// The longest sub-consumer name, in bytes.
pub const MAX_SUBCONSUMER_NAME: usize = 64;

/// Checks a sub-consumer's name. It goes into file names (`--subconsumer
/// NAME` gives the daemon the pidfile and log `NAME` before their
/// extension) and log lines, so it must be 1 to [`MAX_SUBCONSUMER_NAME`]
/// bytes, without `/` or control characters, and neither `.` nor `..`.
/// Returns what is wrong, naming the name (control characters escaped).
pub fn check_subconsumer_name(name: &str) -> std::result::Result<(), String> {
    let problem = if name.is_empty() {
        "it is empty"
    } else if name.contains('/') {
        "it has a `/`, and it goes into file names (the pidfile, the log)"
    } else if name == "." || name == ".." {
        "it is `.` or `..`, and it goes into file names (the pidfile, the log)"
    } else if name.chars().any(char::is_control) {
        "it has a control character (a newline, a tab...), and it goes into file names and log lines"
    } else if name.len() > MAX_SUBCONSUMER_NAME {
        "it is longer than 64 bytes, and it goes into file names (the pidfile, the log)"
    } else {
        return Ok(());
    };
    Err(format!("the sub-consumer name {name:?} cannot be used: {problem}"))
}

/// What is wrong with a config file's TOML: where (line and column) and
/// what, without the text of the line. toml's own message quotes the line,
/// and the line may be `db = "... password=..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlSyntax {
    /// The line (from 1), when the error has a place.
    pub line: Option<usize>,
    /// The column (from 1, in characters), when the error has a place.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl TomlSyntax {
    fn new(e: &toml::de::Error, text: &str) -> TomlSyntax {
        let place = e.span().and_then(|span| {
            let before = text.get(..span.start)?;
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Some((line, column))
        });
        // Without the input, toml says what and in which key, not the line.
        let mut bare = e.clone();
        bare.set_input(None);
        let message = bare.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        TomlSyntax {
            line: place.map(|p| p.0),
            column: place.map(|p| p.1),
            message,
        }
    }
}

impl fmt::Display for TomlSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for TomlSyntax {}

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

impl From<&str> for ConnString {
    fn from(dsn: &str) -> ConnString {
        ConnString::from(dsn.to_owned())
    }
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

    /// The connection string with every password hidden (`***`), in both
    /// the `key=value` and the URL forms, and with nothing shown that is not
    /// certainly free of secrets: the value of any key libpq does not know
    /// is hidden too, and so is the rest of a string from where it cannot
    /// be read.
    pub fn redacted(&self) -> String {
        crate::net::conninfo::redact(&self.dsn)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn syntax_errors_do_not_quote_the_line_which_may_hold_a_password() {
        let e = Config::parse(Path::new("c.toml"), "queue='q'\ndb = \"host=h password=Qz9\"Xw7\"\n").err();
        let msg = e
            .map(|e| {
                format!(
                    "{e}: {}",
                    std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
                )
            })
            .unwrap_or_default();
        assert!(msg.contains("line 2, column 27"), "{msg}");
        assert!(!msg.contains("Qz9") && !msg.contains("Xw7"), "{msg}");
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
    fn every_duration_out_of_range_is_refused_naming_its_key() {
        for key in ["delay", "dead_interval", "min_interval", "min_lag"] {
            for value in ["1e300", "-1", "nan", "inf", "31536001"] {
                let text = format!("db='x'\nqueue='q'\nconsumer='c'\n{key}={value}\n");
                let e = Config::parse(Path::new("c.toml"), &text).err().map(|e| e.to_string());
                assert!(
                    e.as_deref().is_some_and(|e| e.contains(&format!("`{key}`"))),
                    "{key}={value}: {e:?}"
                );
            }
        }
        for key in [
            "ticker_period",
            "retry_period",
            "maint_period",
            "coalesce",
            "leader_check_period",
        ] {
            let text = format!("db='x'\nqueue='q'\nconsumer='c'\n[ticker]\n{key}=1e300\n");
            let e = Config::parse(Path::new("c.toml"), &text).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(&format!("`ticker.{key}`"))),
                "{key}: {e:?}"
            );
        }
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
