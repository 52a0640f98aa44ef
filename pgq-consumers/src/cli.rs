//! The command line every consumer binary gets, and its entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgq_daemon::DaemonCommand;

use crate::commands;
use crate::config::Config;
use crate::consumer::Consumer;
use crate::daemon;
use crate::error::Error;

/// A PgQ consumer.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub(crate) struct Cli {
    /// The consumer's config file (TOML).
    #[arg(short, long, value_name = "FILE", env = "PGQ_CONFIG")]
    pub config: PathBuf,
    /// Sub-consumer name, for cooperative consumers (overrides `subconsumer` in the config).
    #[arg(long, global = true, value_name = "NAME")]
    pub subconsumer: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create the queue, register the consumer, install the framework's SQL and the consumer's own tables.
    Install,
    /// Unregister the consumer, and drop the queue when no other consumer is left on it.
    Uninstall,
    /// Exit 0 only when the queue exists and the consumer is registered.
    Check,
    /// Create the queue.
    #[command(alias = "create_queue")]
    CreateQueue,
    /// Drop the queue (refused while consumers are registered).
    #[command(alias = "drop_queue")]
    DropQueue,
    /// Register the consumer (or, with --subconsumer, that sub-consumer).
    Register,
    /// Unregister the consumer (or, with --subconsumer, that sub-consumer).
    Unregister {
        /// Unregister even when this is the queue's only consumer (its unread events are lost).
        #[arg(long)]
        force: bool,
    },
    /// List failed events: id, failed time, retry count, type, data, reason.
    Failed {
        /// One JSON object per line instead of columns.
        #[arg(long)]
        json: bool,
    },
    /// Delete failed events.
    Delete {
        /// Event ids, or `all`.
        #[arg(required = true, value_name = "ID|all", value_parser = parse_selection)]
        ids: Vec<Selection>,
    },
    /// Put failed events back into the queue, for this consumer only.
    Retry {
        /// Event ids, or `all`.
        #[arg(required = true, value_name = "ID|all", value_parser = parse_selection)]
        ids: Vec<Selection>,
    },
    #[command(flatten)]
    Daemon(DaemonCommand),
}

/// An event id, or every failed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    /// Every failed event of this consumer.
    All,
    /// One event.
    Id(i64),
}

fn parse_selection(s: &str) -> Result<Selection, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(Selection::All);
    }
    s.parse::<i64>()
        .map(Selection::Id)
        .map_err(|_| format!("{s:?} is not an event id (a whole number) nor `all`"))
}

/// Runs a consumer program: parses the command line, reads the config, and
/// carries out the command. Call it from `main`:
///
/// ```no_run
/// use pgq_consumers::{async_trait, BoxError, Consumer, Context, Event, Outcome};
///
/// struct Printer;
///
/// #[async_trait]
/// impl Consumer for Printer {
///     async fn process_event(&mut self, ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
///         println!("{}: {}", ev.ev_id, ev.data());
///         Ok(Outcome::Ok)
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     pgq_consumers::main(|| Printer)
/// }
/// ```
///
/// Exit codes: 0 ok, 1 usage error or failed operation, 3 cannot connect,
/// 4 daemon in the wrong state (not running, or already running).
pub fn main<C, F>(make: F) -> ExitCode
where
    C: Consumer,
    F: FnOnce() -> C + Send + 'static,
{
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let mut config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    if let Some(sub) = &cli.subconsumer {
        config.subconsumer = Some(sub.clone());
    }
    match cli.command {
        Command::Daemon(cmd) => ExitCode::from(daemon::execute(
            &cmd,
            cli.config.clone(),
            cli.subconsumer.clone(),
            config,
            make,
        )),
        command => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(commands::run(command, &config, make)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(&e),
            }
        }
    }
}

/// Prints an error with its causes and returns its exit code.
pub(crate) fn report(e: &Error) -> ExitCode {
    eprintln!("error: {}", error_chain(e));
    ExitCode::from(e.exit_code())
}

/// An error and its causes on one line, `: `-separated.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
