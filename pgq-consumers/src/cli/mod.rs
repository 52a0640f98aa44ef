//! The command line every consumer binary gets, and its entry point: the
//! commands that manage the queue, the registration and the failed events
//! (`commands`), the daemon commands (`daemon`, through pgq-daemon) and what
//! `status` says (`status`). The rest of the crate knows nothing of it;
//! [`main`] and [`main_with`] are its interface.

mod commands;
pub(crate) mod daemon;
mod serving;
mod status;

use std::future::Future;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use pgq_daemon::{error_chain, DaemonCommand, ExitCode};

use crate::config::Config;
use crate::consumer::{BoxError, Consumer};

use crate::error::Error;

/// A PgQ consumer.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// The options before the command.
#[derive(Debug, Args)]
pub(crate) struct Globals {
    /// The consumer's config file (TOML).
    #[arg(short, long, value_name = "FILE", env = "PGQ_CONFIG")]
    pub config: PathBuf,
    /// Sub-consumer name, for cooperative consumers (overrides `subconsumer` in the config).
    #[arg(long, global = true, value_name = "NAME")]
    pub subconsumer: Option<String>,
    /// Address of the HTTP endpoint (metrics, probes), overriding `[http] listen`: each
    /// sub-consumer started from one config file needs one of its own.
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub http_listen: Option<String>,
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
    /// Forget what the remote database recorded of the batches this consumer applied, after its
    /// queue was dropped and created again (refused while the daemon runs)
    #[command(alias = "forget_applied")]
    ForgetApplied {
        /// Confirm it: batches that record covers would be applied again if the queue is the same
        #[arg(long)]
        yes: bool,
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
///     type Settings = pgq_consumers::NoSettings;
///
///     async fn process_event(&mut self, ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
///         println!("{}: {}", ev.ev_id, ev.data());
///         Ok(Outcome::Ok)
///     }
/// }
///
/// fn main() -> pgq_consumers::ExitCode {
///     pgq_consumers::main(|| Printer)
/// }
/// ```
///
/// Exit codes ([`ExitCode`]): 0 ok, 1 usage error or failed operation, 3
/// cannot connect, 4 daemon in the wrong state (not running, or already
/// running).
pub fn main<C, F>(make: F) -> ExitCode
where
    C: Consumer,
    F: FnOnce() -> C + Send + 'static,
{
    run(make, no_commands)
}

/// Runs a consumer program whose command line has commands of its own
/// besides the standard ones: [`main`], plus the subcommands of `E`, which
/// `handle` carries out.
///
/// `E` is a [`clap::Subcommand`] (usually an enum deriving it); its commands
/// are listed in `--help` with the standard ones and must not reuse their
/// names. `handle` gets the parsed command and the config (with
/// `--subconsumer` applied) and runs on a single-threaded tokio runtime.
/// An error it returns is printed as `error: ...` with its causes; the exit
/// code is the one of [`crate::Error::exit_code`] when that is what it is
/// ([`ExitCode::CannotConnect`] for a connection failure), else
/// [`ExitCode::Failed`].
///
/// ```no_run
/// use pgq_consumers::{async_trait, BoxError, Config, Consumer, Context, Event, Outcome};
///
/// struct Printer;
///
/// #[async_trait]
/// impl Consumer for Printer {
///     type Settings = pgq_consumers::NoSettings;
///
///     async fn process_event(&mut self, ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
///         println!("{}", ev.data());
///         Ok(Outcome::Ok)
///     }
/// }
///
/// #[derive(clap::Subcommand)]
/// enum Extra {
///     /// Put one line into the queue.
///     Say {
///         /// The line.
///         text: String,
///     },
/// }
///
/// async fn extra(command: Extra, config: Config) -> Result<(), BoxError> {
///     let Extra::Say { text } = command;
///     let db = pgq_consumers::connect(&config.db, "printer say", pgq_consumers::Database::Queue).await?;
///     pgq::insert_event(&db, &config.queue, "line", &text).await?;
///     Ok(())
/// }
///
/// fn main() -> pgq_consumers::ExitCode {
///     // printer -c printer.toml say hello | install | start | status | ...
///     pgq_consumers::main_with(|| Printer, extra)
/// }
/// ```
pub fn main_with<C, F, E, H, Fut>(make: F, handle: H) -> ExitCode
where
    C: Consumer,
    F: FnOnce() -> C + Send + 'static,
    E: Subcommand,
    H: FnOnce(E, Config) -> Fut,
    Fut: Future<Output = std::result::Result<(), BoxError>>,
{
    run(make, handle)
}

/// No commands besides the standard ones (for [`main`]).
enum NoCommands {}

async fn no_commands(never: NoCommands, _: Config) -> std::result::Result<(), BoxError> {
    match never {}
}

impl FromArgMatches for NoCommands {
    fn from_arg_matches(_: &clap::ArgMatches) -> std::result::Result<Self, clap::Error> {
        Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))
    }

    fn update_from_arg_matches(&mut self, _: &clap::ArgMatches) -> std::result::Result<(), clap::Error> {
        match *self {}
    }
}

impl Subcommand for NoCommands {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        cmd
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        cmd
    }

    fn has_subcommand(_: &str) -> bool {
        false
    }
}

/// A parsed command line: a standard command or one of the program's own.
enum Parsed<E> {
    Standard(Command),
    Extra(E),
}

/// Parses the command line with the standard commands and those of `E`.
fn parse<E: Subcommand>() -> std::result::Result<(Globals, Parsed<E>), clap::Error> {
    let base = Cli::command();
    // A derived Subcommand's own doc comment would replace the program's about.
    let (about, long_about) = (base.get_about().cloned(), base.get_long_about().cloned());
    let mut cmd = E::augment_subcommands(base);
    cmd = match about {
        Some(about) => cmd.about(about),
        None => cmd.about(None),
    };
    cmd = match long_about {
        Some(long_about) => cmd.long_about(long_about),
        None => cmd.long_about(None),
    };
    let matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    let globals = Globals::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
    let parsed = match matches.subcommand_name() {
        Some(name) if E::has_subcommand(name) => {
            Parsed::Extra(E::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?)
        }
        _ => Parsed::Standard(Command::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?),
    };
    Ok((globals, parsed))
}

fn run<C, F, E, H, Fut>(make: F, handle: H) -> ExitCode
where
    C: Consumer,
    F: FnOnce() -> C + Send + 'static,
    E: Subcommand,
    H: FnOnce(E, Config) -> Fut,
    Fut: Future<Output = std::result::Result<(), BoxError>>,
{
    let (globals, parsed) = match parse::<E>() {
        Ok(p) => p,
        Err(e) => {
            let code = if e.use_stderr() { ExitCode::Failed } else { ExitCode::Ok };
            let _ = e.print();
            return code;
        }
    };
    let mut config = match Config::read(&globals.config) {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    if let Some(sub) = &globals.subconsumer {
        // Checked before anything is written: it goes into file names.
        if let Err(problem) = crate::config::check_subconsumer_name(sub) {
            return report(&Error::Usage(format!("--subconsumer: {problem}")));
        }
    }
    if let Some(listen) = &globals.http_listen {
        // Said as the option's mistake, not the config file's.
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return report(&Error::Usage(format!(
                "--http-listen is {listen:?}; give an IP address and a port, e.g. 127.0.0.1:9187 or [::]:9187"
            )));
        }
    }
    let overrides = daemon::Overrides {
        subconsumer: globals.subconsumer.clone(),
        http_listen: globals.http_listen.clone(),
    };
    overrides.apply(&mut config);
    let invalid = config.check(&globals.config).err();
    if let Some(e) = &invalid {
        match &parsed {
            Parsed::Standard(Command::Daemon(cmd)) if finds_only(cmd) => {
                if *cmd != DaemonCommand::Reload {
                    pgq_daemon::errln!("warning: {}", error_chain(e));
                }
            }
            _ => return report(e),
        }
    }
    let command = match parsed {
        Parsed::Standard(Command::Daemon(cmd)) => {
            let code = daemon::execute(&cmd, globals.config.clone(), overrides, config, make);
            return match invalid {
                // The daemon was asked, reopened its log and kept its settings.
                Some(e) if code == ExitCode::Ok && cmd == DaemonCommand::Reload => {
                    pgq_daemon::errln!(
                        "error: {}: the daemon keeps its previous settings (it says so in its log)",
                        error_chain(&e)
                    );
                    e.exit_code()
                }
                _ => code,
            };
        }
        Parsed::Standard(command) => command,
        Parsed::Extra(extra) => {
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            return match runtime.block_on(handle(extra, config)) {
                Ok(()) => ExitCode::Ok,
                Err(e) => {
                    pgq_daemon::errln!("error: {}", error_chain(e.as_ref()));
                    e.downcast_ref::<Error>().map_or(ExitCode::Failed, Error::exit_code)
                }
            };
        }
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(commands::run(command, &config, make)) {
        Ok(()) => ExitCode::Ok,
        Err(e) => report(&e),
    }
}

/// Whether a daemon command only finds and signals the running daemon: it
/// works whatever values the config file holds now (a daemon must always be
/// stoppable); `reload` then still asks the daemon, which reopens its log,
/// keeps its settings and logs why, and fails saying so.
fn finds_only(cmd: &DaemonCommand) -> bool {
    matches!(
        cmd,
        DaemonCommand::Stop { .. }
            | DaemonCommand::Kill
            | DaemonCommand::Reload
            | DaemonCommand::Status { .. }
            | DaemonCommand::Logmore
            | DaemonCommand::Logless
    )
}

/// The single-threaded runtime the non-daemon commands run on.
fn runtime() -> std::result::Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            pgq_daemon::errln!("error: cannot start the async runtime: {e}");
            ExitCode::Failed
        })
}

/// Prints an error with its causes and returns its exit code.
pub(crate) fn report(e: &Error) -> ExitCode {
    pgq_daemon::errln!("error: {}", error_chain(e));
    e.exit_code()
}

// The one error-chain formatter, under the path the crate's modules use.
