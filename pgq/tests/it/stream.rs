//! Streaming a batch's events: binary rows, read as they arrive.

use anyhow::{ensure, Context, Result};
use futures_util::{pin_mut, TryStreamExt};
use pgq::NewEvent;

use crate::{open_batch, setup_queue, tick};

#[tokio::test]
async fn stream_batch_events_yields_the_same_events_as_get_batch_events() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    pgq::insert_event(&c, "q", "plain", "x").await?;
    pgq::insert_event_full(
        &c,
        "q",
        &NewEvent {
            ev_extra2: Some("extra two".into()),
            ev_extra4: Some("ünïcödé ✓".into()),
            ..NewEvent::new("full", "{\"json\": [1, 2]}")
        },
    )
    .await?;
    pgq::insert_event_full(&c, "q", &NewEvent::default()).await?;
    tick(&c, "q").await?;
    let batch = open_batch(&c, "q", "reader").await?;

    let plain = pgq::get_batch_events(&c, batch).await?;
    let streamed: Vec<_> = pgq::stream_batch_events(&c, batch).await?.try_collect().await?;
    assert_eq!(plain.len(), 3);
    assert_eq!(streamed, plain);
    Ok(())
}

#[tokio::test]
async fn stream_batch_events_reads_a_200k_event_batch_in_order() -> Result<()> {
    const N: usize = 200_000;
    let (_db, mut c) = setup_queue("q", "reader").await?;
    let events: Vec<NewEvent> = (0..N).map(|i| NewEvent::new("bulk", i.to_string())).collect();
    let tx = c.transaction().await?;
    pgq::insert_events_copy(&tx, "q", &events).await?;
    tx.commit().await?;
    drop(events);
    tick(&c, "q").await?;
    let batch = open_batch(&c, "q", "reader").await?;

    let stream = pgq::stream_batch_events(&c, batch).await?;
    pin_mut!(stream);
    let mut n = 0usize;
    let mut last_id = i64::MIN;
    while let Some(ev) = stream.try_next().await? {
        ensure!(ev.ev_id > last_id, "event {} after {last_id}", ev.ev_id);
        ensure!(ev.data() == n.to_string(), "event #{n} carries {:?}", ev.ev_data);
        last_id = ev.ev_id;
        n += 1;
    }
    assert_eq!(n, N);
    // The connection is free again once the stream is read.
    assert!(pgq::finish_batch(&c, batch).await?);
    Ok(())
}

#[tokio::test]
async fn stream_batch_events_of_an_unknown_batch_is_an_error_naming_it() -> Result<()> {
    let (_db, c) = setup_queue("q", "reader").await?;
    let err = pgq::stream_batch_events(&c, 31_337)
        .await
        .err()
        .context("streamed an unknown batch")?;
    assert!(err.to_string().contains("batch 31337"), "{err}");
    Ok(())
}
