//! The example binaries as a user runs them: `BIN -c DIR/NAME.toml ARGS...` in a
//! test's scratch directory, to their end or in the background.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::PATIENCE;

/// Environment variables that would change what a program does; removed
/// from every command unless a test sets them.
const SCRUBBED: [&str; 5] = [
    "PGQ_DB",
    "PGQ_REMOTE_DB",
    "PGQ_CONFIG",
    "PGQ_CONSUMERS_CRASH_AT",
    "RUST_BACKTRACE",
];

/// What a command printed, and how it ended.
#[derive(Debug)]
pub struct Ran {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// One of the example binaries with its config file `DIR/NAME.toml`; its log,
/// when the config names one, is `DIR/NAME.log`.
pub struct Program {
    bin: &'static str,
    dir: PathBuf,
    name: String,
}

impl Program {
    /// `bin` in the scratch directory `dir`, with the config `toml` written to
    /// `NAME.toml` there.
    pub fn new(bin: &'static str, dir: &Path, name: &str, toml: &str) -> Program {
        let program = Program {
            bin,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        program.write_config(toml);
        program
    }

    /// (Re)writes the config file: to a temporary file first, then renamed, so
    /// that a daemon reloading never reads half a file.
    pub fn write_config(&self, toml: &str) {
        let tmp = self.dir.join(format!("{}.toml.tmp", self.name));
        std::fs::write(&tmp, toml).expect("write the config");
        std::fs::rename(&tmp, self.config_path()).expect("install the config");
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.name))
    }

    /// The log file, for configs that name it as `logfile`.
    pub fn logfile(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// The log file's text (empty when there is none).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logfile()).unwrap_or_default()
    }

    /// The command `BIN -c CONFIG args...` in the scratch directory, with
    /// `env` set and the [`SCRUBBED`] variables removed; killed if dropped.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.arg("-c")
            .arg(self.config_path())
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for var in SCRUBBED {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        cmd
    }

    /// Runs `BIN -c CONFIG args...` to its end (within [`PATIENCE`]).
    pub async fn run(&self, args: &[&str]) -> Ran {
        self.run_with(args, &[]).await
    }

    /// Runs `BIN -c CONFIG args...` to its end with environment variables set.
    pub async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let out = tokio::time::timeout(PATIENCE, self.command(args, env).output())
            .await
            .unwrap_or_else(|_| panic!("{} {args:?} did not end within {PATIENCE:?}", self.name))
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin));
        Ran {
            code: out.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `BIN -c CONFIG args...` to its end with its standard output a
    /// pipe whose reading end is closed before it writes a byte, as when the
    /// reader (`| head -1`) has gone; `stdout` of the result is empty.
    pub async fn run_with_stdout_closed(&self, args: &[&str]) -> Ran {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let mut cmd = self.command(args, &[]);
        // Not `output()`, which would make standard output a pipe of its own.
        let child = cmd
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin));
        let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{} {args:?} did not end within {PATIENCE:?}", self.name))
            .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.bin));
        Ran {
            code: out.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must exit 0; on failure shows what it printed and
    /// the log.
    pub async fn ok(&self, args: &[&str]) -> Ran {
        let ran = self.run(args).await;
        assert_eq!(
            ran.code,
            Some(0),
            "`{} {}` failed: {ran:?}\n--- log:\n{}",
            self.name,
            args.join(" "),
            self.log()
        );
        ran
    }

    /// Starts a command in the background, its standard output and error
    /// going to the file `output` in the scratch directory; it is killed
    /// (SIGKILL) when the handle is dropped.
    pub fn spawn(&self, args: &[&str], output: &str, env: &[(&str, &str)]) -> Running {
        let path = self.dir.join(output);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the output file");
        let child = self
            .command(args, env)
            .stdout(file.try_clone().expect("the output file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin));
        Running { child, output: path }
    }
}

/// A program running in the background.
pub struct Running {
    child: Child,
    output: PathBuf,
}

impl Running {
    /// What it has written so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Kills it with SIGKILL and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits (within [`PATIENCE`]) for it to end by itself; its exit code
    /// (`None`: a signal ended it).
    pub async fn wait(&mut self) -> Option<i32> {
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running after {PATIENCE:?}: {}", self.output()))
            .map(|s| s.code())
            .unwrap_or(None)
    }
}
