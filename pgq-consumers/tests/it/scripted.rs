//! A consumer whose behaviour the test scripts event by event, a config for
//! it, and helpers to drive a [`BatchLoop`] and read back what it did.
//!
//! The consumer writes a row into table `done` (in the queue database, or
//! the remote one for remote consumers) for every event it handles, before
//! acting on the scripted outcome, so the rows left after a batch show
//! exactly which writes committed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use pgq_consumers::{async_trait, BatchLoop, BoxError, CommitMode, Config, Consumer, Context, Event, Outcome};
use pgq_test_support::TestDb;
use tokio::sync::Notify;
use tokio_postgres::{Client, GenericClient};

use crate::common::{queue_db, register, Q};

/// The consumer every test of the batch loop uses.
pub const CONSUMER: &str = "c";

/// The table the scripted consumer writes to.
pub const CREATE_DONE: &str = "create table done (ev_id bigint, ev_type text, outcome text, tag text)";

/// What the scripted consumer does with one event.
#[derive(Clone)]
pub enum Act {
    /// Write the row, return [`Outcome::Ok`].
    Ok,
    /// Write the row, return [`Outcome::Failed`].
    Fail(String),
    /// Write the row, return [`Outcome::Retry`].
    Retry(Duration),
    /// Write the row, return [`Outcome::AbortBatch`].
    Abort,
    /// Write the row, return an error.
    Error(String),
    /// Panic (no row).
    Panic(String),
    /// Write the row, then wait until notified, then Ok.
    Wait(Arc<Notify>),
    /// Write the row, then sleep this long, then Ok.
    Slow(Duration),
    /// Write the row, then block the thread until the gate opens, then Ok: on
    /// a current-thread runtime, everything on it stops meanwhile (the
    /// heartbeat too), as in a stopped or wedged process.
    Stall(Arc<Gate>),
}

/// A gate a stalled handler waits at, blocking its thread.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    /// Lets the handlers waiting at the gate go on.
    pub fn open(&self) {
        if let Ok(mut open) = self.open.lock() {
            *open = true;
        }
        self.opened.notify_all();
    }

    /// Blocks the thread until the gate is open.
    fn pass(&self) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        while !*open {
            match self.opened.wait(open) {
                Ok(guard) => open = guard,
                Err(_) => return,
            }
        }
    }
}

impl Act {
    fn name(&self) -> &'static str {
        match self {
            Act::Ok | Act::Wait(_) | Act::Slow(_) | Act::Stall(_) => "ok",
            Act::Fail(_) => "failed",
            Act::Retry(_) => "retry",
            Act::Abort => "abort",
            Act::Error(_) => "error",
            Act::Panic(_) => "panic",
        }
    }
}

/// How the scripted consumer writes its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Way {
    /// `cx.tx().execute(sql, params)`, waited for.
    #[default]
    Execute,
    /// `cx.tx().execute_pipelined(sql, params)`: checked before the commit.
    Pipelined,
    /// `cx.tx().insert_row("done", columns, values)`: written by one INSERT
    /// later.
    Insert,
    /// `cx.tx().copy_row("done", columns, values)`: written by COPY later.
    Copy,
}

impl Way {
    /// Every way.
    pub const ALL: [Way; 4] = [Way::Execute, Way::Pipelined, Way::Insert, Way::Copy];
}

/// One call of `process_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The event.
    pub ev_id: i64,
    /// Its type.
    pub ev_type: String,
    /// Its `ev_retry`.
    pub ev_retry: Option<i32>,
}

/// The calls a scripted consumer received, shared with the test.
pub type Calls = Arc<Mutex<Vec<Call>>>;

type Script = Box<dyn FnMut(&Event, usize) -> Act + Send>;

/// A consumer doing what its script says. The script gets the event and how
/// many times this consumer saw it before.
pub struct Scripted {
    script: Script,
    calls: Calls,
    tag: String,
    way: Way,
}

/// [`Scripted`]'s settings: its commit mode (`[settings] mode = "remote"`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedSettings {
    #[serde(default)]
    mode: CommitMode,
}

impl Scripted {
    /// A local consumer following `script`.
    pub fn new(script: impl FnMut(&Event, usize) -> Act + Send + 'static) -> Scripted {
        Scripted {
            script: Box::new(script),
            calls: Calls::default(),
            tag: String::new(),
            way: Way::Execute,
        }
    }

    /// A consumer acting by event type: `ok`, `fail`, `retry` (Retry(0) on
    /// first delivery, then ok), `abort` (AbortBatch the first time, then ok),
    /// `error` (an error the first time, then ok), `panic` (always).
    pub fn by_type() -> Scripted {
        Scripted::new(|ev, seen| match ev.kind() {
            "fail" => Act::Fail(format!("event {} failed", ev.ev_id)),
            "retry" if ev.ev_retry.is_none() => Act::Retry(Duration::ZERO),
            "abort" if seen == 0 => Act::Abort,
            "error" if seen == 0 => Act::Error(format!("handler error on event {}", ev.ev_id)),
            "panic" => Act::Panic(format!("poisoned event {}", ev.ev_id)),
            _ => Act::Ok,
        })
    }

    /// Sets the tag written in every row (to tell sub-consumers apart).
    pub fn tag(mut self, tag: &str) -> Scripted {
        self.tag = tag.to_string();
        self
    }

    /// Sets how the rows are written.
    pub fn writing(mut self, way: Way) -> Scripted {
        self.way = way;
        self
    }

    /// The calls, shared: clone it before handing the consumer to a loop.
    pub fn calls(&self) -> Calls {
        Arc::clone(&self.calls)
    }

    /// Writes the row of `ev` in the database the consumer's work goes to.
    async fn write(way: Way, tag: &str, ev: &Event, act: &Act, cx: &Context<'_>) -> Result<(), BoxError> {
        let sql = "insert into done (ev_id, ev_type, outcome, tag) values ($1, $2, $3, $4)";
        let outcome = act.name();
        let values: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&ev.ev_id, &ev.ev_type, &outcome, &tag];
        match way {
            Way::Execute => {
                cx.tx().execute(sql, &values).await?;
            }
            Way::Pipelined => cx.tx().execute_pipelined(sql, &values).await?,
            Way::Insert => {
                cx.tx()
                    .insert_row("done", &["ev_id", "ev_type", "outcome", "tag"], &values)
                    .await?
            }
            Way::Copy => {
                cx.tx()
                    .copy_row("done", &["ev_id", "ev_type", "outcome", "tag"], &values)
                    .await?
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Consumer for Scripted {
    type Settings = ScriptedSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let seen = {
            let mut calls = self.calls.lock().map_err(|_| "calls lock poisoned")?;
            let seen = calls.iter().filter(|c| c.ev_id == ev.ev_id).count();
            calls.push(Call {
                ev_id: ev.ev_id,
                ev_type: ev.kind().to_string(),
                ev_retry: ev.ev_retry,
            });
            seen
        };
        let act = (self.script)(ev, seen);
        if let Act::Panic(message) = &act {
            panic!("{message}");
        }
        Self::write(self.way, &self.tag, ev, &act, cx).await?;
        match act {
            Act::Ok => Ok(Outcome::Ok),
            Act::Fail(reason) => Ok(Outcome::Failed(reason)),
            Act::Retry(delay) => Ok(Outcome::Retry(delay)),
            Act::Abort => Ok(Outcome::AbortBatch),
            Act::Error(message) => Err(message.into()),
            Act::Panic(_) => unreachable!("panicked above"),
            Act::Wait(notify) => {
                notify.notified().await;
                Ok(Outcome::Ok)
            }
            Act::Slow(pause) => {
                tokio::time::sleep(pause).await;
                Ok(Outcome::Ok)
            }
            Act::Stall(gate) => {
                gate.pass();
                Ok(Outcome::Ok)
            }
        }
    }

    fn commit_mode(settings: &ScriptedSettings) -> CommitMode {
        settings.mode
    }
}

/// A queue database: pgq, the `pgq_consumer` schema, queue [`Q`], table
/// `done`, and [`CONSUMER`] registered.
pub async fn setup() -> Result<(TestDb, Client)> {
    let (db, client) = queue_db().await?;
    client.batch_execute(CREATE_DONE).await?;
    register(&client, CONSUMER).await?;
    Ok((db, client))
}

/// A remote database: the `pgq_consumer` schema and table `done`.
pub async fn remote_db() -> Result<(TestDb, Client)> {
    let db = TestDb::create_empty().await;
    let client = db.connect().await;
    pgq_consumers::schema::install(&client).await?;
    client.batch_execute(CREATE_DONE).await?;
    Ok((db, client))
}

/// The config of [`CONSUMER`] on [`Q`] in `db`, with `extra` TOML appended.
pub fn config(db: &TestDb, extra: &str) -> Config {
    config_for(db, CONSUMER, extra)
}

/// The config of a remote [`CONSUMER`] in `mode` (`remote` or
/// `remote_event`), whose remote database is `remote`.
pub fn remote_config(db: &TestDb, remote: &TestDb, mode: &str) -> Config {
    config(
        db,
        &format!("remote_db = '{}'\n[settings]\nmode = '{mode}'", remote.dsn()),
    )
}

/// The config of `consumer` on [`Q`] in `db`, with `extra` TOML appended.
pub fn config_for(db: &TestDb, consumer: &str, extra: &str) -> Config {
    let text = format!(
        "db = '{}'\nqueue = '{Q}'\nconsumer = '{consumer}'\ndelay = 0.1\n{extra}\n",
        db.dsn()
    );
    match Config::parse(Path::new("t.toml"), &text) {
        Ok(config) => config,
        Err(e) => panic!("test config does not parse: {e}\n{text}"),
    }
}

/// A batch loop for `consumer` with `config`.
pub async fn batch_loop(consumer: Scripted, config: Config) -> Result<BatchLoop<Scripted>> {
    BatchLoop::connect(consumer, config).await.context("BatchLoop::connect")
}

/// The rows of `done`: (ev_id, outcome), in insertion order.
pub async fn done(client: &impl GenericClient) -> Result<Vec<(i64, String)>> {
    let rows = client
        .query("select ev_id, outcome from done order by ctid", &[])
        .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// How many rows `done` holds for each event.
pub async fn done_counts(client: &impl GenericClient) -> Result<BTreeMap<i64, i64>> {
    let rows = client
        .query("select ev_id, count(*) from done group by ev_id order by ev_id", &[])
        .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// The ids of the calls, in order.
pub fn call_ids(calls: &Calls) -> Vec<i64> {
    calls
        .lock()
        .map(|c| c.iter().map(|c| c.ev_id).collect())
        .unwrap_or_default()
}

/// The calls received so far.
pub fn calls_of(calls: &Calls) -> Vec<Call> {
    calls.lock().map(|c| c.clone()).unwrap_or_default()
}

/// Inserts events of the given types into [`Q`] in one transaction; returns
/// their ids.
pub async fn insert_all(client: &mut Client, types: &[&str]) -> Result<Vec<i64>> {
    let tx = client.transaction().await?;
    let mut ids = Vec::new();
    for (i, t) in types.iter().enumerate() {
        ids.push(pgq::insert_event(&tx, Q, t, &format!("payload {i}")).await?);
    }
    tx.commit().await?;
    Ok(ids)
}

/// The consumer's pending events and whether it holds a batch.
pub async fn position(client: &Client, consumer: &str) -> Result<(Option<i64>, Option<i64>)> {
    let row = client
        .query_one(
            "select pending_events, current_batch from pgq.get_consumer_info($1, $2)",
            &[&Q, &consumer],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// The report of a finished round; panics on any other round.
pub fn finished(round: pgq_consumers::Round) -> pgq_consumers::BatchReport {
    match round {
        pgq_consumers::Round::Finished(report) => report,
        other => panic!("expected a finished batch, got {other:?}"),
    }
}

/// (events, ok, failed, retried) of a report.
pub fn counts(report: &pgq_consumers::BatchReport) -> (u64, u64, u64, u64) {
    (report.events, report.ok, report.failed, report.retried)
}
