//! `pgq-cascade`: one node of a cascaded queue (`pgq_node`): its worker
//! daemon and the cascade's admin commands.
//!
//!     pgq-cascade -c node.toml worker start | run [--once] | stop | kill | reload | restart | status | logmore | logless
//!     pgq-cascade -c node.toml create-root NAME LOCATION
//!     pgq-cascade -c node.toml create-branch NAME LOCATION --provider LOCATION
//!     pgq-cascade -c node.toml create-leaf NAME LOCATION --provider LOCATION
//!     pgq-cascade -c node.toml members | status
//!     pgq-cascade -c node.toml pause | resume [--node NAME] [--consumer NAME] [--no-wait]
//!     pgq-cascade -c node.toml change-provider --node NAME [--consumer NAME] --provider NAME [--no-wait]
//!     pgq-cascade -c node.toml switchover --node NAME
//!     pgq-cascade -c node.toml takeover DEAD_ROOT --node NAME
//!     pgq-cascade -c node.toml tag-dead NAME | drop-node NAME
//!
//! The config is TOML:
//!
//! ```toml
//! queue = "orders"                          # the cascaded queue
//! db = "host=db2 dbname=app"                # this node's database
//! worker = "node2_worker"                   # the node's worker (create-*)
//! pidfile = "/run/pgq-cascade-orders.pid"
//! logfile = "/var/log/pgq-cascade-orders.log"
//! loglevel = "notice"
//! delay = 1.0                               # seconds idle between polls
//! global_wm_period = 60.0                   # root: publish the global watermark
//! local_wm_period = 60.0                    # others: report to the provider
//! ```
//!
//! Why a binary of its own (and not the consumer CLI, or pgq-admin): a
//! cascade's commands are about nodes, not about one consumer, and every
//! node's worker is the same program whatever consumers run there; the
//! library has it all (`pgq_consumers::cascade`), so `pgq-admin` can offer
//! the same commands later on the same code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use pgq::node::NodeType;
use pgq_consumers::cascade::{Admin, Worker, WorkerConfig, WorkerRound};
use pgq_consumers::ConnString;
use pgq_daemon::{async_trait, Activity, BoxError, Daemon, DaemonCommand, ExitCode, Failure, Level, Settings};
use serde::Deserialize;

/// A node of a cascaded queue: its worker daemon and the cascade's admin commands.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The node's config file (TOML).
    #[arg(short, long, value_name = "FILE", env = "PGQ_CASCADE_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The node's worker daemon
    Worker {
        #[command(subcommand)]
        command: DaemonCommand,
    },
    /// Make this database the root (it creates the queue)
    CreateRoot { name: String, location: String },
    /// Make this database a branch (a full copy of the queue) reading from --provider
    CreateBranch {
        name: String,
        location: String,
        #[arg(long)]
        provider: String,
    },
    /// Make this database a leaf (consumes only) reading from --provider
    CreateLeaf {
        name: String,
        location: String,
        #[arg(long)]
        provider: String,
    },
    /// List the members this node knows
    Members,
    /// Every member's type, provider, position, lag, and whether it is paused or dead
    Status,
    /// Pause a node's worker (or --consumer, a cascaded consumer of it)
    Pause(Target),
    /// Resume a node's worker (or --consumer)
    Resume(Target),
    /// Make a node's worker (or --consumer) read from another provider
    ChangeProvider {
        #[command(flatten)]
        target: Target,
        /// The new provider's name.
        #[arg(long)]
        provider: String,
    },
    /// Make the branch --node the root while the root works (workers of both must run)
    Switchover {
        #[arg(long)]
        node: String,
    },
    /// Make the branch --node the root in place of a dead root
    Takeover {
        dead_root: String,
        #[arg(long)]
        node: String,
    },
    /// Tag a node dead on every member
    TagDead { name: String },
    /// Drop a node from the cascade
    DropNode { name: String },
}

#[derive(Debug, clap::Args)]
struct Target {
    /// The node (default: this one).
    #[arg(long)]
    node: Option<String>,
    /// A cascaded consumer of the node (default: its worker).
    #[arg(long)]
    consumer: Option<String>,
    /// Do not wait for the worker or consumer to acknowledge.
    #[arg(long)]
    no_wait: bool,
}

/// The config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    queue: String,
    db: String,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    pidfile: Option<PathBuf>,
    #[serde(default)]
    logfile: Option<PathBuf>,
    #[serde(default = "default_loglevel")]
    loglevel: String,
    #[serde(default = "one")]
    delay: f64,
    #[serde(default = "sixty")]
    global_wm_period: f64,
    #[serde(default = "sixty")]
    local_wm_period: f64,
}

fn default_loglevel() -> String {
    "notice".into()
}
fn one() -> f64 {
    1.0
}
fn sixty() -> f64 {
    60.0
}

impl NodeFile {
    fn load(path: &Path) -> Result<NodeFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: NodeFile = toml::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))?;
        for (key, v) in [
            ("delay", file.delay),
            ("global_wm_period", file.global_wm_period),
            ("local_wm_period", file.local_wm_period),
        ] {
            pgq_consumers::seconds::check(key, v, true).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if file.loglevel.parse::<Level>().is_err() {
            return Err(format!(
                "{}: `loglevel` {:?} is not a level",
                path.display(),
                file.loglevel
            ));
        }
        Ok(file)
    }

    fn worker_config(&self) -> Result<WorkerConfig, String> {
        let mut c = WorkerConfig::new(self.queue.clone(), ConnString::new(self.db.clone()));
        c.global_wm_period = pgq_consumers::seconds::check("global_wm_period", self.global_wm_period, true)?;
        c.local_wm_period = pgq_consumers::seconds::check("local_wm_period", self.local_wm_period, true)?;
        Ok(c)
    }
}

/// The worker daemon.
struct WorkerDaemon {
    path: PathBuf,
    file: NodeFile,
    worker: Option<Worker>,
}

#[async_trait]
impl Daemon for WorkerDaemon {
    async fn config(&mut self) -> Result<Settings, BoxError> {
        let file = NodeFile::load(&self.path)?;
        if file != self.file {
            self.file = file;
            self.worker = None;
        }
        Ok(Settings {
            delay: pgq_consumers::seconds::check("delay", self.file.delay, true)?,
            level: self.file.loglevel.parse().unwrap_or(Level::Notice),
        })
    }

    async fn process(&mut self) -> Result<Activity, BoxError> {
        if self.worker.as_ref().is_some_and(Worker::is_broken) {
            self.worker = None;
        }
        let worker = match &mut self.worker {
            Some(w) => w,
            None => self.worker.insert(Worker::connect(self.file.worker_config()?).await?),
        };
        match worker.round().await {
            Ok(WorkerRound::Copied {
                batch_id,
                tick_id,
                events,
            }) => {
                log::debug!("batch {batch_id}: {events} events copied up to tick {tick_id}");
                Ok(Activity::Busy)
            }
            Ok(WorkerRound::AlreadyDone { .. }) => Ok(Activity::Busy),
            Ok(_) => Ok(Activity::Idle),
            Err(e) => {
                if e.is_connection_error() {
                    self.worker = None;
                }
                Err(Box::new(e))
            }
        }
    }
}

async fn admin_command(file: &NodeFile, command: Command) -> Result<(), BoxError> {
    let q = &file.queue;
    let admin = Admin::connect(q.clone(), &ConnString::new(file.db.clone())).await?;
    let worker = || {
        file.worker
            .clone()
            .ok_or_else(|| "set `worker` (the node's worker name) in the config".to_string())
    };
    let wait = |t: &Target| (!t.no_wait).then_some(pgq_consumers::cascade::admin::ACK_WAIT);
    let local = || async { pgq::node::get_node_info(admin.local(), q).await.map(|i| i.node_name) };
    match command {
        Command::Worker { .. } => unreachable!("handled by main"),
        Command::CreateRoot { name, location } => admin.create_root(&name, &location, &worker()?).await?,
        Command::CreateBranch {
            name,
            location,
            provider,
        } => {
            admin
                .create_node(NodeType::Branch, &name, &location, &worker()?, &provider)
                .await?
        }
        Command::CreateLeaf {
            name,
            location,
            provider,
        } => {
            admin
                .create_node(NodeType::Leaf, &name, &location, &worker()?, &provider)
                .await?
        }
        Command::Members => {
            for m in admin.members().await? {
                println!("{}{}", m.node_name, if m.dead { " (dead)" } else { "" });
            }
        }
        Command::Status => {
            for s in admin.status().await? {
                println!("{}", s.line());
            }
        }
        Command::Pause(t) => {
            let node = match &t.node {
                Some(n) => n.clone(),
                None => local().await?,
            };
            admin.set_paused(&node, t.consumer.as_deref(), true, wait(&t)).await?
        }
        Command::Resume(t) => {
            let node = match &t.node {
                Some(n) => n.clone(),
                None => local().await?,
            };
            admin.set_paused(&node, t.consumer.as_deref(), false, wait(&t)).await?
        }
        Command::ChangeProvider { target, provider } => {
            let node = match &target.node {
                Some(n) => n.clone(),
                None => local().await?,
            };
            admin
                .change_provider(&node, target.consumer.as_deref(), &provider, wait(&target))
                .await?
        }
        Command::Switchover { node } => admin.switchover(&node, pgq_consumers::cascade::admin::ACK_WAIT).await?,
        Command::Takeover { dead_root, node } => {
            admin
                .takeover(&dead_root, &node, pgq_consumers::cascade::admin::ACK_WAIT)
                .await?
        }
        Command::TagDead { name } => admin.tag_dead(&name).await?,
        Command::DropNode { name } => admin.drop_node(&name).await?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match NodeFile::load(&cli.config) {
        Ok(f) => f,
        Err(e) => {
            pgq_daemon::errln!("error: {e}");
            return ExitCode::Failed;
        }
    };
    match cli.command {
        Command::Worker { command } => {
            let mut options = pgq_daemon::Options::new("pgq-cascade worker");
            options.pidfile = file.pidfile.clone();
            options.logfile = file.logfile.clone();
            options.level = file.loglevel.parse().unwrap_or(Level::Notice);
            options.stop_timeout = Duration::from_secs(30);
            let path = cli.config.clone();
            pgq_daemon::execute(
                &command,
                &options,
                move || async move {
                    Ok::<_, Failure>(WorkerDaemon {
                        path,
                        file,
                        worker: None,
                    })
                },
                Vec::new,
            )
        }
        command => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    pgq_daemon::errln!("error: cannot start the async runtime: {e}");
                    return ExitCode::Failed;
                }
            };
            match runtime.block_on(admin_command(&file, command)) {
                Ok(()) => ExitCode::Ok,
                Err(e) => {
                    pgq_daemon::errln!("error: {}", pgq_daemon::error_chain(e.as_ref()));
                    match e.downcast_ref::<pgq_consumers::Error>() {
                        Some(e) => e.exit_code(),
                        None => ExitCode::Failed,
                    }
                }
            }
        }
    }
}
