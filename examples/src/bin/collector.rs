//! `collector`: the collecting half of stream-daemon, on PgQ. A daemon that
//! listens on `[settings] listen = "HOST:PORT"`; every newline-terminated
//! record any TCP client sends becomes one event of the queue (type `record`,
//! the line as its data, the client's address in `ev_extra1`), for the
//! `subscriber` to store.
//!
//! Records are inserted in batches through the bulk producer
//! (`pgq::insert_events_copy`, binary COPY): whatever has arrived is written
//! and committed at once, so a record is committed within one commit's time
//! of its arrival, and batches grow by themselves when records come faster.
//! Clients connect and disconnect at will. A spike is absorbed, not refused:
//! records wait in a bounded buffer (`buffer`, default 100000) while the
//! database catches up, and when that is full the collector stops reading
//! from the sockets, so TCP itself holds the clients back. On a stop (`stop`
//! or `kill`) the records read are committed before the process exits; like
//! stream-daemon's, clients get no acknowledgement, so what was read but not
//! yet committed when the process is killed with SIGKILL (at most one
//! commit's worth and the buffer) is lost.
//!
//! The collector is not a queue consumer, but it is a `pgq-daemon` daemon
//! with the same commands as one (`start`, `run`, `stop`, `kill`, `reload`,
//! `restart`, `status`, `logmore`, `logless`; stream-daemon's `collect`,
//! `stop` and `running` are `start`, `stop` and `status`), and it reads the
//! standard config file (`pgq_consumers::Config`): `db`, `queue`, `pidfile`,
//! `logfile`, `loglevel`, `delay`; `consumer` is required there as for every
//! program of the framework and names the daemon in its messages.
//!
//! `[settings]`: `listen` (required), `batch_size` (events per COPY at most,
//! default 10000), `buffer` (records held in memory at most, default 100000),
//! `max_record` (bytes; a longer line is dropped with a warning, default
//! 1048576).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pgq::NewEvent;
use pgq_consumers::{Config, Database};
use pgq_daemon::{
    async_trait, backoff, debug, error, error_chain, notice, verbose, warning, Activity, Daemon, DaemonCommand,
    ExitCode, Failure,
};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// The `ev_type` of a record.
const EV_TYPE: &str = "record";
/// The longest a stop waits for the last records to commit: within the
/// 5 s `kill` gives a daemon before SIGKILL.
const FINAL_FLUSH: Duration = Duration::from_secs(4);

/// Collects newline-terminated records from TCP clients into a PgQ queue.
#[derive(Debug, Parser)]
#[command(name = "collector", version, long_about = None)]
struct Cli {
    /// The collector's config file (TOML).
    #[arg(short, long, value_name = "FILE", env = "PGQ_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
enum Command {
    /// Create the queue the records go to.
    #[command(alias = "create-queue", alias = "create_queue")]
    Install,
    #[command(flatten)]
    Daemon(DaemonCommand),
}

/// What `[settings]` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The address to listen on, e.g. "127.0.0.1:7000".
    listen: String,
    #[serde(default = "default_batch_size")]
    batch_size: NonZeroUsize,
    #[serde(default = "default_buffer")]
    buffer: NonZeroUsize,
    #[serde(default = "default_max_record")]
    max_record: NonZeroUsize,
}

fn default_batch_size() -> NonZeroUsize {
    NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN)
}

fn default_buffer() -> NonZeroUsize {
    NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN)
}

fn default_max_record() -> NonZeroUsize {
    NonZeroUsize::new(1 << 20).unwrap_or(NonZeroUsize::MIN)
}

impl Settings {
    fn read(table: &toml::Table) -> Result<Settings, String> {
        toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e| format!("[settings] is not valid: {e}"))
    }
}

/// The daemon: a listener feeding a buffer, and rounds that commit it.
struct Collector {
    config_path: PathBuf,
    config: Config,
    settings: Settings,
    db: Client,
    records: mpsc::Receiver<NewEvent>,
    /// Read from the buffer, not yet committed.
    pending: Vec<NewEvent>,
    acceptor: JoinHandle<()>,
    failures: u32,
}

impl Collector {
    /// Binds the listener, connects, checks the queue, starts accepting.
    async fn start(config_path: PathBuf, config: Config, settings: Settings) -> Result<Collector, Failure> {
        let listener = TcpListener::bind(&settings.listen)
            .await
            .map_err(|e| Failure::failed(format!("cannot listen on {}: {e}", settings.listen)))?;
        let db = connect(&config).await?;
        if pgq::get_queue_info(&db, &config.queue).await?.is_none() {
            return Err(Failure::failed(format!(
                "queue {:?} does not exist: run `collector -c {} install` first",
                config.queue,
                config_path.display()
            )));
        }
        let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        notice!("listening on {local}, records go to queue {:?}", config.queue);
        let (tx, records) = mpsc::channel(settings.buffer.get());
        let acceptor = tokio::spawn(accept(listener, tx, settings.max_record.get()));
        Ok(Collector {
            config_path,
            config,
            settings,
            db,
            records,
            pending: Vec::new(),
            acceptor,
            failures: 0,
        })
    }

    /// Moves what the buffer holds into `pending`, up to a batch.
    fn take_buffered(&mut self) {
        while self.pending.len() < self.settings.batch_size.get() {
            match self.records.try_recv() {
                Ok(record) => self.pending.push(record),
                Err(_) => break,
            }
        }
    }

    /// Writes `pending` in one transaction; it is cleared once committed.
    async fn flush(&mut self) -> Result<u64, BoxError> {
        if self.db.is_closed() {
            self.db = connect(&self.config).await.map_err(|f| f.error)?;
            notice!("reconnected to the queue database");
        }
        let tx = self.db.transaction().await?;
        let n = pgq::insert_events_copy(&tx, &self.config.queue, self.pending.iter()).await?;
        tx.commit().await?;
        self.pending.clear();
        Ok(n)
    }
}

type BoxError = pgq_daemon::BoxError;

async fn connect(config: &Config) -> Result<Client, Failure> {
    pgq_consumers::connect(&config.db, &format!("{} collector", config.consumer), Database::Queue)
        .await
        .map_err(|e| Failure::new(e.exit_code(), e))
}

#[async_trait]
impl Daemon for Collector {
    async fn config(&mut self) -> Result<pgq_daemon::Settings, BoxError> {
        let config = Config::load(&self.config_path)?;
        let settings = Settings::read(&config.settings)?;
        for (key, old, new) in [
            ("listen", self.settings.listen.to_string(), settings.listen.to_string()),
            ("buffer", self.settings.buffer.to_string(), settings.buffer.to_string()),
            (
                "max_record",
                self.settings.max_record.to_string(),
                settings.max_record.to_string(),
            ),
        ] {
            if old != new {
                warning!("[settings] {key} changed from {old} to {new}: that takes a restart; keeping {old}");
            }
        }
        self.settings.batch_size = settings.batch_size;
        let out = pgq_daemon::Settings {
            delay: config.delay(),
            level: config.level(),
        };
        self.config = config;
        Ok(out)
    }

    async fn process(&mut self) -> Result<Activity, BoxError> {
        self.take_buffered();
        if self.pending.is_empty() {
            return Ok(Activity::Idle);
        }
        match self.flush().await {
            Ok(n) => {
                if self.failures > 0 {
                    notice!("the queue database takes records again");
                    self.failures = 0;
                }
                debug!("committed {n} records");
                Ok(Activity::Busy)
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let wait = backoff(Duration::from_millis(250), self.failures, Duration::from_secs(30));
                error!(
                    "cannot write {} records to queue {:?}: {}; trying again in {:.1}s",
                    self.pending.len(),
                    self.config.queue,
                    error_chain(e.as_ref()),
                    wait.as_secs_f64()
                );
                Ok(Activity::Backoff(wait))
            }
        }
    }

    async fn wait_for_work(&mut self) {
        match self.records.recv().await {
            Some(record) => self.pending.push(record),
            // Never: the acceptor holds a sender while it runs.
            None => std::future::pending().await,
        }
    }

    async fn shutdown(&mut self) {
        self.acceptor.abort();
        self.records.close();
        while let Ok(record) = self.records.try_recv() {
            self.pending.push(record);
        }
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.len();
        match tokio::time::timeout(FINAL_FLUSH, self.flush()).await {
            Ok(Ok(_)) => notice!("committed the last {n} records"),
            Ok(Err(e)) => error!("{n} records read from clients are lost: {}", error_chain(e.as_ref())),
            Err(_) => error!("{n} records read from clients are lost: no commit within {FINAL_FLUSH:?}"),
        }
    }
}

/// Accepts clients until the daemon stops, a reading task each.
async fn accept(listener: TcpListener, tx: mpsc::Sender<NewEvent>, max_record: usize) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                verbose!("client {peer} connected");
                tokio::spawn(read_records(stream, peer, tx.clone(), max_record));
            }
            Err(e) => {
                // Out of file descriptors, say: try again in a moment.
                warning!("accepting a client failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one client's records into the buffer until it disconnects.
async fn read_records(stream: TcpStream, peer: SocketAddr, tx: mpsc::Sender<NewEvent>, max_record: usize) {
    let from = peer.to_string();
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    let mut count = 0u64;
    let limit = u64::try_from(max_record).unwrap_or(u64::MAX).saturating_add(1);
    loop {
        line.clear();
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                warning!("client {from}: reading failed after {count} records: {e}");
                return;
            }
        }
        if line.last() != Some(&b'\n') {
            if line.len() > max_record {
                warning!("client {from}: a record longer than {max_record} bytes (max_record) was dropped");
                if !skip_line(&mut reader).await {
                    break;
                }
                continue;
            }
            warning!(
                "client {from}: {} bytes after the last newline were dropped (a record ends with a newline)",
                line.len()
            );
            break;
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let event = NewEvent {
            ev_type: Some(EV_TYPE.into()),
            ev_data: Some(text(&line)),
            ev_extra1: Some(from.clone()),
            ..NewEvent::default()
        };
        if tx.send(event).await.is_err() {
            // The collector is stopping.
            return;
        }
        count += 1;
    }
    verbose!("client {from} disconnected after {count} records");
}

/// Skips the rest of an overlong line; false at the end of the stream.
async fn skip_line(reader: &mut BufReader<TcpStream>) -> bool {
    let mut scratch = Vec::new();
    loop {
        scratch.clear();
        match reader.take(64 * 1024).read_until(b'\n', &mut scratch).await {
            Ok(0) | Err(_) => return false,
            Ok(_) if scratch.last() == Some(&b'\n') => return true,
            Ok(_) => {}
        }
    }
}

/// A record as text: invalid UTF-8 and NUL (which PostgreSQL text cannot
/// hold) become U+FFFD.
fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.into_owned()
    }
}

/// What `status` tells besides the pid.
fn status_lines(config: &Config, settings: &Result<Settings, String>) -> Vec<String> {
    let listen = match settings {
        Ok(s) => s.listen.clone(),
        Err(e) => format!("? ({e})"),
    };
    let mut lines = vec![format!("listen: {listen}"), format!("queue: {}", config.queue)];
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            lines.push(format!("cannot read the queue state: {e}"));
            return lines;
        }
    };
    let state = runtime.block_on(async {
        let db = connect(config).await.map_err(|f| f.error)?;
        Ok::<_, BoxError>(pgq::get_queue_info(&db, &config.queue).await?)
    });
    match state {
        Ok(Some(q)) => {
            if let Some(rate) = q.ev_per_sec {
                lines.push(format!("events per second: {rate:.1}"));
            }
            lines.push(format!("events not yet ticked: {}", q.ev_new.unwrap_or(0)));
            if let Some(lag) = q.ticker_lag {
                lines.push(format!("ticker lag: {:.1}s", lag.as_duration().as_secs_f64()));
            }
        }
        Ok(None) => lines.push("the queue does not exist (run install)".into()),
        Err(e) => lines.push(format!("cannot read the queue state: {}", error_chain(e.as_ref()))),
    }
    lines
}

async fn install(config: &Config) -> Result<(), BoxError> {
    let db = connect(config).await.map_err(|f| f.error)?;
    if pgq::create_queue(&db, &config.queue).await? {
        pgq_daemon::outln!("queue {:?} created", config.queue);
    } else {
        pgq_daemon::outln!("queue {:?} already exists", config.queue);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { ExitCode::Failed } else { ExitCode::Ok };
            let _ = e.print();
            return code;
        }
    };
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            pgq_daemon::errln!("error: {}", error_chain(&e));
            return e.exit_code();
        }
    };
    // `stop`, `status`... still work with [settings] broken by an edit.
    let settings = Settings::read(&config.settings).map_err(|e| format!("{}: {e}", cli.config.display()));
    let needs_settings = matches!(
        cli.command,
        Command::Install | Command::Daemon(DaemonCommand::Start | DaemonCommand::Run { .. } | DaemonCommand::Restart)
    );
    if let (true, Err(e)) = (needs_settings, &settings) {
        pgq_daemon::errln!("error: {e}");
        return ExitCode::Failed;
    }
    match cli.command {
        Command::Install => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    pgq_daemon::errln!("error: cannot start the async runtime: {e}");
                    return ExitCode::Failed;
                }
            };
            match runtime.block_on(install(&config)) {
                Ok(()) => ExitCode::Ok,
                Err(e) => {
                    pgq_daemon::errln!("error: {}", error_chain(e.as_ref()));
                    e.downcast_ref::<pgq_consumers::Error>()
                        .map_or(ExitCode::Failed, pgq_consumers::Error::exit_code)
                }
            }
        }
        Command::Daemon(cmd) => {
            let mut options = pgq_daemon::Options::new(config.consumer.clone());
            options.pidfile = config.pidfile.clone();
            options.logfile = config.logfile.clone();
            options.level = config.level();
            let (status_config, status_settings) = (config.clone(), settings.clone());
            let config_path = cli.config;
            pgq_daemon::execute(
                &cmd,
                &options,
                move || async move {
                    let settings = settings.map_err(Failure::failed)?;
                    Collector::start(config_path, config, settings).await
                },
                move || status_lines(&status_config, &status_settings),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_listen_and_refuse_unknown_keys() {
        let t: toml::Table = "listen = '127.0.0.1:0'".parse().unwrap_or_default();
        let s = Settings::read(&t);
        assert_eq!(s.map(|s| (s.batch_size.get(), s.buffer.get())), Ok((10_000, 100_000)));
        assert!(Settings::read(&toml::Table::new()).is_err_and(|e| e.contains("listen")));
        let t: toml::Table = "listen = 'x'\nlisten_on = 'y'".parse().unwrap_or_default();
        assert!(Settings::read(&t).is_err_and(|e| e.contains("listen_on")));
    }

    #[test]
    fn records_are_text_postgres_can_hold() {
        assert_eq!(text(b"a\0b"), "a\u{FFFD}b");
        assert_eq!(text(b"caf\xc3\xa9 \xff"), "café \u{FFFD}");
    }
}
