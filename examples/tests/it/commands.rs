//! Every command of the consumer command line, through the real `testq`,
//! with its exit code: 0 ok, 1 usage or failure, 3 cannot connect, 4 daemon
//! in the wrong state.

use serde_json::Value;

use crate::support::testq::{TestqDb, CONSUMER, QUEUE, TESTQ};

#[tokio::test]
async fn check_exits_1_saying_to_install_until_install_creates_queue_registration_and_tables() {
    let testq = TestqDb::new("install_check").await.logging_to_stderr();
    let before = testq.run(&["check"]).await;
    assert_eq!(before.code, Some(1), "{before:?}");
    assert!(before.stderr.contains("the queue does not exist"), "{before:?}");
    assert!(before.stderr.contains("run the `install` command"), "{before:?}");

    let install = testq.ok(&["install"]).await;
    assert!(install.stdout.contains("queue \"testq\" created"), "{install:?}");
    assert!(install.stdout.contains("consumer \"testq\" registered"), "{install:?}");
    assert!(testq.queue_exists().await);
    assert!(testq.registered(CONSUMER).await);
    let tables: i64 = testq
        .client
        .query_one(
            "select count(*) from information_schema.tables \
              where (table_schema, table_name) in (('public', 'testq_done'), ('pgq_consumer', 'failed_event'))",
            &[],
        )
        .await
        .expect("count tables")
        .get(0);
    assert_eq!(tables, 2, "testq_done and the framework's failed-event store");

    let check = testq.ok(&["check"]).await;
    assert!(
        check.stdout.contains("exists and consumer \"testq\" is registered"),
        "{check:?}"
    );

    let again = testq.ok(&["install"]).await;
    assert!(
        again.stdout.contains("already"),
        "install is safe to run twice: {again:?}"
    );

    // Registered elsewhere but not here: check says so.
    testq
        .client
        .execute("select pgq.unregister_consumer($1, $2)", &[&QUEUE, &CONSUMER])
        .await
        .expect("unregister");
    let unregistered = testq.run(&["check"]).await;
    assert_eq!(unregistered.code, Some(1), "{unregistered:?}");
    assert!(unregistered.stderr.contains("not registered"), "{unregistered:?}");
    assert!(unregistered.stderr.contains("install"), "{unregistered:?}");
}

#[tokio::test]
async fn install_drop_queue_unregister_and_uninstall_are_refused_with_4_while_the_daemon_runs() {
    let testq = TestqDb::installed("refused_while_running").await;
    testq.ok(&["start"]).await;
    let pid = testq.pid().expect("the daemon's pidfile");
    for command in [
        &["install"][..],
        &["drop-queue"],
        &["unregister", "--force"],
        &["uninstall"],
    ] {
        let ran = testq.run(command).await;
        assert_eq!(ran.code, Some(4), "{command:?}: {ran:?}");
        assert!(
            ran.stderr.contains(&format!("daemon is running (pid {pid})")),
            "{command:?}: {ran:?}"
        );
    }
    assert!(testq.registered(CONSUMER).await, "nothing was changed");
    let start = testq.run(&["start"]).await;
    assert_eq!(start.code, Some(4), "already running: {start:?}");

    testq.ok(&["stop"]).await;
    let status = testq.run(&["status"]).await;
    assert_eq!(status.code, Some(4), "not running: {status:?}");
    let stop = testq.run(&["stop"]).await;
    assert_eq!(stop.code, Some(4), "not running: {stop:?}");
    testq.ok(&["install"]).await;
}

#[tokio::test]
async fn create_queue_drop_queue_and_their_underscore_aliases() {
    let testq = TestqDb::new("queue_commands").await.logging_to_stderr();
    let created = testq.ok(&["create-queue"]).await;
    assert_eq!(created.stdout.trim(), "queue \"testq\" created");
    assert!(testq.queue_exists().await);
    let again = testq.ok(&["create_queue"]).await;
    assert_eq!(again.stdout.trim(), "queue \"testq\" already exists");

    let dropped = testq.ok(&["drop-queue"]).await;
    assert_eq!(dropped.stdout.trim(), "queue \"testq\" dropped");
    assert!(!testq.queue_exists().await);
    testq.ok(&["create_queue"]).await;
    testq.ok(&["drop_queue"]).await;
    assert!(!testq.queue_exists().await);

    let missing = testq.run(&["drop-queue"]).await;
    assert_eq!(missing.code, Some(1), "no such queue: {missing:?}");
    assert!(missing.stderr.contains("testq"), "{missing:?}");
}

#[tokio::test]
async fn install_create_queue_and_check_without_pgq_exit_1_saying_to_create_the_extension() {
    let testq = TestqDb::new("no_pgq").await.logging_to_stderr();
    testq
        .client
        .batch_execute("drop extension pgq cascade")
        .await
        .expect("drop the pgq extension");
    for command in ["install", "create-queue", "check"] {
        let out = testq.run(&[command]).await;
        assert_eq!(out.code, Some(1), "{command}: {out:?}");
        assert!(
            out.stderr.contains("PgQ is not installed") && out.stderr.contains("create extension pgq"),
            "{command}: {out:?}"
        );
    }
    // Nothing of the framework was installed either.
    let row = testq
        .client
        .query_one("select to_regnamespace('pgq_consumer') is null", &[])
        .await
        .expect("look for the framework's schema");
    assert!(row.get::<_, bool>(0), "install stopped before installing anything");
}

#[tokio::test]
async fn register_and_unregister_which_refuses_the_only_consumer_without_force() {
    let testq = TestqDb::new("register").await.logging_to_stderr();
    testq.ok(&["create-queue"]).await;
    let registered = testq.ok(&["register"]).await;
    assert_eq!(
        registered.stdout.trim(),
        "consumer \"testq\" registered on queue \"testq\""
    );
    assert!(testq.registered(CONSUMER).await);
    let again = testq.ok(&["register"]).await;
    assert!(again.stdout.contains("already registered"), "{again:?}");

    let refused = testq.run(&["unregister"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("only consumer"), "{refused:?}");
    assert!(refused.stderr.contains("unregister --force"), "{refused:?}");
    assert!(testq.registered(CONSUMER).await, "still registered");

    let forced = testq.ok(&["unregister", "--force"]).await;
    assert_eq!(
        forced.stdout.trim(),
        "consumer \"testq\" unregistered from queue \"testq\""
    );
    assert!(!testq.registered(CONSUMER).await);
    let not_registered = testq.run(&["unregister", "--force"]).await;
    assert_eq!(not_registered.code, Some(1), "{not_registered:?}");
    assert!(not_registered.stderr.contains("not registered"), "{not_registered:?}");

    // With another consumer on the queue, no events would be lost: no --force needed.
    testq.ok(&["register"]).await;
    testq
        .client
        .execute("select pgq.register_consumer($1, 'other')", &[&QUEUE])
        .await
        .expect("register other");
    testq.ok(&["unregister"]).await;
    assert!(!testq.registered(CONSUMER).await);
    assert!(testq.registered("other").await);
}

#[tokio::test]
async fn unregister_counts_a_consumer_named_with_a_dot_but_not_its_own_sub_consumers() {
    let testq = TestqDb::new("unregdot").await.logging_to_stderr();
    testq.ok(&["create-queue"]).await;
    testq.ok(&["register"]).await;
    let client = &testq.client;
    let register = |name: String| async move {
        client
            .execute("select pgq.register_consumer($1, $2)", &[&QUEUE, &name])
            .await
            .expect("register a consumer");
    };
    // The pgq consumer of a sub-consumer of testq's reads for testq's group:
    // no other consumer of the queue.
    register(format!("{CONSUMER}.w1")).await;
    let refused = testq.run(&["unregister"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("only consumer"), "{refused:?}");
    // A consumer whose name holds a dot, of no group: another consumer.
    register("billing.v2".to_string()).await;
    testq.ok(&["unregister"]).await;
    assert!(!testq.registered(CONSUMER).await);
    assert!(testq.registered("billing.v2").await);
}

#[tokio::test]
async fn uninstall_unregisters_and_drops_the_queue_when_no_other_consumer_is_left() {
    let testq = TestqDb::installed("uninstall").await.logging_to_stderr();
    let out = testq.ok(&["uninstall"]).await;
    assert!(out.stdout.contains("unregistered"), "{out:?}");
    assert!(out.stdout.contains("dropped"), "{out:?}");
    assert!(!testq.queue_exists().await);
    let check = testq.run(&["check"]).await;
    assert_eq!(check.code, Some(1), "{check:?}");
}

#[tokio::test]
async fn run_once_processes_what_is_there_and_exits_0() {
    let testq = TestqDb::installed("run_once").await.logging_to_stderr();
    let ids = testq.produce_batch(&["plain", "plain", "retry", "plain"]).await;
    let more = testq.produce_batch(&["plain", "fail", "panic"]).await;

    let ran = testq.ok(&["run", "--once"]).await;
    assert!(ran.stderr.contains("done: event"), "it logs each event: {ran:?}");
    assert_eq!(
        testq.done().await,
        [ids[0], ids[1], ids[3], more[0]],
        "every event, exactly once (the retried one later)"
    );
    assert_eq!(testq.failed().await.len(), 2);
    let idle = testq.ok(&["run", "--once"]).await;
    assert!(!idle.stderr.contains("done: event"), "nothing left: {idle:?}");

    // The retried event, once due and ticked, is done by the next run.
    testq.requeue_due_retries(1).await;
    testq.ok(&["run", "--once"]).await;
    assert_eq!(testq.done().await, [ids[0], ids[1], ids[2], ids[3], more[0]]);
}

#[tokio::test]
async fn a_failing_round_backs_off_more_each_time_and_makes_run_once_exit_1() {
    let testq = TestqDb::installed("failing_round").await.logging_to_stderr();
    let ids = testq.produce_batch(&["plain", "plain"]).await;
    // The handler's table is gone: every try of the batch fails.
    testq
        .client
        .batch_execute("alter table testq_done rename to gone")
        .await
        .expect("rename");

    let once = testq.run(&["run", "--once"]).await;
    assert_eq!(once.code, Some(1), "cron must hear of it: {once:?}");
    assert!(once.stderr.contains("testq_done"), "the cause is told: {once:?}");

    // As a daemon it keeps trying, resting longer each time.
    let mut daemon = testq.spawn(&["run"], "testq-run.out", &[]);
    testq
        .wait_until("three failed tries", async || {
            daemon.output().matches("trying again in").count() >= 3
        })
        .await;
    let waits: Vec<f64> = daemon
        .output()
        .lines()
        .filter_map(|l| l.split("trying again in ").nth(1))
        .filter_map(|w| w.trim_end_matches('s').parse().ok())
        .collect();
    assert!(
        waits.windows(2).all(|w| w[1] > w[0]),
        "growing back-off: {waits:?}\n{}",
        daemon.output()
    );

    // Once the table is back, the batch comes again and is done, once.
    testq
        .client
        .batch_execute("alter table gone rename to testq_done")
        .await
        .expect("rename");
    testq
        .wait_until("the batch is done", async || testq.done().await.len() == 2)
        .await;
    assert_eq!(testq.done().await, ids);
    testq.ok(&["stop"]).await;
    assert_eq!(daemon.wait().await, Some(0), "{}", daemon.output());
}

#[tokio::test]
async fn failed_lists_each_failed_event_and_json_gives_one_object_per_line() {
    let testq = TestqDb::installed("failed_list").await.logging_to_stderr();
    let empty = testq.ok(&["failed"]).await;
    assert_eq!(
        empty.stdout.trim(),
        "no failed events for consumer \"testq\" on queue \"testq\""
    );
    assert_eq!(testq.ok(&["failed", "--json"]).await.stdout, "", "no lines in JSON");

    let ids = testq.produce_batch(&["fail", "plain", "panic"]).await;
    testq.ok(&["run", "--once"]).await;

    let listed = testq.ok(&["failed"]).await;
    let lines: Vec<Vec<&str>> = listed.stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{listed:?}");
    // id, failed time, retry count, type, data, reason
    assert_eq!(lines[0][0], ids[0].to_string());
    assert_eq!(
        lines[0][2..],
        [
            "0",
            "fail",
            "payload 0",
            &format!("testq: event {} has type fail", ids[0])
        ]
    );
    assert_eq!(lines[1][0], ids[2].to_string());
    assert_eq!(
        lines[1][2..],
        [
            "0",
            "panic",
            "payload 2",
            &format!("panic: testq: event {} has type panic", ids[2])
        ]
    );

    let json = testq.ok(&["failed", "--json"]).await;
    let objects: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["ev_id"], ids[0]);
    assert_eq!(objects[0]["ev_type"], "fail");
    assert_eq!(objects[0]["ev_data"], "payload 0");
    assert_eq!(objects[0]["ev_retry"], Value::Null);
    assert_eq!(objects[0]["reason"], format!("testq: event {} has type fail", ids[0]));
    assert_eq!(objects[1]["ev_id"], ids[2]);
    assert!(objects[1]["failed_time"].as_str().is_some_and(|t| t.contains('T')));
}

#[tokio::test]
async fn delete_drops_failed_events_by_id_or_all_and_an_unknown_id_exits_1() {
    let testq = TestqDb::installed("delete").await.logging_to_stderr();
    let ids = testq.produce_batch(&["fail", "fail", "fail", "plain"]).await;
    testq.ok(&["run", "--once"]).await;
    assert_eq!(testq.failed().await.len(), 3);

    let one = testq.ok(&["delete", &ids[1].to_string()]).await;
    assert_eq!(one.stdout.trim(), "1 failed event(s) deleted");
    let left: Vec<i64> = testq.failed().await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(left, [ids[0], ids[2]]);

    let unknown = testq.run(&["delete", &ids[3].to_string()]).await;
    assert_eq!(unknown.code, Some(1), "a done event is not a failed one: {unknown:?}");
    assert!(unknown.stderr.contains("not failed events"), "{unknown:?}");

    let all = testq.ok(&["delete", "all"]).await;
    assert_eq!(all.stdout.trim(), "2 failed event(s) deleted");
    assert!(testq.failed().await.is_empty());
    let none = testq.ok(&["delete", "all"]).await;
    assert_eq!(none.stdout.trim(), "0 failed event(s) deleted");
}

#[tokio::test]
async fn retry_puts_failed_events_back_for_this_consumer_and_they_are_processed_again() {
    let testq = TestqDb::installed("retry").await.logging_to_stderr();
    testq
        .client
        .execute("select pgq.register_consumer($1, 'other')", &[&QUEUE])
        .await
        .expect("register other");
    let ids = testq.produce_batch(&["fail", "fail", "plain"]).await;
    testq.ok(&["run", "--once"]).await;
    assert_eq!(testq.done().await, [ids[2]]);

    // An event stored as failed whose cause is gone (here, a plain event
    // failed by hand): retried, testq does it this time.
    let plain = testq.produce_batch(&["plain"]).await[0];
    let batch = pgq::next_batch_info(&testq.client, QUEUE, CONSUMER)
        .await
        .expect("next_batch_info")
        .expect("a batch");
    pgq_consumers::failed::add_from_batch(&testq.client, batch.batch_id, plain, "the disk was full")
        .await
        .expect("add failed event");
    pgq::finish_batch(&testq.client, batch.batch_id).await.expect("finish");

    let one = testq.ok(&["retry", &plain.to_string()]).await;
    assert_eq!(
        one.stdout.trim(),
        "1 failed event(s) put back into queue \"testq\" for consumer \"testq\""
    );
    assert_eq!(testq.maint_retry_events().await, 1);
    testq.tick().await;
    testq.ok(&["run", "--once"]).await;
    assert_eq!(testq.done().await, [ids[2], plain], "the retried event was processed");

    let unknown = testq.run(&["retry", &plain.to_string()]).await;
    assert_eq!(unknown.code, Some(1), "not a failed event any more: {unknown:?}");

    // retry all: both fail events come back, with ev_retry 1, and fail again.
    let all = testq.ok(&["retry", "all"]).await;
    assert!(all.stdout.starts_with("2 failed event(s) put back"), "{all:?}");
    assert!(testq.failed().await.is_empty());
    assert_eq!(testq.maint_retry_events().await, 2);
    testq.tick().await;
    testq.ok(&["run", "--once"]).await;
    let json = testq.ok(&["failed", "--json"]).await;
    let back: Vec<(i64, i64)> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .map(|v| (v["ev_id"].as_i64().unwrap_or(-1), v["ev_retry"].as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(back, [(ids[0], 1), (ids[1], 1)]);
    assert_eq!(testq.done().await, [ids[2], plain], "nothing done twice");

    // The other consumer never saw the retried events again.
    let mut other = Vec::new();
    while let Some(b) = pgq::next_batch(&testq.client, QUEUE, "other")
        .await
        .expect("next_batch")
    {
        other.extend(
            pgq::get_batch_events(&testq.client, b)
                .await
                .expect("events")
                .into_iter()
                .map(|e| e.ev_id),
        );
        pgq::finish_batch(&testq.client, b).await.expect("finish");
    }
    assert_eq!(other, [ids.clone(), vec![plain]].concat());
}

#[tokio::test]
async fn usage_errors_exit_1_with_a_clear_message() {
    let testq = TestqDb::installed("usage").await.logging_to_stderr();
    let bad_id = testq.run(&["delete", "abc"]).await;
    assert_eq!(bad_id.code, Some(1), "{bad_id:?}");
    assert!(
        bad_id
            .stderr
            .contains("\"abc\" is not an event id (a whole number) nor `all`"),
        "{bad_id:?}"
    );
    let retry_bad = testq.run(&["retry", "12x"]).await;
    assert_eq!(retry_bad.code, Some(1), "{retry_bad:?}");
    assert!(retry_bad.stderr.contains("\"12x\" is not an event id"), "{retry_bad:?}");
    let no_id = testq.run(&["delete"]).await;
    assert_eq!(no_id.code, Some(1), "{no_id:?}");
    let unknown = testq.run(&["frobnicate"]).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(unknown.stderr.contains("frobnicate"), "{unknown:?}");
    let help = testq.run(&["--help"]).await;
    assert_eq!(help.code, Some(0), "{help:?}");
    assert!(help.stdout.contains("retry"), "{help:?}");
}

#[tokio::test]
async fn config_problems_exit_1_naming_the_file_the_key_or_the_line() {
    let mut testq = TestqDb::new("config_errors").await.logging_to_stderr();
    let missing = testq.path("nowhere.toml");
    let ran = tokio::process::Command::new(TESTQ)
        .arg("-c")
        .arg(&missing)
        .arg("check")
        .output()
        .await
        .expect("run testq");
    assert_eq!(ran.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");

    testq.set("batch_size", 10);
    let unknown = testq.run(&["check"]).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(unknown.stderr.contains("batch_size"), "{unknown:?}");
    assert!(unknown.stderr.contains("testq.toml"), "{unknown:?}");
    testq.unset("batch_size");

    // A syntax error in the config's last line.
    let config = std::fs::read_to_string(testq.config_path()).expect("read the config");
    let broken = format!("{config}delay = = 3\n");
    testq.write_config(&broken);
    let syntax = testq.run(&["check"]).await;
    assert_eq!(syntax.code, Some(1), "{syntax:?}");
    let line = broken.lines().count();
    assert!(syntax.stderr.contains(&format!("line {line}")), "{syntax:?}");

    testq.setting("mode", "sideways");
    let settings = testq.run(&["run", "--once"]).await;
    assert_eq!(settings.code, Some(1), "{settings:?}");
    assert!(settings.stderr.contains("sideways"), "{settings:?}");
}

#[tokio::test]
async fn an_unreachable_database_exits_3() {
    let mut testq = TestqDb::new("unreachable").await.logging_to_stderr();
    testq.set(
        "db",
        "host=127.0.0.1 port=1 user=postgres dbname=nowhere connect_timeout=2",
    );
    for command in [&["check"][..], &["install"], &["failed"], &["run", "--once"]] {
        let ran = testq.run(command).await;
        assert_eq!(ran.code, Some(3), "{command:?}: {ran:?}");
        assert!(ran.stderr.contains("cannot connect"), "{command:?}: {ran:?}");
        assert!(ran.stderr.contains("127.0.0.1:1"), "{command:?}: {ran:?}");
    }
}
