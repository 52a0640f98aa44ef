//! For the tests of `webhook`, `collector` + `subscriber` and `mapreduce`:
//! the real binaries run as processes with a config in a scratch directory,
//! and a small HTTP server on 127.0.0.1 that answers as a test tells it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::support::PATIENCE;

/// Environment variables that would change what a program does.
const SCRUBBED: [&str; 4] = ["PGQ_DB", "PGQ_REMOTE_DB", "PGQ_CONFIG", "PGQ_CONSUMERS_CRASH_AT"];

/// What a command printed, and its exit code (`None`: a signal ended it).
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// One of the example programs with its config file, in a test's scratch
/// directory.
pub struct Program {
    bin: &'static str,
    pub dir: PathBuf,
    config: PathBuf,
    /// Daemons started with `start`, killed if the test ends early.
    started: Mutex<Vec<Vec<String>>>,
}

impl Program {
    /// `bin` with the config `toml` (written to `NAME.toml`) in the scratch
    /// directory `dir`.
    pub fn new(bin: &'static str, dir: &Path, name: &str, toml: &str) -> Program {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("write the config");
        Program {
            bin,
            dir: dir.to_path_buf(),
            config,
            started: Mutex::new(Vec::new()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.arg("-c").arg(&self.config).args(args).stdin(Stdio::null());
        for var in SCRUBBED {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs a command to its end.
    pub async fn run(&self, args: &[&str]) -> Ran {
        let mut cmd = self.command(args);
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(PATIENCE, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{} {args:?} did not end within {PATIENCE:?}", self.bin))
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin));
        if args.first() == Some(&"start") && out.status.success() {
            self.started
                .lock()
                .expect("lock")
                .push(args.iter().map(|a| a.to_string()).collect());
        }
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed.
    pub async fn ok(&self, args: &[&str]) -> Ran {
        let ran = self.run(args).await;
        assert_eq!(ran.code, Some(0), "{} {args:?} failed: {ran:?}", self.bin);
        ran
    }

    /// Starts a command in the background, its output going to `LOG` in the
    /// scratch directory; it is killed (SIGKILL) when the handle is dropped.
    pub fn spawn(&self, args: &[&str], log: &str, env: &[(&str, &str)]) -> Running {
        let path = self.dir.join(log);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the log");
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin));
        Running { child, log: path }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // Daemons of a test that failed midway must not outlive it.
        for args in self.started.lock().map(|s| s.clone()).unwrap_or_default() {
            let mut kill: Vec<String> = vec!["kill".into()];
            kill.extend(args.into_iter().skip(1));
            let _ = std::process::Command::new(self.bin)
                .arg("-c")
                .arg(&self.config)
                .args(&kill)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A program running in the background.
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
}

impl Running {
    /// What it has written so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it with SIGKILL and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for it to end by itself; its exit code (`None`: a signal).
    pub async fn wait(&mut self) -> Option<i32> {
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running after {PATIENCE:?}: {}", self.output()))
            .map(|s| s.code())
            .unwrap_or(None)
    }
}

/// A request the HTTP server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// How the server answers a path: status codes for the first requests, then
/// `then` for the rest; `delay` before answering.
#[derive(Debug, Clone)]
pub struct Answer {
    pub first: Vec<u16>,
    pub then: u16,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    /// Always this status.
    pub fn status(code: u16) -> Answer {
        Answer {
            first: Vec::new(),
            then: code,
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    answers: HashMap<String, Answer>,
}

/// An HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length bodies),
/// recording every request. Unknown paths get 404.
pub struct HttpServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub async fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the HTTP server");
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        HttpServer { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sets how `path` is answered.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.state
            .lock()
            .expect("lock")
            .answers
            .insert(path.to_string(), answer);
    }

    /// The requests for `path` so far.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        let state = self.state.lock().expect("lock");
        state.seen.iter().filter(|s| s.path == path).cloned().collect()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let (status, text, delay) = {
            let mut state = state.lock().expect("lock");
            let n = state.seen.iter().filter(|s| s.path == path).count();
            state.seen.push(Seen {
                at: Instant::now(),
                method,
                path: path.clone(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            match state.answers.get(&path) {
                Some(a) => (*a.first.get(n).unwrap_or(&a.then), a.body.clone(), a.delay),
                None => (404, String::new(), Duration::ZERO),
            }
        };
        tokio::time::sleep(delay).await;
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            404 => "Not Found",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Whatever",
        };
        let response = if status == 204 {
            format!("HTTP/1.1 {status} {reason}\r\n\r\n")
        } else {
            format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            )
        };
        if reader.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
