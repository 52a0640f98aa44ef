//! The handler's writes through the batch's transaction: statements
//! prepared once per connection (and again on a new connection), pipelined
//! writes and rows for COPY keeping every guarantee of the batch: a failure
//! commits nothing, a panic loses and repeats nothing, remote_event rolls
//! back exactly a failed event's writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use pgq_consumers::{
    async_trait, tracking, BatchLoop, BoxError, CommitMode, Config, Consumer, Context, Error, Event, Outcome, Round,
};
use pgq_test_support::TestDb;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::common::{tick, Q};
use crate::scripted::{
    batch_loop, call_ids, config, counts, done, done_counts, finished, insert_all, position, remote_config, remote_db,
    setup, Scripted, Way, CONSUMER,
};

/// A queue database with [`CONSUMER`] registered and a remote database (a
/// connection to each), a connection to the one the consumer writes to in
/// `mode` (`local`, `remote` or `remote_event`), and its config.
async fn dbs(mode: &str) -> Result<(TestDb, Client, TestDb, Client, Client, Config)> {
    let (db, client) = setup().await?;
    let (rdb, remote) = remote_db().await?;
    let (target, config) = match mode {
        "local" => (db.connect().await, config(&db, "")),
        _ => (rdb.connect().await, remote_config(&db, &rdb, mode)),
    };
    Ok((db, client, rdb, remote, target, config))
}

/// The write that failed behind a round's error: its event and SQLSTATE.
fn failed_write(e: &Error) -> (Option<i64>, Option<SqlState>) {
    let Error::Handler { source, .. } = e else {
        panic!("expected the handler's error, got {e:?}");
    };
    match source.downcast_ref::<Error>() {
        Some(write @ Error::Write { ev_id, .. }) => (*ev_id, write.code().cloned()),
        _ => panic!("expected a failed write, got {source:?}"),
    }
}

const PROBE_INSERT: &str = "insert into done (ev_id, ev_type, outcome, tag) values ($1, $2, 'ok', '')";

/// What the probe saw at each event, on the connection of `cx.tx()`: the
/// backend's pid, and the names its insert is prepared under there.
type Seen = Arc<Mutex<Vec<(i32, Vec<String>)>>>;

/// Writes its row the README's way, then looks at the prepared statements
/// of its session.
#[derive(Default)]
struct Probe {
    seen: Seen,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeSettings {
    #[serde(default)]
    mode: CommitMode,
}

#[async_trait]
impl Consumer for Probe {
    type Settings = ModeSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        cx.tx().execute(PROBE_INSERT, &[&ev.ev_id, &ev.ev_type]).await?;
        let row = cx
            .tx()
            .query_one(
                "select pg_backend_pid(), array(select name from pg_prepared_statements where statement = $1)",
                &[&PROBE_INSERT],
            )
            .await?;
        let seen = (row.try_get(0)?, row.try_get(1)?);
        self.seen.lock().map_err(|_| "poisoned")?.push(seen);
        Ok(Outcome::Ok)
    }

    fn commit_mode(settings: &ModeSettings) -> CommitMode {
        settings.mode
    }
}

fn seen(seen: &Seen) -> Vec<(i32, Vec<String>)> {
    seen.lock().map(|s| s.clone()).unwrap_or_default()
}

#[tokio::test]
async fn statements_run_through_cx_tx_are_prepared_once_per_connection_and_reused_by_every_batch() -> Result<()> {
    for mode in ["local", "remote"] {
        let (_db, mut client, _rdb, _remote, _target, config) = dbs(mode).await?;
        let probe = Probe::default();
        let saw = Arc::clone(&probe.seen);
        let mut lp = BatchLoop::connect(probe, config).await?;
        for _ in 0..2 {
            insert_all(&mut client, &["ok", "ok"]).await?;
            tick(&client).await?;
            finished(lp.round().await?);
        }
        let saw = seen(&saw);
        assert_eq!(saw.len(), 4, "{mode}: {saw:?}");
        assert_eq!(saw[0].1.len(), 1, "{mode}: the insert is prepared, once: {saw:?}");
        assert!(
            saw.iter().all(|s| *s == saw[0]),
            "{mode}: every event of both batches ran that one statement: {saw:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn after_a_reconnect_the_handlers_statements_are_prepared_again_on_the_new_connection() -> Result<()> {
    for mode in ["local", "remote"] {
        let (_db, mut client, _rdb, _remote, server, config) = dbs(mode).await?;
        let probe = Probe::default();
        let saw = Arc::clone(&probe.seen);
        let mut lp = BatchLoop::connect(probe, config).await?;
        insert_all(&mut client, &["ok"]).await?;
        tick(&client).await?;
        finished(lp.round().await?);
        let (old_pid, old_names) = seen(&saw)[0].clone();

        // The connection the statements were prepared on dies.
        server.execute("select pg_terminate_backend($1)", &[&old_pid]).await?;
        insert_all(&mut client, &["ok", "ok"]).await?;
        tick(&client).await?;
        let mut tries = 0;
        let report = loop {
            tries += 1;
            assert!(tries < 5, "{mode}: the loop should recover");
            match lp.round().await {
                Ok(round) => break finished(round),
                Err(e) => {
                    assert!(lp.is_broken(), "{mode}: a lost connection, not {e:?}");
                    lp.reconnect().await?;
                }
            }
        };
        assert_eq!(counts(&report), (2, 2, 0, 0), "{mode}");
        // The first round on the new connection did the batch: no stale
        // statement of the old connection was tried there.
        let after = seen(&saw);
        assert_eq!(after.len(), 3, "{mode}: {after:?}");
        let (new_pid, new_names) = &after[1];
        assert_ne!(*new_pid, old_pid, "{mode}: a new connection");
        assert_eq!(new_names.len(), 1, "{mode}: prepared again there: {after:?}");
        assert_ne!(*new_names, old_names, "{mode}: a new statement");
        assert_eq!(after[2], after[1], "{mode}: and reused");
    }
    Ok(())
}

/// A batch with a write the table refuses (a check constraint on
/// `ev_type <> 'bad'`), written the given way in the given mode: the round
/// fails with that write's error, nothing commits on either side, the
/// connections stay usable, and once the constraint is gone the batch is
/// done, once.
async fn failing_write_aborts_the_batch(way: Way, mode: &str) -> Result<()> {
    let (_db, mut client, _rdb, remote, target, config) = dbs(mode).await?;
    target
        .batch_execute("alter table done add constraint no_bad check (ev_type <> 'bad')")
        .await?;
    let ids = insert_all(&mut client, &["ok", "bad", "ok"]).await?;
    tick(&client).await?;
    let mut lp = batch_loop(Scripted::by_type().writing(way), config).await?;

    let err = lp.round().await.expect_err("the failing write aborts the batch");
    let (ev_id, code) = failed_write(&err);
    assert_eq!(code, Some(SqlState::CHECK_VIOLATION), "{way:?} {mode}: {err:?}");
    match way {
        // Sent for that event: blamed on it.
        Way::Pipelined => assert_eq!(ev_id, Some(ids[1]), "{way:?} {mode}"),
        // One statement for the whole batch.
        _ => assert_eq!(ev_id, None, "{way:?} {mode}"),
    }
    assert!(done(&client).await?.is_empty(), "{way:?} {mode}: nothing committed");
    assert!(
        done(&remote).await?.is_empty(),
        "{way:?} {mode}: nothing committed remotely"
    );
    assert_eq!(
        tracking::last_applied(&remote, Q, CONSUMER, None).await?,
        None,
        "{way:?} {mode}"
    );
    assert!(position(&client, CONSUMER).await?.1.is_some(), "the batch stays open");
    assert!(!lp.is_broken(), "{way:?} {mode}: the connections stay usable");

    target.batch_execute("alter table done drop constraint no_bad").await?;
    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (3, 3, 0, 0), "{way:?} {mode}");
    assert_eq!(
        done_counts(&target).await?,
        ids.iter().map(|id| (*id, 1)).collect(),
        "{way:?} {mode}: each event once"
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_pipelined_write_aborts_the_batch_with_nothing_committed_and_it_is_done_once_later() -> Result<()> {
    for mode in ["local", "remote", "remote_event"] {
        failing_write_aborts_the_batch(Way::Pipelined, mode).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_failing_inserted_or_copied_row_aborts_the_batch_with_nothing_committed_and_it_is_done_once_later(
) -> Result<()> {
    for way in [Way::Insert, Way::Copy] {
        for mode in ["local", "remote", "remote_event"] {
            failing_write_aborts_the_batch(way, mode).await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_remote_commit_that_fails_leaves_the_batch_unfinished_in_the_queue_and_it_is_done_once_later() -> Result<()> {
    // The queue transaction finishes the batch while the remote side
    // commits; it must not commit when the remote COMMIT fails (here a
    // deferred constraint, checked by the COMMIT itself).
    for way in [Way::Execute, Way::Insert] {
        let (_db, mut client, _rdb, remote, _target, config) = dbs("remote").await?;
        remote
            .batch_execute(
                "alter table done add constraint one_per_type unique (ev_type) deferrable initially deferred",
            )
            .await?;
        let ids = insert_all(&mut client, &["ok", "ok"]).await?;
        tick(&client).await?;
        let mut lp = batch_loop(Scripted::by_type().writing(way), config).await?;

        let err = lp.round().await.expect_err("the remote COMMIT fails");
        assert!(matches!(err, Error::Remote { .. }), "{way:?}: {err:?}");
        assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{way:?}: {err:?}");
        assert!(done(&remote).await?.is_empty(), "{way:?}: nothing committed remotely");
        assert_eq!(
            tracking::last_applied(&remote, Q, CONSUMER, None).await?,
            None,
            "{way:?}"
        );
        assert!(
            position(&client, CONSUMER).await?.1.is_some(),
            "{way:?}: the batch stays open, its finish rolled back"
        );
        assert!(!lp.is_broken(), "{way:?}: the connections stay usable");

        remote
            .batch_execute("alter table done drop constraint one_per_type")
            .await?;
        let report = finished(lp.round().await?);
        assert_eq!(counts(&report), (2, 2, 0, 0), "{way:?}");
        assert_eq!(
            done_counts(&remote).await?,
            ids.iter().map(|id| (*id, 1)).collect(),
            "{way:?}: each event once"
        );
        assert_eq!(position(&client, CONSUMER).await?.1, None, "{way:?}: finished");
    }
    Ok(())
}

#[tokio::test]
async fn a_panic_mid_batch_with_pipelined_inserted_or_copied_writes_loses_and_repeats_nothing() -> Result<()> {
    for way in [Way::Pipelined, Way::Insert, Way::Copy] {
        for mode in ["local", "remote"] {
            let (_db, mut client, _rdb, _remote, target, config) = dbs(mode).await?;
            let ids = insert_all(&mut client, &["ok", "ok", "panic", "ok"]).await?;
            tick(&client).await?;
            let mut lp = batch_loop(Scripted::by_type().writing(way), config).await?;

            let round = lp.round().await?;
            assert!(
                matches!(round, Round::Panicked { ev_id, .. } if ev_id == ids[2]),
                "{way:?} {mode}: {round:?}"
            );
            assert!(
                done(&target).await?.is_empty(),
                "{way:?} {mode}: the writes before the panic rolled back"
            );
            let report = finished(lp.round().await?);
            assert_eq!(counts(&report), (4, 3, 1, 0), "{way:?} {mode}");
            assert_eq!(
                done_counts(&target).await?,
                [ids[0], ids[1], ids[3]].iter().map(|id| (*id, 1)).collect(),
                "{way:?} {mode}: every other event once"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn remote_event_rolls_back_exactly_the_pipelined_inserted_or_copied_writes_of_failed_and_retried_events(
) -> Result<()> {
    for way in Way::ALL {
        let (_db, mut client, _rdb, remote, _target, config) = dbs("remote_event").await?;
        let ids = insert_all(&mut client, &["ok", "fail", "retry", "ok", "fail"]).await?;
        tick(&client).await?;
        let mut lp = batch_loop(Scripted::by_type().writing(way), config).await?;
        let report = finished(lp.round().await?);
        assert_eq!(counts(&report), (5, 2, 2, 1), "{way:?}");
        assert_eq!(
            done(&remote).await?,
            [(ids[0], "ok".into()), (ids[3], "ok".into())],
            "{way:?}: the writes of the Ok events only"
        );
    }
    Ok(())
}

#[tokio::test]
async fn remote_event_checks_an_events_pipelined_writes_before_its_savepoint_and_blames_a_failure_on_it() -> Result<()>
{
    let (_db, mut client, _rdb, remote, _target, config) = dbs("remote_event").await?;
    remote
        .batch_execute("alter table done add constraint no_bad check (ev_type <> 'bad')")
        .await?;
    let ids = insert_all(&mut client, &["ok", "bad", "ok"]).await?;
    tick(&client).await?;
    let consumer = Scripted::by_type().writing(Way::Pipelined);
    let calls = consumer.calls();
    let mut lp = batch_loop(consumer, config).await?;
    let err = lp.round().await.expect_err("the failing write aborts the batch");
    assert_eq!(failed_write(&err), (Some(ids[1]), Some(SqlState::CHECK_VIOLATION)));
    assert_eq!(
        call_ids(&calls),
        ids[..2],
        "the batch stopped at the event whose write failed, when its outcome was applied"
    );
    assert!(done(&remote).await?.is_empty());
    assert_eq!(tracking::last_applied(&remote, Q, CONSUMER, None).await?, None);
    Ok(())
}

/// Buffers a row of each event for COPY; for an event of type `bad`, also
/// pipelines a write the table refuses, after the first row (so the COPY's
/// statements are prepared before the transaction is aborted).
struct CopiedThenRefused;

#[async_trait]
impl Consumer for CopiedThenRefused {
    type Settings = ModeSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let (kind, outcome, tag) = ("good", "ok", "");
        cx.tx()
            .copy_row(
                "done",
                &["ev_id", "ev_type", "outcome", "tag"],
                &[&ev.ev_id, &kind, &outcome, &tag],
            )
            .await?;
        if ev.ev_type.as_deref() == Some("bad") {
            cx.tx()
                .execute_pipelined(
                    "insert into done (ev_id, ev_type, outcome, tag) values ($1, 'bad', 'ok', '')",
                    &[&ev.ev_id],
                )
                .await?;
        }
        Ok(Outcome::Ok)
    }

    fn commit_mode(settings: &ModeSettings) -> CommitMode {
        settings.mode
    }
}

#[tokio::test]
async fn a_failed_pipelined_write_is_the_batchs_error_when_rows_written_after_it_fail_too() -> Result<()> {
    // The COPY at the batch's end fails because the transaction is aborted;
    // the cause reported is the pipelined write, answered meanwhile.
    for mode in ["local", "remote"] {
        let (_db, mut client, _rdb, _remote, target, config) = dbs(mode).await?;
        target
            .batch_execute("alter table done add constraint no_bad check (ev_type <> 'bad')")
            .await?;
        let ids = insert_all(&mut client, &["ok", "bad"]).await?;
        tick(&client).await?;
        let mut lp = BatchLoop::connect(CopiedThenRefused, config).await?;
        let err = lp.round().await.expect_err("the refused write aborts the batch");
        assert_eq!(
            failed_write(&err),
            (Some(ids[1]), Some(SqlState::CHECK_VIOLATION)),
            "{mode}: {err:?}"
        );
        assert!(done(&target).await?.is_empty(), "{mode}: nothing committed");
        assert!(!lp.is_broken(), "{mode}: the connections stay usable");
    }
    Ok(())
}

/// Pipelines 500 writes per event, then reads them back in the batch.
struct InOrder;

#[async_trait]
impl Consumer for InOrder {
    type Settings = ModeSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        for i in 0..500 {
            let tag = i.to_string();
            cx.tx()
                .execute_pipelined(
                    "insert into done (ev_id, ev_type, outcome, tag) values ($1, 'x', 'ok', $2)",
                    &[&ev.ev_id, &tag],
                )
                .await?;
        }
        let row = cx
            .tx()
            .query_one("select count(*) from done where ev_id = $1", &[&ev.ev_id])
            .await?;
        let n: i64 = row.try_get(0)?;
        if n != 500 {
            return Err(format!("event {}: a read after 500 pipelined writes saw {n}", ev.ev_id).into());
        }
        Ok(Outcome::Ok)
    }
}

#[tokio::test]
async fn pipelined_writes_go_out_in_order_with_the_handlers_other_statements() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "ok", "ok"]).await?;
    tick(&client).await?;
    let mut lp = BatchLoop::connect(InOrder, config(&db, "")).await?;
    let report = finished(tokio::time::timeout(Duration::from_secs(60), lp.round()).await??);
    assert_eq!(counts(&report), (3, 3, 0, 0));
    assert_eq!(done_counts(&client).await?, ids.iter().map(|id| (*id, 500)).collect());
    Ok(())
}

/// Buffers 1500 rows of 1 KiB for each event for `big` (by INSERT, or by
/// COPY), then counts the rows of `big` the batch's transaction sees.
struct CopyBig {
    way: Way,
    counted: Arc<Mutex<Vec<i64>>>,
}

#[async_trait]
impl Consumer for CopyBig {
    type Settings = ModeSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let pad = "x".repeat(1024);
        for n in 0..1500i32 {
            let row: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&ev.ev_id, &n, &pad];
            match self.way {
                Way::Insert => cx.tx().insert_row("big", &["ev_id", "n", "pad"], &row).await?,
                _ => cx.tx().copy_row("big", &["ev_id", "n", "pad"], &row).await?,
            }
        }
        let row = cx.tx().query_one("select count(*) from big", &[]).await?;
        self.counted.lock().map_err(|_| "poisoned")?.push(row.try_get(0)?);
        Ok(Outcome::Ok)
    }

    fn commit_mode(settings: &ModeSettings) -> CommitMode {
        settings.mode
    }
}

/// Copies each event's id into every one of `columns` of `table`.
struct CopyInto {
    table: &'static str,
    columns: &'static [&'static str],
}

#[async_trait]
impl Consumer for CopyInto {
    type Settings = ModeSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            self.columns.iter().map(|_| &ev.ev_id as _).collect();
        cx.tx().copy_row(self.table, self.columns, &values).await?;
        Ok(Outcome::Ok)
    }
}

#[tokio::test]
async fn buffered_rows_are_written_once_a_buffer_is_full_between_events_in_remote_event_mode_and_all_commit_once(
) -> Result<()> {
    for (way, mode) in [
        (Way::Insert, "local"),
        (Way::Copy, "local"),
        (Way::Insert, "remote_event"),
        (Way::Copy, "remote_event"),
    ] {
        let (_db, mut client, _rdb, _remote, target, config) = dbs(mode).await?;
        target
            .batch_execute("create table big (ev_id bigint, n int, pad text, unique (ev_id, n))")
            .await?;
        let ids = insert_all(&mut client, &["ok", "ok", "ok"]).await?;
        tick(&client).await?;
        let counted = Arc::new(Mutex::new(Vec::new()));
        let consumer = CopyBig {
            way,
            counted: Arc::clone(&counted),
        };
        let mut lp = BatchLoop::connect(consumer, config).await?;
        let report = finished(lp.round().await?);
        assert_eq!(counts(&report), (3, 3, 0, 0), "{way:?} {mode}");
        let counted = counted.lock().map(|c| c.clone()).unwrap_or_default();
        if mode == "local" {
            // Past 1 MiB a buffer is written, whenever it is.
            assert!(
                counted[0] > 0,
                "{way:?} {mode}: written during the first event: {counted:?}"
            );
        } else {
            // Only between events: an event's rows stay with its savepoint.
            assert_eq!(counted[0], 0, "{way:?} {mode}: {counted:?}");
            assert_eq!(
                counted[1], 1500,
                "{way:?} {mode}: the first event's rows, after it: {counted:?}"
            );
        }
        let rows = target
            .query("select ev_id, count(*) from big group by ev_id order by ev_id", &[])
            .await?;
        let per_event: Vec<(i64, i64)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        assert_eq!(
            per_event,
            ids.iter().map(|id| (*id, 1500)).collect::<Vec<_>>(),
            "{way:?} {mode}"
        );
    }
    Ok(())
}

/// Buffers each event's id, and an array of it, for `arrays (ev_id, ids)`.
struct Arrays(Way);

#[async_trait]
impl Consumer for Arrays {
    type Settings = ModeSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        let ids = vec![ev.ev_id, -ev.ev_id];
        let row: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&ev.ev_id, &ids];
        match self.0 {
            Way::Insert => cx.tx().insert_row("arrays", &["ev_id", "ids"], &row).await?,
            _ => cx.tx().copy_row("arrays", &["ev_id", "ids"], &row).await?,
        }
        Ok(Outcome::Ok)
    }
}

#[tokio::test]
async fn a_column_of_an_array_type_is_refused_by_insert_row_and_written_by_copy_row() -> Result<()> {
    let (db, mut client) = setup().await?;
    client
        .batch_execute("create table arrays (ev_id bigint, ids bigint[])")
        .await?;
    let ids = insert_all(&mut client, &["ok", "ok"]).await?;
    tick(&client).await?;

    let mut lp = BatchLoop::connect(Arrays(Way::Insert), config(&db, "")).await?;
    let err = lp.round().await.expect_err("insert_row cannot write an array column");
    let chain = format!("{:?}", anyhow::Error::from(err));
    assert!(chain.contains("is of an array type"), "{chain}");
    drop(lp);

    let mut lp = BatchLoop::connect(Arrays(Way::Copy), config(&db, "")).await?;
    finished(lp.round().await?);
    let rows = client
        .query("select ev_id, ids from arrays order by ev_id", &[])
        .await?;
    let got: Vec<(i64, Vec<i64>)> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_>>()?;
    assert_eq!(got, ids.iter().map(|id| (*id, vec![*id, -id])).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn a_copy_the_server_would_refuse_at_its_start_is_not_started_and_the_connection_stays_usable() -> Result<()> {
    let (db, mut client) = setup().await?;
    client
        .batch_execute(
            "create view done_view as select * from done; \
             create table twice (ev_id bigint, double bigint generated always as (ev_id * 2) stored)",
        )
        .await?;
    insert_all(&mut client, &["ok"]).await?;
    tick(&client).await?;
    for (table, columns, problem) in [
        ("done_view", &["ev_id"][..], "it is not a table"),
        ("twice", &["ev_id", "double"][..], "column double is a generated column"),
    ] {
        let consumer = CopyInto { table, columns };
        let mut lp = BatchLoop::connect(consumer, config(&db, "")).await?;
        let err = lp.round().await.expect_err("the COPY is refused");
        let Error::Handler { source, .. } = &err else {
            panic!("{err:?}");
        };
        match source.downcast_ref::<Error>() {
            Some(Error::CopyRefused {
                table: t, problem: p, ..
            }) => {
                assert_eq!(t, table);
                assert!(p.starts_with(problem), "{table}: {p}");
            }
            other => panic!("{table}: expected CopyRefused, got {other:?}"),
        }
        assert!(!lp.is_broken(), "{table}: the connection stays");
        lp.queue_db().query_one("select 1", &[]).await?;
        assert!(done(&client).await?.is_empty());
        assert!(position(&client, CONSUMER).await?.1.is_some(), "the batch stays open");
    }
    Ok(())
}

/// Reads its event's rows with `select *` (a statement whose result changes
/// with the table's columns), then writes its row.
struct SelectStar;

#[async_trait]
impl Consumer for SelectStar {
    type Settings = ModeSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        cx.tx()
            .query("select * from done where ev_id = $1", &[&ev.ev_id])
            .await?;
        cx.tx().execute(PROBE_INSERT, &[&ev.ev_id, &ev.ev_type]).await?;
        Ok(Outcome::Ok)
    }
}

#[tokio::test]
async fn a_cached_statement_made_stale_by_a_column_change_fails_one_round_and_is_prepared_again() -> Result<()> {
    let (db, mut client) = setup().await?;
    let mut lp = BatchLoop::connect(SelectStar, config(&db, "")).await?;
    insert_all(&mut client, &["ok"]).await?;
    tick(&client).await?;
    finished(lp.round().await?);

    // The prepared `select *` no longer returns what it did.
    client.batch_execute("alter table done add column extra int").await?;
    let ids = insert_all(&mut client, &["ok", "ok"]).await?;
    tick(&client).await?;
    let err = lp.round().await.expect_err("the stale statement fails once");
    let code = match &err {
        Error::Handler { source, .. } => source.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.code()),
        _ => None,
    };
    assert_eq!(code, Some(&SqlState::FEATURE_NOT_SUPPORTED), "{err:?}");
    let report = finished(lp.round().await?);
    assert_eq!(counts(&report), (2, 2, 0, 0));
    let counted = done_counts(&client).await?;
    assert_eq!(
        ids.iter().map(|id| counted.get(id).copied()).collect::<Vec<_>>(),
        [Some(1), Some(1)]
    );
    Ok(())
}
