//! Least privilege, as the README's "Privileges" section says it: `install`
//! run by a role that is not a superuser, holding `pgq_admin` and CREATE on
//! the databases and their `public` schema; the consumer then run by a login
//! role holding only `pgq_reader` and the rights on its own tables
//! (`testq_done`), locally and remotely. What it may not do is refused.

use std::time::{SystemTime, UNIX_EPOCH};

use pgq_test_support::{server_dsn, TestDb};
use tokio_postgres::Client;

use crate::support::queue::{done, produce_plain, tick};
use crate::support::testq::Testq;

/// A connection string for `db` as `role`: the test server's, with user and
/// database replaced.
fn dsn_as(role: &str, db: &str) -> String {
    let server = server_dsn();
    let base: Vec<&str> = server
        .split_whitespace()
        .filter(|kv| !kv.starts_with("user=") && !kv.starts_with("dbname="))
        .collect();
    format!("{} user={role} dbname={db} sslmode=disable", base.join(" "))
}

/// Runs SQL in a database as the test server's superuser.
async fn as_admin(db: &TestDb, sql: &str) {
    let client = db.connect().await;
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

async fn is_superuser(admin: &Client, role: &str) -> bool {
    admin
        .query_one("select rolsuper from pg_roles where rolname = $1", &[&role])
        .await
        .expect("pg_roles")
        .get(0)
}

#[tokio::test]
async fn a_consumer_runs_as_a_role_holding_only_pgq_reader_and_its_own_tables_and_is_refused_the_rest() {
    let admin = pgq_test_support::connect(&server_dsn()).await;
    let (queue_db, remote_db) = (TestDb::create().await, TestDb::create_empty().await);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let installer = format!("pgqc_installer_{}_{nanos}", std::process::id());
    let runner = format!("pgqc_runner_{}_{nanos}", std::process::id());
    admin
        .batch_execute(&format!(
            "create role {installer} login in role pgq_admin; create role {runner} login in role pgq_reader;"
        ))
        .await
        .expect("create roles");
    for db in [&queue_db, &remote_db] {
        as_admin(
            db,
            &format!(
                "grant create on database {} to {installer}; grant create on schema public to {installer};",
                db.name()
            ),
        )
        .await;
    }
    assert!(!is_superuser(&admin, &installer).await && !is_superuser(&admin, &runner).await);

    // A local and a remote consumer on one queue, installed by the installer.
    let (qname, rname) = (queue_db.name(), remote_db.name());
    let mut local = Testq::new("privileges_local", &dsn_as(&installer, qname), "testq", "loc");
    let mut remote = Testq::new("privileges_remote", &dsn_as(&installer, qname), "testq", "rem");
    remote
        .set("remote_db", dsn_as(&installer, rname))
        .setting("mode", "remote");
    local.ok(&["install"]).await;
    remote.ok(&["install"]).await;
    // The consumer's own tables: the installer owns them and grants what the
    // handler does (testq inserts).
    let grant = format!("set role {installer}; grant insert on testq_done to {runner};");
    as_admin(&queue_db, &grant).await;
    as_admin(&remote_db, &grant).await;

    // From now on, the runner.
    local.set("db", dsn_as(&runner, qname));
    remote
        .set("db", dsn_as(&runner, qname))
        .set("remote_db", dsn_as(&runner, rname));
    let client = queue_db.connect().await;
    let ids = produce_plain(&client, "testq", 3).await;
    let fail = client
        .query_one("select pgq.insert_event('testq', 'fail', 'f')", &[])
        .await
        .expect("insert")
        .get::<_, i64>(0);
    tick(&client, "testq").await;
    for testq in [&local, &remote] {
        testq.ok(&["check"]).await;
        testq.ok(&["run", "--once"]).await;
        let failed = testq.ok(&["failed"]).await;
        assert!(failed.stdout.starts_with(&format!("{fail}\t")), "{failed:?}");
        testq.ok(&["retry", "all"]).await;
        let status = testq.run(&["status"]).await;
        assert_eq!(status.code, Some(4), "not running: {status:?}");
        assert!(status.stdout.contains("pending events: "), "{status:?}");
    }
    assert_eq!(done(&client).await, ids, "the local consumer, as the runner");
    assert_eq!(
        done(&remote_db.connect().await).await,
        ids,
        "the remote consumer, as the runner"
    );

    // As a daemon too, with the retried event back.
    assert_eq!(pgq::maint_retry_events(&client).await.expect("maint_retry_events"), 2);
    tick(&client, "testq").await;
    local.start().await;
    local
        .wait_until("the retried event is failed again", async || {
            local.ok(&["failed", "--json"]).await.stdout.contains("\"ev_retry\":1")
        })
        .await;
    local.ok(&["stop"]).await;
    local.ok(&["delete", "all"]).await;

    // Registering and unregistering are a consumer's own business too.
    local.ok(&["unregister"]).await;
    local.ok(&["register"]).await;

    // What the runner does not hold is refused.
    for command in [&["drop-queue"][..], &["install"]] {
        let ran = local.run(command).await;
        assert_eq!(ran.code, Some(1), "{command:?}: {ran:?}");
        assert!(ran.stderr.contains("permission denied"), "{command:?}: {ran:?}");
    }

    // The installer takes them down again, as it set them up.
    remote.set("db", dsn_as(&installer, qname));
    local.set("db", dsn_as(&installer, qname));
    remote.ok(&["uninstall"]).await;
    let last = local.ok(&["uninstall"]).await;
    assert!(last.stdout.contains("queue \"testq\" dropped"), "{last:?}");

    for db in [&queue_db, &remote_db] {
        as_admin(db, &format!("drop owned by {installer}, {runner} cascade;")).await;
    }
    admin
        .batch_execute(&format!("drop role {installer}; drop role {runner};"))
        .await
        .expect("drop roles");
}
