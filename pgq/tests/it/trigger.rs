//! PgQ's trigger functions, created through `create_trigger`, and the event
//! payload helpers that read what they write.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use pgq::{Error, EventField, RowOp, TriggerKind, TriggerOp, TriggerOption, TriggerSpec};
use serde::Deserialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::{consume, data, setup_queue, tick};

async fn events_after_tick(c: &Client, queue: &str) -> Result<Vec<pgq::Event>> {
    tick(c, queue).await?;
    consume(c, queue, "reader").await
}

fn map(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect()
}

#[tokio::test]
async fn logutriga_events_decode_with_urlencoded_and_trigger_op_gives_operation_and_key() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    c.batch_execute("create table t (id int primary key, name text, note text)")
        .await?;
    pgq::create_trigger(&c, &TriggerSpec::new(TriggerKind::Logutriga, "t_pgq", "t", "q")).await?;
    c.batch_execute(
        "insert into t values (1, 'Jüri X & co=1', null);
         update t set name = '1+1=2, 100% & more', note = '' where id = 1;
         delete from t;",
    )
    .await?;

    let events = events_after_tick(&c, "q").await?;
    ensure!(events.len() == 3, "{events:?}");
    let ops: Vec<_> = events
        .iter()
        .map(|e| {
            e.trigger_op()
                .map(|(op, keys)| (op, keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()))
        })
        .collect();
    let id = vec!["id".to_string()];
    assert_eq!(
        ops,
        [
            Some((TriggerOp::Insert, id.clone())),
            Some((TriggerOp::Update, id.clone())),
            Some((TriggerOp::Delete, id))
        ]
    );
    assert_eq!(
        events[0].urlencoded()?,
        map(&[("id", Some("1")), ("name", Some("Jüri X & co=1")), ("note", None)])
    );
    // '+', '%', '=' and '&' inside values, and an empty string (not NULL).
    assert_eq!(
        events[1].urlencoded()?,
        map(&[
            ("id", Some("1")),
            ("name", Some("1+1=2, 100% & more")),
            ("note", Some(""))
        ])
    );
    assert!(events.iter().all(|e| e.ev_extra1.as_deref() == Some("public.t")));
    Ok(())
}

#[derive(Debug, Deserialize, PartialEq)]
struct Row {
    id: i32,
    name: String,
    n: String,
    b: bool,
}

#[tokio::test]
async fn jsontriga_events_decode_with_json_and_json_as() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    c.batch_execute("create table j (id int primary key, name text, n numeric, b bool)")
        .await?;
    pgq::create_trigger(&c, &TriggerSpec::new(TriggerKind::Jsontriga, "j_pgq", "j", "q")).await?;
    c.batch_execute("insert into j values (1, 'a\"b', 1.5, true); delete from j;")
        .await?;

    let events = events_after_tick(&c, "q").await?;
    ensure!(events.len() == 2, "{events:?}");
    assert_eq!(
        events[0].json()?,
        serde_json::json!({"id": 1, "name": "a\"b", "n": "1.5", "b": true})
    );
    let row: Row = events[0].json_as()?;
    assert_eq!(
        row,
        Row {
            id: 1,
            name: "a\"b".into(),
            n: "1.5".into(),
            b: true
        }
    );
    let (op, keys) = events[0].trigger_op().context("no trigger op in a jsontriga event")?;
    assert_eq!(op, TriggerOp::Insert);
    assert_eq!(keys, ["id"]);
    let (op, _) = events[1].trigger_op().context("no trigger op in a jsontriga event")?;
    assert_eq!(op, TriggerOp::Delete);
    assert_eq!(events[0].ev_extra1.as_deref(), Some("public.j"));
    Ok(())
}

#[tokio::test]
async fn sqltriga_events_carry_partial_sql_and_the_bare_operation() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    c.batch_execute("create table s (id int primary key, name text)")
        .await?;
    pgq::create_trigger(&c, &TriggerSpec::new(TriggerKind::Sqltriga, "s_pgq", "public.s", "q")).await?;
    c.batch_execute(
        "insert into s values (1, 'it''s');
         update s set name = 'x';
         delete from s;",
    )
    .await?;
    let events = events_after_tick(&c, "q").await?;
    assert_eq!(
        data(&events),
        ["(id,name) values ('1','it''s')", "name='x' where id='1'", "id='1'"]
    );
    let ops: Vec<_> = events
        .iter()
        .map(|e| e.trigger_op().map(|(op, k)| (op, k.len())))
        .collect();
    assert_eq!(
        ops,
        [
            Some((TriggerOp::Insert, 0)),
            Some((TriggerOp::Update, 0)),
            Some((TriggerOp::Delete, 0))
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_hostile_table_trigger_and_queue_name_are_plain_names() -> Result<()> {
    let queue = "q'); drop table victim; --";
    let (_db, c) = setup_queue(queue, "reader").await?;
    let table = r#"we"ird; drop table victim; --"#;
    c.batch_execute(&format!(
        "create table victim (id int); create table {} (id int primary key, name text)",
        pgq::quote_ident(table)?
    ))
    .await?;
    let spec = TriggerSpec::new(
        TriggerKind::Logutriga,
        r#"tg"; drop table victim; --"#,
        &format!("public.{table}"),
        queue,
    );
    pgq::create_trigger(&c, &spec).await?;
    c.batch_execute(&format!(
        "insert into {} values (5, 'z')",
        pgq::quote_qualified(&format!("public.{table}"))?
    ))
    .await?;

    let events = events_after_tick(&c, queue).await?;
    ensure!(events.len() == 1, "{events:?}");
    assert_eq!(events[0].ev_extra1.as_deref(), Some(format!("public.{table}").as_str()));
    assert_eq!(events[0].urlencoded()?, map(&[("id", Some("5")), ("name", Some("z"))]));
    let victim: Option<String> = c.query_one("select to_regclass('victim')::text", &[]).await?.get(0);
    assert_eq!(victim.as_deref(), Some("victim"));
    Ok(())
}

#[tokio::test]
async fn trigger_options_ignore_pkey_backup_when_and_set_shape_the_events() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    // No primary key: the pkey option names the key columns.
    c.batch_execute("create table o (id int, name text, note text)").await?;
    let mut spec = TriggerSpec::new(TriggerKind::Logutriga, "o_pgq", "o", "q");
    spec.ops = vec![RowOp::Insert, RowOp::Update];
    spec.options = vec![
        TriggerOption::Ignore(vec!["note".into()]),
        TriggerOption::Pkey(vec!["id".into()]),
        TriggerOption::Backup,
        TriggerOption::When("name <> 'skip'".into()),
        TriggerOption::Set(EventField::Extra3, "'row ' || id::text".into()),
    ];
    pgq::create_trigger(&c, &spec).await?;
    c.batch_execute(
        "insert into o values (1, 'a', 'secret');
         insert into o values (2, 'skip', 'n');
         update o set note = 'only an ignored column' where id = 1;
         update o set name = 'b' where id = 1;
         delete from o;",
    )
    .await?;

    let events = events_after_tick(&c, "q").await?;
    // The 'skip' row fails `when`, the update of an ignored column alone is
    // no change, and the trigger does not fire on delete.
    ensure!(events.len() == 2, "{events:?}");
    let (ins, upd) = (&events[0], &events[1]);
    assert_eq!(ins.kind(), "I:id");
    assert_eq!(ins.urlencoded()?, map(&[("id", Some("1")), ("name", Some("a"))]));
    assert_eq!(ins.ev_extra3.as_deref(), Some("row 1"));
    let (op, keys) = upd.trigger_op().context("no op")?;
    assert_eq!(op, TriggerOp::Update);
    assert_eq!(keys, ["id"]);
    assert_eq!(upd.urlencoded()?, map(&[("id", Some("1")), ("name", Some("b"))]));
    // backup: the old row, urlencoded, in ev_extra2.
    let old = pgq::Event {
        ev_data: upd.ev_extra2.clone(),
        ..upd.clone()
    };
    assert_eq!(old.urlencoded()?.get("name"), Some(&Some("a".to_string())), "{old:?}");
    Ok(())
}

#[tokio::test]
async fn a_skip_trigger_queues_the_event_and_drops_the_row_change() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    c.batch_execute("create table sk (id int primary key, name text)")
        .await?;
    let mut spec = TriggerSpec::new(TriggerKind::Jsontriga, "sk_pgq", "sk", "q");
    spec.before = true;
    spec.ops = vec![RowOp::Insert];
    spec.options = vec![TriggerOption::Skip];
    pgq::create_trigger(&c, &spec).await?;
    c.batch_execute("insert into sk values (1, 'x')").await?;
    let rows: i64 = c.query_one("select count(*) from sk", &[]).await?.get(0);
    assert_eq!(rows, 0);
    let events = events_after_tick(&c, "q").await?;
    assert_eq!(data(&events), [r#"{"id":1,"name":"x"}"#]);
    Ok(())
}

#[tokio::test]
async fn create_trigger_refuses_bad_specs_before_sending_and_names_table_and_queue_on_sql_errors() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    let mut spec = TriggerSpec::new(TriggerKind::Logutriga, "t", "nosuch", "");
    let err = pgq::create_trigger(&c, &spec).await.expect_err("empty queue name");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");

    spec.queue = "q".into();
    let err = pgq::create_trigger(&c, &spec).await.expect_err("missing table");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    let msg = err.to_string();
    assert!(
        msg.contains("pgq.logutriga") && msg.contains(r#"table "nosuch", queue "q""#),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn payload_helpers_return_errors_on_malformed_payloads() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    for bad in ["id=%zz", "a=1&&b=2", "=x", "k=%C3", "{not json"] {
        pgq::insert_event(&c, "q", "junk", bad).await?;
    }
    pgq::insert_event(&c, "q", "X:id", r#"{"id": "not a number"}"#).await?;
    let events = events_after_tick(&c, "q").await?;
    ensure!(events.len() == 6, "{events:?}");

    for e in &events[..4] {
        match e.urlencoded() {
            Err(Error::Payload { ev_id, format, .. }) => assert_eq!((ev_id, format), (e.ev_id, "urlencoded")),
            other => panic!("{:?} decoded as {other:?}", e.ev_data),
        }
    }
    for e in &events[..5] {
        let err = e.json().expect_err("malformed JSON decoded");
        assert!(err.to_string().contains(&format!("event {}", e.ev_id)), "{err}");
        assert!(matches!(err, Error::Payload { format: "JSON", .. }), "{err:?}");
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Typed {
        id: i64,
    }
    let wrong_type = events[5].json_as::<Typed>().expect_err("a string decoded as a number");
    assert!(matches!(wrong_type, Error::Payload { .. }), "{wrong_type:?}");
    // Not a trigger event: no operation.
    assert!(events[5].trigger_op().is_none());
    assert!(events[0].trigger_op().is_none());
    Ok(())
}
