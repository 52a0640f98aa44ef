//! The traits a user implements, and what a handler is given.

use async_trait::async_trait;
use pgq::{BatchTicks, Event};
use tokio_postgres::{Client, Transaction};

use crate::batch::{Batch, BatchEnd};
use crate::outcome::Outcome;

/// Any error a handler returns. It aborts the batch, is logged, and the batch
/// is retried after a growing back-off.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a consumer's work commits, relative to finishing the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitMode {
    /// The handler writes in the queue database, in the batch's transaction:
    /// its writes commit together with `finish_batch`, exactly once.
    #[default]
    Local,
    /// The handler writes in `remote_db`. The remote transaction commits first,
    /// recording the batch there; then the queue transaction finishes the
    /// batch. A crash between the two commits never applies a batch twice.
    Remote,
    /// As [`CommitMode::Remote`], with a savepoint per event on the remote side:
    /// an event that fails or is retried has its remote writes rolled back,
    /// the rest of the batch stays.
    RemoteEvent,
}

/// A queue consumer: implement [`Consumer::process_event`], hand a value to
/// [`crate::main`], and the program has the whole command line.
///
/// A handler must not assume it runs once per event: a batch that is aborted,
/// or a process that dies mid-batch, delivers its events again. Writes made
/// through [`Context::db`] (local) or [`Context::remote`] (remote) are rolled
/// back with the batch, which is what makes their effects exactly-once.
#[async_trait]
pub trait Consumer: Send + 'static {
    /// Processes one event.
    async fn process_event(&mut self, event: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError>;

    /// Called at start and on every reload with the config's `[settings]`
    /// table. An error stops a start (and is reported) or keeps the old
    /// settings on reload.
    async fn config(&mut self, settings: &toml::Table) -> Result<(), BoxError> {
        let _ = settings;
        Ok(())
    }

    /// How this consumer's work commits. Remote modes need `remote_db`.
    /// Asked once, after the first [`Consumer::config`], so it may depend on
    /// the settings.
    fn commit_mode(&self) -> CommitMode {
        CommitMode::Local
    }

    /// Runs before [`Consumer::process_event`]. Return [`Outcome::Ok`] to go
    /// on; any other outcome becomes the event's outcome and `process_event`
    /// is not called ([`Outcome::AbortBatch`] aborts the batch).
    async fn preprocess_event(&mut self, event: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let _ = (event, cx);
        Ok(Outcome::Ok)
    }

    /// Runs after [`Consumer::process_event`] with its outcome; what it
    /// returns is applied. The default keeps the outcome.
    async fn postprocess_event(
        &mut self,
        event: &Event,
        outcome: Outcome,
        cx: &mut Context<'_>,
    ) -> Result<Outcome, BoxError> {
        let _ = (event, cx);
        Ok(outcome)
    }

    /// Processes a whole batch. The default takes each event in turn through
    /// the three hooks above and applies its outcome; override it to work on
    /// events together (e.g. one multi-row insert), reading them with
    /// [`Batch::next_event`] and applying outcomes with [`Batch::apply`].
    async fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<BatchEnd, BoxError> {
        while let Some(event) = batch.next_event().await? {
            let mut outcome = self.preprocess_event(&event, batch.context()).await?;
            if outcome == Outcome::Ok {
                outcome = self.process_event(&event, batch.context()).await?;
            }
            let outcome = self.postprocess_event(&event, outcome, batch.context()).await?;
            if let BatchEnd::Abort = batch.apply(&event, outcome).await? {
                return Ok(BatchEnd::Abort);
            }
        }
        Ok(BatchEnd::Finish)
    }

    /// Creates what the consumer needs besides the queue (its own tables),
    /// during `install`. `remote` is the remote database for remote consumers.
    /// Must be safe to run twice.
    async fn install(&mut self, db: &Client, remote: Option<&Client>) -> Result<(), BoxError> {
        let _ = (db, remote);
        Ok(())
    }
}

/// Calls the consumer's [`Consumer::config`] hook with the config's
/// `[settings]`, naming the consumer in the error.
pub(crate) async fn apply_settings<C: Consumer>(
    consumer: &mut C,
    config: &crate::config::Config,
) -> crate::error::Result<()> {
    consumer
        .config(&config.settings)
        .await
        .map_err(|source| crate::error::Error::Settings {
            consumer: config.consumer.clone(),
            source,
        })
}

/// What a handler can reach while processing a batch.
pub struct Context<'a> {
    pub(crate) db: &'a Transaction<'a>,
    pub(crate) remote: Option<&'a Transaction<'a>>,
    pub(crate) ticks: &'a BatchTicks,
    pub(crate) queue: &'a str,
    pub(crate) consumer: &'a str,
}

impl<'a> Context<'a> {
    /// The queue database's transaction, the one that finishes the batch.
    /// Writes made here commit exactly once, with the batch.
    pub fn db(&self) -> &'a Transaction<'a> {
        self.db
    }

    /// The remote database's transaction, for remote consumers; `None` for
    /// local ones.
    pub fn remote(&self) -> Option<&'a Transaction<'a>> {
        self.remote
    }

    /// The batch being processed.
    pub fn batch(&self) -> &'a BatchTicks {
        self.ticks
    }

    /// The queue's name.
    pub fn queue(&self) -> &'a str {
        self.queue
    }

    /// The consumer's name.
    pub fn consumer(&self) -> &'a str {
        self.consumer
    }
}
