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
//! Records are not written one statement per event: each one's row is
//! buffered (`cx.tx().insert_row`), and the framework writes a batch's rows
//! with one INSERT before it commits (a MiB at a time in a big batch).

use pgq_consumers::{async_trait, BoxError, CommitMode, Consumer, Context, Event, ExitCode, NoSettings, Outcome};
use tokio_postgres::Client;

const CREATE: &str = "create table if not exists stream_items (ev_id bigint, data text)";

struct Subscriber;

#[async_trait]
impl Consumer for Subscriber {
    type Settings = NoSettings;

    async fn process_event(&mut self, ev: &Event, cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        // Written with the batch's other rows, by one INSERT, in the remote
        // transaction.
        cx.tx()
            .insert_row("stream_items", &["ev_id", "data"], &[&ev.ev_id, &ev.data()])
            .await?;
        Ok(Outcome::Ok)
    }

    fn commit_mode(_: &NoSettings) -> CommitMode {
        CommitMode::Remote
    }

    async fn install(&mut self, _db: &Client, remote: Option<&Client>) -> Result<(), BoxError> {
        let remote = remote.ok_or("subscriber is a remote consumer: set remote_db")?;
        remote.batch_execute(CREATE).await?;
        Ok(())
    }
}

fn main() -> ExitCode {
    pgq_consumers::main(|| Subscriber)
}
