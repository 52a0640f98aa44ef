//! Drives the demo daemon binary (`src/bin/pgq-daemon-demo.rs`) in a scratch directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The longest any test waits for something that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The demo daemon, its config file, pidfile, log file and work file.
pub struct Demo {
    pub dir: PathBuf,
    settings: BTreeMap<String, String>,
}

/// What a command printed, and its exit code.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Self {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Demo {
    /// A fresh scratch directory named after the test, with a config for quick rounds.
    pub fn new(test: &str) -> Demo {
        // Per test and per run, so that concurrent runs of the suite do not meet.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("it")
            .join(format!("{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        let mut demo = Demo {
            dir,
            settings: BTreeMap::new(),
        };
        let pidfile = demo.pidfile();
        let logfile = demo.logfile();
        let work = demo.workfile();
        demo.set("pidfile", pidfile.display())
            .set("logfile", logfile.display())
            .set("work", work.display())
            .set("loglevel", "notice")
            .set("delay", "0.05")
            .set("round_ms", "20")
            .set("stop_timeout", "10");
        demo
    }

    /// Sets a config key and rewrites the config file.
    pub fn set(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.settings.insert(key.to_string(), value.to_string());
        self.write_config();
        self
    }

    /// Removes a config key and rewrites the config file.
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.settings.remove(key);
        self.write_config();
        self
    }

    fn write_config(&self) {
        let text: String = self.settings.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        // Write then rename, so a reload never reads half a file.
        let tmp = self.dir.join("demo.conf.tmp");
        std::fs::write(&tmp, text).expect("write the config");
        std::fs::rename(&tmp, self.config()).expect("install the config");
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("demo.conf")
    }

    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("demo.pid")
    }

    pub fn logfile(&self) -> PathBuf {
        self.dir.join("demo.log")
    }

    pub fn workfile(&self) -> PathBuf {
        self.dir.join("work.txt")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgq-daemon-demo"));
        command
            .arg("-c")
            .arg(self.config())
            .args(args)
            .current_dir(&self.dir)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null());
        command
    }

    /// Runs a command to its end.
    pub fn run(&self, args: &[&str]) -> Ran {
        self.command(args).output().expect("run the demo binary").into()
    }

    /// Runs a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> Ran {
        let ran = self.run(args);
        assert_eq!(ran.code, Some(0), "`{}` failed: {ran:?}", args.join(" "));
        ran
    }

    /// Starts a command without waiting for it, stderr to `stderr.txt`.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let stderr = std::fs::File::create(self.dir.join("stderr.txt")).expect("stderr file");
        self.command(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the demo binary")
    }

    /// Starts the daemon and returns its pid.
    pub fn start(&self) -> u32 {
        let ran = self.ok(&["start"]);
        let pid = self.pid().expect("a started daemon holds its pidfile");
        assert_eq!(ran.stdout.trim(), format!("demo started, pid {pid}"));
        pid
    }

    /// The pid of the daemon holding the pidfile, if any.
    pub fn pid(&self) -> Option<u32> {
        pgq_daemon::running_pid(self.pidfile()).expect("read the pidfile")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logfile()).unwrap_or_default()
    }

    pub fn work(&self) -> Vec<String> {
        std::fs::read_to_string(self.workfile())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Whether the last line of the work file is a `begin` (a round is in flight).
    pub fn round_in_flight(&self) -> bool {
        self.work().last().is_some_and(|l| l.starts_with("begin "))
    }

    /// Polls `condition` until it holds; fails the test after [`PATIENCE`].
    pub fn wait_until(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition() {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting until {what}\n--- log:\n{}\n--- work:\n{:?}",
                    self.log(),
                    self.work()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log has a line containing `text`.
    pub fn wait_for_log(&self, text: &str) {
        self.wait_until(&format!("the log says `{text}`"), || self.log().contains(text));
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed test must not leave a daemon behind.
        if let Ok(Some(pid)) = pgq_daemon::running_pid(self.pidfile()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        // Keep a failed test's files to look at; tidy up after a passed one.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether a process with this pid exists and has not yet exited (a zombie, exited
/// but not yet reaped, counts as gone).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) STATE ...`: the state follows the last parenthesis.
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    match state {
        Some(Some('Z')) => false,
        Some(_) => true,
        None => kill(Pid::from_raw(pid as i32), None).is_ok(),
    }
}

/// Waits until the process `pid` has exited.
pub fn wait_gone(demo: &Demo, pid: u32) {
    demo.wait_until(&format!("pid {pid} has exited"), || !alive(pid));
}

/// The `begin N` lines without their `end N`.
pub fn unfinished(work: &[String]) -> Vec<String> {
    work.iter()
        .filter_map(|l| l.strip_prefix("begin "))
        .filter(|n| !work.contains(&format!("end {n}")))
        .map(str::to_string)
        .collect()
}
