//! `pgq-ticker`: the ticker alone, for a list of databases, in place of pgqd.
//!
//!     pgq-ticker -c pgq-ticker.toml start | run | stop | kill | reload | restart | status | logmore | logless
//!
//! It ticks every queue, moves retried events back and runs PgQ's
//! maintenance in each database, as pgqd does, with the framework's embedded
//! ticker ([`pgq_consumers::ticker::Ticker`]): a leader elected per database, so
//! several `pgq-ticker`s (and consumer daemons with `[ticker] enabled`) can
//! run for the same databases and one takes over when another dies; prompt
//! ticks when the framework's producers notify; consumers notified of ticks.
//!
//! The config is TOML:
//!
//! ```toml
//! base_db = "host=localhost user=postgres"  # libpq key=value string, without dbname
//! databases = ["app", "billing"]            # omitted or empty: every database with pgq
//! initial_database = "postgres"             # where to look for databases
//! check_period = 60.0                       # seconds between looks for new databases
//! pidfile = "/run/pgq-ticker.pid"
//! logfile = "/var/log/pgq-ticker.log"
//! loglevel = "notice"
//!
//! [ticker]                                  # as a consumer's [ticker] table
//! ticker_period = 1.0
//! retry_period = 30.0
//! maint_period = 120.0
//!
//! [http]                                    # metrics and probes, as a consumer's (read at start)
//! listen = "127.0.0.1:9188"
//! ```
//!
//! With `[http] listen`, `/metrics` has `pgq_ticker_leader{database}` and
//! `pgq_ticker_ticks_total{database}` for each database, and `pgq_build_info`;
//! `/health/live` and `/health/ready` answer as a consumer's (ready while it runs).
//!
//! or pgqd's own ini file, unchanged (a file whose first section is
//! `[pgqd]`): `base_connstr`, `initial_database`, `database_list`,
//! `ticker_period`, `retry_period`, `maint_period`, `check_period`,
//! `logfile`, `pidfile` are read, the other keys are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use pgq_consumers::http::Endpoint;
use pgq_consumers::metrics::{TickerMetrics, TickerMetricsByDatabase};
use pgq_consumers::{connect, ticker, ConnString, Database, Health, HttpConfig};
use pgq_daemon::{async_trait, Activity, BoxError, Daemon, DaemonCommand, ExitCode, Failure, Level, Settings};
use serde::Deserialize;

/// The PgQ ticker, for a list of databases (a drop-in for pgqd).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The config file: TOML, or pgqd's ini file.
    #[arg(short, long, value_name = "FILE", env = "PGQ_TICKER_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: DaemonCommand,
}

/// The config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct TickerFile {
    /// libpq key=value connection string of the server, without dbname.
    #[serde(default)]
    base_db: String,
    /// The databases; empty: every database that has the pgq extension.
    #[serde(default)]
    databases: Vec<String>,
    /// The database to list the others from.
    #[serde(default = "default_initial_database")]
    initial_database: String,
    /// Seconds between two looks for databases.
    #[serde(default = "default_check_period")]
    check_period: f64,
    #[serde(default)]
    pidfile: Option<PathBuf>,
    #[serde(default)]
    logfile: Option<PathBuf>,
    #[serde(default = "default_loglevel")]
    loglevel: String,
    #[serde(default)]
    ticker: ticker::TickerConfig,
    #[serde(default)]
    http: HttpConfig,
}

fn default_initial_database() -> String {
    "postgres".into()
}
fn default_check_period() -> f64 {
    60.0
}
fn default_loglevel() -> String {
    "notice".into()
}

impl TickerFile {
    fn load(path: &Path) -> Result<TickerFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut file = if is_pgqd_ini(&text) {
            parse_pgqd_ini(&text).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            toml::from_str::<TickerFile>(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))?
        };
        file.ticker.enabled = true;
        file.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(file)
    }

    fn check(&self) -> Result<(), String> {
        self.ticker.check()?;
        if let Some(Err(problem)) = self.http.address() {
            return Err(problem);
        }
        pgq_consumers::seconds::check("check_period", self.check_period, false)?;
        if self.loglevel.parse::<Level>().is_err() {
            return Err(format!(
                "`loglevel` is {:?}; use one of debug, verbose, notice, warning, error, fatal",
                self.loglevel
            ));
        }
        if self.base_db.trim_start().starts_with("postgres") && self.base_db.contains("://") {
            return Err("`base_db` must be a key=value connection string (a URL cannot take the dbname)".into());
        }
        Ok(())
    }

    fn level(&self) -> Level {
        self.loglevel.parse().unwrap_or(Level::Notice)
    }

    /// The connection string of one database.
    fn dsn(&self, dbname: &str) -> ConnString {
        let quoted = dbname.replace('\\', "\\\\").replace('\'', "\\'");
        ConnString::new(format!("{} dbname='{quoted}'", self.base_db))
    }
}

fn is_pgqd_ini(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .is_some_and(|l| l.eq_ignore_ascii_case("[pgqd]"))
}

/// Reads pgqd's ini file: `key = value` lines under `[pgqd]`.
fn parse_pgqd_ini(text: &str) -> Result<TickerFile, String> {
    let mut file = TickerFile {
        base_db: String::new(),
        databases: Vec::new(),
        initial_database: default_initial_database(),
        check_period: default_check_period(),
        pidfile: None,
        logfile: None,
        loglevel: default_loglevel(),
        ticker: ticker::TickerConfig::enabled(),
        http: HttpConfig::default(),
    };
    let seconds = |key: &str, v: &str| -> Result<f64, String> {
        v.parse::<f64>()
            .map_err(|_| format!("`{key}` is {v:?}, not a number of seconds"))
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected `key = value`", n + 1));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "base_connstr" => file.base_db = value.to_string(),
            "initial_database" => file.initial_database = value.to_string(),
            "database_list" => {
                file.databases = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "ticker_period" => file.ticker.ticker_period = seconds(key, value)?,
            "retry_period" => file.ticker.retry_period = seconds(key, value)?,
            "maint_period" => file.ticker.maint_period = seconds(key, value)?,
            "check_period" => file.check_period = seconds(key, value)?,
            "logfile" => file.logfile = Some(PathBuf::from(value)),
            "pidfile" => file.pidfile = Some(PathBuf::from(value)),
            other => log::debug!("pgqd setting {other} is not used by pgq-ticker"),
        }
    }
    Ok(file)
}

/// The daemon: one ticker task per database.
struct TickerDaemon {
    config_path: PathBuf,
    file: TickerFile,
    fresh: bool,
    tickers: BTreeMap<String, ticker::TickerTask>,
    /// With `[http] listen`: the endpoint, and the metrics of each database's ticker.
    serving: Option<(Endpoint, TickerMetricsByDatabase)>,
}

impl TickerDaemon {
    /// The databases to tick now: the list, or those with pgq.
    async fn wanted(&self) -> Result<BTreeSet<String>, String> {
        if !self.file.databases.is_empty() {
            return Ok(self.file.databases.iter().cloned().collect());
        }
        let initial = self.file.dsn(&self.file.initial_database);
        let client = connect(&initial, "pgq-ticker", Database::Queue)
            .await
            .map_err(|e| format!("cannot list the databases: {e}"))?;
        let names: Vec<String> = client
            .query(
                "select datname from pg_database where datallowconn and not datistemplate order by 1",
                &[],
            )
            .await
            .map_err(|e| format!("cannot list the databases: {e}"))?
            .iter()
            .filter_map(|r| r.try_get(0).ok())
            .collect();
        let mut with_pgq = BTreeSet::new();
        for name in names {
            let Ok(db) = connect(&self.file.dsn(&name), "pgq-ticker", Database::Queue).await else {
                continue;
            };
            let has = db
                .query_one("select to_regclass('pgq.queue') is not null", &[])
                .await
                .and_then(|r| r.try_get::<_, bool>(0))
                .unwrap_or(false);
            if has {
                with_pgq.insert(name);
            }
        }
        Ok(with_pgq)
    }

    async fn stop_all(&mut self) {
        for (_, task) in std::mem::take(&mut self.tickers) {
            task.stop().await;
        }
    }
}

#[async_trait]
impl Daemon for TickerDaemon {
    async fn config(&mut self) -> Result<Settings, BoxError> {
        if !std::mem::take(&mut self.fresh) {
            let file = TickerFile::load(&self.config_path)?;
            if file != self.file {
                // New settings: every ticker starts again with them.
                self.file = file;
                self.stop_all().await;
            }
        }
        Ok(Settings {
            delay: pgq_consumers::seconds::check("check_period", self.file.check_period, false)?,
            level: self.file.level(),
        })
    }

    async fn process(&mut self) -> Result<Activity, BoxError> {
        let wanted = self.wanted().await?;
        let gone: Vec<String> = self
            .tickers
            .iter()
            .filter(|(name, task)| !wanted.contains(*name) || task.is_finished())
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(task) = self.tickers.remove(&name) {
                pgq_daemon::notice!("database {name}: ticker stopped");
                task.stop().await;
            }
        }
        for name in wanted {
            if self.tickers.contains_key(&name) {
                continue;
            }
            pgq_daemon::notice!("database {name}: ticker started");
            let mut ticker = ticker::Ticker::new(self.file.dsn(&name), self.file.ticker.clone())
                .application_name("pgq-ticker")
                .label(format!("database {name}"));
            if let Some((_, metrics)) = &self.serving {
                ticker = ticker.metrics(metrics.database(&name));
            }
            self.tickers.insert(name, ticker::TickerTask::spawn(ticker));
        }
        Ok(Activity::Idle)
    }

    async fn shutdown(&mut self) {
        self.stop_all().await;
        if let Some((endpoint, _)) = self.serving.take() {
            endpoint.stop().await;
        }
    }
}

/// The endpoint of `[http] listen`, if set.
async fn serve(http: &HttpConfig) -> Result<Option<(Endpoint, TickerMetricsByDatabase)>, pgq_consumers::Error> {
    let Some(Ok(address)) = http.address() else {
        return Ok(None);
    };
    let registry = pgq_consumers::metrics::registry(&[]);
    pgq_consumers::metrics::register_build_info(&registry, "pgq-ticker")?;
    let metrics = TickerMetrics::register_by_database(&registry)?;
    let endpoint = Endpoint::start(address, registry, Health::new()).await?;
    Ok(Some((endpoint, metrics)))
}

/// `status`: which session leads each database, after the daemon's own
/// line (`pgq-ticker is running, pid N`, the pid of this process): the
/// leader is named by its PostgreSQL backend's pid and `application_name`,
/// as `pg_stat_activity` shows it, since it may be another `pgq-ticker` or a
/// consumer daemon with `[ticker] enabled`, on another host.
fn describe(file: &TickerFile) -> Vec<String> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return vec!["cannot start a runtime to ask the databases".into()];
    };
    runtime.block_on(async {
        let mut lines = Vec::new();
        let names = if file.databases.is_empty() {
            vec![file.initial_database.clone()]
        } else {
            file.databases.clone()
        };
        for name in names {
            let line = match connect(&file.dsn(&name), "pgq-ticker status", Database::Queue).await {
                Err(e) => format!("database {name}: cannot connect: {e}"),
                Ok(client) => match pgq_consumers::ticker::leader(&client).await {
                    Ok(Some(l)) => format!(
                        "database {name}: ticked by the session of backend pid {} (application_name {:?})",
                        l.pid, l.application_name
                    ),
                    Ok(None) => format!("database {name}: no ticker leads"),
                    Err(e) => format!("database {name}: {e}"),
                },
            };
            lines.push(line);
        }
        lines
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match TickerFile::load(&cli.config) {
        Ok(f) => f,
        Err(e) => {
            pgq_daemon::errln!("error: {e}");
            return ExitCode::Failed;
        }
    };
    let mut options = pgq_daemon::Options::new("pgq-ticker");
    options.pidfile = file.pidfile.clone();
    options.logfile = file.logfile.clone();
    options.level = file.level();
    options.stop_timeout = Duration::from_secs(15);
    let status_file = file.clone();
    let config_path = cli.config.clone();
    pgq_daemon::execute(
        &cli.command,
        &options,
        move || async move {
            if file.base_db.is_empty() && file.databases.is_empty() {
                log::debug!("no base_db: connecting with libpq's defaults");
            }
            let serving = serve(&file.http)
                .await
                .map_err(|e| Failure::failed(pgq_consumers::error_chain(&e)))?;
            Ok::<_, Failure>(TickerDaemon {
                config_path,
                file,
                fresh: true,
                tickers: BTreeMap::new(),
                serving,
            })
        },
        move || describe(&status_file),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgqd_ini_files_are_read() {
        let text = "[pgqd]\nbase_connstr = host=h user=u\ninitial_database = template1\n\
                    database_list = a, b\nticker_period = 0.5\nlogfile = /tmp/x.log\nsyslog = 0\n";
        assert!(is_pgqd_ini(text));
        let f = parse_pgqd_ini(text).expect("valid");
        assert_eq!(f.base_db, "host=h user=u");
        assert_eq!(f.databases, vec!["a", "b"]);
        assert_eq!(f.ticker.ticker_period, 0.5);
        assert_eq!(f.dsn("o'k").expose(), "host=h user=u dbname='o\\'k'");
    }

    #[test]
    fn toml_files_are_read_and_unknown_keys_refused() {
        let f: TickerFile =
            toml::from_str("base_db = 'host=h'\ndatabases = ['a']\n[ticker]\nretry_period = 5\n").expect("valid");
        assert_eq!(f.ticker.retry_period, 5.0);
        assert!(toml::from_str::<TickerFile>("bogus = 1\n").is_err());
        assert!(!is_pgqd_ini("base_db = 'x'\n"));
    }
}
