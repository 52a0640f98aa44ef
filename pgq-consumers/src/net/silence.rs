//! Noticing a database that has gone silent.
//!
//! A peer that goes away without a reset (a dead host, a firewall that drops
//! packets, a network partition) leaves a connection waiting for an answer
//! that never comes. The socket's TCP keepalives and `TCP_USER_TIMEOUT`
//! catch a peer whose kernel is gone. They cannot catch one whose kernel
//! still acknowledges every packet while nothing answers: a proxy or pooler
//! in between that hangs, a stopped server. [`Watched`] catches those too.
//!
//! Once a request has gone unanswered for half of the silence allowed, it
//! asks the server, on a connection of its own, whether it is there: a
//! `GSSENCRequest`, which the postmaster answers at once, before any
//! authentication, and which leaves nothing in the server's log. It asks
//! again every half of the allowed silence for as long as the answer to the
//! request is in coming, so a long statement is no silence: the server
//! answers the question. When the question itself goes unanswered for the
//! other half, the connection fails with [`Silent`], and every request on it
//! fails as on a lost connection. No question is asked while answers come
//! in time: the hot path pays nothing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// Where the server listens: what the question goes to.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix-domain socket.
    Unix(PathBuf),
}

/// Why a watched connection failed: the server did not answer for this long.
/// Carried inside the [`io::Error`] the connection fails with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Silent {
    /// The silence borne.
    pub after: Duration,
}

impl std::fmt::Display for Silent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no answer for {:.1}s, and the server did not answer a question on a connection of its own \
             either (a silent network or server)",
            self.after.as_secs_f64()
        )
    }
}

impl std::error::Error for Silent {}

/// The [`Silent`] behind an error (or one of its causes), if any.
pub(crate) fn silent_in(e: &(dyn std::error::Error + 'static)) -> Option<Silent> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(silent) = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<Silent>())
        {
            return Some(*silent);
        }
        cur = err.source();
    }
    None
}

/// The shortest half of an allowed silence: a question at most this often.
const MIN_HALF: Duration = Duration::from_millis(100);

/// `GSSENCRequest`: length 8, code 80877104 (1234 << 16 | 5680).
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

/// A socket whose peer must not stay silent longer than allowed while a
/// request waits for its answer.
pub(crate) struct Watched<S> {
    inner: S,
    watch: Option<Watch>,
}

impl<S> Watched<S> {
    /// Watches `inner`, connected to `peer`, allowing `allowed` of silence;
    /// `None` watches nothing.
    pub(crate) fn new(inner: S, peer: Peer, allowed: Option<Duration>) -> Watched<S> {
        Watched {
            inner,
            watch: allowed.map(|allowed| Watch {
                peer,
                allowed,
                half: (allowed / 2).max(MIN_HALF),
                state: State::Quiet,
            }),
        }
    }
}

struct Watch {
    peer: Peer,
    allowed: Duration,
    half: Duration,
    state: State,
}

enum State {
    /// Nothing is waiting for an answer.
    Quiet,
    /// Something was sent and no answer came since; look again when this ends.
    Waiting(Pin<Box<Sleep>>),
    /// The server is being asked whether it is there.
    Asking(Pin<Box<dyn Future<Output = bool> + Send>>),
    /// It did not answer: the connection is given up.
    Silent,
}

impl Watch {
    /// Bytes went out: an answer is awaited from now on, unless one already was.
    fn sent(&mut self) {
        if matches!(self.state, State::Quiet) {
            self.state = State::Waiting(Box::pin(tokio::time::sleep(self.half)));
        }
    }

    /// Bytes came in: the peer is there.
    fn heard(&mut self) {
        if !matches!(self.state, State::Silent) {
            self.state = State::Quiet;
        }
    }

    /// `Ready` with the error to fail with once the peer is found silent;
    /// `Pending` otherwise, woken when there is something to look at.
    fn poll_silent(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            match &mut self.state {
                State::Quiet => return Poll::Pending,
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.state = State::Asking(Box::pin(answers(self.peer.clone(), self.half)));
                }
                State::Asking(question) => {
                    self.state = if ready!(question.as_mut().poll(cx)) {
                        State::Waiting(Box::pin(tokio::time::sleep(self.half)))
                    } else {
                        State::Silent
                    };
                }
                State::Silent => {
                    return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, Silent { after: self.allowed }))
                }
            }
        }
    }
}

/// Whether the server at `peer` answers a `GSSENCRequest` within `within`:
/// with a byte (`G`, `N`, or an error from a server too old to know it) or
/// by closing the connection; either way it read the question.
async fn answers(peer: Peer, within: Duration) -> bool {
    async fn ask<T: AsyncRead + AsyncWrite + Unpin>(mut stream: T) -> io::Result<()> {
        stream.write_all(&GSSENC_REQUEST).await?;
        let mut byte = [0u8; 1];
        // A byte, or none at the end of the stream: the server read the question.
        let _answered_with: usize = stream.read(&mut byte).await?;
        Ok(())
    }
    let question = async {
        match &peer {
            Peer::Tcp(addr) => ask(tokio::net::TcpStream::connect(addr).await?).await,
            Peer::Unix(path) => ask(tokio::net::UnixStream::connect(path).await?).await,
        }
    };
    let answered = matches!(tokio::time::timeout(within, question).await, Ok(Ok(())));
    log::trace!("asked the server at {peer:?} whether it is there: answered {answered}");
    answered
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    if let Some(watch) = &mut this.watch {
                        watch.heard();
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match &mut this.watch {
                Some(watch) => watch.poll_silent(cx).map(Err),
                None => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        let Some(watch) = &mut this.watch else {
            return written;
        };
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    watch.sent();
                    // Registers the wake-up: the connection may read again
                    // only once woken, and a silent peer never wakes it.
                    if let Poll::Ready(e) = watch.poll_silent(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(Ok(n))
            }
            // The peer does not take what is sent: as silent as not answering.
            Poll::Pending => watch.poll_silent(cx).map(Err),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts connections and never says a word.
    async fn mute_server() -> (tokio::net::TcpListener, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    #[tokio::test]
    async fn a_request_left_unanswered_by_a_mute_peer_fails_after_the_allowed_silence() {
        let (listener, addr) = mute_server().await;
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (_server_side, _) = listener.accept().await.expect("accept");
        let allowed = Duration::from_millis(600);
        let mut watched = Watched::new(client, Peer::Tcp(addr), Some(allowed));
        let started = tokio::time::Instant::now();
        watched.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 8];
        let err = watched.read(&mut buf).await.expect_err("silent");
        let took = started.elapsed();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(silent_in(&err).is_some(), "{err:?}");
        assert!(took >= allowed && took < allowed * 3, "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_answer_from_a_server_that_answers_questions_is_waited_for() {
        let (listener, addr) = mute_server().await;
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut server_side, _) = listener.accept().await.expect("accept");
        // Answers every question as a postmaster does; the request's answer
        // comes only after four times the allowed silence.
        tokio::spawn(async move {
            while let Ok((mut question, _)) = listener.accept().await {
                let mut req = [0u8; 8];
                if question.read_exact(&mut req).await.is_ok() && req == GSSENC_REQUEST {
                    let _ = question.write_all(b"N").await;
                }
            }
        });
        let allowed = Duration::from_millis(400);
        let mut watched = Watched::new(client, Peer::Tcp(addr), Some(allowed));
        watched.write_all(b"long statement").await.expect("write");
        let answer = tokio::spawn(async move {
            tokio::time::sleep(allowed * 4).await;
            server_side.write_all(b"done").await.expect("answer");
            server_side
        });
        let mut buf = [0u8; 4];
        watched.read_exact(&mut buf).await.expect("the answer, however late");
        assert_eq!(&buf, b"done");
        drop(answer);
    }

    #[tokio::test]
    async fn nothing_is_watched_while_nothing_is_awaited() {
        let (listener, addr) = mute_server().await;
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut server_side, _) = listener.accept().await.expect("accept");
        let mut watched = Watched::new(client, Peer::Tcp(addr), Some(Duration::from_millis(200)));
        // Idle (a listening connection): silence is no failure.
        let mut buf = [0u8; 2];
        let idle = tokio::time::timeout(Duration::from_millis(800), watched.read(&mut buf)).await;
        assert!(idle.is_err(), "still waiting, no error: {idle:?}");
        server_side.write_all(b"hi").await.expect("write");
        watched.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hi");
    }
}
