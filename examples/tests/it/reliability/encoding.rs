//! Bytes that cannot be decoded: in a database whose encoding is
//! `SQL_ASCII` (legacy PgQ installations have them), an event's text may hold
//! bytes that are not UTF-8, which PostgreSQL refuses to send as text. Such an
//! event must not stop the queue: it is stored as failed, its bytes kept, and
//! every other event of its batch is done once.

use pgq_test_support::TestDb;

use crate::support::queue::{count, produce_plain, tick};
use crate::support::testq::{Testq, CONSUMER, QUEUE};

/// The payload of the poison event, as an SQL string literal.
const BAD: &str = r"E'bad-\xff\xfe'";

async fn poison_payload(mode: &str) {
    let db = TestDb::create_sql_ascii().await;
    let client = db.connect().await;
    let remote = TestDb::create_empty().await;
    let mut testq = Testq::new(&format!("encoding_{mode}"), db.dsn(), QUEUE, CONSUMER);
    testq.log_to_stderr().setting("mode", mode);
    if mode != "local" {
        testq.set("remote_db", remote.dsn());
    }
    testq.ok(&["install"]).await;
    let before = produce_plain(&client, QUEUE, 3).await;
    let bad: i64 = client
        .query_one(&format!("select pgq.insert_event('{QUEUE}', 'plain', {BAD})"), &[])
        .await
        .expect("insert the poison event")
        .get(0);
    let after = produce_plain(&client, QUEUE, 3).await;
    tick(&client, QUEUE).await;

    // One run does the batch: the poison event does not stop it.
    let ran = testq.run(&["run", "--once"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stderr.contains(&format!("event {bad} of batch")) && ran.stderr.contains("stored as failed"),
        "a WARNING names the event: {ran:?}"
    );
    let target = if mode == "local" {
        client
    } else {
        remote.connect().await
    };
    let done: Vec<i64> = target
        .query("select ev_id from testq_done order by ev_id", &[])
        .await
        .expect("testq_done")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(done, [before, after].concat(), "the other events, once each");
    let client = db.connect().await;

    // The failed-event store has it, bytes and all.
    let kept: bool = client
        .query_one(
            &format!("select ev_data = {BAD} from pgq_consumer.failed_event where ev_id = $1"),
            &[&bad],
        )
        .await
        .expect("the stored event")
        .get(0);
    assert!(kept, "its bytes are kept as they were");
    let listed = testq.ok(&["failed"]).await;
    assert!(listed.stdout.contains(&format!("{bad}\t")), "{listed:?}");
    assert!(
        listed.stdout.contains("bad-\u{FFFD}\u{FFFD}"),
        "shown, lossily: {listed:?}"
    );
    assert!(
        listed.stdout.contains("undecodable: ev_data is not valid UTF-8"),
        "{listed:?}"
    );
    let json = testq.ok(&["failed", "--json"]).await;
    assert!(json.stdout.contains("undecodable"), "{json:?}");

    // The queue moved on: the next batch is done too.
    let next = produce_plain(&client, QUEUE, 2).await;
    tick(&client, QUEUE).await;
    testq.ok(&["run", "--once"]).await;
    let target = if mode == "local" {
        db.connect().await
    } else {
        remote.connect().await
    };
    assert_eq!(count(&target, "testq_done").await, 8, "and {next:?}");

    // Put back, it comes again (as it was) and is stored as failed again.
    testq.ok(&["retry", &bad.to_string()]).await;
    assert_eq!(count(&client, "pgq_consumer.failed_event").await, 0);
}

#[tokio::test]
async fn a_local_consumer_stores_an_event_whose_bytes_are_not_utf8_as_failed_and_the_queue_moves_on() {
    poison_payload("local").await;
}

#[tokio::test]
async fn a_remote_consumer_stores_an_event_whose_bytes_are_not_utf8_as_failed_and_the_queue_moves_on() {
    poison_payload("remote").await;
}
