//! Installing and upgrading the framework's SQL.

use anyhow::Result;
use pgq_consumers::{schema, Error};
use pgq_test_support::TestDb;

async fn versions(client: &tokio_postgres::Client) -> Result<Vec<i32>> {
    let rows = client
        .query("select version from pgq_consumer.schema_version order by version", &[])
        .await?;
    rows.iter().map(|r| Ok(r.try_get("version")?)).collect()
}

#[tokio::test]
async fn install_twice_is_harmless_and_reports_the_latest_version() -> Result<()> {
    let db = TestDb::create().await;
    let client = db.connect().await;
    assert_eq!(schema::installed_version(&client).await?, None);

    assert_eq!(schema::install(&client).await?, schema::VERSION);
    client
        .execute(
            "select pgq_consumer.failed_event_add('q', 'c', 1, now(), 1, null, 't', 'd', null, null, null, null, 'kept')",
            &[],
        )
        .await?;
    assert_eq!(schema::install(&client).await?, schema::VERSION);

    assert_eq!(schema::installed_version(&client).await?, Some(schema::VERSION));
    let all: Vec<i32> = schema::FILES.iter().map(|f| f.version).collect();
    assert_eq!(versions(&client).await?, all);
    assert_eq!(
        pgq_consumers::failed::count(&client, "q", "c").await?,
        1,
        "data survives a second install"
    );
    Ok(())
}

#[tokio::test]
async fn every_sql_file_can_be_run_twice_by_hand() -> Result<()> {
    let db = TestDb::create().await;
    let client = db.connect().await;
    for f in schema::FILES {
        for _ in 0..2 {
            client
                .batch_execute(&format!("begin;\n{}\ncommit;", f.sql))
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e:?}", f.file))?;
        }
    }
    assert_eq!(schema::installed_version(&client).await?, Some(schema::VERSION));
    Ok(())
}

#[tokio::test]
async fn concurrent_installs_all_succeed() -> Result<()> {
    let db = TestDb::create().await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(db.connect().await);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(async move { schema::install(&c).await }))
        .collect();
    for t in tasks {
        assert_eq!(t.await??, schema::VERSION);
    }
    let client = db.connect().await;
    assert_eq!(schema::installed_version(&client).await?, Some(schema::VERSION));
    Ok(())
}

#[tokio::test]
async fn upgrade_from_v1_to_the_latest_keeps_recorded_data() -> Result<()> {
    let db = TestDb::create_empty().await;
    let client = db.connect().await;
    assert_eq!(schema::install_to(&client, 1).await?, 1);
    assert_eq!(versions(&client).await?, vec![1]);
    // Version 1's tracking: no tick time.
    client
        .execute("select pgq_consumer.record_applied_batch('q', 'c', null, 7, 3, 4)", &[])
        .await?;
    let v1_columns: i64 = client
        .query_one(
            "select count(*) as n from information_schema.columns \
              where table_schema = 'pgq_consumer' and table_name = 'applied_batch' and column_name = 'tick_time'",
            &[],
        )
        .await?
        .try_get("n")?;
    assert_eq!(v1_columns, 0);

    assert_eq!(schema::install(&client).await?, schema::VERSION);
    assert_eq!(versions(&client).await?, (1..=schema::VERSION).collect::<Vec<_>>());

    let last = pgq_consumers::tracking::last_applied(&client, "q", "c", None)
        .await?
        .expect("the batch recorded under version 1 is still there");
    assert_eq!((last.batch_id, last.prev_tick_id, last.tick_id), (7, 3, 4));
    assert_eq!(last.tick_time, None);
    // The old six-argument function still works after the upgrade.
    client
        .execute("select pgq_consumer.record_applied_batch('q', 'c', null, 8, 4, 5)", &[])
        .await?;
    let last = pgq_consumers::tracking::last_applied(&client, "q", "c", None)
        .await?
        .expect("recorded");
    assert_eq!((last.batch_id, last.tick_id), (8, 5));
    Ok(())
}

#[tokio::test]
async fn installs_in_a_database_without_pgq() -> Result<()> {
    let db = TestDb::create_empty().await;
    let client = db.connect().await;
    assert_eq!(schema::install(&client).await?, schema::VERSION);
    let has_pgq: bool = client
        .query_one(
            "select exists (select 1 from pg_namespace where nspname = 'pgq') as p",
            &[],
        )
        .await?
        .try_get("p")?;
    assert!(!has_pgq, "the remote database has no pgq");
    assert_eq!(
        pgq_consumers::tracking::last_applied(&client, "q", "c", None).await?,
        None
    );
    Ok(())
}

#[tokio::test]
async fn a_newer_schema_is_left_alone() -> Result<()> {
    let db = TestDb::create_empty().await;
    let client = db.connect().await;
    schema::install(&client).await?;
    client
        .execute("insert into pgq_consumer.schema_version (version) values (99)", &[])
        .await?;
    match schema::install(&client).await {
        Err(Error::SchemaTooNew {
            installed: 99,
            supported,
        }) => assert_eq!(supported, schema::VERSION),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    // The failed install left the connection usable, outside a transaction.
    assert_eq!(schema::installed_version(&client).await?, Some(99));
    Ok(())
}

#[tokio::test]
async fn install_in_the_callers_transaction_rolls_back_with_it() -> Result<()> {
    let db = TestDb::create_empty().await;
    let mut client = db.connect().await;
    let tx = client.transaction().await?;
    assert_eq!(schema::install_in_transaction(&tx).await?, schema::VERSION);
    assert_eq!(schema::installed_version(&tx).await?, Some(schema::VERSION));
    tx.rollback().await?;
    assert_eq!(schema::installed_version(&client).await?, None);
    Ok(())
}

#[tokio::test]
async fn upgrade_from_v3_keeps_cooperative_groups_and_their_batches() -> Result<()> {
    let db = TestDb::create().await;
    let client = db.connect().await;
    assert_eq!(schema::install_to(&client, 3).await?, 3);
    client.execute("select pgq.create_queue('q')", &[]).await?;
    for sub in ["a", "b"] {
        pgq_consumers::coop::register(&client, "q", "grp", sub).await?;
    }
    client.execute("select pgq.insert_event('q', 't', 'x')", &[]).await?;
    client.execute("select pgq.force_tick('q')", &[]).await?;
    client.execute("select pgq.ticker('q')", &[]).await?;
    let none = pgq::BatchLimits::default();
    let held = pgq_consumers::coop::next_batch(&client, "q", "grp", "a", None, &none)
        .await?
        .expect("a's batch");

    assert_eq!(schema::install(&client).await?, schema::VERSION);
    assert!(
        !pgq_consumers::coop::register(&client, "q", "grp", "a").await?,
        "a is still registered"
    );
    assert!(pgq_consumers::coop::register(&client, "q", "grp", "c").await?);
    let info = pgq_consumers::coop::info(&client, "q", "grp").await?;
    assert_eq!(
        info.iter()
            .map(|i| (i.subconsumer.as_str(), i.batch_id))
            .collect::<Vec<_>>(),
        [("a", Some(held.batch_id)), ("b", None), ("c", None)],
        "the members and the batch held survive the upgrade"
    );
    pgq_consumers::coop::finish_batch(&client, held.batch_id).await?;
    Ok(())
}

#[tokio::test]
async fn upgrade_from_v4_moves_the_batches_sub_consumers_applied_to_their_groups_record() -> Result<()> {
    let db = TestDb::create_empty().await;
    let client = db.connect().await;
    assert_eq!(schema::install_to(&client, 4).await?, 4);
    // Version 4 recorded each member's last batch in a row of its own.
    for (sub, batch, prev, cur) in [("a", 7_i64, 3_i64, 4_i64), ("b", 8, 4, 5)] {
        client
            .execute(
                "select pgq_consumer.record_applied_batch('q', 'grp', $1, $2, $3, $4)",
                &[&sub, &batch, &prev, &cur],
            )
            .await?;
    }
    client
        .execute(
            "select pgq_consumer.record_applied_batch('q', 'plain', null, 9, 1, 2)",
            &[],
        )
        .await?;

    assert_eq!(schema::install(&client).await?, schema::VERSION);
    assert_eq!(schema::install(&client).await?, schema::VERSION, "twice is harmless");
    let t = chrono::Utc::now();
    let batch = |id, prev, cur| pgq::BatchTicks {
        batch_id: id,
        cur_tick_id: cur,
        prev_tick_id: prev,
        cur_tick_time: t,
        prev_tick_time: t,
        cur_tick_event_seq: 0,
        prev_tick_event_seq: 0,
    };
    for (prev, cur) in [(3, 4), (4, 5)] {
        assert!(
            pgq_consumers::tracking::is_applied(&client, "q", "grp", Some("c"), &batch(20, prev, cur)).await?,
            "({prev}, {cur}] is still applied, for any member"
        );
    }
    let a = pgq_consumers::tracking::last_applied(&client, "q", "grp", Some("a"))
        .await?
        .expect("a's record");
    assert_eq!((a.batch_id, a.prev_tick_id, a.tick_id), (7, 3, 4));
    let plain = pgq_consumers::tracking::last_applied(&client, "q", "plain", None)
        .await?
        .expect("the plain consumer's record stays");
    assert_eq!(plain.tick_id, 2);
    // A member applying one of them again is refused.
    assert!(matches!(
        pgq_consumers::tracking::record(&client, "q", "grp", Some("c"), &batch(21, 4, 5)).await,
        Err(pgq_consumers::Error::BatchAppliedByOther { .. })
    ));
    Ok(())
}
