//! The command line against a real database.

use std::time::{Duration, Instant};

use pgq_test_support::{wait_for, Pgqd, TestDb};

use crate::support::{admin, admin_json, consumer, framework_db, insert, ours, python_consumer, queue};

/// Queues consumed by a consumer of ours, by a Skytools Python consumer and
/// by one that does not run, with pgqd ticking: `consumers` gives each its
/// right pending count and lag, `status` names pgqd as the ticker and shows
/// every consumer, ours or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_ours_pythons_and_a_stopped_consumer_with_right_lag_and_pending() {
    let (db, client) = framework_db().await.unwrap();
    queue(&client, "orders").await.unwrap();
    queue(&client, "legacy").await.unwrap();
    let _pgqd = Pgqd::start(&db, 0.1);
    // PgQ estimates pending events from event sequence values; a queue's
    // sequence reads 1 before its first event as after it, so a consumer
    // that registered before the first event would be counted one short.
    insert(&client, "orders", "order", "primer").await.unwrap();
    wait_for("the primer to be ticked", Duration::from_secs(10), || async {
        let q = pgq::get_queue_info(&client, "orders").await.unwrap().unwrap();
        (q.ev_new == Some(0) && q.last_tick_id > Some(1)).then_some(())
    })
    .await;
    let registered = Instant::now();
    pgq::register_consumer(&client, "orders", "audit").await.unwrap();
    let _mailer = ours(&db, &client, "orders", "mailer").await.unwrap();
    let _py = python_consumer(&db, &client, "legacy", "py_legacy").await.unwrap();

    for i in 0..3 {
        insert(&client, "orders", "order", &format!("order {i}")).await.unwrap();
        insert(&client, "legacy", "row", &format!("row {i}")).await.unwrap();
    }
    insert(&client, "orders", "bad", "broken order").await.unwrap();

    let dsn = db.dsn().to_string();
    let list = wait_for("the consumers to be where they should", Duration::from_secs(30), || {
        let dsn = dsn.clone();
        async move {
            let list = admin_json(&dsn, &["consumers"]);
            let pending = |q: &str, c: &str| consumer(&list, q, c).and_then(|c| c["pending_events"].as_i64());
            let failed = |q: &str, c: &str| consumer(&list, q, c).and_then(|c| c["failed"].as_u64());
            (pending("orders", "audit") == Some(4)
                && pending("orders", "mailer") == Some(0)
                && failed("orders", "mailer") == Some(1)
                && pending("legacy", "py_legacy") == Some(0))
            .then_some(list)
        }
    })
    .await;
    let elapsed = registered.elapsed().as_secs_f64();
    let lag = |q: &str, c: &str| consumer(&list, q, c).unwrap()["lag"].as_f64().unwrap();
    // The stopped consumer's last tick is the one it registered at.
    assert!(
        lag("orders", "audit") + 0.5 >= elapsed,
        "audit's lag {} after {elapsed}s",
        lag("orders", "audit")
    );
    assert!(
        lag("orders", "mailer") < 5.0,
        "mailer's lag {}",
        lag("orders", "mailer")
    );
    assert!(
        lag("legacy", "py_legacy") < 5.0,
        "the Python consumer's lag {}",
        lag("legacy", "py_legacy")
    );
    // A Python consumer has no failed-event store of ours: 0, not an error.
    assert_eq!(consumer(&list, "legacy", "py_legacy").unwrap()["failed"], 0);
    // Ours names its connection after itself.
    assert!(
        consumer(&list, "orders", "mailer").unwrap()["sessions"]
            .as_i64()
            .unwrap()
            >= 1
    );

    // pgqd runs `select pgq.ticker()` and its maintenance without an application_name.
    let status = wait_for("status to name pgqd", Duration::from_secs(15), || {
        let dsn = dsn.clone();
        async move {
            let out = admin(&["-d", &dsn, "status"]);
            assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            text.contains("ticking: pgqd (backend pid").then_some(text)
        }
    })
    .await;
    let row = |queue: &str, name: &str| {
        status
            .lines()
            .find(|l| l.split_whitespace().take(2).eq([queue, name]))
            .unwrap_or_else(|| panic!("no row for {queue}/{name} in\n{status}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // QUEUE CONSUMER LAG LAST-SEEN PENDING BATCH FAILED SUBS SESSIONS
    assert_eq!(row("orders", "audit")[4], "4", "{status}");
    assert_eq!(row("orders", "mailer")[4], "0", "{status}");
    assert_eq!(row("orders", "mailer")[6], "1", "{status}");
    assert_eq!(row("legacy", "py_legacy")[4], "0", "{status}");
    assert!(status.contains("QUEUE   EV/S"), "{status}");
}

/// Sub-consumers are told by their group: a consumer whose name holds a
/// dot but who belongs to no group is listed as a consumer, and a
/// sub-consumer whose own name holds a dot is listed under its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_tell_sub_consumers_by_their_group_whatever_dots_the_names_hold() {
    let (db, client) = framework_db().await.unwrap();
    queue(&client, "orders").await.unwrap();
    client.execute("select pgq.ticker('orders')", &[]).await.unwrap();
    pgq::register_consumer(&client, "orders", "billing.v2").await.unwrap();
    pgq_consumers::coop::register(&client, "orders", "grp", "w.1")
        .await
        .unwrap();
    pgq_consumers::coop::register(&client, "orders", "grp", "w2")
        .await
        .unwrap();

    let list = admin_json(db.dsn(), &["consumers"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    assert!(consumer(&list, "orders", "billing.v2").is_some(), "{list}");
    let mut subs: Vec<&str> = consumer(&list, "orders", "grp").expect("the group")["subconsumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    subs.sort();
    assert_eq!(subs, ["w.1", "w2"], "{list}");
}

/// `failed` filters by type and text; `retry ID` puts one back and it
/// reaches the consumer again; `delete all` drops the rest; ids that are not
/// failed events are a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_events_are_listed_filtered_retried_and_deleted() {
    let (db, client) = framework_db().await.unwrap();
    queue(&client, "orders").await.unwrap();
    let _pgqd = Pgqd::start(&db, 0.1);
    let mailer = ours(&db, &client, "orders", "mailer").await.unwrap();
    let a = insert(&client, "orders", "bad", "first broken").await.unwrap();
    let b = insert(&client, "orders", "bad", "second broken").await.unwrap();
    insert(&client, "orders", "order", "fine").await.unwrap();
    let dsn = db.dsn().to_string();
    wait_for("two failed events", Duration::from_secs(20), || {
        let dsn = dsn.clone();
        async move { (admin_json(&dsn, &["failed", "orders", "mailer"]).as_array()?.len() == 2).then_some(()) }
    })
    .await;

    let second = admin_json(&dsn, &["failed", "orders", "mailer", "--grep", "second"]);
    assert_eq!(second.as_array().unwrap().len(), 1);
    assert_eq!(second[0]["ev_id"], b);
    assert_eq!(second[0]["reason"], "cannot handle second broken");
    assert_eq!(
        admin_json(&dsn, &["failed", "orders", "mailer", "--type", "order"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let table = admin(&["-d", &dsn, "failed", "orders", "mailer", "--type", "bad"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("EV_ID"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");

    let out = admin(&["-d", &dsn, "retry", "orders", "mailer", &a.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the retried event to come again", Duration::from_secs(20), || {
        let seen = mailer.seen.lock().unwrap().clone();
        async move { seen.iter().any(|(id, retry, _)| *id == a && *retry == 1).then_some(()) }
    })
    .await;

    let out = admin(&["-d", &dsn, "retry", "orders", "mailer", &a.to_string()]);
    assert_eq!(out.status.code(), Some(1), "an id that is no failed event any more");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not failed events"));
    let out = admin(&["-d", &dsn, "delete", "orders", "mailer", "x1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an event id"));

    // A mistyped consumer or queue is said to be one, with what exists.
    let out = admin(&["-d", &dsn, "failed", "orders", "mailr"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("consumer \"mailr\" is not registered on queue \"orders\"") && said.contains("mailer"),
        "{said}"
    );
    let out = admin(&["-d", &dsn, "failed", "ordrs", "mailer"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no queue \"ordrs\""));
    // So are they by retry and delete, which would otherwise find nothing to do.
    for command in ["retry", "delete"] {
        let out = admin(&["-d", &dsn, command, "orders", "mailr", "all"]);
        assert_eq!(out.status.code(), Some(1), "{command}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("consumer \"mailr\" is not registered"),
            "{command}: {out:?}"
        );
    }
    // A negative count is refused by the arguments, before any query.
    let out = admin(&["-d", &dsn, "failed", "orders", "mailer", "--offset=-5"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let deleted = admin_json(&dsn, &["delete", "orders", "mailer", "all"]);
    assert_eq!(deleted["deleted"], 1);
    assert_eq!(
        admin_json(&dsn, &["failed", "orders", "mailer"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// With pgq_reader only, every read works; `tick` and `config KEY VALUE`
/// are refused naming pgq_admin (exit 1); with pgq_admin they work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reads_and_refused_writes_name_the_role_they_need() {
    let (db, client) = framework_db().await.unwrap();
    queue(&client, "orders").await.unwrap();
    pgq::register_consumer(&client, "orders", "audit").await.unwrap();
    let role = format!("{}_reader", db.name());
    client
        .batch_execute(&format!("create role {role} login in role pgq_reader"))
        .await
        .unwrap();
    let dsn = format!("{} user={role}", db.dsn());
    for cmd in [
        &["status"][..],
        &["queues"],
        &["consumers", "orders"],
        &["failed", "orders", "audit"],
        &["config", "orders"],
    ] {
        let mut args = vec!["-d", dsn.as_str()];
        args.extend_from_slice(cmd);
        let out = admin(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = admin(&["-d", &dsn, "tick", "orders"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tick was refused: it needs the role pgq_admin"), "{err}");
    let out = admin(&["-d", &dsn, "config", "orders", "ticker_max_count", "10"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config was refused: it needs the role pgq_admin"));

    client
        .batch_execute(&format!("grant pgq_admin to {role}"))
        .await
        .unwrap();
    let before = pgq::get_queue_info(&client, "orders")
        .await
        .unwrap()
        .unwrap()
        .last_tick_id;
    let ticked = admin_json(&dsn, &["tick", "orders"]);
    assert!(ticked["tick_id"].as_i64() > before, "{ticked}");
    let set = admin_json(&dsn, &["config", "orders", "ticker_max_count", "10"]);
    assert_eq!(set["value"], "10");
    let out = admin(&["-d", &dsn, "config", "orders", "ticker_max_cnt", "10"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the settings are ticker_max_count"));
}

/// Exit codes: 3 when the database cannot be reached, 4 when it has no
/// PgQ, 1 for a queue that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_cannot_connect_no_pgq_and_usage_apart() {
    let out = admin(&["-d", "host=127.0.0.1 port=1 connect_timeout=2", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let empty = TestDb::create_empty().await;
    let out = admin(&["-d", empty.dsn(), "status"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no PgQ"));
    let (db, _client) = framework_db().await.unwrap();
    let out = admin(&["-d", db.dsn(), "consumers", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no queue \"nosuch\""));
    // The DSN may come from PGQ_DB.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgq-admin"))
        .arg("queues")
        .env("PGQ_DB", db.dsn())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
