//! What an error tells about itself: its SQLSTATE, whether the connection is
//! gone, its exit code, through the `pgq` errors it wraps too.

use std::time::Duration;

use anyhow::Result;
use pgq_consumers::{connect, ConnString, Database, Error, ExitCode};
use pgq_test_support::TestDb;
use tokio_postgres::error::SqlState;

#[tokio::test]
async fn a_wrapped_pgq_error_gives_its_sqlstate_and_is_no_connection_error() -> Result<()> {
    let db = TestDb::create().await;
    let client = db.connect().await;
    // PgQ refuses a consumer of a queue that does not exist (RAISE EXCEPTION).
    let pgq_err = pgq::register_consumer(&client, "no_such_queue", "c")
        .await
        .expect_err("no such queue");
    assert_eq!(pgq_err.code(), Some(&SqlState::RAISE_EXCEPTION));
    let err = Error::from(pgq_err);
    assert!(matches!(err, Error::Pgq(_)), "{err:?}");
    assert_eq!(err.code(), Some(&SqlState::RAISE_EXCEPTION));
    assert!(err.postgres().is_some());
    assert!(!err.is_connection_error(), "a refused statement: {err:?}");
    assert_eq!(err.exit_code(), ExitCode::Failed);
    Ok(())
}

#[tokio::test]
async fn a_wrapped_pgq_error_of_a_terminated_session_is_a_connection_error() -> Result<()> {
    let db = TestDb::create().await;
    let client = db.connect().await;
    let pid: i32 = client.query_one("select pg_backend_pid()", &[]).await?.try_get(0)?;
    let admin = db.connect().await;
    admin.execute("select pg_terminate_backend($1)", &[&pid]).await?;
    pgq_test_support::wait_for("the connection to close", Duration::from_secs(10), || async {
        client.is_closed().then_some(())
    })
    .await;
    let err = Error::from(pgq::get_queue_info_all(&client).await.expect_err("the session is gone"));
    assert!(err.is_connection_error(), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_a_connection_error_with_exit_code_3() {
    let dsn = ConnString::new("host=127.0.0.1 port=1 user=u dbname=d connect_timeout=2");
    let err = connect(&dsn, "t", Database::Queue)
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_connection_error(), "{err:?}");
    assert_eq!(err.exit_code(), ExitCode::CannotConnect);
    assert_eq!(err.exit_code().code(), 3);
}
