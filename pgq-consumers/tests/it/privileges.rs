//! The framework's SQL used by a consumer that is only a member of PgQ's
//! `pgq_reader` role, not a superuser.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use pgq::BatchLimits;
use pgq_consumers::{coop, failed};
use tokio_postgres::Client;

use crate::common::{event_ids, insert, maint_retry_events, queue_db, tick, Q};

/// A role of its own for this test (roles are cluster-wide), member of
/// `pgq_reader` only; dropped again by [`drop_role`].
async fn reader_role(client: &Client) -> Result<String> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
    let role = format!("pgqc_reader_{}_{nanos}", std::process::id());
    client
        .batch_execute(&format!("create role {role} nologin in role pgq_reader"))
        .await?;
    Ok(role)
}

async fn drop_role(client: &Client, role: &str) -> Result<()> {
    client.batch_execute(&format!("reset role; drop role {role}")).await?;
    Ok(())
}

#[tokio::test]
async fn a_pgq_reader_can_use_sub_consumers_and_failed_events_but_not_write_the_tables() -> Result<()> {
    let (_db, client) = queue_db().await?;
    let role = reader_role(&client).await?;
    let set_role = format!("set role {role}");

    let outcome = async {
        client.batch_execute(&set_role).await?;
        coop::register(&client, Q, "grp", "a").await?;
        // Producing and ticking take other rights (pgq_writer, pgq_admin).
        client.batch_execute("reset role").await?;
        let e1 = insert(&client, "t", "x").await?;
        tick(&client).await?;
        client.batch_execute(&set_role).await?;

        let b = coop::next_batch(&client, Q, "grp", "a", None, &BatchLimits::default())
            .await?
            .expect("a batch");
        assert_eq!(event_ids(&client, b.batch_id).await?, vec![e1]);
        failed::add_from_batch(&client, b.batch_id, e1, "no").await?;
        coop::finish_batch(&client, b.batch_id).await?;
        assert_eq!(failed::list(&client, Q, "grp").await?.len(), 1);
        assert_eq!(failed::retry(&client, Q, "grp", &[e1]).await?, 1);
        assert_eq!(failed::count(&client, Q, "grp").await?, 0);

        let denied = client
            .execute("delete from pgq_consumer.failed_event", &[])
            .await
            .expect_err("the table itself is read-only for pgq_reader");
        assert_eq!(
            denied.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
        );
        let denied = client
            .execute("select pgq_consumer.drop_subconsumer_row(1, 1)", &[])
            .await
            .expect_err("internal functions are not granted");
        assert_eq!(
            denied.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
        );
        anyhow::Ok(e1)
    }
    .await;
    drop_role(&client, &role).await?;
    let e1 = outcome?;

    // The retried event comes back for the group.
    maint_retry_events(&client).await?;
    tick(&client).await?;
    let b = coop::next_batch(&client, Q, "grp", "a", None, &BatchLimits::default())
        .await?
        .expect("the retried event");
    assert_eq!(event_ids(&client, b.batch_id).await?, vec![e1]);
    Ok(())
}
