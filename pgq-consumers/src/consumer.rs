//! The traits a user implements, and what a handler is given.

use async_trait::async_trait;
use pgq::{BatchTicks, Event};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio_postgres::Client;

use crate::batch::{Batch, BatchEnd};
use crate::batch_tx::BatchTx;
use crate::outcome::Outcome;
use crate::writes::Writes;

/// Any error a handler returns. It aborts the batch, is logged, and the batch
/// is retried after a growing back-off.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a consumer's work commits, relative to finishing the batch.
///
/// It reads from settings as `"local"`, `"remote"` or `"remote_event"`, for
/// a consumer whose mode is a setting (`mode = "remote"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
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

impl CommitMode {
    /// Its name in settings and messages: `local`, `remote` or
    /// `remote_event`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitMode::Local => "local",
            CommitMode::Remote => "remote",
            CommitMode::RemoteEvent => "remote_event",
        }
    }
}

impl std::fmt::Display for CommitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settings of a consumer that has none: the config's `[settings]`
/// table must be empty or absent (any key in it is an error naming it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

/// A queue consumer: implement [`Consumer::process_event`], hand a value to
/// [`crate::main`], and the program has the whole command line.
///
/// A handler must not assume it runs once per event: a batch that is aborted,
/// or a process that dies mid-batch, delivers its events again. Writes made
/// through [`Context::tx`] are rolled back with the batch, which is what
/// makes their effects exactly-once.
#[async_trait]
pub trait Consumer: Send + 'static {
    /// The consumer's own settings: the config's `[settings]` table, read
    /// into this type at start and on every reload (so derive
    /// `serde::Deserialize` for it, with `#[serde(deny_unknown_fields)]` to
    /// refuse keys it does not know). A key it refuses or a value of the
    /// wrong type is an error naming the key: a start fails, a reload keeps
    /// the settings in force. [`NoSettings`] when there are none.
    type Settings: DeserializeOwned + Send + 'static;

    /// Processes one event.
    async fn process_event(&mut self, event: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError>;

    /// Called at start and on every reload with the settings. An error stops
    /// a start (and is reported) or keeps the old settings on reload.
    async fn configure(&mut self, settings: Self::Settings) -> Result<(), BoxError> {
        let _ = settings;
        Ok(())
    }

    /// How this consumer's work commits, given its settings. Read at start
    /// only: a reload whose settings would change it is refused (the daemon
    /// keeps running as it was; restart it to change the mode). Remote modes
    /// need `remote_db`.
    fn commit_mode(settings: &Self::Settings) -> CommitMode {
        let _ = settings;
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

/// Reads the config's `[settings]` into the consumer's settings type.
pub(crate) fn read_settings<C: Consumer>(config: &crate::config::Config) -> crate::error::Result<C::Settings> {
    toml::Value::Table(config.settings.clone())
        .try_into()
        .map_err(|source| crate::error::Error::SettingsInvalid {
            path: config.origin().to_path_buf(),
            source: Box::new(source),
        })
}

/// Hands settings to the consumer's [`Consumer::configure`] hook, naming
/// the consumer in the error.
pub(crate) async fn configure<C: Consumer>(
    consumer: &mut C,
    settings: C::Settings,
    config: &crate::config::Config,
) -> crate::error::Result<()> {
    consumer
        .configure(settings)
        .await
        .map_err(|source| crate::error::Error::Settings {
            consumer: config.consumer.clone(),
            source,
        })
}

/// What a handler can reach while processing a batch.
pub struct Context<'a> {
    /// The queue database's transaction.
    pub(crate) db: &'a Writes<'a>,
    /// The transaction the work commits with: the remote one in the remote
    /// modes, `db` otherwise.
    pub(crate) tx: &'a Writes<'a>,
    pub(crate) ticks: &'a BatchTicks,
    pub(crate) queue: &'a str,
    pub(crate) consumer: &'a str,
}

impl<'a> Context<'a> {
    /// The transaction the handler's work commits with, exactly once with
    /// the batch: the remote database's in the remote modes (committed
    /// first, with the record that the batch was applied there), the queue
    /// database's otherwise (committed with `finish_batch`).
    ///
    /// Its `execute` and `query` prepare SQL text once per connection; it
    /// also sends writes without waiting ([`BatchTx::execute_pipelined`])
    /// and buffers rows for COPY ([`BatchTx::copy_row`]). It dereferences to
    /// the connection's [`Client`](tokio_postgres::Client), inside the
    /// transaction.
    pub fn tx(&self) -> BatchTx<'a> {
        BatchTx::new(self.tx)
    }

    /// The queue database's transaction, the one that finishes the batch
    /// (the same as [`Context::tx`] for a local consumer). Writes made here
    /// commit exactly once, with the batch.
    pub fn db(&self) -> BatchTx<'a> {
        BatchTx::new(self.db)
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
