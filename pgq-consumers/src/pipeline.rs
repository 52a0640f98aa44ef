//! Writes sent without waiting for their results: pipelined on the
//! connection, their answers read as they come and checked before the batch
//! counts as committed.
//!
//! tokio-postgres sends a request when its future is first polled, and a
//! connection answers requests in the order they were sent. A pipelined
//! write is such a future, polled once when it is made (so it goes out then,
//! in order with everything else on the connection), then kept here. The
//! batch loop polls the pending ones while the handler runs, so their
//! answers never wait in the connection (which stops reading the socket
//! while an answer is not taken), and reads the rest while the batch commits:
//! the statements that commit it go out behind the writes. A write that fails
//! aborts the transaction on the server: every statement after it fails too,
//! and the COMMIT rolls it back (PostgreSQL answers it as a ROLLBACK, with no
//! error), so nothing of the batch commits whatever the handler does next;
//! the batch loop checks the writes' answers first. The first failure, in the
//! order the writes were sent, is the one reported.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

/// A pipelined write that failed.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Which write of the connection's batch it was (1 for the first).
    pub(crate) seq: u64,
    /// The event handed out last when it was made.
    pub(crate) ev_id: Option<i64>,
    /// What it was, when not a write of the handler's own.
    pub(crate) what: Option<String>,
    /// What the server said.
    pub(crate) source: tokio_postgres::Error,
}

/// The pipelined writes of one connection, as the handler's side reaches
/// them: a trait object, so that what holds it does not carry the lifetime
/// of the writes' futures (they borrow the transaction).
pub(crate) trait Pipe: Send + Sync {
    /// Sends `statement` with `params` now, and keeps its answer to check.
    /// `what` names it in an error, when it is not a write of the handler's
    /// own. Returns which write of the batch it is on this connection (1
    /// for the first).
    fn send(&self, statement: Statement, params: Vec<Encoded>, ev_id: Option<i64>, what: Option<String>) -> u64;
    /// Reads the answers that came; `Ready` once none is pending.
    fn poll_answers(&self, cx: &mut Context<'_>) -> Poll<()>;
    /// The earliest failure known, taken out.
    fn take_failure(&self) -> Option<Failure>;
}

/// Waits for the answers of every write sent so far.
pub(crate) async fn settle(pipe: &dyn Pipe) {
    futures_util::future::poll_fn(|cx| pipe.poll_answers(cx)).await;
}

/// The answer to one pipelined write.
struct Done {
    seq: u64,
    ev_id: Option<i64>,
    what: Option<String>,
    result: Result<u64, tokio_postgres::Error>,
}

/// The pipelined writes of one connection in one batch.
pub(crate) struct Pipeline<'t> {
    tx: &'t Client,
    state: Mutex<State<'t>>,
}

struct State<'t> {
    pending: FuturesUnordered<BoxFuture<'t, Done>>,
    sent: u64,
    /// The earliest failure seen.
    failed: Option<Failure>,
    /// The waker of the task that drives the pipeline (the round's).
    waker: Option<Waker>,
}

impl<'t> Pipeline<'t> {
    /// The pipeline of the batch's transaction `tx`.
    pub(crate) fn new(tx: &'t Client) -> Pipeline<'t> {
        Pipeline {
            tx,
            state: Mutex::new(State {
                pending: FuturesUnordered::new(),
                sent: 0,
                failed: None,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<'t>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pipe for Pipeline<'_> {
    fn send(&self, statement: Statement, params: Vec<Encoded>, ev_id: Option<i64>, what: Option<String>) -> u64 {
        let tx = self.tx;
        let mut state = self.lock();
        state.sent += 1;
        let seq = state.sent;
        state.pending.push(Box::pin(async move {
            let result = tx.execute_raw(&statement, params).await;
            Done {
                seq,
                ev_id,
                what,
                result,
            }
        }));
        // Polled now, with the waker of the task that drives the pipeline,
        // so that the request goes out before anything the handler sends
        // next, and its answer wakes that task.
        let waker = state.waker.clone().unwrap_or_else(|| Waker::noop().clone());
        state.collect(&mut Context::from_waker(&waker));
        seq
    }

    fn poll_answers(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            state.waker = Some(cx.waker().clone());
        }
        if state.collect(cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn take_failure(&self) -> Option<Failure> {
        self.lock().failed.take()
    }
}

impl State<'_> {
    /// Takes the answers that came; true when none is pending.
    fn collect(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            match self.pending.poll_next_unpin(cx) {
                Poll::Ready(Some(done)) => {
                    if let Err(source) = done.result {
                        if self.failed.as_ref().is_none_or(|f| done.seq < f.seq) {
                            self.failed = Some(Failure {
                                seq: done.seq,
                                ev_id: done.ev_id,
                                what: done.what,
                                source,
                            });
                        }
                    }
                }
                Poll::Ready(None) => return true,
                Poll::Pending => return false,
            }
        }
    }
}

/// A parameter encoded when the write was made (its values may not outlive
/// that call), sent as it was encoded.
#[derive(Debug)]
pub(crate) struct Encoded {
    bytes: Option<Bytes>,
    format: Format,
}

impl Encoded {
    /// Bytes encoded already, in the binary format.
    pub(crate) fn binary(bytes: Bytes) -> Encoded {
        Encoded {
            bytes: Some(bytes),
            format: Format::Binary,
        }
    }

    /// Encodes `value` as a parameter of type `ty`. `buf` is scratch space,
    /// reused from one parameter to the next.
    pub(crate) fn new(
        value: &(dyn ToSql + Sync),
        ty: &Type,
        buf: &mut BytesMut,
    ) -> Result<Encoded, Box<dyn std::error::Error + Send + Sync>> {
        let format = value.encode_format(ty);
        let bytes = match value.to_sql_checked(ty, buf) {
            Ok(IsNull::No) => Some(buf.split().freeze()),
            Ok(IsNull::Yes) => {
                buf.clear();
                None
            }
            Err(e) => {
                buf.clear();
                return Err(e);
            }
        };
        Ok(Encoded { bytes, format })
    }
}

impl ToSql for Encoded {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.bytes {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    /// Checked when it was encoded, against the same type.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        self.format
    }

    to_sql_checked!();
}
