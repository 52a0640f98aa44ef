//! Producing events: one at a time, raw, pipelined, and through COPY.

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, SubsecRound, Utc};
use pgq::{NewEvent, RawEvent};

use crate::{consume, data, setup_queue, tick};

#[tokio::test]
async fn insert_event_returns_increasing_ids_of_events_delivered_after_commit_and_tick() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    let first = pgq::insert_event(&c, "q", "t", "one").await?;
    let second = pgq::insert_event(&c, "q", "t", "two").await?;
    assert!(second > first);
    tick(&c, "q").await?;
    let events = consume(&c, "q", "reader").await?;
    assert_eq!(events.iter().map(|e| e.ev_id).collect::<Vec<_>>(), [first, second]);
    assert_eq!(data(&events), ["one", "two"]);

    let err = pgq::insert_event(&c, "nosuch", "t", "x")
        .await
        .expect_err("missing queue");
    assert!(
        err.to_string()
            .contains(r#"pgq.insert_event failed for queue "nosuch""#),
        "{err}"
    );
    assert!(err.code().is_some());
    Ok(())
}

#[tokio::test]
async fn insert_event_full_stores_the_four_extra_fields() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    let ev = NewEvent {
        ev_extra1: Some("e1".into()),
        ev_extra2: Some("e2".into()),
        ev_extra3: Some("e3".into()),
        ev_extra4: Some("e4".into()),
        ..NewEvent::new("typ", "dat")
    };
    let id = pgq::insert_event_full(&c, "q", &ev).await?;
    tick(&c, "q").await?;
    let got = consume(&c, "q", "reader").await?;
    ensure!(got.len() == 1, "{got:?}");
    let g = &got[0];
    assert_eq!(g.ev_id, id);
    assert_eq!(
        NewEvent {
            ev_type: g.ev_type.clone(),
            ev_data: g.ev_data.clone(),
            ev_extra1: g.ev_extra1.clone(),
            ev_extra2: g.ev_extra2.clone(),
            ev_extra3: g.ev_extra3.clone(),
            ev_extra4: g.ev_extra4.clone(),
        },
        ev
    );
    Ok(())
}

#[tokio::test]
async fn insert_event_raw_keeps_the_given_id_time_retry_count_and_owner() -> Result<()> {
    let (_db, c) = setup_queue("q", "a").await?;
    pgq::register_consumer(&c, "q", "b").await?;
    let when = DateTime::parse_from_rfc3339("2021-06-01T00:00:00.123456Z")?.with_timezone(&Utc);
    let given = pgq::insert_event_raw(
        &c,
        "q",
        &RawEvent {
            ev_id: Some(777_777),
            ev_time: when,
            ev_owner: None,
            ev_retry: Some(2),
            fields: NewEvent::new("raw", "given id"),
        },
    )
    .await?;
    assert_eq!(given, 777_777);
    let assigned = pgq::insert_event_raw(
        &c,
        "q",
        &RawEvent {
            ev_id: None,
            ev_time: when,
            ev_owner: None,
            ev_retry: None,
            fields: NewEvent::new("raw", "assigned id"),
        },
    )
    .await?;
    assert_ne!(assigned, given);
    // An owner makes it a retry event: delivered to that subscription only.
    let a_sub: i32 = c
        .query_one(
            "select s.sub_id from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
              where c.co_name = 'a'",
            &[],
        )
        .await?
        .get(0);
    pgq::insert_event_raw(
        &c,
        "q",
        &RawEvent {
            ev_id: None,
            ev_time: when,
            ev_owner: Some(a_sub),
            ev_retry: Some(1),
            fields: NewEvent::new("raw", "for a"),
        },
    )
    .await?;
    tick(&c, "q").await?;

    let a = consume(&c, "q", "a").await?;
    let b = consume(&c, "q", "b").await?;
    let mut a_data = data(&a);
    a_data.sort_unstable();
    assert_eq!(a_data, ["assigned id", "for a", "given id"]);
    assert_eq!(data(&b).len(), 2, "{b:?}");
    assert!(!data(&b).contains(&"for a"));
    let g = a.iter().find(|e| e.ev_id == given).context("given id not delivered")?;
    assert_eq!((g.ev_time, g.ev_retry), (when, Some(2)));
    let n = a
        .iter()
        .find(|e| e.ev_id == assigned)
        .context("assigned id not delivered")?;
    assert_eq!(n.ev_retry, None);
    Ok(())
}

fn numbered(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            ev_extra1: Some(format!("x{i}")),
            ..NewEvent::new("num", i.to_string())
        })
        .collect()
}

#[tokio::test]
async fn insert_events_pipelines_many_inserts_returning_ids_in_order_in_one_transaction() -> Result<()> {
    let (_db, mut c) = setup_queue("q", "reader").await?;
    // More than one pipelining window (1024).
    let events = numbered(2_500);
    let tx = c.transaction().await?;
    let txid: i64 = tx.query_one("select txid_current()", &[]).await?.get(0);
    let ids = pgq::insert_events(&tx, "q", &events).await?;
    tx.commit().await?;
    assert_eq!(ids.len(), events.len());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order");

    tick(&c, "q").await?;
    let got = consume(&c, "q", "reader").await?;
    assert_eq!(got.len(), events.len());
    for (i, (e, id)) in got.iter().zip(&ids).enumerate() {
        assert_eq!(e.ev_id, *id);
        assert_eq!(e.data(), i.to_string(), "event {id} is not the {i}th inserted");
        assert_eq!(e.ev_extra1, Some(format!("x{i}")));
        assert_eq!(e.ev_txid, txid, "event {id} committed in another transaction");
    }
    assert!(pgq::insert_events(&c, "q", &[]).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn insert_events_rolled_back_leaves_no_event_visible() -> Result<()> {
    let (_db, mut c) = setup_queue("q", "reader").await?;
    let tx = c.transaction().await?;
    let ids = pgq::insert_events(&tx, "q", &numbered(100)).await?;
    assert_eq!(ids.len(), 100);
    tx.rollback().await?;

    let id = crate::queue_id(&c, "q").await?;
    let stored: i64 = c
        .query_one(&format!("select count(*) from pgq.event_{id}"), &[])
        .await?
        .get(0);
    assert_eq!(stored, 0);
    tick(&c, "q").await?;
    assert!(consume(&c, "q", "reader").await?.is_empty());

    let err = pgq::insert_events(&c, "nosuch", &numbered(3))
        .await
        .expect_err("missing queue");
    assert!(err.to_string().contains(r#"queue "nosuch""#), "{err}");
    Ok(())
}

#[tokio::test]
async fn insert_events_copy_lands_10000_events_with_time_and_ids_delivered_in_one_batch() -> Result<()> {
    let (_db, mut c) = setup_queue("q", "reader").await?;
    let events = numbered(10_000);
    let before = Utc::now().trunc_subsecs(6);
    let tx = c.transaction().await?;
    let txid: i64 = tx.query_one("select txid_current()", &[]).await?.get(0);
    assert_eq!(pgq::insert_events_copy(&tx, "q", &events).await?, 10_000);
    tx.commit().await?;
    let after = Utc::now();

    tick(&c, "q").await?;
    let got = consume(&c, "q", "reader").await?;
    assert_eq!(got.len(), 10_000);
    let ids: HashSet<i64> = got.iter().map(|e| e.ev_id).collect();
    assert_eq!(ids.len(), 10_000, "ids not unique");
    for (i, e) in got.iter().enumerate() {
        assert!(e.ev_id > 0);
        assert_eq!(e.data(), i.to_string());
        assert_eq!((e.kind(), e.ev_extra1.clone()), ("num", Some(format!("x{i}"))));
        assert!(
            e.ev_time >= before && e.ev_time <= after,
            "ev_time {} not set by the copy",
            e.ev_time
        );
        assert_eq!((e.ev_txid, e.ev_retry), (txid, None));
    }

    let tx = c.transaction().await?;
    let err = pgq::insert_events_copy(&tx, "nosuch", &events)
        .await
        .expect_err("missing queue");
    assert!(err.to_string().contains(r#"queue "nosuch""#), "{err}");
    Ok(())
}
