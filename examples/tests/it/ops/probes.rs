//! `/health/ready` and `/health/live` as their state changes under a running
//! daemon: PostgreSQL stopped and started again (a cluster of the test's
//! own), and a batch in flight longer than `stuck_after`.

use crate::reliability::cluster::Cluster;
use crate::support::testq::{Testq, TestqDb, CONSUMER, QUEUE};
use crate::support::{free_port, queue};

use super::web;

/// `[http] listen` on a free port, gauges read every 0.2 s; the endpoint's address.
fn serve(testq: &mut Testq) -> String {
    let address = format!("127.0.0.1:{}", free_port());
    let mut http = toml::Table::new();
    http.insert("listen".into(), address.clone().into());
    http.insert("refresh_period".into(), 0.2.into());
    testq.set("http", http);
    address
}

/// The status code of `path`, or 0 when nothing answers.
async fn status(endpoint: &str, path: &str) -> u16 {
    web::get(endpoint, path).await.map_or(0, |a| a.status)
}

#[tokio::test]
async fn readiness_turns_503_while_postgresql_is_down_and_200_once_it_is_back_and_liveness_stays_200() {
    let cluster = Cluster::start("probes", "").await;
    cluster.create_db("app", true).await;
    let mut testq = Testq::new("probes", &cluster.dsn("app"), QUEUE, CONSUMER);
    let endpoint = serve(&mut testq);
    testq.ok(&["install"]).await;
    testq.start().await;
    testq
        .wait_until("ready", async || status(&endpoint, "/health/ready").await == 200)
        .await;

    cluster.stop();
    testq
        .wait_until("not ready", async || status(&endpoint, "/health/ready").await == 503)
        .await;
    let ready = web::json(&endpoint, "/health/ready").await;
    assert_eq!(ready["status"], "not ready");
    assert_eq!(ready["reason"], "the connection to the queue database is lost");
    assert_eq!(
        status(&endpoint, "/health/live").await,
        200,
        "an outage is no reason to restart"
    );
    let metrics = web::get(&endpoint, "/metrics").await.expect("metrics").body;
    assert_eq!(
        web::sample(&metrics, "pgq_consumer_connection_up", &[("database", "queue")]),
        Some(0.0)
    );
    assert_eq!(
        web::sample(&metrics, "pgq_consumer_outages_total", &[("database", "queue")]),
        Some(1.0)
    );

    cluster.start_again();
    testq
        .wait_until("ready again", async || status(&endpoint, "/health/ready").await == 200)
        .await;
    let metrics = web::get(&endpoint, "/metrics").await.expect("metrics").body;
    assert_eq!(
        web::sample(&metrics, "pgq_consumer_connection_up", &[("database", "queue")]),
        Some(1.0)
    );
    assert_eq!(web::sample(&metrics, "pgq_consumer_reconnects_total", &[]), Some(1.0));

    // And it consumes again.
    let client = cluster.connect("app").await;
    let ids = queue::produce_plain_batch(&client, QUEUE, 3).await;
    testq
        .wait_until("the events are done", async || queue::done(&client).await == ids)
        .await;
}

#[tokio::test]
async fn readiness_turns_503_when_the_consumer_is_unregistered_under_the_daemon() {
    let mut testq = TestqDb::installed("probes_unregistered").await;
    let endpoint = serve(&mut testq);
    testq.start().await;
    testq
        .wait_until("ready", async || status(&endpoint, "/health/ready").await == 200)
        .await;
    pgq::unregister_consumer(&testq.client, QUEUE, CONSUMER)
        .await
        .expect("unregister");
    testq
        .wait_until("not ready", async || status(&endpoint, "/health/ready").await == 503)
        .await;
    pgq::register_consumer(&testq.client, QUEUE, CONSUMER)
        .await
        .expect("register");
    testq
        .wait_until("ready again", async || status(&endpoint, "/health/ready").await == 200)
        .await;
}

#[tokio::test]
async fn liveness_turns_503_while_a_batch_runs_longer_than_stuck_after_and_200_when_it_is_done() {
    let mut testq = TestqDb::installed("probes_stuck").await;
    let endpoint = serve(&mut testq);
    testq.set("stuck_after", 1.0).setting("sleep_ms", 3000);
    testq.start().await;
    assert_eq!(status(&endpoint, "/health/live").await, 200);
    let ids = testq.produce_batch(&["plain"]).await;
    testq
        .wait_until("stuck", async || status(&endpoint, "/health/live").await == 503)
        .await;
    let live = web::json(&endpoint, "/health/live").await;
    assert_eq!(live["status"], "stuck", "{live}");
    assert!(live["round_seconds"].as_f64().is_some_and(|s| s >= 1.0), "{live}");
    testq
        .wait_until("live again", async || status(&endpoint, "/health/live").await == 200)
        .await;
    assert_eq!(testq.done().await, ids);
}
