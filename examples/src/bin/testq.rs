//! `testq`: the example consumer that shows every outcome.
//!
//! By `ev_type`: `fail` is Failed; `retry` asks for a retry in 1 s on first
//! delivery, then is done; `abort` aborts the batch the first time this
//! process sees the event, then is done; `panic` panics (the framework marks
//! it failed and carries on); anything else is done. Done means a row in
//! `testq_done`, written in the batch's transaction, and a NOTICE line
//! (`done: event N type "T" data "D"`, the type and the data cut at 200
//! bytes, with their full length, so a huge payload makes a short line).
//!
//! `[settings] mode` picks the consumer kind: `local` (the default: rows go
//! to the queue database), `remote` (rows go to `remote_db`, committed before
//! the batch is finished) or `remote_event` (the same, with a savepoint per
//! event).
//!
//! `[settings] write` picks how the row is written: `execute` (the default:
//! `cx.tx().execute(sql, params)`, the README's way, one round trip waited
//! for), `pipelined` (`cx.tx().execute_pipelined`, sent without waiting and
//! checked before the batch commits), `insert` (`cx.tx().insert_row`,
//! written with the batch's other rows by one INSERT) or `copy`
//! (`cx.tx().copy_row`, the same by one binary COPY); `none` writes no row
//! and logs no line (the daemon alone, for `scripts/bench.sh`).
//!
//! `[settings] sleep_ms` (default 0) makes testq sleep that many milliseconds
//! before each event, so a batch takes a while: long enough to `stop` (the
//! batch is finished first) or `kill` (it is rolled back and comes again)
//! while it is in flight. `[settings] block_ms` (default 0) does the same by
//! blocking its thread (`std::thread::sleep`), as a handler stuck in a
//! blocking call does: nothing else of the daemon's runtime runs meanwhile.
//!
//! When its settings change (at start, and on a `reload` that changes them)
//! testq logs them at NOTICE: `settings: mode local, sleep_ms 0` (and
//! `, write pipelined` when `write` is not `execute`). The mode
//! is read at start only: a reload that changes it is refused.

use std::collections::HashSet;
use std::time::Duration;

use pgq_consumers::{async_trait, notice, BoxError, CommitMode, Consumer, Context, Event, ExitCode, Outcome};
use serde::Deserialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// testq's `[settings]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// `local`, `remote` or `remote_event`.
    #[serde(default)]
    mode: CommitMode,
    /// Milliseconds slept before each event.
    #[serde(default)]
    sleep_ms: u64,
    /// Milliseconds the thread is blocked before each event.
    #[serde(default)]
    block_ms: u64,
    /// How the row of a done event is written.
    #[serde(default)]
    write: Write,
}

/// How testq writes the row of a done event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Write {
    /// `execute`, waited for.
    #[default]
    Execute,
    /// `execute_pipelined`: checked before the batch commits.
    Pipelined,
    /// `insert_row`: one INSERT for the batch.
    Insert,
    /// `copy_row`: one binary COPY for the batch.
    Copy,
    /// Nothing: no row, no log line (for the benchmark of the daemon).
    None,
}

#[derive(Default)]
struct Testq {
    aborted_once: HashSet<i64>,
    sleep: Duration,
    block: Duration,
    write: Write,
    /// The settings last logged.
    logged: Option<Settings>,
}

const CREATE_DONE: &str =
    "create table if not exists testq_done (ev_id bigint, ev_type text, ev_data text, done_at timestamptz)";

impl Testq {
    async fn done(&self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        // The batch's transaction: the remote database's in the remote modes.
        let insert = "insert into testq_done (ev_id, ev_type, ev_data, done_at) values ($1, $2, $3, now())";
        let row: [&(dyn ToSql + Sync); 3] = [&ev.ev_id, &ev.ev_type, &ev.ev_data];
        match self.write {
            Write::None => return Ok(Outcome::Ok),
            Write::Execute => {
                cx.tx().execute(insert, &row).await?;
            }
            Write::Pipelined => cx.tx().execute_pipelined(insert, &row).await?,
            Write::Insert | Write::Copy => {
                let now = std::time::SystemTime::now();
                let columns = ["ev_id", "ev_type", "ev_data", "done_at"];
                let values: [&(dyn ToSql + Sync); 4] = [&ev.ev_id, &ev.ev_type, &ev.ev_data, &now];
                if self.write == Write::Insert {
                    cx.tx().insert_row("testq_done", &columns, &values).await?;
                } else {
                    cx.tx().copy_row("testq_done", &columns, &values).await?;
                }
            }
        }
        notice!(
            "done: event {} type {} data {}",
            ev.ev_id,
            Shown(ev.kind()),
            Shown(ev.data())
        );
        Ok(Outcome::Ok)
    }
}

/// The most of a type or payload a log line shows, in bytes.
const SHOWN_BYTES: usize = 200;

/// A text as a log line shows it: quoted, at most its first [`SHOWN_BYTES`]
/// bytes (cut at a character's start), then `...` and its full length when it
/// is longer. A payload of any size makes a short line.
struct Shown<'a>(&'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0;
        if text.len() <= SHOWN_BYTES {
            return write!(f, "{text:?}");
        }
        let mut end = SHOWN_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}... ({} bytes)", &text[..end], text.len())
    }
}

#[async_trait]
impl Consumer for Testq {
    type Settings = Settings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        if !self.block.is_zero() {
            std::thread::sleep(self.block);
        }
        match ev.kind() {
            "fail" => Ok(Outcome::Failed(format!("testq: event {} has type fail", ev.ev_id))),
            "retry" if ev.ev_retry.is_none() => Ok(Outcome::Retry(Duration::from_secs(1))),
            "abort" if self.aborted_once.insert(ev.ev_id) => Ok(Outcome::AbortBatch),
            "panic" => panic!("testq: event {} has type panic", ev.ev_id),
            _ => self.done(ev, cx).await,
        }
    }

    async fn configure(&mut self, settings: Settings) -> Result<(), BoxError> {
        self.sleep = Duration::from_millis(settings.sleep_ms);
        self.block = Duration::from_millis(settings.block_ms);
        self.write = settings.write;
        if self.logged != Some(settings) {
            self.logged = Some(settings);
            let write = match settings.write {
                Write::Execute => "",
                Write::Pipelined => ", write pipelined",
                Write::Insert => ", write insert",
                Write::Copy => ", write copy",
                Write::None => ", write none",
            };
            notice!(
                "settings: mode {}, sleep_ms {}{write}",
                settings.mode,
                settings.sleep_ms
            );
        }
        Ok(())
    }

    fn commit_mode(settings: &Settings) -> CommitMode {
        settings.mode
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
