//! A TCP proxy on loopback that can freeze: what a dead host, a firewall
//! that drops packets or a network partition looks like to a client, in a
//! test. Frozen, it forwards nothing in either direction and opens nothing
//! upstream, yet keeps every socket open, so no reset or end of stream
//! tells either side; new connections are accepted and left waiting. Thawed
//! ([`Proxy::resume`]), it forwards what it held, as a network does once it
//! heals.
//!
//! ```no_run
//! # async fn demo() {
//! let db = pgq_test_support::TestDb::create().await;
//! let proxy = pgq_test_support::Proxy::start(db.dsn()).await;
//! // Connect through `proxy.dsn()`, then:
//! proxy.freeze();
//! proxy.resume();
//! # }
//! ```

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A running proxy; it stops, closing every connection, when dropped.
pub struct Proxy {
    dsn: String,
    frozen: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 in front of the TCP host and port of
    /// `dsn` (a `key=value` connection string, as the test server's). Runs on
    /// the current tokio runtime.
    pub async fn start(dsn: &str) -> Proxy {
        let (host, port) = host_and_port(dsn);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap_or_else(|e| panic!("cannot resolve {host}:{port}: {e}"))
            .next()
            .unwrap_or_else(|| panic!("{host}:{port} has no address"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let (frozen, thawed) = watch::channel(false);
        let task = tokio::spawn(serve(listener, upstream, thawed));
        Proxy {
            dsn: with_host_and_port(dsn, &local.ip().to_string(), local.port()),
            frozen,
            task,
        }
    }

    /// `dsn` with its host and port replaced by the proxy's.
    pub fn dsn(&self) -> &str {
        &self.dsn
    }

    /// Stops forwarding, in both directions, on every connection, and
    /// opening connections upstream; every socket stays open.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, what was held first.
    pub fn resume(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The connections' tasks belong to the serving task's set: they go with it.
        self.task.abort();
    }
}

/// Accepts connections and proxies each to `upstream`, on tasks that live
/// as long as this one.
async fn serve(listener: TcpListener, upstream: SocketAddr, frozen: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                connections.spawn(proxy(client, upstream, frozen.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Proxies one connection.
async fn proxy(client: TcpStream, upstream: SocketAddr, mut frozen: watch::Receiver<bool>) {
    thawed(&mut frozen).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, frozen.clone()),
        pump(server_read, client_write, frozen),
    );
}

/// Copies one direction while not frozen; its end (or an error) too is
/// passed on only when not frozen.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        thawed(&mut frozen).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        thawed(&mut frozen).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    thawed(&mut frozen).await;
    let _ = to.shutdown().await;
}

/// Returns once the proxy is not frozen.
async fn thawed(frozen: &mut watch::Receiver<bool>) {
    // The proxy gone: its tasks are aborted anyway.
    let _ = frozen.wait_for(|frozen| !*frozen).await;
}

/// The `host` and `port` of a `key=value` connection string (the last of
/// each, as libpq reads them; port 5432 when none is given).
fn host_and_port(dsn: &str) -> (String, u16) {
    let mut host = None;
    let mut port = 5432;
    for (key, value) in dsn.split_whitespace().filter_map(|kv| kv.split_once('=')) {
        match key {
            "host" | "hostaddr" => host = Some(value.to_string()),
            "port" => port = value.parse().unwrap_or_else(|_| panic!("port {value:?} in {dsn:?}")),
            _ => {}
        }
    }
    let host = host.unwrap_or_else(|| panic!("{dsn:?} names no host: the proxy needs a TCP server"));
    assert!(
        !host.starts_with('/'),
        "{dsn:?} is a Unix-domain socket: the proxy needs a TCP server"
    );
    (host, port)
}

/// `dsn` with `host` and `port` set to these (and no `hostaddr`).
fn with_host_and_port(dsn: &str, host: &str, port: u16) -> String {
    let kept: Vec<&str> = dsn
        .split_whitespace()
        .filter(|kv| !["host=", "hostaddr=", "port="].iter().any(|k| kv.starts_with(k)))
        .collect();
    format!("{} host={host} port={port}", kept.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxied_dsn_keeps_everything_but_host_and_port() {
        let dsn = "host=127.0.0.1 port=5433 user=u dbname=postgres dbname=t";
        assert_eq!(host_and_port(dsn), ("127.0.0.1".to_string(), 5433));
        assert_eq!(
            with_host_and_port(dsn, "127.0.0.1", 9),
            "user=u dbname=postgres dbname=t host=127.0.0.1 port=9"
        );
    }

    #[tokio::test]
    async fn frozen_it_forwards_nothing_and_closes_nothing_and_thawed_it_forwards_what_it_held() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(&format!("host=127.0.0.1 port={port}")).await;
        let (_, proxy_port) = host_and_port(proxy.dsn());
        let mut c = TcpStream::connect(("127.0.0.1", proxy_port)).await.unwrap();
        let mut buf = [0u8; 5];
        c.write_all(b"hello").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");

        proxy.freeze();
        c.write_all(b"again").await.unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), c.read(&mut buf)).await;
        assert!(waited.is_err(), "nothing comes back while frozen, not even an end");
        proxy.resume();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"again");
    }
}
