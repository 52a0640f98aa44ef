//! The socket under a database connection: TCP with keepalives and
//! `TCP_USER_TIMEOUT`, or a Unix-domain socket, watched for silence
//! ([`crate::net::silence`]). How long silence is borne comes from the
//! connection string's `net_timeout`, unless libpq's own keys say otherwise.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::net::libpq::SocketKeys;
use crate::net::silence::{Peer, Watched};

/// TCP keepalive probes sent before the peer is given up, unless
/// `keepalives_count` says otherwise.
const KEEPALIVE_COUNT: u32 = 3;

/// TCP keepalive timing: after `idle` without traffic, a probe every
/// `interval`, `count` of them unanswered and the connection is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keepalive {
    /// Idle time before the first probe; `None`: the system's.
    pub idle: Option<Duration>,
    /// Time between probes; `None`: the system's.
    pub interval: Option<Duration>,
    /// Probes unanswered before the connection is dead; `None`: the system's.
    pub count: Option<u32>,
}

impl Keepalive {
    /// The keepalives that give up an idle connection to a vanished peer
    /// within about `net_timeout`: the first probe after half of it, then
    /// three a sixth of it apart (whole seconds, at least one).
    pub(crate) fn within(net_timeout: Duration) -> Keepalive {
        let secs = |d: Duration| Duration::from_secs(d.as_secs().max(1));
        Keepalive {
            idle: Some(secs(net_timeout / 2)),
            interval: Some(secs(net_timeout / 6)),
            count: Some(KEEPALIVE_COUNT),
        }
    }
}

/// How a connection's socket is opened and watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketOptions {
    /// How long one address may take to become a working connection (TCP,
    /// TLS, authentication); `None`: no limit.
    pub connect_timeout: Option<Duration>,
    /// TCP keepalives; `None`: off.
    pub keepalive: Option<Keepalive>,
    /// `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged;
    /// `None`: the system's.
    pub tcp_user_timeout: Option<Duration>,
    /// How long a request may go unanswered by a server that does not answer
    /// questions either; `None`: not watched.
    pub silence: Option<Duration>,
}

impl SocketOptions {
    /// The options for a connection string with this `net_timeout`, the
    /// socket keys it sets, and its `connect_timeout` (or `PGCONNECT_TIMEOUT`):
    /// a key given wins, a key given as 0 means the system's default, and
    /// what is left follows `net_timeout`.
    pub(crate) fn new(net_timeout: Duration, keys: &SocketKeys, connect_timeout: Option<Duration>) -> SocketOptions {
        let derived = Keepalive::within(net_timeout);
        let seconds = |key: Option<u64>, default: Option<Duration>| match key {
            None => default,
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
        };
        let keepalive = (!keys.keepalives_off).then(|| Keepalive {
            idle: seconds(keys.keepalives_idle, derived.idle),
            interval: seconds(keys.keepalives_interval, derived.interval),
            count: match keys.keepalives_count {
                None => derived.count,
                Some(0) => None,
                Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            },
        });
        let tcp_user_timeout = match keys.tcp_user_timeout {
            None => Some(net_timeout),
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        SocketOptions {
            connect_timeout: Some(connect_timeout.unwrap_or(net_timeout)),
            keepalive,
            tcp_user_timeout,
            silence: Some(net_timeout),
        }
    }
}

/// A TCP or a Unix-domain socket.
pub(crate) enum NetStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain.
    Unix(UnixStream),
}

/// Connects to `addr` with the options' keepalives and user timeout, watched.
pub(crate) async fn open_tcp(addr: SocketAddr, options: &SocketOptions) -> io::Result<Watched<NetStream>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(&stream);
    if let Some(k) = options.keepalive {
        let mut params = socket2::TcpKeepalive::new();
        if let Some(idle) = k.idle {
            params = params.with_time(idle);
        }
        if let Some(interval) = k.interval {
            params = params.with_interval(interval);
        }
        if let Some(count) = k.count {
            params = params.with_retries(count);
        }
        socket.set_tcp_keepalive(&params)?;
    }
    #[cfg(target_os = "linux")]
    if let Some(timeout) = options.tcp_user_timeout {
        socket.set_tcp_user_timeout(Some(timeout))?;
    }
    Ok(Watched::new(NetStream::Tcp(stream), Peer::Tcp(addr), options.silence))
}

/// Connects to the Unix-domain socket `path`, watched.
pub(crate) async fn open_unix(path: PathBuf, options: &SocketOptions) -> io::Result<Watched<NetStream>> {
    let stream = UnixStream::connect(&path).await?;
    Ok(Watched::new(NetStream::Unix(stream), Peer::Unix(path), options.silence))
}

impl AsyncRead for NetStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            NetStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            NetStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            NetStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            NetStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_timeout_sets_what_the_connection_string_leaves_out() {
        let o = SocketOptions::new(Duration::from_secs(30), &SocketKeys::default(), None);
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.tcp_user_timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.silence, Some(Duration::from_secs(30)));
        assert_eq!(
            o.keepalive,
            Some(Keepalive {
                idle: Some(Duration::from_secs(15)),
                interval: Some(Duration::from_secs(5)),
                count: Some(3)
            })
        );
        let short = SocketOptions::new(Duration::from_secs(3), &SocketKeys::default(), None);
        assert_eq!(
            short.keepalive.and_then(|k| k.interval),
            Some(Duration::from_secs(1)),
            "at least a second"
        );
    }

    #[test]
    fn libpq_keys_win_and_zero_means_the_systems_default() {
        let keys = SocketKeys {
            keepalives_off: false,
            keepalives_idle: Some(60),
            keepalives_interval: Some(0),
            keepalives_count: Some(9),
            tcp_user_timeout: Some(2500),
        };
        let o = SocketOptions::new(Duration::from_secs(30), &keys, Some(Duration::from_secs(4)));
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(4)));
        assert_eq!(o.tcp_user_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(
            o.keepalive,
            Some(Keepalive {
                idle: Some(Duration::from_secs(60)),
                interval: None,
                count: Some(9)
            })
        );
        let off = SocketKeys {
            keepalives_off: true,
            tcp_user_timeout: Some(0),
            ..SocketKeys::default()
        };
        let o = SocketOptions::new(Duration::from_secs(30), &off, None);
        assert_eq!((o.keepalive, o.tcp_user_timeout), (None, None));
    }
}
