//! The batch's transaction on one connection, begun without a round trip of
//! its own.
//!
//! tokio-postgres' `Transaction` waits for the answer to its BEGIN before
//! anything else is sent: a round trip of its own per batch and connection.
//! A [`Tx`] sends START TRANSACTION and goes on; its answer is read when
//! [`Tx::begun`] is awaited, so the batch loop waits for it together with
//! what it waits for anyway (the remote database's check that the batch was
//! not applied, sent right behind it on the same connection; the events).
//! Nothing of the handler's is sent before the answer came: a START that
//! failed (a cancel, say) would leave what follows it outside any
//! transaction. [`Tx::commit`] sends no COMMIT before it either.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio_postgres::Client;

/// The answer to a START TRANSACTION.
type Answer<'c> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'c>>;

/// Where a [`Tx`]'s START TRANSACTION is.
enum Begin<'c> {
    /// Sent; its answer not read yet.
    Sent(Answer<'c>),
    /// Answered: the transaction is open.
    Begun,
    /// It failed: the transaction is not open.
    Failed(Arc<tokio_postgres::Error>),
}

/// Why a [`Tx`] did not commit.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// Its START TRANSACTION failed: the transaction was never open.
    NotBegun(Arc<tokio_postgres::Error>),
    /// The COMMIT failed: the transaction rolled back.
    Commit(tokio_postgres::Error),
}

/// A transaction on one connection, begun by [`Tx::begin`] without waiting.
/// It dereferences to the connection's [`Client`]: what runs through it runs
/// in the transaction. Dropped without [`Tx::commit`] or [`Tx::rollback`],
/// it rolls back (a ROLLBACK is sent, its answer not waited for), as
/// tokio-postgres' `Transaction` does.
pub(crate) struct Tx<'c> {
    client: &'c Client,
    begin: Begin<'c>,
    /// False once committed or rolled back.
    open: bool,
}

impl<'c> Tx<'c> {
    /// Sends START TRANSACTION on `client`'s connection and returns at once.
    /// The connection is borrowed mutably, as by tokio-postgres' own
    /// `transaction()`: nothing else uses it while the transaction is open.
    pub(crate) fn begin(client: &'c mut Client) -> Tx<'c> {
        let client: &'c Client = client;
        let mut answer: Answer<'c> = Box::pin(client.batch_execute("start transaction"));
        // Polled once, so that it is sent now, before anything that is sent
        // through the transaction.
        let begin = match answer.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Pending => Begin::Sent(answer),
            Poll::Ready(Ok(())) => Begin::Begun,
            Poll::Ready(Err(e)) => Begin::Failed(Arc::new(e)),
        };
        Tx {
            client,
            begin,
            open: true,
        }
    }

    /// The connection, inside the transaction.
    pub(crate) fn client(&self) -> &'c Client {
        self.client
    }

    /// Waits for the answer to the START TRANSACTION (at once when it came
    /// already): `Ok` once the transaction is open.
    ///
    /// Cancellation-safe.
    pub(crate) async fn begun(&mut self) -> Result<(), Arc<tokio_postgres::Error>> {
        std::future::poll_fn(|cx| {
            let begin = &mut self.begin;
            let answered = match begin {
                Begin::Begun => return Poll::Ready(Ok(())),
                Begin::Failed(e) => return Poll::Ready(Err(Arc::clone(e))),
                Begin::Sent(answer) => match answer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(answered) => answered,
                },
            };
            *begin = match answered {
                Ok(()) => Begin::Begun,
                Err(e) => Begin::Failed(Arc::new(e)),
            };
            Poll::Ready(match begin {
                Begin::Failed(e) => Err(Arc::clone(e)),
                _ => Ok(()),
            })
        })
        .await
    }

    /// Commits. The COMMIT is sent when the returned future is first
    /// polled if the START TRANSACTION's answer came already (so a caller
    /// can poll it in a `join` after the statements that must go before
    /// it), otherwise once it comes; it is not sent when the START
    /// TRANSACTION failed.
    pub(crate) async fn commit(mut self) -> Result<(), CommitError> {
        self.begun().await.map_err(CommitError::NotBegun)?;
        self.open = false;
        self.client.batch_execute("commit").await.map_err(CommitError::Commit)
    }

    /// Rolls back, waiting for the answer.
    pub(crate) async fn rollback(mut self) -> Result<(), tokio_postgres::Error> {
        self.open = false;
        self.client.batch_execute("rollback").await
    }
}

impl Deref for Tx<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Sent by its first poll; its answer is not waited for.
            let mut rollback = std::pin::pin!(self.client.batch_execute("rollback"));
            let _ = rollback.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}
