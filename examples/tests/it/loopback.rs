//! For the tests of `webhook` and `mapreduce`: a small HTTP server on
//! 127.0.0.1 that answers as a test tells it, and records what it was sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

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
