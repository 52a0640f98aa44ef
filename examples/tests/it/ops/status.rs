//! `status --json`: every field `status` prints, under the documented names.

use crate::support::testq::{TestqDb, CONSUMER, QUEUE};

#[tokio::test]
async fn status_json_gives_every_field_of_status_under_its_documented_name() {
    let mut testq = TestqDb::installed("status_json").await;
    testq.setting("mode", "local");
    let stopped = testq.run(&["status", "--json"]).await;
    assert_eq!(stopped.code, Some(4), "{stopped:?}");
    let json: serde_json::Value = serde_json::from_str(stopped.stdout.trim()).expect("one JSON object");
    assert_eq!(json["running"], false);
    assert_eq!(json["pid"], serde_json::Value::Null);

    let ids = testq.produce_batch(&["fail", "plain"]).await;
    let pid = testq.start().await;
    testq
        .wait_until("the batch is done", async || testq.done().await.len() == 1)
        .await;
    let ran = testq.ok(&["status", "--json"]).await;
    assert_eq!(ran.stdout.lines().count(), 1, "one line: {ran:?}");
    let json: serde_json::Value = serde_json::from_str(ran.stdout.trim()).expect("one JSON object");
    let fields: Vec<&str> = json
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "name",
        "running",
        "pid",
        "queue",
        "consumer",
        "subconsumer",
        "queue_exists",
        "last_tick_seconds",
        "tick_due_seconds",
        "tick_overdue",
        "ticker_paused",
        "events_waiting",
        "ticker_enabled",
        "ticker_leader",
        "registered",
        "lag_seconds",
        "pending_events",
        "last_seen_seconds",
        "batches_in_flight",
        "failed_events",
        "error",
    ];
    let mut got = fields.clone();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected, "{json}");
    assert_eq!(json["name"], CONSUMER);
    assert_eq!(json["running"], true);
    assert_eq!(json["pid"], pid);
    assert_eq!(json["queue"], QUEUE);
    assert_eq!(json["consumer"], CONSUMER);
    assert_eq!(json["registered"], true);
    assert_eq!(json["failed_events"], 1, "{ids:?}");
    assert_eq!(json["pending_events"], 0);
    assert!(json["lag_seconds"].as_f64().is_some(), "{json}");
    assert!(json["last_tick_seconds"].as_f64().is_some(), "{json}");
    assert_eq!(json["batches_in_flight"], serde_json::json!([]));
    assert_eq!(json["error"], serde_json::Value::Null);

    // The text says the same.
    let text = testq.ok(&["status"]).await.stdout;
    assert!(
        text.contains("failed events: 1") && text.contains("batch in flight: none"),
        "{text}"
    );
}
