//! The command line: arguments, the connection, exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pgq_consumers::{ConnString, Database, ExitCode, CONTROL_TIMEOUT};
use tokio_postgres::Client;

use crate::failure::{self, NoAnswer};

/// Every PgQ queue, consumer, sub-consumer and failed event of a database.
#[derive(Parser, Debug)]
#[command(name = "pgq-admin", version)]
pub struct Args {
    /// The database (a libpq connection string or URL). Without it,
    /// `PGQ_DB`, then libpq's environment (`PGHOST`, `PGDATABASE`, ...).
    #[arg(short = 'd', long = "db", env = "PGQ_DB", hide_env_values = true, default_value = "")]
    pub db: String,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every queue and consumer, the cooperative groups, and who ticks.
    Status,
    /// Every queue: event rate, ticker lag, last tick, rotation, event tables.
    Queues,
    /// Every consumer (of one queue): lag, last seen, pending events, batch, failed events.
    Consumers {
        /// Only this queue's.
        queue: Option<String>,
    },
    /// A consumer's failed events.
    Failed {
        /// The queue.
        queue: String,
        /// The consumer (a cooperative group's name for its sub-consumers).
        consumer: String,
        /// Only events of this type.
        #[arg(long = "type", value_name = "T")]
        ev_type: Option<String>,
        /// Only events with this text in their data, type, extra fields or reason.
        #[arg(long, value_name = "TEXT")]
        grep: Option<String>,
        /// At most this many.
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        limit: Option<i64>,
        /// Skip this many first.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        offset: i64,
    },
    /// Put failed events back into the queue, for that consumer only.
    Retry {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// Event ids, or `all`.
        #[arg(required = true, value_name = "ID|all")]
        ids: Vec<String>,
    },
    /// Drop failed events for good.
    Delete {
        /// The queue.
        queue: String,
        /// The consumer.
        consumer: String,
        /// Event ids, or `all`.
        #[arg(required = true, value_name = "ID|all")]
        ids: Vec<String>,
    },
    /// Tick a queue now, whatever its thresholds (needs pgq_admin).
    Tick {
        /// The queue.
        queue: String,
    },
    /// Show a queue's PgQ settings, or set one (needs pgq_admin).
    Config {
        /// The queue.
        queue: String,
        /// The setting (ticker_max_count, ticker_max_lag, ticker_idle_period,
        /// ticker_paused, rotation_period, external_ticker).
        key: Option<String>,
        /// Its new value, as SQL text (`5 seconds`, `true`, `500`).
        value: Option<String>,
    },
    /// The web console.
    Serve(ServeArgs),
}

/// `serve`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where to listen; loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Allow retrying and deleting failed events from the pages; they then
    /// need the token (`--token-file`, or `PGQ_ADMIN_TOKEN`).
    #[arg(long)]
    pub writes: bool,
    /// A file holding the token that allows writes (its first line).
    #[arg(long, value_name = "FILE", requires = "writes")]
    pub token_file: Option<PathBuf>,
    /// Seconds between two samples of the charts' figures.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub sample_every: f64,
    /// Seconds between two refreshes of an open page.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub refresh_every: f64,
}

/// Parses the arguments, runs the command, prints any error, and returns the exit code.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::Ok,
                _ => ExitCode::Failed,
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            pgq_consumers::pgq_daemon::errln!("pgq-admin: cannot start: {e}");
            return ExitCode::Failed;
        }
    };
    let result = runtime.block_on(run(args));
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            pgq_consumers::pgq_daemon::errln!("pgq-admin: {e:#}");
            failure::exit_code(&e)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dsn = ConnString::new(args.db.clone());
    match args.command {
        Command::Serve(serve) => crate::web::serve(dsn, serve).await,
        command => {
            let name = command_name(&command);
            let work = async {
                let db = connect(&dsn).await?;
                crate::commands::run(&db, command, args.json).await
            };
            match tokio::time::timeout(CONTROL_TIMEOUT, work).await {
                Ok(done) => done.map_err(|e| failure::explain(name, e)),
                Err(_) => Err(NoAnswer(CONTROL_TIMEOUT).into()),
            }
        }
    }
}

/// Connects as consumers do: libpq's environment and password file fill in
/// what the string leaves out.
pub async fn connect(dsn: &ConnString) -> anyhow::Result<Client> {
    Ok(pgq_consumers::connect(dsn, "pgq-admin", Database::Queue).await?)
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Status => "status",
        Command::Queues => "queues",
        Command::Consumers { .. } => "consumers",
        Command::Failed { .. } => "failed",
        Command::Retry { .. } => "retry",
        Command::Delete { .. } => "delete",
        Command::Tick { .. } => "tick",
        Command::Config { .. } => "config",
        Command::Serve(_) => "serve",
    }
}
