//! A tiny daemon on `pgq-daemon` alone, knowing nothing of queues: the
//! daemon pgq-daemon's integration tests (`tests/it/pgq_daemon/`) drive, and an
//! example of a binary using that crate.
//!
//! Each round appends `begin N` to a work file, waits `round_ms`, appends `end N`.
//! Its configuration is a plain `key = value` file (`#` starts a comment), re-read on
//! every reload:
//!
//! ```text
//! pidfile = /run/demo.pid      # required by start
//! logfile = /var/log/demo.log  # required by start; run logs to stderr without it
//! loglevel = notice            # debug | verbose | notice | warning | error | fatal
//! delay = 0.5                  # seconds of rest when idle
//! work = /tmp/demo.work        # the file rounds append to
//! round_ms = 20                # how long a round takes
//! busy_rounds = 0              # the first N rounds say Busy, later ones Idle
//! fail_start = 0               # non-zero: building the daemon fails with this exit code
//! fail_round = 0               # this round returns an error
//! panic_round = 0              # this round panics
//! caught_panic_round = 0       # this round's task panics inside `catching`; the round goes on
//! poke = /tmp/demo.poke        # when this file appears, the rest ends early
//! shutdown_hangs = false       # shutdown() never returns (to test kill's SIGKILL)
//! stop_timeout = 30            # seconds `stop` waits (and `kill`, at most 5)
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use pgq_daemon::{async_trait, Activity, BoxError, Daemon, DaemonCommand, ExitCode, Failure, Level, Options, Settings};

/// A tiny daemon that appends `begin N` / `end N` to a file, round after round.
#[derive(Parser)]
#[command(name = "pgq-daemon-demo")]
struct Cli {
    /// The configuration file.
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    #[command(subcommand)]
    command: DaemonCommand,
}

/// The configuration file, as keys and values.
struct Conf(HashMap<String, String>);

impl Conf {
    fn read(path: &Path) -> Result<Conf, BoxError> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let mut map = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("{}: not `key = value`: {line}", path.display()))?;
            map.insert(key.trim().to_string(), value.trim().to_string());
        }
        Ok(Conf(map))
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.text(key).map(PathBuf::from)
    }

    fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, BoxError> {
        match self.text(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("`{key}` is not a number: {text}").into()),
        }
    }

    fn settings(&self) -> Result<Settings, BoxError> {
        let level = self.text("loglevel").unwrap_or("notice").parse::<Level>()?;
        let delay = seconds("delay", self.number("delay", 0.5)?)?;
        Ok(Settings { delay, level })
    }
}

/// A number of seconds from the config, up to a day.
fn seconds(key: &str, value: f64) -> Result<Duration, BoxError> {
    match Duration::try_from_secs_f64(value) {
        Ok(d) if d <= Duration::from_secs(86_400) => Ok(d),
        _ => Err(format!("`{key}` is {value}; it must be a number of seconds from 0 to 86400").into()),
    }
}

struct Demo {
    config: PathBuf,
    work: PathBuf,
    round_ms: u64,
    busy_rounds: u64,
    fail_round: u64,
    panic_round: u64,
    caught_panic_round: u64,
    poke: Option<PathBuf>,
    shutdown_hangs: bool,
    round: u64,
}

impl Demo {
    fn new(config: PathBuf, conf: &Conf) -> Result<Demo, Failure> {
        Ok(Demo {
            config,
            work: conf.path("work").unwrap_or_else(|| PathBuf::from("demo.work")),
            round_ms: conf.number("round_ms", 20).map_err(Failure::failed)?,
            busy_rounds: conf.number("busy_rounds", 0).map_err(Failure::failed)?,
            fail_round: conf.number("fail_round", 0).map_err(Failure::failed)?,
            panic_round: conf.number("panic_round", 0).map_err(Failure::failed)?,
            caught_panic_round: conf.number("caught_panic_round", 0).map_err(Failure::failed)?,
            poke: conf.path("poke"),
            shutdown_hangs: conf.text("shutdown_hangs") == Some("true"),
            round: 0,
        })
    }

    fn note(&self, line: &str) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.work)?;
        writeln!(file, "{line}")
    }
}

#[async_trait]
impl Daemon for Demo {
    async fn config(&mut self) -> Result<Settings, BoxError> {
        let settings = Conf::read(&self.config)?.settings()?;
        pgq_daemon::verbose!("config read: level {}, delay {:?}", settings.level, settings.delay);
        Ok(settings)
    }

    async fn process(&mut self) -> Result<Activity, BoxError> {
        self.round += 1;
        let n = self.round;
        self.note(&format!("begin {n}"))?;
        pgq_daemon::debug!("round {n}: begun");
        if n == self.panic_round {
            panic!("round {n} was told to panic");
        }
        if n == self.caught_panic_round {
            // A task's panic comes back as a JoinError: a survived panic.
            let task = tokio::spawn(pgq_daemon::catching(async move {
                panic!("the task of round {n} was told to panic");
            }));
            if let Err(e) = task.await {
                pgq_daemon::warning!("round {n}: its task failed ({e}); going on");
            }
        }
        tokio::time::sleep(Duration::from_millis(self.round_ms)).await;
        self.note(&format!("end {n}"))?;
        if n == self.fail_round {
            return Err(format!("round {n} was told to fail").into());
        }
        pgq_daemon::verbose!("round {n} done");
        Ok(if n <= self.busy_rounds {
            Activity::Busy
        } else {
            Activity::Idle
        })
    }

    async fn wait_for_work(&mut self) {
        let Some(poke) = &self.poke else {
            return std::future::pending().await;
        };
        loop {
            if std::fs::remove_file(poke).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn shutdown(&mut self) {
        pgq_daemon::notice!("demo shutting down after {} rounds", self.round);
        if self.shutdown_hangs {
            pgq_daemon::warning!("demo told to hang in shutdown");
            std::future::pending::<()>().await;
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let conf = match Conf::read(&cli.config) {
        Ok(conf) => conf,
        Err(e) => {
            pgq_daemon::errln!("pgq-daemon-demo: {e}");
            return ExitCode::Failed;
        }
    };
    let mut opts = Options::new("demo");
    opts.pidfile = conf.path("pidfile");
    opts.logfile = conf.path("logfile");
    // A bad level is reported by the first config(), as a startup failure.
    opts.level = conf.text("loglevel").and_then(|l| l.parse().ok()).unwrap_or_default();
    match conf
        .number("stop_timeout", 30.0)
        .and_then(|s| seconds("stop_timeout", s))
    {
        Ok(timeout) => opts.stop_timeout = timeout,
        Err(e) => {
            pgq_daemon::errln!("pgq-daemon-demo: {e}");
            return ExitCode::Failed;
        }
    }
    let fail_start: u8 = conf.number("fail_start", 0).unwrap_or(1);
    let config = cli.config.clone();
    let work = conf.path("work");
    let make = || async move {
        match fail_start {
            0 => Demo::new(config, &conf),
            3 => Err(Failure::cannot_connect("cannot connect to the demo's imaginary server")),
            _ => Err(Failure::failed("the demo was told not to start")),
        }
    };
    // `status` adds how many rounds the work file records.
    let details = move || {
        let text = work
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default();
        vec![format!("rounds begun: {}", text.matches("begin").count())]
    };
    pgq_daemon::execute(&cli.command, &opts, make, details)
}
