//! `subscriber`: the reliable half of stream-daemon, on PgQ. A remote
//! consumer that stores every record the `collector` queued into table
//! `stream_items(ev_id bigint, data text)` in `remote_db`, exactly once
//! whatever crashes.
//!
//! Exactly once comes from the framework's remote commit mode: the rows of a
//! batch and the record that the batch was applied commit together in the
//! remote database, before the batch is finished in the queue database. A
//! crash before the remote commit loses nothing (the batch comes again); a
//! crash between the two commits is recognised when the batch comes again,
//! and the batch is finished without storing it twice.
//!
//! Records are written a chunk at a time (one multi-row insert per
//! `[settings] chunk` events, default 1000), not one statement per event.

use std::num::NonZeroUsize;

use pgq_consumers::{async_trait, Batch, BatchEnd, BoxError, CommitMode, Consumer, Context, Event, ExitCode, Outcome};
use serde::Deserialize;
use tokio_postgres::Client;

const CREATE: &str = "create table if not exists stream_items (ev_id bigint, data text)";
const INSERT_MANY: &str = "insert into stream_items (ev_id, data) select * from unnest($1::bigint[], $2::text[])";

/// What `[settings]` says.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// Events stored per statement.
    chunk: NonZeroUsize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            chunk: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

#[derive(Default)]
struct Subscriber {
    settings: Settings,
}

#[async_trait]
impl Consumer for Subscriber {
    type Settings = Settings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        cx.tx()
            .execute(
                "insert into stream_items (ev_id, data) values ($1, $2)",
                &[&ev.ev_id, &ev.data()],
            )
            .await?;
        Ok(Outcome::Ok)
    }

    async fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<BatchEnd, BoxError> {
        let chunk = self.settings.chunk.get();
        let remote = batch.context().tx();
        let mut events = Vec::with_capacity(chunk);
        loop {
            let event = batch.next_event().await?;
            let done = event.is_none();
            if let Some(ev) = event {
                events.push(ev);
            }
            if events.len() >= chunk || (done && !events.is_empty()) {
                let ids: Vec<i64> = events.iter().map(|e| e.ev_id).collect();
                let data: Vec<&str> = events.iter().map(Event::data).collect();
                remote.execute(INSERT_MANY, &[&ids, &data]).await?;
                for ev in events.drain(..) {
                    // Ok: stored; applying it only counts it.
                    let _ = batch.apply(&ev, Outcome::Ok).await?;
                }
            }
            if done {
                return Ok(BatchEnd::Finish);
            }
        }
    }

    async fn configure(&mut self, settings: Settings) -> Result<(), BoxError> {
        self.settings = settings;
        Ok(())
    }

    fn commit_mode(_: &Settings) -> CommitMode {
        CommitMode::Remote
    }

    async fn install(&mut self, _db: &Client, remote: Option<&Client>) -> Result<(), BoxError> {
        let remote = remote.ok_or("subscriber is a remote consumer: set remote_db")?;
        remote.batch_execute(CREATE).await?;
        Ok(())
    }
}

fn main() -> ExitCode {
    pgq_consumers::main(Subscriber::default)
}
