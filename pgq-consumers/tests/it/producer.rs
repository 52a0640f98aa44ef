//! The fast producer (`pgq::Producer`): events handed over one at a time
//! arrive whole and in order, through a direct insert or, for a role without
//! the right to it, `pgq.insert_event`; bulk COPY keeps extra fields, also
//! when they appear midway; the ticker is notified at commit, not before.

use std::time::Duration;

use anyhow::{Context as _, Result};
use pgq::NewEvent;
use pgq_consumers::{connect_listening, ConnString, Database};

use crate::common::{events, next_batch, queue_db, register, tick, Q};

fn event(i: usize, extras: bool) -> NewEvent {
    let mut e = NewEvent::new(format!("t{i}"), format!("d{i}"));
    if extras {
        e.ev_extra1 = Some(format!("x1-{i}"));
        e.ev_extra4 = Some(format!("x4-{i}"));
    }
    e
}

fn fields(e: &pgq::Event) -> NewEvent {
    NewEvent {
        ev_type: e.ev_type.clone(),
        ev_data: e.ev_data.clone(),
        ev_extra1: e.ev_extra1.clone(),
        ev_extra2: e.ev_extra2.clone(),
        ev_extra3: e.ev_extra3.clone(),
        ev_extra4: e.ev_extra4.clone(),
    }
}

/// Reads the consumer's next batch whole.
async fn read_batch(client: &tokio_postgres::Client, consumer: &str) -> Result<Vec<NewEvent>> {
    tick(client).await?;
    let b = next_batch(client, consumer).await?.context("a batch")?;
    let got = events(client, b.batch_id).await?;
    pgq::finish_batch(client, b.batch_id).await?;
    Ok(got.iter().map(fields).collect())
}

#[tokio::test]
async fn sent_and_copied_events_arrive_whole_and_in_order() -> Result<()> {
    let (_db, mut client) = queue_db().await?;
    register(&client, "c").await?;

    // Per event, through buffers smaller than the count.
    let sent: Vec<NewEvent> = (0..250).map(|i| event(i, i % 3 == 0)).collect();
    let mut producer = pgq::Producer::begin(&mut client, Q).await?.buffer(100, 1 << 20);
    for e in &sent {
        producer.send(e.clone()).await?;
    }
    assert_eq!(producer.commit().await?, 250);
    assert_eq!(read_batch(&client, "c").await?, sent);

    // COPY: plain events, then some with extra fields (a second COPY).
    let copied: Vec<NewEvent> = (0..30).map(|i| event(i, i >= 20)).collect();
    let mut producer = pgq::Producer::begin(&mut client, Q).await?;
    assert_eq!(producer.copy_in(&copied).await?, 30);
    producer.commit().await?;
    assert_eq!(read_batch(&client, "c").await?, copied);

    // Rolled back: nothing arrives.
    let mut producer = pgq::Producer::begin(&mut client, Q).await?;
    producer.send_event("gone", "x").await?;
    producer.flush().await?;
    producer.rollback().await?;
    assert!(read_batch(&client, "c").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_role_without_direct_insert_rights_produces_through_pgq_insert_event() -> Result<()> {
    let (_db, mut client) = queue_db().await?;
    register(&client, "c").await?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let role = format!("pgqc_writer_{}_{nanos}", std::process::id());
    client
        .batch_execute(&format!("create role {role} nologin in role pgq_writer"))
        .await?;
    let outcome = async {
        client.batch_execute(&format!("set role {role}")).await?;
        let sent: Vec<NewEvent> = (0..10).map(|i| event(i, i == 5)).collect();
        let mut producer = pgq::Producer::begin(&mut client, Q).await?;
        for e in &sent {
            producer.send(e.clone()).await?;
        }
        producer.commit().await?;
        client.batch_execute("reset role").await?;
        anyhow::ensure!(read_batch(&client, "c").await? == sent, "the events differ");
        Ok(())
    }
    .await;
    client.batch_execute(&format!("reset role; drop role {role}")).await?;
    outcome
}

#[tokio::test]
async fn the_ticker_is_notified_when_the_events_commit() -> Result<()> {
    let (db, mut client) = queue_db().await?;
    let (listener, mut notes) = connect_listening(&ConnString::new(db.dsn()), "listener", Database::Queue).await?;
    pgq::listen(&listener, pgq::EVENTS_CHANNEL).await?;

    let mut producer = pgq::Producer::begin(&mut client, Q).await?;
    producer.send_event("e", "1").await?;
    producer.flush().await?;
    // Sent, not committed: nothing yet.
    assert!(tokio::time::timeout(Duration::from_millis(300), notes.recv())
        .await
        .is_err());
    producer.commit().await?;
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .context("a notification within 5 s")?
        .context("the listening connection is open")?;
    assert_eq!(note.channel(), pgq::EVENTS_CHANNEL);
    assert_eq!(note.payload(), Q);

    // Without notify, none.
    let mut producer = pgq::Producer::begin(&mut client, Q).await?.notify(false);
    producer.send_event("e", "2").await?;
    producer.commit().await?;
    assert!(tokio::time::timeout(Duration::from_millis(300), notes.recv())
        .await
        .is_err());
    Ok(())
}
