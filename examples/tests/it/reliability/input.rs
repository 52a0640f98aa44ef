//! Bad input gets a clear error and the documented exit code, through the
//! real binary; hostile names are plain names. What `commands.rs` and
//! `daemon.rs` already show (a missing config file, a TOML syntax error, an
//! unknown key, an unreachable database, `check` and `start` before
//! `install`, a non-numeric event id) is not repeated here.

use pgq_test_support::TestDb;

use crate::support::queue::{produce_plain, tick};
use crate::support::testq::Testq;

#[tokio::test]
async fn config_values_of_the_wrong_type_exit_1_naming_the_key_and_the_line() {
    let cases: [(&str, toml::Value); 5] = [
        ("delay", "fast".into()),
        ("queue", 5.into()),
        ("loglevel", 3.into()),
        ("fetch_size", (-1).into()),
        ("remote_db", toml::Value::Array(vec![])),
    ];
    for (key, value) in cases {
        let mut testq = Testq::new(&format!("type_{key}"), "host=127.0.0.1 port=1", "q", "c");
        testq.set(key, value.clone());
        let ran = testq.run(&["check"]).await;
        assert_eq!(ran.code, Some(1), "{key} = {value}: {ran:?}");
        assert!(
            ran.stderr.contains(&format!("`{key}`")) || ran.stderr.contains(key),
            "{key}: {ran:?}"
        );
        assert!(ran.stderr.contains("line "), "{key}: names the line: {ran:?}");
        assert!(ran.stderr.contains("testq.toml"), "{key}: names the file: {ran:?}");
    }

    // A filter that is not a list of strings.
    let mut testq = Testq::new("type_filter", "host=127.0.0.1 port=1", "q", "c");
    testq.set("filter", toml::toml! { ev_type = "plain" });
    let ran = testq.run(&["check"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("ev_type"), "{ran:?}");

    // testq's own settings, a typed `Settings`: read by `check` (before
    // connecting), `run` and `start` alike, naming the key.
    let db = TestDb::create().await;
    let mut testq = Testq::new("type_settings", db.dsn(), "q", "c");
    testq.ok(&["install"]).await;
    let cases: [(&str, toml::Value, &str); 3] = [
        (
            "sleep_ms",
            "slow".into(),
            "invalid type: string \"slow\", expected u64\nin `sleep_ms`",
        ),
        (
            "mode",
            "sideways".into(),
            "unknown variant `sideways`, expected one of `local`, `remote`, `remote_event`",
        ),
        ("sleeps", 1.into(), "unknown field `sleeps`"),
    ];
    for (key, value, said) in cases {
        testq.setting(key, value);
        for command in [&["check"][..], &["run", "--once"]] {
            let ran = testq.run(command).await;
            assert_eq!(ran.code, Some(1), "{command:?} {ran:?}");
            assert!(ran.stderr.contains("[settings] is not valid"), "{ran:?}");
            assert!(ran.stderr.contains(said), "{command:?}: {said}: {ran:?}");
        }
        testq.unset_setting(key);
    }
    testq.ok(&["check"]).await;
}

#[tokio::test]
async fn an_event_id_out_of_range_exits_1_before_connecting() {
    let testq = Testq::new("id_range", "host=127.0.0.1 port=1", "q", "c");
    for command in ["delete", "retry"] {
        let ran = testq.run(&[command, "99999999999999999999"]).await;
        assert_eq!(ran.code, Some(1), "{ran:?}");
        assert!(
            ran.stderr
                .contains("\"99999999999999999999\" is not an event id (a whole number) nor `all`"),
            "{ran:?}"
        );
    }
}

#[tokio::test]
async fn failed_retry_delete_and_run_before_install_exit_1_saying_to_run_install() {
    let db = TestDb::create().await;
    let testq = Testq::new("not_installed", db.dsn(), "testq", "testq");
    for command in [
        &["failed"][..],
        &["retry", "all"],
        &["delete", "all"],
        &["retry", "7"],
        &["run", "--once"],
    ] {
        let ran = testq.run(command).await;
        assert_eq!(ran.code, Some(1), "{command:?}: {ran:?}");
        let said = format!("{}{}", ran.stderr, testq.log());
        assert!(said.contains("run the `install` command first"), "{command:?}: {said}");
    }

    // The queue alone is not enough.
    testq.ok(&["create-queue"]).await;
    let ran = testq.run(&["run", "--once"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let said = format!("{}{}", ran.stderr, testq.log());
    assert!(
        said.contains(
            "the consumer is not registered (queue \"testq\", consumer \"testq\"): run the `install` command first"
        ),
        "{said}"
    );

    // Nor are the queue and the consumer without the framework's SQL.
    testq.ok(&["register"]).await;
    let ran = testq.run(&["run", "--once"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let said = format!("{}{}", ran.stderr, testq.log());
    let missing = format!(
        "the framework's SQL (schema pgq_consumer) in the queue database is not installed; this program needs \
         version {}: run the `install` command first",
        pgq_consumers::schema::VERSION
    );
    assert!(said.contains(&missing), "{said}");
}

#[tokio::test]
async fn hostile_queue_consumer_subconsumer_and_filter_names_are_plain_names_end_to_end() {
    let db = TestDb::create().await;
    let client = db.connect().await;
    client
        .batch_execute("create table x (id int)")
        .await
        .expect("a table an injection would drop");
    let queue = "q'; drop table x; --";
    let consumer = "c\"; drop table x; --";
    let sub = "w'); drop table testq_done; --";
    let hostile_type = "it's\"; drop table testq_done; --";
    let mut testq = Testq::new("hostile", db.dsn(), queue, consumer);
    testq.set("subconsumer", sub).set(
        "filter",
        toml::toml! { ev_type = ["plain", "fail", "it's\"; drop table testq_done; --"] },
    );

    let install = testq.ok(&["install"]).await;
    assert!(
        install.stdout.contains("queue \"q'; drop table x; --\" created"),
        "{install:?}"
    );
    testq.ok(&["check"]).await;

    let ids = produce_plain(&client, queue, 2).await;
    let row = client
        .query_one(
            "select pgq.insert_event($1, 'fail', 'f') as fail, pgq.insert_event($1, $2, 'h') as hostile,
                    pgq.insert_event($1, 'other', 'o') as other",
            &[&queue, &hostile_type],
        )
        .await
        .expect("insert events");
    let (fail, hostile): (i64, i64) = (row.get("fail"), row.get("hostile"));
    tick(&client, queue).await;
    testq.ok(&["run", "--once"]).await;

    let done: Vec<(i64, String)> = client
        .query("select ev_id, ev_type from testq_done order by ev_id", &[])
        .await
        .expect("testq_done is still there")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        done,
        [
            (ids[0], "plain".to_string()),
            (ids[1], "plain".to_string()),
            (hostile, hostile_type.to_string())
        ],
        "the filter let the hostile type through as a value, and `other` not"
    );

    let failed = testq.ok(&["failed"]).await;
    assert!(failed.stdout.starts_with(&format!("{fail}\t")), "{failed:?}");
    let retried = testq.ok(&["retry", "all"]).await;
    assert!(
        retried.stdout.contains(
            "1 failed event(s) put back into queue \"q'; drop table x; --\" for consumer \"c\\\"; drop table x; --\""
        ),
        "{retried:?}"
    );
    let status = testq.run(&["status"]).await;
    assert_eq!(status.code, Some(4), "not running: {status:?}");
    assert!(status.stdout.contains("queue: q'; drop table x; --"), "{status:?}");
    assert!(
        status.stdout.contains("subconsumer: w'); drop table testq_done; --"),
        "{status:?}"
    );

    let uninstall = testq.ok(&["uninstall"]).await;
    assert!(uninstall.stdout.contains("dropped"), "{uninstall:?}");
    let x: i64 = client
        .query_one("select count(*) from x", &[])
        .await
        .expect("table x is still there")
        .get(0);
    assert_eq!(x, 0);
}
