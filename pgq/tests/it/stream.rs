//! Streaming a batch's events: binary rows, read as they arrive.

use anyhow::{ensure, Context, Result};
use futures_util::{pin_mut, TryStreamExt};
use pgq::NewEvent;

use crate::{data, open_batch, setup_queue, tick};

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

#[tokio::test]
async fn read_ahead_reads_the_next_batch_before_it_is_opened_and_hands_it_only_to_that_batch() -> Result<()> {
    let (db, c) = setup_queue("q", "reader").await?;
    let other = db.connect().await;
    let reader = pgq::BatchReader::prepare(&other, "q").await?;
    let no_filter = pgq::EventFilter::default();
    let limits = pgq::BatchLimits::default();
    pgq::insert_event(&c, "q", "first", "1").await?;
    tick(&c, "q").await?;
    let first = pgq::next_batch_custom(&c, "q", "reader", &limits)
        .await?
        .context("the first batch")?;

    // No tick after the open batch yet: nothing to read ahead.
    ensure!(
        reader
            .read_ahead(&other, "reader", &first, 1_000_000, &no_filter)
            .await?
            .is_none(),
        "read ahead with no tick after the batch"
    );

    pgq::insert_event(&c, "q", "second", "2").await?;
    pgq::insert_event(&c, "q", "second", "3").await?;
    let next_tick = tick(&c, "q").await?;
    // Too big for the limit given (by the event sequence, which a forced
    // tick moves on by more than the events): left to be read once open.
    ensure!(
        reader
            .read_ahead(&other, "reader", &first, 2, &no_filter)
            .await?
            .is_none(),
        "a range of two events read ahead with a limit of two"
    );
    let upcoming = reader
        .read_ahead(&other, "reader", &first, 1_000_000, &no_filter)
        .await?
        .context("nothing read ahead with a tick after the batch")?;
    assert_eq!(upcoming.ticks(), (first.cur_tick_id, next_tick));

    // The batch opened after `first` is that range: its events, as the
    // batch's own query reads them.
    assert!(pgq::finish_batch(&c, first.batch_id).await?);
    let second = pgq::next_batch_custom(&c, "q", "reader", &limits)
        .await?
        .context("the second batch")?;
    let ahead: Vec<_> = upcoming
        .into_batch(&second)
        .context("the read-ahead refused the batch of its range")?
        .try_collect()
        .await?;
    let own: Vec<_> = reader.events(&other, second.batch_id, &no_filter).await?;
    assert_eq!(data(&ahead), ["2", "3"]);
    assert_eq!(ahead, own);

    // A batch of another range does not take it.
    let stale = reader
        .read_ahead(&other, "reader", &first, 1_000_000, &no_filter)
        .await?
        .context("nothing read ahead")?;
    ensure!(
        stale.into_batch(&first).is_none(),
        "the read-ahead of (first end, next tick] handed to the first batch"
    );
    Ok(())
}
