//! A plain HTTP/1.0 client for the tests: one request per connection, on
//! loopback, with a timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// `METHOD path` on `address` (`127.0.0.1:PORT`); `None` when nothing answers
/// (not listening yet, or no answer within 5 s).
pub async fn request(address: &str, method: &str, path: &str) -> Option<Answer> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request = format!("{method} {path} HTTP/1.0\r\nHost: {address}\r\nAccept: text/plain\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some(Answer {
            status,
            headers: head.to_string(),
            body: body.to_string(),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// `GET path`.
pub async fn get(address: &str, path: &str) -> Option<Answer> {
    request(address, "GET", path).await
}

/// The value of the sample `series` (name and labels exactly as exposed, e.g.
/// `pgq_consumer_events_total{outcome="ok",...}` — matched by its name and
/// the labels given) in a text exposition.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `GET path`, its body read as JSON.
pub async fn json(address: &str, path: &str) -> serde_json::Value {
    let answer = get(address, path)
        .await
        .unwrap_or_else(|| panic!("no answer to GET {path}"));
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {answer:?}"))
}
