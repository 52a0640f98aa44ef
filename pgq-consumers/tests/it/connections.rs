//! Connections follow libpq: TLS by sslmode with rustls against the test
//! server's self-signed certificate, application_name, redacted errors.

use pgq_consumers::{connect, ConnString, Database, Error};
use pgq_test_support::{server_dsn, TestDb};
use tokio_postgres::Client;

/// The test server's port, from its DSN.
fn port() -> u16 {
    let config: tokio_postgres::Config = server_dsn().parse().expect("PGQ_TEST_DSN parses");
    config.get_ports().first().copied().unwrap_or(5432)
}

/// The self-signed certificate `scripts/with-postgres.sh` gives the server.
fn root_cert() -> String {
    std::env::var("PGQ_TEST_SSLROOTCERT").unwrap_or_else(|_| {
        panic!(
            "PGQ_TEST_SSLROOTCERT is not set: the TLS tests need a server with ssl=on and its CA \
             certificate. Run them with `bash scripts/test.sh`, which sets both up"
        )
    })
}

fn user() -> String {
    let config: tokio_postgres::Config = server_dsn().parse().expect("PGQ_TEST_DSN parses");
    config.get_user().unwrap_or("postgres").to_string()
}

async fn uses_tls(client: &Client) -> bool {
    client
        .query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()", &[])
        .await
        .expect("pg_stat_ssl")
        .try_get(0)
        .expect("a bool")
}

async fn try_connect(dsn: String) -> pgq_consumers::Result<Client> {
    connect(&ConnString::new(dsn), "pgq-tls-test", Database::Queue).await
}

#[tokio::test]
async fn verify_full_connects_over_tls_when_the_certificate_names_the_host() {
    let dsn = format!(
        "host=localhost port={} user={} dbname=postgres sslmode=verify-full sslrootcert={}",
        port(),
        user(),
        root_cert()
    );
    let client = try_connect(dsn).await.expect("verify-full to localhost");
    assert!(uses_tls(&client).await);
}

#[tokio::test]
async fn verify_full_refuses_a_host_the_certificate_does_not_name() {
    let dsn = format!(
        "host=127.0.0.1 port={} user={} dbname=postgres sslmode=verify-full sslrootcert={}",
        port(),
        user(),
        root_cert()
    );
    let err = try_connect(dsn)
        .await
        .expect_err("the certificate names localhost, not 127.0.0.1");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(err.exit_code(), pgq_consumers::ExitCode::CannotConnect);
}

#[tokio::test]
async fn verify_ca_accepts_the_ca_whatever_the_host_name() {
    let dsn = format!(
        "host=127.0.0.1 port={} user={} dbname=postgres sslmode=verify-ca sslrootcert={}",
        port(),
        user(),
        root_cert()
    );
    let client = try_connect(dsn).await.expect("verify-ca to 127.0.0.1");
    assert!(uses_tls(&client).await);
}

#[tokio::test]
async fn verify_ca_refuses_a_server_signed_by_another_ca() {
    // A CA of our own that did not sign the server's certificate.
    let dir = std::env::temp_dir().join(format!("pgq-other-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca = dir.join("ca.crt");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl made a CA");
    let dsn = format!(
        "host=localhost port={} user={} dbname=postgres sslmode=verify-ca sslrootcert={}",
        port(),
        user(),
        ca.display()
    );
    let result = try_connect(dsn).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(result, Err(Error::Connect { .. })),
        "another CA must not be trusted"
    );
}

#[tokio::test]
async fn require_encrypts_and_disable_does_not() {
    let base = format!("host=127.0.0.1 port={} user={} dbname=postgres", port(), user());
    let client = try_connect(format!("{base} sslmode=require")).await.expect("require");
    assert!(uses_tls(&client).await);
    let client = try_connect(format!("{base} sslmode=disable")).await.expect("disable");
    assert!(!uses_tls(&client).await);
}

#[tokio::test]
async fn verify_modes_without_a_ca_file_are_a_clear_error() {
    let dsn = format!(
        "host=localhost port={} user={} dbname=postgres sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
        port(),
        user()
    );
    let err = try_connect(dsn).await.expect_err("no CA file");
    let text = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(text.contains("/nonexistent/ca.pem"), "{text}");
}

#[tokio::test]
async fn connections_carry_the_application_name() {
    let db = TestDb::create().await;
    let client = connect(&ConnString::new(db.dsn()), "mailer.worker1", Database::Queue)
        .await
        .expect("connects");
    let name: String = client
        .query_one("select current_setting('application_name')", &[])
        .await
        .expect("query")
        .try_get(0)
        .expect("text");
    assert_eq!(name, "mailer.worker1");
}

#[tokio::test]
async fn connection_errors_never_show_the_password() {
    let dsn = ConnString::new("host=127.0.0.1 port=1 user=u password=hunter2 connect_timeout=2");
    let err = connect(&dsn, "t", Database::Queue)
        .await
        .expect_err("nothing listens on port 1");
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("127.0.0.1:1"), "the message names host and port: {text}");
    assert_eq!(err.exit_code(), pgq_consumers::ExitCode::CannotConnect);
}

/// The test database's connection string with `net_timeout` set.
fn with_net_timeout(dsn: &str, secs: u64) -> ConnString {
    ConnString::new(dsn).with_net_timeout(std::time::Duration::from_secs(secs))
}

async fn setting(client: &Client, name: &str) -> String {
    client
        .query_one("select current_setting($1)", &[&name])
        .await
        .expect("current_setting")
        .try_get(0)
        .expect("text")
}

#[tokio::test]
async fn the_servers_side_of_a_session_gives_up_a_vanished_client_within_net_timeout_too() {
    let db = TestDb::create().await;
    let client = connect(&with_net_timeout(db.dsn(), 12), "t", Database::Queue)
        .await
        .expect("connects");
    assert_eq!(setting(&client, "tcp_keepalives_idle").await, "6");
    assert_eq!(setting(&client, "tcp_keepalives_interval").await, "2");
    assert_eq!(setting(&client, "tcp_keepalives_count").await, "3");
    assert_eq!(setting(&client, "tcp_user_timeout").await, "12000", "milliseconds");
    assert_eq!(
        setting(&client, "statement_timeout").await,
        "0",
        "a consumer's statements may run as long as they need"
    );
}

#[tokio::test]
async fn libpqs_socket_keys_are_accepted_in_its_units() {
    let db = TestDb::create().await;
    let dsn = format!(
        "{} keepalives=1 keepalives_idle=10 keepalives_interval=3 keepalives_count=4 tcp_user_timeout=2500",
        db.dsn()
    );
    let client = try_connect(dsn).await.expect("libpq's keys, keepalives_count included");
    let name: String = client
        .query_one("select current_database()", &[])
        .await
        .expect("query")
        .try_get(0)
        .expect("text");
    assert_eq!(name, db.name());
}

#[tokio::test]
async fn a_statement_running_longer_than_net_timeout_is_not_silence() {
    let db = TestDb::create().await;
    let client = connect(&with_net_timeout(db.dsn(), 1), "t", Database::Queue)
        .await
        .expect("connects");
    // The server answers the question of whether it is there, twice or more.
    client
        .batch_execute("select pg_sleep(2.5)")
        .await
        .expect("a long statement runs to its end");
    assert!(!client.is_closed());
}

#[tokio::test]
async fn a_server_that_takes_the_connection_and_never_answers_is_given_up_after_net_timeout_with_exit_3() {
    // Accepts (the kernel does) but never says a word.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = mute.local_addr().expect("addr").port();
    let dsn = with_net_timeout(
        &format!("host=127.0.0.1 port={port} user=u dbname=d sslmode=disable"),
        2,
    );
    let started = std::time::Instant::now();
    let err = connect(&dsn, "t", Database::Queue).await.expect_err("no answer");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(err.exit_code(), pgq_consumers::ExitCode::CannotConnect, "{err:?}");
    let text = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    drop(mute);
}
