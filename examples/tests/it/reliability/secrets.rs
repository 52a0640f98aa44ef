//! Passwords never show: against a cluster of the test's own that checks
//! passwords (scram-sha-256), testq runs with passwords in `db`, in
//! `remote_db` (a URL), and in `PGQ_DB`; commands that succeed and commands
//! that fail (wrong password, unparsable string, unreachable server, missing
//! database, the remote database going away under the daemon, a handler
//! panic), at DEBUG, and neither the right password nor the wrong one
//! appears in any output or log.

use super::cluster::Cluster;
use crate::support::program::Ran;
use crate::support::queue::{done_count, produce_plain, produce_plain_batch, tick};
use crate::support::testq::Testq;

const USER: &str = "pgq_secret_user";
const PASSWORD: &str = "S3cr3t-Pa55w0rd-x9";
const WRONG: &str = "Wr0ng-Pa55-q7z";

/// Fails the test if the text shows either password.
fn assert_no_password(what: &str, text: &str) {
    for secret in [PASSWORD, WRONG] {
        assert!(!text.contains(secret), "{what} shows a password:\n{text}");
    }
}

/// A failing case: what it is, `db`, `remote_db`, the command, its exit code.
type Failing<'a> = (&'a str, String, String, &'a [&'a str], Option<i32>);

fn check(what: &str, ran: &Ran) {
    assert_no_password(what, &ran.stdout);
    assert_no_password(what, &ran.stderr);
}

#[tokio::test]
async fn passwords_never_appear_in_output_logs_status_or_errors_whether_commands_succeed_or_fail() {
    let cluster = Cluster::start("secrets", &format!("host all {USER} 127.0.0.1/32 scram-sha-256")).await;
    let admin = cluster.connect("postgres").await;
    admin
        .batch_execute(&format!("create role {USER} login superuser password '{PASSWORD}'"))
        .await
        .expect("create the role");
    cluster.create_db("q", true).await;
    cluster.create_db("r", false).await;
    let port = cluster.port();
    let db = format!("host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname=q");
    let remote = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/r?sslmode=disable");
    let mut testq = Testq::new("secrets", &db, "testq", "testq");
    testq
        .set("remote_db", remote.as_str())
        .set("loglevel", "debug")
        .setting("mode", "remote");

    // Commands that succeed.
    for command in [&["install"][..], &["check"], &["failed"]] {
        let ran = testq.ok(command).await;
        check(&format!("{command:?}"), &ran);
    }
    let client = cluster.connect("q").await;
    let rclient = cluster.connect("r").await;
    testq.start().await;
    let ids = produce_plain(&client, "testq", 3).await;
    client
        .query(
            "select pgq.insert_event('testq', t, 'x') from unnest(array['fail', 'panic']) t",
            &[],
        )
        .await
        .expect("insert events");
    tick(&client, "testq").await;
    testq
        .wait_until("the batch is done", async || done_count(&rclient).await == ids.len())
        .await;
    for command in [&["status"][..], &["failed"], &["failed", "--json"], &["reload"]] {
        let ran = testq.ok(command).await;
        check(&format!("{command:?}"), &ran);
    }

    // The remote database goes away under the daemon, then comes back.
    admin
        .batch_execute("alter database r allow_connections false")
        .await
        .expect("alter database");
    admin
        .execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = 'r' and application_name = 'testq'",
            &[],
        )
        .await
        .expect("terminate");
    produce_plain_batch(&client, "testq", 1).await;
    testq.wait_for_log_n("reconnect attempt 1 failed", 1).await;
    admin
        .batch_execute("alter database r allow_connections true")
        .await
        .expect("alter database");
    testq.wait_for_log_n("WARNING reconnected after", 1).await;
    let stop = testq.ok(&["stop"]).await;
    check("stop", &stop);

    // Commands that fail: wrong passwords, a string that does not parse, a
    // server that is not there, a database that is not there (from PGQ_DB).
    let wrong_db = db.replace(PASSWORD, WRONG);
    let wrong_remote = remote.replace(PASSWORD, WRONG);
    let failing: [Failing<'_>; 7] = [
        (
            "a mistyped password key",
            format!("host=127.0.0.1 port={port} user={USER} passwrd={PASSWORD} dbname=q"),
            remote.clone(),
            &["check"],
            Some(1),
        ),
        ("wrong password", wrong_db.clone(), remote.clone(), &["check"], Some(3)),
        (
            "wrong password, status",
            wrong_db.clone(),
            remote.clone(),
            &["status"],
            Some(4),
        ),
        (
            "wrong remote password",
            db.clone(),
            wrong_remote.clone(),
            &["run", "--once"],
            Some(3),
        ),
        (
            "bad port",
            format!("host=127.0.0.1 port=notaport password={PASSWORD} dbname=q"),
            remote.clone(),
            &["check"],
            Some(1),
        ),
        (
            "quoted password, nothing listening",
            format!("host=127.0.0.1 port=1 user={USER} password='{PASSWORD} x' dbname=q connect_timeout=5"),
            remote.clone(),
            &["failed"],
            Some(3),
        ),
        (
            "URL with the password in the query, bad sslmode",
            format!("postgresql://{USER}@127.0.0.1:{port}/q?password={PASSWORD}&sslmode=sideways"),
            remote.clone(),
            &["check"],
            Some(1),
        ),
    ];
    for (what, db, remote, command, code) in failing {
        testq.set("db", db.as_str()).set("remote_db", remote.as_str());
        let ran = testq.run(command).await;
        assert_eq!(ran.code, code, "{what}: {ran:?}\n{}", testq.log());
        check(what, &ran);
    }
    testq.set("db", db.as_str()).set("remote_db", remote.as_str());
    let env_db = format!("host=127.0.0.1 port={port} user={USER} password={WRONG} dbname=nowhere");
    let ran = testq.run_with(&["check"], &[("PGQ_DB", env_db.as_str())]).await;
    assert_eq!(ran.code, Some(3), "PGQ_DB: {ran:?}");
    assert!(
        ran.stderr.contains(&format!("127.0.0.1:{port}")),
        "it says where: {ran:?}"
    );
    check("PGQ_DB", &ran);

    let log = testq.log();
    assert!(log.contains("panic caught"), "the panic was logged: {log}");
    assert!(
        log.contains("ERROR lost the connection to the remote database"),
        "{log}"
    );
    assert_no_password("the log", &log);
    assert!(
        !log.contains("executing statement"),
        "the PostgreSQL client's statements and their parameters stay out of the log, even at DEBUG:\n{log}"
    );
    assert_eq!(done_count(&rclient).await, ids.len() + 1, "the daemon carried on");
}

/// A password with a space, `@`, `:` and `/` in it; no piece of it may show.
const AWKWARD: &str = "Pq7x Zr8y@Km2:Wn5/Jt4";
const AWKWARD_PIECES: [&str; 5] = ["Pq7x", "Zr8y", "Km2", "Wn5", "Jt4"];

/// Fails the test if the text shows any piece of [`AWKWARD`].
fn assert_no_piece(what: &str, text: &str) {
    for piece in AWKWARD_PIECES {
        assert!(!text.contains(piece), "{what} shows `{piece}` of the password:\n{text}");
    }
}

#[tokio::test]
async fn a_password_with_spaces_at_signs_colons_and_slashes_is_read_as_libpq_reads_it_and_no_piece_of_it_ever_shows() {
    const ROLE: &str = "pgq_awkward_user";
    let cluster = Cluster::start("awkward", &format!("host all {ROLE} 127.0.0.1/32 scram-sha-256")).await;
    let admin = cluster.connect("postgres").await;
    admin
        .batch_execute(&format!("create role {ROLE} login superuser password '{AWKWARD}'"))
        .await
        .expect("create the role");
    cluster.create_db("q", true).await;
    let port = cluster.port();
    let escaped = AWKWARD.replace(' ', "\\ ");
    let encoded = AWKWARD
        .replace(' ', "%20")
        .replace('@', "%40")
        .replace(':', "%3A")
        .replace('/', "%2F");
    let mut testq = Testq::new("awkward", "", "testq", "testq");
    testq.set("loglevel", "debug");

    // libpq's own spellings of that password connect: escaped, quoted, percent-encoded.
    let good = [
        format!("host=127.0.0.1 port={port} user={ROLE} password={escaped} dbname=q"),
        format!("host=127.0.0.1 port={port} user={ROLE} password='{AWKWARD}' dbname=q"),
        format!("postgres://{ROLE}:{encoded}@127.0.0.1:{port}/q"),
    ];
    for (n, db) in good.iter().enumerate() {
        testq.set("db", db.as_str());
        let ran = testq.ok(&[if n == 0 { "install" } else { "check" }]).await;
        assert_no_piece(db, &format!("{}{}", ran.stdout, ran.stderr));
    }

    // Strings that cannot be used, each failing before or at the server.
    let bad: [(&str, String, Option<i32>); 7] = [
        (
            "escaped password and an unknown option",
            format!("host=127.0.0.1 port={port} user={ROLE} password={escaped} dbname=q bogus=1"),
            Some(1),
        ),
        (
            "unknown option right after the escaped password",
            format!("host=127.0.0.1 port={port} user={ROLE} password={escaped} bogus=1"),
            Some(1),
        ),
        (
            "unescaped space",
            format!("host=127.0.0.1 port={port} user={ROLE} password={AWKWARD} dbname=q"),
            Some(1),
        ),
        (
            "unencoded URL",
            format!("postgres://{ROLE}:{AWKWARD}@127.0.0.1:{port}/q"),
            Some(1),
        ),
        (
            "URL with the password in the query, unencoded",
            format!("postgresql://{ROLE}@127.0.0.1:{port}/q?password={AWKWARD}&sslmode=disable"),
            Some(1),
        ),
        (
            "unterminated quote",
            format!("host=127.0.0.1 port={port} user={ROLE} dbname=q password='{AWKWARD}"),
            Some(1),
        ),
        (
            "the right pieces in the wrong order: the server refuses it",
            format!(
                "host=127.0.0.1 port={port} user={ROLE} dbname=q password='{}'",
                AWKWARD_PIECES.iter().rev().copied().collect::<Vec<_>>().join(" ")
            ),
            Some(3),
        ),
    ];
    for (what, db, code) in bad {
        testq.set("db", db.as_str());
        let ran = testq.run(&["check"]).await;
        assert_eq!(ran.code, code, "{what}: {ran:?}");
        assert!(ran.stderr.contains("error: "), "{what}: says why: {ran:?}");
        assert_no_piece(what, &format!("{}{}", ran.stdout, ran.stderr));
    }
    // The same strings from PGQ_DB, and in `remote_db` for a remote consumer.
    testq.set("db", good[0].as_str());
    let unencoded = format!("postgres://{ROLE}:{AWKWARD}@127.0.0.1:{port}/q");
    let ran = testq.run_with(&["check"], &[("PGQ_DB", unencoded.as_str())]).await;
    assert_eq!(ran.code, Some(1), "PGQ_DB: {ran:?}");
    assert_no_piece("PGQ_DB", &format!("{}{}", ran.stdout, ran.stderr));
    testq.set("remote_db", unencoded.as_str()).setting("mode", "remote");
    let ran = testq.run(&["run", "--once"]).await;
    assert_eq!(ran.code, Some(1), "remote_db: {ran:?}");
    assert_no_piece("remote_db", &format!("{}{}", ran.stdout, ran.stderr));

    // A TOML syntax error on the `db` line: the line is not quoted back.
    testq.write_config(&format!(
        "queue = 'testq'\nconsumer = 'testq'\ndb = \"host=127.0.0.1 password={AWKWARD}\"x\"\n"
    ));
    let ran = testq.run(&["check"]).await;
    assert_eq!(ran.code, Some(1), "TOML syntax: {ran:?}");
    assert!(ran.stderr.contains("line 3"), "names the line: {ran:?}");
    assert_no_piece("a TOML syntax error", &format!("{}{}", ran.stdout, ran.stderr));
    assert_no_piece("the log", &testq.log());
}
