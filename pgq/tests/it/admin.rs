//! PgQ's utility functions, and the crate's quoting helpers checked against
//! the server.

use std::time::Duration;

use anyhow::Result;
use pgq::Interval;

use crate::setup;

#[tokio::test]
async fn version_is_3_5() -> Result<()> {
    let (_db, c) = setup().await;
    assert_eq!(pgq::version(&c).await?, "3.5");
    Ok(())
}

#[tokio::test]
async fn upgrade_schema_repairs_an_old_subscription_table() -> Result<()> {
    let (_db, c) = setup().await;
    let nullable = || async {
        let row = c
            .query_one(
                "select is_nullable from information_schema.columns
                  where table_schema = 'pgq' and table_name = 'subscription' and column_name = 'sub_last_tick'",
                &[],
            )
            .await?;
        anyhow::Ok(row.get::<_, String>(0))
    };
    assert_eq!(pgq::upgrade_schema(&c).await?, 0, "an up-to-date schema needed fixes");
    c.batch_execute("alter table pgq.subscription alter column sub_last_tick set not null")
        .await?;
    assert_eq!(nullable().await?, "NO");
    // PgQ 3.5 counts its fixes but always returns 0: the effect is the proof.
    assert_eq!(pgq::upgrade_schema(&c).await?, 0);
    assert_eq!(nullable().await?, "YES");
    Ok(())
}

#[tokio::test]
async fn seq_getval_reads_without_advancing_and_seq_setval_never_moves_back() -> Result<()> {
    let (_db, c) = setup().await;
    c.batch_execute(
        r#"create sequence plain_seq;
           create schema "My Schema";
           create sequence "My Schema"."Mixed Seq";
           select nextval('plain_seq'), nextval('plain_seq'), nextval('plain_seq');"#,
    )
    .await?;
    // No schema means public.
    assert_eq!(pgq::seq_getval(&c, "plain_seq").await?, 3);
    assert_eq!(pgq::seq_getval(&c, "public.plain_seq").await?, 3);
    assert_eq!(pgq::seq_setval(&c, "plain_seq", 10).await?, 10);
    assert_eq!(pgq::seq_setval(&c, "plain_seq", 5).await?, 10);
    assert_eq!(pgq::seq_getval(&c, "plain_seq").await?, 10);
    let next: i64 = c.query_one("select nextval('plain_seq')", &[]).await?.get(0);
    assert_eq!(next, 11);

    assert_eq!(pgq::seq_setval(&c, "My Schema.Mixed Seq", 42).await?, 42);
    assert_eq!(pgq::seq_getval(&c, "My Schema.Mixed Seq").await?, 42);

    let err = pgq::seq_getval(&c, "no_such_seq").await.expect_err("missing sequence");
    assert!(err.to_string().contains(r#"sequence "no_such_seq""#), "{err}");
    Ok(())
}

#[tokio::test]
async fn quote_fqname_defaults_to_public_and_splits_at_the_first_dot() -> Result<()> {
    let (_db, c) = setup().await;
    assert_eq!(pgq::quote_fqname(&c, "events").await?, "public.events");
    assert_eq!(pgq::quote_fqname(&c, "pgq.tick").await?, "pgq.tick");
    assert_eq!(pgq::quote_fqname(&c, "My Schema.T").await?, r#""My Schema"."T""#);
    assert_eq!(pgq::quote_fqname(&c, "a.b.c").await?, r#"a."b.c""#);
    Ok(())
}

#[tokio::test]
async fn quote_ident_and_quote_qualified_make_any_name_one_identifier() -> Result<()> {
    let (_db, c) = setup().await;
    let hostile = r#"x"; drop table victim; --"#;
    c.batch_execute("create table victim (id int)").await?;
    c.batch_execute(&format!("create table {} (id int)", pgq::quote_ident(hostile)?))
        .await?;
    c.batch_execute(&format!(
        "insert into {} values (1)",
        pgq::quote_qualified(&format!("public.{hostile}"))?
    ))
    .await?;
    let names: Vec<String> = c
        .query(
            "select relname::text from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r' order by 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["victim", hostile]);
    Ok(())
}

#[tokio::test]
async fn quote_literal_reads_back_unchanged_whatever_standard_conforming_strings_is() -> Result<()> {
    let (_db, c) = setup().await;
    let value = r"it's a \ test'; drop table x; -- \n";
    for setting in ["on", "off"] {
        c.batch_execute(&format!("set standard_conforming_strings = {setting}"))
            .await?;
        let got: String = c
            .query_one(&format!("select {}::text", pgq::quote_literal(value)?), &[])
            .await?
            .get(0);
        assert_eq!(got, value, "standard_conforming_strings = {setting}");
    }
    assert!(pgq::quote_literal("nul\0byte").is_err());
    Ok(())
}

#[tokio::test]
async fn interval_round_trips_through_the_server() -> Result<()> {
    let (_db, c) = setup().await;
    let read: Interval = c
        .query_one("select interval '1 month 2 days 3.5 seconds'", &[])
        .await?
        .get(0);
    assert_eq!(
        read,
        Interval {
            months: 1,
            days: 2,
            microseconds: 3_500_000
        }
    );
    assert_eq!(
        read.as_duration(),
        Duration::from_secs(32 * 86_400) + Duration::from_millis(3_500)
    );
    let sent = Interval::from(Duration::from_millis(90_250));
    let row = c
        .query_one(
            "select $1::interval::text, extract(epoch from $1::interval)::float8",
            &[&sent],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "00:01:30.25");
    assert_eq!(row.get::<_, f64>(1), 90.25);
    Ok(())
}
