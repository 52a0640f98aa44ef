//! `testq`: the example consumer that shows every outcome.
//!
//! By `ev_type`: `fail` is Failed; `retry` asks for a retry in 1 s on first
//! delivery, then is done; `abort` aborts the batch the first time this
//! process sees the event, then is done; `panic` panics (the framework marks
//! it failed and carries on); anything else is done. Done means a row in
//! `testq_done`, written in the batch's transaction, and a NOTICE line.
//!
//! `[settings] mode` picks the consumer kind: `local` (the default: rows go
//! to the queue database), `remote` (rows go to `remote_db`, committed before
//! the batch is finished) or `remote_event` (the same, with a savepoint per
//! event).

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use pgq_consumers::{async_trait, notice, BoxError, CommitMode, Consumer, Context, Event, Outcome};
use tokio_postgres::Client;

#[derive(Default)]
struct Testq {
    aborted_once: HashSet<i64>,
    mode: CommitMode,
}

const CREATE_DONE: &str =
    "create table if not exists testq_done (ev_id bigint, ev_type text, ev_data text, done_at timestamptz)";

impl Testq {
    async fn done(&self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let db = match self.mode {
            CommitMode::Local => cx.db(),
            _ => cx.remote().ok_or("testq: a remote mode without a remote transaction")?,
        };
        db.execute(
            "insert into testq_done (ev_id, ev_type, ev_data, done_at) values ($1, $2, $3, now())",
            &[&ev.ev_id, &ev.ev_type, &ev.ev_data],
        )
        .await?;
        notice!("done: event {} type {:?} data {:?}", ev.ev_id, ev.kind(), ev.data());
        Ok(Outcome::Ok)
    }
}

#[async_trait]
impl Consumer for Testq {
    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        match ev.kind() {
            "fail" => Ok(Outcome::Failed(format!("testq: event {} has type fail", ev.ev_id))),
            "retry" if ev.ev_retry.is_none() => Ok(Outcome::Retry(Duration::from_secs(1))),
            "abort" if self.aborted_once.insert(ev.ev_id) => Ok(Outcome::AbortBatch),
            "panic" => panic!("testq: event {} has type panic", ev.ev_id),
            _ => self.done(ev, cx).await,
        }
    }

    async fn config(&mut self, settings: &toml::Table) -> Result<(), BoxError> {
        self.mode = match settings.get("mode").map(|v| v.as_str()) {
            None | Some(Some("local")) => CommitMode::Local,
            Some(Some("remote")) => CommitMode::Remote,
            Some(Some("remote_event")) => CommitMode::RemoteEvent,
            Some(other) => {
                return Err(format!("testq: [settings] mode is {other:?}; use local, remote or remote_event").into())
            }
        };
        Ok(())
    }

    fn commit_mode(&self) -> CommitMode {
        self.mode
    }

    async fn install(&mut self, db: &Client, remote: Option<&Client>) -> Result<(), BoxError> {
        db.batch_execute(CREATE_DONE).await?;
        if let Some(remote) = remote {
            remote.batch_execute(CREATE_DONE).await?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    pgq_consumers::main(Testq::default)
}
