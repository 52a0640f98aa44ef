//! Integration tests of the `pgq` crate: every wrapper called against a real
//! PostgreSQL with the real pgq extension, its result checked.
//!
//! Each test gets a fresh database (`TestDb::create`). Ticks are driven
//! explicitly (`pgq::force_tick` + `pgq::ticker_queue`, or thresholds set with
//! `set_queue_config`), never by a background ticker, so every batch boundary
//! is where the test put it.

mod admin;
mod batch;
mod consumer;
mod cycle;
mod limits;
mod maint;
mod node;
mod produce;
mod produce_errors;
mod queue;
mod retry;
mod stream;
mod trigger;

use anyhow::{ensure, Context, Result};
use pgq::Event;
use pgq_test_support::TestDb;
use tokio_postgres::Client;

/// A fresh database with the pgq extension and a connection to it.
pub async fn setup() -> (TestDb, Client) {
    let db = TestDb::create().await;
    let client = db.connect().await;
    (db, client)
}

/// A fresh database holding queue `q`, with consumer `c` registered on it.
pub async fn setup_queue(queue: &str, consumer: &str) -> Result<(TestDb, Client)> {
    let (db, c) = setup().await;
    ensure!(
        pgq::create_queue(&c, queue).await.context("create_queue")?,
        "queue {queue} existed"
    );
    ensure!(
        pgq::register_consumer(&c, queue, consumer)
            .await
            .context("register_consumer")?,
        "consumer {consumer} was registered already"
    );
    Ok((db, c))
}

/// Makes the ticker tick `queue` now, whatever its thresholds, and returns
/// the new tick's id.
pub async fn tick(c: &Client, queue: &str) -> Result<i64> {
    pgq::force_tick(c, queue).await.context("force_tick")?;
    pgq::ticker_queue(c, queue)
        .await
        .context("ticker_queue")?
        .with_context(|| format!("no tick on {queue} after force_tick"))
}

/// Opens the consumer's next batch, failing when there is none.
pub async fn open_batch(c: &Client, queue: &str, consumer: &str) -> Result<i64> {
    pgq::next_batch(c, queue, consumer)
        .await
        .context("next_batch")?
        .with_context(|| format!("no batch for {consumer} on {queue}"))
}

/// Opens the next batch, reads all its events and finishes it.
pub async fn consume(c: &Client, queue: &str, consumer: &str) -> Result<Vec<Event>> {
    let batch = open_batch(c, queue, consumer).await?;
    let events = pgq::get_batch_events(c, batch).await.context("get_batch_events")?;
    ensure!(
        pgq::finish_batch(c, batch).await.context("finish_batch")?,
        "batch {batch} was not open"
    );
    Ok(events)
}

/// The queue's id in `pgq.queue`.
pub async fn queue_id(c: &Client, queue: &str) -> Result<i32> {
    let row = c
        .query_one("select queue_id from pgq.queue where queue_name = $1", &[&queue])
        .await
        .context("reading queue_id")?;
    Ok(row.get(0))
}

/// Payloads of events, in order.
pub fn data(events: &[Event]) -> Vec<&str> {
    events.iter().map(Event::data).collect()
}
