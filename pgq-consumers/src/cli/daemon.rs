//! The consumer as a daemon: the batch loop behind `pgq-daemon`'s runner.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use pgq_daemon::{backoff, error_chain, Activity, Daemon, DaemonCommand, ExitCode, Failure, Settings};

use crate::batch_loop::{BatchLoop, Round};
use crate::cli::serving::Serving;
use crate::cli::status;
use crate::config::Config;
use crate::consumer::Consumer;
use crate::coop;
use crate::error::{Error, Result};
use crate::ticker::{Ticker, TickerTask};

/// The longest rest after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct ConsumerDaemon<C> {
    config_path: PathBuf,
    /// The command line's overrides of the config file.
    overrides: Overrides,
    batches: BatchLoop<C>,
    /// True until the runner's first `config`: connecting configured the
    /// consumer already, and its `config` hook is called once at start.
    fresh: bool,
    /// `run --once`: a failed round ends the run with exit code 1 instead of
    /// backing off, so cron hears of it.
    once: bool,
    failures: u32,
    /// Set while a connection is lost, from when the loss was noticed.
    outage: Option<Outage>,
    /// The embedded ticker, when `[ticker] enabled = true`.
    ticker: Option<TickerTask>,
    /// The HTTP endpoint, its metrics and probes, with `[http] listen`.
    serving: Option<Serving>,
}

/// What the command line gives in place of the config file's values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// `--subconsumer NAME`.
    pub subconsumer: Option<String>,
    /// `--http-listen ADDR`.
    pub http_listen: Option<String>,
}

impl Overrides {
    /// Applies them to a config read from the file.
    pub(crate) fn apply(&self, config: &mut Config) {
        if let Some(sub) = &self.subconsumer {
            config.subconsumer = Some(sub.clone());
        }
        if let Some(listen) = &self.http_listen {
            config.http.listen = Some(listen.clone());
        }
    }
}

impl<C: Consumer> ConsumerDaemon<C> {
    /// Starts, restarts or stops the embedded ticker to match the config.
    async fn sync_ticker(&mut self) {
        let wanted = &self.batches.config().ticker;
        if self.ticker.as_ref().is_some_and(|t| t.config() == wanted) {
            return;
        }
        if let Some(old) = self.ticker.take() {
            old.stop().await;
        }
        if wanted.enabled && !self.once {
            let config = self.batches.config();
            let mut ticker = Ticker::new(config.db.clone(), wanted.clone())
                .application_name(format!("{} ticker", crate::batch_loop::application_name(config)))
                .label(format!("queue database of {:?}", config.consumer));
            if let Some(serving) = &self.serving {
                ticker = ticker.metrics(serving.ticker.clone());
            }
            self.ticker = Some(TickerTask::spawn(ticker));
        }
    }

    fn reload_config(&self) -> Result<Config> {
        let mut config = Config::read(&self.config_path)?;
        self.overrides.apply(&mut config);
        config.check(&self.config_path)?;
        Ok(config)
    }

    fn backoff(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = self.batches.config().delay().max(Duration::from_millis(100));
        backoff(base, self.failures, MAX_BACKOFF)
    }
}

#[async_trait]
impl<C: Consumer> Daemon for ConsumerDaemon<C> {
    async fn config(&mut self) -> std::result::Result<Settings, pgq_daemon::BoxError> {
        if std::mem::take(&mut self.fresh) {
            let config = self.batches.config();
            return Ok(Settings {
                delay: config.delay(),
                level: config.level(),
            });
        }
        let config = self.reload_config()?;
        let old = self.batches.config();
        for (key, changed) in [
            ("`pidfile`", config.pidfile != old.pidfile),
            ("`logfile`", config.logfile != old.logfile),
            ("`[http]`", config.http != old.http),
            ("`stop_timeout`", config.stop_timeout() != old.stop_timeout()),
            ("`stuck_after`", config.stuck_after() != old.stuck_after()),
            ("`runtime`", config.runtime != old.runtime),
        ] {
            if changed {
                return Err(Box::new(Error::ReloadRefused {
                    path: self.config_path.clone(),
                    key,
                }));
            }
        }
        let settings = Settings {
            delay: config.delay(),
            level: config.level(),
        };
        self.batches.reconfigure(config).await?;
        self.sync_ticker().await;
        Ok(settings)
    }

    /// A tick notified by the ticker ends the rest at once.
    async fn wait_for_work(&mut self) {
        self.batches.wait_for_tick().await
    }

    async fn shutdown(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.stop().await;
        }
        if let Some(serving) = self.serving.take() {
            serving.stop().await;
        }
    }

    /// Says which batch the stop abandoned: PgQ knows it (the connection is
    /// still there; the batch's transaction was rolled back with the round).
    async fn abandoned(&mut self) {
        let config = self.batches.config();
        let name = crate::batch_loop::application_name(config);
        let ask = pgq::get_consumer_info(self.batches.queue_db(), &config.queue, &name);
        let batch = match tokio::time::timeout(Duration::from_millis(300), ask).await {
            Ok(Ok(Some(info))) => info.current_batch.map(|b| format!("batch {b}")),
            _ => None,
        };
        log::warn!(
            "stopped before the round in flight was done: {} rolled back, and will be delivered again",
            batch.as_deref().unwrap_or("its work (if it had taken a batch) is")
        );
    }

    async fn process(&mut self) -> std::result::Result<Activity, pgq_daemon::BoxError> {
        if self.batches.is_broken() {
            if self.outage.is_none() {
                // Lost while idle: nothing failed yet, the connection is just gone.
                self.lose(None);
            }
            match self.batches.reconnect().await {
                Ok(()) => self.recovered(),
                Err(e) if self.once => return Err(Box::new(e)),
                Err(e) => {
                    if let Some(outage) = &mut self.outage {
                        outage.attempts += 1;
                        log::debug!("reconnect attempt {} failed: {}", outage.attempts, error_chain(&e));
                    }
                    return Ok(Activity::Backoff(self.backoff()));
                }
            }
        }
        let started = self.serving.is_some().then(std::time::Instant::now);
        let round = self.batches.round().await;
        if let (Some(serving), Some(started)) = (&self.serving, started) {
            serving.metrics.round_ended(started.elapsed(), &round);
        }
        match round {
            Ok(round) => {
                if self.outage.is_some() {
                    self.recovered();
                }
                match round {
                    Round::Aborted { .. } => Ok(Activity::Idle),
                    Round::Idle => {
                        self.failures = 0;
                        Ok(Activity::Idle)
                    }
                    _ => {
                        self.failures = 0;
                        Ok(Activity::Busy)
                    }
                }
            }
            Err(e) if self.once => Err(Box::new(e)),
            // The connection may not be marked closed yet when the error that
            // ended it arrives: an error that ends a session is an outage too.
            Err(e) if self.batches.is_broken() || e.is_connection_error() => {
                if self.outage.is_none() {
                    self.lose(Some(&e));
                }
                Ok(Activity::Backoff(self.backoff()))
            }
            Err(e) => {
                let wait = self.backoff();
                log::error!("{}; trying again in {:.1}s", error_chain(&e), wait.as_secs_f64());
                Ok(Activity::Backoff(wait))
            }
        }
    }
}

/// A connection outage: when it began and how many reconnects failed.
struct Outage {
    since: std::time::Instant,
    attempts: u32,
}

impl<C: Consumer> ConsumerDaemon<C> {
    /// Starts an outage: logged once, at ERROR; the reconnect attempts that
    /// follow are logged at VERBOSE only, and the end of it once, at WARNING.
    fn lose(&mut self, cause: Option<&Error>) {
        let which = match cause {
            _ if self.batches.queue_db().is_closed() => "queue database",
            Some(Error::Remote { .. }) => "remote database",
            _ if self.batches.is_broken() => "remote database",
            _ => "queue database",
        };
        let cause = cause.map(|e| format!(" ({})", error_chain(e))).unwrap_or_default();
        log::error!("lost the connection to the {which}{cause}; reconnecting with back-off");
        if let Some(serving) = &self.serving {
            let remote = which == "remote database";
            serving.health.lost(remote);
            serving.metrics.outage(if remote {
                crate::metrics::Db::Remote
            } else {
                crate::metrics::Db::Queue
            });
        }
        self.outage = Some(Outage {
            since: std::time::Instant::now(),
            attempts: 0,
        });
    }

    /// Ends an outage.
    fn recovered(&mut self) {
        if let Some(serving) = &self.serving {
            serving.health.connected();
            if self.outage.is_some() {
                serving.metrics.reconnected();
            }
        }
        if let Some(outage) = self.outage.take() {
            log::warn!(
                "reconnected after {:.1}s and {} failed attempt(s); carrying on",
                outage.since.elapsed().as_secs_f64(),
                outage.attempts
            );
        }
        self.failures = 0;
    }
}

fn failure(e: Error) -> Failure {
    Failure::new(e.exit_code(), error_chain(&e))
}

/// Runs a daemon command for a consumer.
pub(crate) fn execute<C, F>(
    cmd: &DaemonCommand,
    config_path: PathBuf,
    overrides: Overrides,
    config: Config,
    make: F,
) -> ExitCode
where
    C: Consumer,
    F: FnOnce() -> C + Send + 'static,
{
    let name = match &config.subconsumer {
        Some(sub) => format!("{}.{}", config.consumer, sub),
        None => config.consumer.clone(),
    };
    // Sub-consumers started from one config file with `--subconsumer NAME`
    // each get a pidfile and a log of their own.
    let own_file = |path: &Option<PathBuf>| match (path, &overrides.subconsumer) {
        (Some(path), Some(sub)) => Some(per_subconsumer(path, sub)),
        (path, _) => path.clone(),
    };
    let mut options = pgq_daemon::Options::new(name);
    options.pidfile = own_file(&config.pidfile);
    options.logfile = own_file(&config.logfile);
    options.level = config.level();
    options.stop_timeout = config.stop_timeout();
    options.stuck_after = config.stuck_after();
    options.runtime = match config.runtime {
        crate::config::Runtime::MultiThread => pgq_daemon::RuntimeFlavor::MultiThread,
        _ => pgq_daemon::RuntimeFlavor::CurrentThread,
    };
    if let DaemonCommand::Status { json } = cmd {
        return status(&options, &config, *json);
    }
    let once = matches!(cmd, DaemonCommand::Run { once: true });
    pgq_daemon::execute(
        cmd,
        &options,
        move || async move {
            let mut batches = BatchLoop::connect(make(), config).await.map_err(failure)?;
            let serving = match batches.config().http.address() {
                Some(Ok(address)) => {
                    let remote = batches.commit_mode() != crate::consumer::CommitMode::Local;
                    let serving = Serving::start(address, batches.config(), remote)
                        .await
                        .map_err(failure)?;
                    batches.set_metrics(serving.metrics.clone());
                    Some(serving)
                }
                // Checked with the config.
                Some(Err(_)) | None => None,
            };
            // A sub-consumer joins its group by starting.
            let c = batches.config();
            if let Some(sub) = &c.subconsumer {
                if join_group(batches.queue_db(), c, sub).await.map_err(failure)? {
                    pgq_daemon::notice!(
                        "sub-consumer {sub:?} of consumer {:?} registered on queue {:?}",
                        c.consumer,
                        c.queue
                    );
                }
            }
            let mut daemon = ConsumerDaemon {
                config_path,
                overrides,
                batches,
                fresh: true,
                once,
                failures: 0,
                outage: None,
                ticker: None,
                serving,
            };
            daemon.sync_ticker().await;
            Ok(daemon)
        },
        Vec::new,
    )
}

/// `status`: whether the daemon runs (exit 0, or 4 when it does not), then
/// the queue state, within a few seconds whatever the database does; a
/// running daemon whose queue database cannot be reached or does not answer
/// in time makes it exit 3. With `json`, one JSON object with all of it
/// (its field names are documented in the README and stay).
fn status(options: &pgq_daemon::Options, config: &Config, json: bool) -> ExitCode {
    use std::io::Write;
    let (code, error) = if json {
        let pid = match pgq_daemon::running(options) {
            Ok(pid) => pid,
            Err(code) => return code,
        };
        let code = if pid.is_some() {
            ExitCode::Ok
        } else {
            ExitCode::WrongState
        };
        let mut object = serde_json::json!({ "name": options.name, "running": pid.is_some(), "pid": pid });
        let read = status::read(config);
        match (&read, object.as_object_mut()) {
            (Ok(state), Some(fields)) => {
                if let Ok(serde_json::Value::Object(state)) = serde_json::to_value(state) {
                    fields.extend(state);
                }
                fields.insert("error".into(), serde_json::Value::Null);
            }
            (Err(e), Some(fields)) => {
                fields.insert("error".into(), pgq_daemon::error_chain(e).into());
            }
            _ => {}
        }
        pgq_daemon::outln!("{object}");
        (code, read.err())
    } else {
        let code = pgq_daemon::status(options);
        if code == ExitCode::Failed {
            return code;
        }
        let (lines, error) = status::describe(config);
        let mut out = std::io::stdout().lock();
        for line in lines {
            // A closed stdout (`status | head -1`) is no failure.
            if writeln!(out, "{line}").is_err() {
                break;
            }
        }
        (code, error)
    };
    match error {
        Some(e) if e.exit_code() == ExitCode::CannotConnect && code == ExitCode::Ok => ExitCode::CannotConnect,
        _ => code,
    }
}

/// The `pgq_consumer` version from which registering a sub-consumer takes
/// the group's locks in the order batch takers take them (`v4.sql`).
const REGISTRATION_LOCK_ORDER_VERSION: i32 = 4;

/// Registers sub-consumer `sub` in its group. Returns `false` when it was
/// registered already.
///
/// A registration PostgreSQL picks as a deadlock victim was rolled back
/// whole, and is tried again (a few times). Since `pgq_consumer` version 4
/// it never deadlocks with the group's batch takers; a deadlock then comes
/// from a database still on an older version (starting does not upgrade it,
/// `install` does) or from another session's locks, and is logged as a
/// warning, not hidden.
async fn join_group(db: &tokio_postgres::Client, c: &Config, sub: &str) -> Result<bool> {
    let mut tries = 0u32;
    loop {
        match coop::register(db, &c.queue, &c.consumer, sub).await {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) && tries < 5 => {
                tries += 1;
                let hint = match crate::schema::installed_version(db).await {
                    Ok(Some(v)) if v < REGISTRATION_LOCK_ORDER_VERSION => format!(
                        " (pgq_consumer is at version {v} in the queue database, where registering can deadlock \
                         with batch takers: run `install` to upgrade it)"
                    ),
                    _ => String::new(),
                };
                log::warn!("registering sub-consumer {sub:?} met a deadlock{hint}; trying again ({tries})");
                tokio::time::sleep(Duration::from_millis(50) * tries).await;
            }
            other => return other,
        }
    }
}

/// `DIR/NAME.EXT` becomes `DIR/NAME.SUB.EXT` (`DIR/NAME.SUB` without an
/// extension): the pidfile or log of sub-consumer `SUB`.
pub(crate) fn per_subconsumer(path: &Path, sub: &str) -> PathBuf {
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(sub);
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subconsumer_gets_its_own_pidfile_and_log() {
        assert_eq!(
            per_subconsumer(Path::new("/run/mr/worker.pid"), "w1"),
            Path::new("/run/mr/worker.w1.pid")
        );
        assert_eq!(
            per_subconsumer(Path::new("/var/log/mr/worker"), "w2"),
            Path::new("/var/log/mr/worker.w2")
        );
        assert_eq!(per_subconsumer(Path::new("worker.log"), "a"), Path::new("worker.a.log"));
    }
}
