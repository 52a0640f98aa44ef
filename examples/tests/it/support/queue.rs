//! The queue side of a test, through a connection to the queue (or remote)
//! database: producing events, ticking by hand, and reading what a consumer
//! did (`testq_done`, its batch in flight, its failed events).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::Client;

/// Inserts events of these types into `queue`, in one transaction, with data
/// `payload 0`, `payload 1`, ...; returns their ids, in order.
pub async fn produce(client: &Client, queue: &str, types: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    client.batch_execute("begin").await.expect("begin");
    for (i, t) in types.iter().enumerate() {
        ids.push(
            pgq::insert_event(client, queue, t, &format!("payload {i}"))
                .await
                .expect("insert_event"),
        );
    }
    client.batch_execute("commit").await.expect("commit");
    ids
}

/// Inserts `n` events of type `plain` into `queue`, in one transaction.
pub async fn produce_plain(client: &Client, queue: &str, n: usize) -> Vec<i64> {
    produce(client, queue, &vec!["plain"; n]).await
}

/// Inserts `n` plain events into `queue`, in one transaction, then ticks, so
/// that they make one batch.
pub async fn produce_plain_batch(client: &Client, queue: &str, n: usize) -> Vec<i64> {
    let ids = produce_plain(client, queue, n).await;
    tick(client, queue).await;
    ids
}

/// Makes `queue` tick now, as pgqd would: the events committed so far make
/// a batch.
pub async fn tick(client: &Client, queue: &str) {
    pgq::force_tick(client, queue).await.expect("force_tick");
    client
        .execute("select pgq.ticker($1)", &[&queue])
        .await
        .expect("ticker");
}

/// The event ids in `testq_done`, in id order (a duplicate shows twice).
pub async fn done(client: &Client) -> Vec<i64> {
    client
        .query("select ev_id from testq_done order by ev_id", &[])
        .await
        .expect("read testq_done")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// How many rows `testq_done` has.
pub async fn done_count(client: &Client) -> usize {
    usize::try_from(count(client, "testq_done").await).unwrap_or(0)
}

/// How many rows `table` has.
pub async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

/// The batch a consumer holds (`pgq.get_consumer_info`'s `current_batch`), if any.
pub async fn current_batch(client: &Client, queue: &str, consumer: &str) -> Option<i64> {
    client
        .query_one(
            "select current_batch from pgq.get_consumer_info($1, $2)",
            &[&queue, &consumer],
        )
        .await
        .expect("get_consumer_info")
        .get(0)
}

/// A consumer's failed events: their ids, with the reasons.
pub async fn failed(client: &Client, queue: &str, consumer: &str) -> Vec<(i64, String)> {
    pgq_consumers::failed::list(client, queue, consumer)
        .await
        .expect("list failed events")
        .into_iter()
        .map(|f| (f.event.ev_id, f.reason))
        .collect()
}

/// Puts due retried events back into their queues, as pgqd's maintenance
/// does; returns how many.
pub async fn maint_retry_events(client: &Client) -> i32 {
    let mut total = 0;
    loop {
        let n = pgq::maint_retry_events(client).await.expect("maint_retry_events");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// A producer on a task of its own: `per_round` plain events in one
/// transaction every 20 ms until stopped (the ticker is someone else's job).
pub struct Producer {
    stop: Arc<AtomicBool>,
    ids: Arc<Mutex<Vec<i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    /// Starts producing into `queue` over `client`, a connection of its own.
    pub fn start(client: Client, queue: &str, per_round: usize) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (stop, ids, queue) = (Arc::clone(&stop), Arc::clone(&ids), queue.to_string());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let new = produce_plain(&client, &queue, per_round).await;
                    ids.lock().expect("producer ids").extend(new);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Producer { stop, ids, task }
    }

    /// Stops producing; returns the ids of every event produced, sorted.
    pub async fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the producer task");
        let mut ids = self.ids.lock().expect("producer ids").clone();
        ids.sort_unstable();
        ids
    }
}
