//! The failed-event store: store with a reason, list, count, delete, retry
//! for one consumer only.

use anyhow::Result;
use pgq_consumers::{failed, Error};

use crate::common::{
    consume, event_ids, events, finish, insert, maint_retry_events, next_batch, queue_db, register, tick, Q,
};

#[tokio::test]
async fn failed_event_is_stored_with_its_reason_in_the_batch_transaction_and_listed() -> Result<()> {
    let (_db, mut client) = queue_db().await?;
    register(&client, "c").await?;
    let e1 = insert(&client, "ok", "one").await?;
    let e2 = insert(&client, "bad", "two").await?;
    tick(&client).await?;

    let batch = next_batch(&client, "c").await?.expect("a batch");
    let delivered = events(&client, batch.batch_id).await?;
    assert_eq!(delivered.iter().map(|e| e.ev_id).collect::<Vec<_>>(), vec![e1, e2]);
    let bad = delivered[1].clone();

    // A transaction that rolls back stores nothing.
    let tx = client.transaction().await?;
    failed::add(&tx, Q, "c", &bad, "cannot parse").await?;
    tx.rollback().await?;
    assert_eq!(failed::count(&client, Q, "c").await?, 0);

    let tx = client.transaction().await?;
    failed::add(&tx, Q, "c", &bad, "cannot parse").await?;
    finish(&tx, batch.batch_id).await?;
    tx.commit().await?;

    let failed = failed::list(&client, Q, "c").await?;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event, bad, "the whole event is kept");
    assert_eq!(failed[0].reason, "cannot parse");
    assert_eq!(failed::count(&client, Q, "c").await?, 1);
    assert_eq!(failed::count(&client, Q, "other").await?, 0);
    Ok(())
}

#[tokio::test]
async fn failed_events_are_listed_in_event_order_and_by_page() -> Result<()> {
    let (_db, client) = queue_db().await?;
    register(&client, "c").await?;
    for i in 0..5 {
        insert(&client, "t", &format!("{i}")).await?;
    }
    tick(&client).await?;
    let batch = next_batch(&client, "c").await?.expect("a batch");
    let mut evs = events(&client, batch.batch_id).await?;
    evs.reverse();
    for e in &evs {
        failed::add(&client, Q, "c", e, &format!("reason {}", e.ev_id)).await?;
    }
    finish(&client, batch.batch_id).await?;

    let ids: Vec<i64> = failed::list(&client, Q, "c")
        .await?
        .iter()
        .map(|f| f.event.ev_id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let page: Vec<i64> = failed::list_page(&client, Q, "c", Some(2), 1)
        .await?
        .iter()
        .map(|f| f.event.ev_id)
        .collect();
    assert_eq!(page, sorted[1..3].to_vec());
    Ok(())
}

#[tokio::test]
async fn event_of_an_active_batch_is_stored_by_id() -> Result<()> {
    let (_db, client) = queue_db().await?;
    register(&client, "c").await?;
    let e1 = insert(&client, "t", "one").await?;
    tick(&client).await?;
    let batch = next_batch(&client, "c").await?.expect("a batch");

    match failed::add_from_batch(&client, batch.batch_id, e1 + 1000, "no such event").await {
        Err(Error::Batch { batch_id, .. }) => assert_eq!(batch_id, batch.batch_id),
        other => panic!("expected Error::Batch for an event not in the batch, got {other:?}"),
    }
    failed::add_from_batch(&client, batch.batch_id, e1, "by id").await?;
    finish(&client, batch.batch_id).await?;
    match failed::add_from_batch(&client, batch.batch_id, e1, "too late").await {
        Err(Error::BatchNotActive { batch_id, .. }) => assert_eq!(batch_id, batch.batch_id),
        other => panic!("expected BatchNotActive for a finished batch, got {other:?}"),
    }

    let failed = failed::list(&client, Q, "c").await?;
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].event.ev_id, failed[0].reason.as_str()), (e1, "by id"));
    Ok(())
}

#[tokio::test]
async fn retry_puts_the_event_back_for_that_consumer_only() -> Result<()> {
    let (_db, client) = queue_db().await?;
    register(&client, "c1").await?;
    register(&client, "c2").await?;
    let e1 = insert(&client, "t", "payload").await?;
    let e2 = insert(&client, "t", "other").await?;
    tick(&client).await?;

    // c1 gives up on e1; c2 processes both.
    let b1 = next_batch(&client, "c1").await?.expect("c1's batch");
    let failed_ev = events(&client, b1.batch_id)
        .await?
        .into_iter()
        .find(|e| e.ev_id == e1)
        .expect("e1");
    failed::add(&client, Q, "c1", &failed_ev, "downstream refused").await?;
    finish(&client, b1.batch_id).await?;
    assert_eq!(consume(&client, "c2").await?, Some(vec![e1, e2]));

    assert_eq!(failed::retry(&client, Q, "c1", &[e1]).await?, 1);
    assert_eq!(
        failed::count(&client, Q, "c1").await?,
        0,
        "retry takes it out of the store"
    );
    assert!(maint_retry_events(&client).await? >= 1);
    tick(&client).await?;

    let b1 = next_batch(&client, "c1").await?.expect("c1's next batch");
    let again = events(&client, b1.batch_id).await?;
    assert_eq!(again.len(), 1, "only the retried event: {again:?}");
    assert_eq!(again[0].ev_id, e1);
    assert_eq!(again[0].ev_data.as_deref(), Some("payload"));
    assert_eq!(again[0].ev_retry, Some(1));
    finish(&client, b1.batch_id).await?;

    assert_eq!(
        consume(&client, "c2").await?,
        Some(vec![]),
        "c2 does not see the event again"
    );
    Ok(())
}

#[tokio::test]
async fn retry_all_puts_every_failed_event_back() -> Result<()> {
    let (_db, client) = queue_db().await?;
    register(&client, "c").await?;
    let ids = [insert(&client, "t", "a").await?, insert(&client, "t", "b").await?];
    tick(&client).await?;
    let batch = next_batch(&client, "c").await?.expect("a batch");
    for e in events(&client, batch.batch_id).await? {
        failed::add(&client, Q, "c", &e, "all bad").await?;
    }
    finish(&client, batch.batch_id).await?;

    assert_eq!(failed::retry_all(&client, Q, "c").await?, 2);
    assert_eq!(failed::retry_all(&client, Q, "c").await?, 0);
    maint_retry_events(&client).await?;
    tick(&client).await?;
    let batch = next_batch(&client, "c").await?.expect("the retried events");
    assert_eq!(event_ids(&client, batch.batch_id).await?, ids.to_vec());
    Ok(())
}

#[tokio::test]
async fn delete_and_retry_report_ids_that_are_not_stored() -> Result<()> {
    let (_db, client) = queue_db().await?;
    register(&client, "c").await?;
    for i in 0..3 {
        insert(&client, "t", &i.to_string()).await?;
    }
    tick(&client).await?;
    let batch = next_batch(&client, "c").await?.expect("a batch");
    let evs = events(&client, batch.batch_id).await?;
    for e in &evs {
        failed::add(&client, Q, "c", e, "bad").await?;
    }
    finish(&client, batch.batch_id).await?;
    let missing = evs[2].ev_id + 1000;

    assert_eq!(failed::delete(&client, Q, "c", &[evs[0].ev_id, missing]).await?, 1);
    assert_eq!(
        failed::delete(&client, Q, "c", &[evs[0].ev_id]).await?,
        0,
        "already gone"
    );
    assert_eq!(failed::retry(&client, Q, "c", &[missing]).await?, 0);
    assert_eq!(
        failed::delete(&client, Q, "other", &[evs[1].ev_id]).await?,
        0,
        "another consumer's"
    );
    assert_eq!(failed::count(&client, Q, "c").await?, 2);
    assert_eq!(failed::delete_all(&client, Q, "c").await?, 2);
    assert_eq!(failed::delete_all(&client, Q, "c").await?, 0);
    assert!(failed::list(&client, Q, "c").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn retry_for_an_unregistered_consumer_fails_and_keeps_the_event() -> Result<()> {
    let (_db, client) = queue_db().await?;
    register(&client, "c").await?;
    let e1 = insert(&client, "t", "x").await?;
    tick(&client).await?;
    let batch = next_batch(&client, "c").await?.expect("a batch");
    let ev = events(&client, batch.batch_id).await?.remove(0);
    finish(&client, batch.batch_id).await?;
    failed::add(&client, Q, "gone", &ev, "bad").await?;

    match failed::retry(&client, Q, "gone", &[e1]).await {
        Err(Error::NotRegistered {
            queue,
            consumer,
            subconsumer: None,
            ..
        }) => {
            assert_eq!((queue.as_str(), consumer.as_str()), (Q, "gone"));
        }
        other => panic!("expected NotRegistered, got {other:?}"),
    }
    assert_eq!(failed::count(&client, Q, "gone").await?, 1);
    Ok(())
}
