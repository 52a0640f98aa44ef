//! Helpers shared by the tests of the framework's SQL: a queue database with
//! the `pgq_consumer` schema installed, explicit ticks, events.

use anyhow::{Context as _, Result};
use pgq_test_support::TestDb;
use tokio_postgres::Client;

/// The queue every test uses.
pub const Q: &str = "q";

/// A fresh database with pgq, the `pgq_consumer` schema and queue [`Q`]
/// (which has its first tick, so consumers can register).
pub async fn queue_db() -> Result<(TestDb, Client)> {
    let db = TestDb::create().await;
    let client = db.connect().await;
    pgq_consumers::schema::install(&client)
        .await
        .context("installing pgq_consumer")?;
    client.execute("select pgq.create_queue($1)", &[&Q]).await?;
    Ok((db, client))
}

/// Inserts an event into [`Q`] (committed on its own) and returns its id.
pub async fn insert(client: &Client, ev_type: &str, ev_data: &str) -> Result<i64> {
    let row = client
        .query_one("select pgq.insert_event($1, $2, $3) as id", &[&Q, &ev_type, &ev_data])
        .await?;
    Ok(row.try_get("id")?)
}

/// Makes the ticker tick [`Q`] now and returns the new tick's id.
///
/// `pgq.ticker(queue)` only ticks when enough events or time have passed;
/// `pgq.force_tick` makes it look as if enough events had come.
pub async fn tick(client: &Client) -> Result<i64> {
    client.execute("select pgq.force_tick($1)", &[&Q]).await?;
    let row = client.query_one("select pgq.ticker($1) as t", &[&Q]).await?;
    let t: Option<i64> = row.try_get("t")?;
    t.context("pgq.ticker did not tick after pgq.force_tick")
}

/// Moves due events of the retry queue back into their queues, as the
/// ticker's maintenance does; returns how many.
pub async fn maint_retry_events(client: &Client) -> Result<i32> {
    let mut total = 0;
    loop {
        let row = client.query_one("select pgq.maint_retry_events() as n", &[]).await?;
        let n: i32 = row.try_get("n")?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// Registers a plain consumer on [`Q`].
pub async fn register(client: &Client, consumer: &str) -> Result<()> {
    client
        .execute("select pgq.register_consumer($1, $2)", &[&Q, &consumer])
        .await?;
    Ok(())
}

/// Opens the plain consumer's next batch (`pgq.next_batch_info`).
pub async fn next_batch(client: &Client, consumer: &str) -> Result<Option<pgq::BatchTicks>> {
    let row = client
        .query_one("select * from pgq.next_batch_info($1, $2)", &[&Q, &consumer])
        .await?;
    let Some(batch_id) = row.try_get::<_, Option<i64>>("batch_id")? else {
        return Ok(None);
    };
    Ok(Some(pgq::BatchTicks {
        batch_id,
        cur_tick_id: row.try_get("cur_tick_id")?,
        prev_tick_id: row.try_get("prev_tick_id")?,
        cur_tick_time: row.try_get("cur_tick_time")?,
        prev_tick_time: row.try_get("prev_tick_time")?,
        cur_tick_event_seq: row.try_get("cur_tick_event_seq")?,
        prev_tick_event_seq: row.try_get("prev_tick_event_seq")?,
    }))
}

/// The events of an active batch.
pub async fn events(client: &impl tokio_postgres::GenericClient, batch_id: i64) -> Result<Vec<pgq::Event>> {
    let rows = client
        .query("select * from pgq.get_batch_events($1)", &[&batch_id])
        .await?;
    rows.iter().map(|r| Ok(pgq::Event::from_row(r)?)).collect()
}

/// The ids of the events of an active batch.
pub async fn event_ids(client: &impl tokio_postgres::GenericClient, batch_id: i64) -> Result<Vec<i64>> {
    Ok(events(client, batch_id).await?.iter().map(|e| e.ev_id).collect())
}

/// Finishes a plain consumer's batch with `pgq.finish_batch`.
pub async fn finish(client: &impl tokio_postgres::GenericClient, batch_id: i64) -> Result<()> {
    client.execute("select pgq.finish_batch($1)", &[&batch_id]).await?;
    Ok(())
}

/// Takes the plain consumer's next batch, reads its event ids and finishes
/// it; `None` when there is no batch.
pub async fn consume(client: &Client, consumer: &str) -> Result<Option<Vec<i64>>> {
    let Some(b) = next_batch(client, consumer).await? else {
        return Ok(None);
    };
    let ids = event_ids(client, b.batch_id).await?;
    finish(client, b.batch_id).await?;
    Ok(Some(ids))
}
