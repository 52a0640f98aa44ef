//! The embedded ticker: one leader per database, take-over when the leader
//! dies or stops, periodic ticks, retried events coming back and table
//! rotation without pgqd.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use pgq_consumers::{ticker, ConnString};
use pgq_test_support::{wait_for, TestDb};
use tokio_postgres::Client;

use crate::common::{insert, next_batch, queue_db, register, Q};

/// Fast periods, so tests do not wait for the defaults.
fn fast() -> ticker::TickerConfig {
    let mut c = ticker::TickerConfig::enabled();
    c.ticker_period = 0.2;
    c.retry_period = 0.2;
    c.maint_period = 0.3;
    c.leader_check_period = 0.2;
    c
}

fn start(db: &TestDb, name: &str, config: ticker::TickerConfig) -> ticker::TickerTask {
    let ticker = ticker::Ticker::new(ConnString::new(db.dsn()), config)
        .application_name(name)
        .label(name.to_string());
    ticker::TickerTask::spawn(ticker)
}

async fn leader(client: &Client) -> Option<ticker::TickerLeader> {
    ticker::leader(client).await.ok().flatten()
}

async fn wait_leader(client: &Client, what: &str) -> ticker::TickerLeader {
    wait_for(what, Duration::from_secs(10), || leader(client)).await
}

/// Waits until the ticker named `name` has tried for the lead while another
/// one holds it: its connection is there, and its last statement was the
/// lock's try.
async fn wait_tried(client: &Client, name: &str) {
    wait_for(
        &format!("{name} to try for the lead"),
        Duration::from_secs(10),
        || async {
            client
                .query_one(
                    "select count(*) from pg_stat_activity \
                  where application_name = $1 and query like '%pg_try_advisory_lock%'",
                    &[&name],
                )
                .await
                .ok()
                .and_then(|r| r.try_get::<_, i64>(0).ok())
                .filter(|n| *n > 0)
        },
    )
    .await;
}

async fn last_tick(client: &Client) -> Result<i64> {
    let row = client
        .query_one(
            "select max(t.tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue where q.queue_name = $1",
            &[&Q],
        )
        .await?;
    Ok(row.try_get::<_, Option<i64>>(0)?.unwrap_or(0))
}

#[tokio::test]
async fn one_ticker_leads_and_another_takes_over_when_it_stops_or_dies() -> Result<()> {
    let (db, client) = queue_db().await?;
    let mut a = Some(start(&db, "ticker-a", fast()));
    let mut b = Some(start(&db, "ticker-b", fast()));
    let first = wait_leader(&client, "a leader").await;
    // Both keep trying; still exactly one holds the lock.
    let follower = if first.application_name == "ticker-a" {
        "ticker-b"
    } else {
        "ticker-a"
    };
    wait_tried(&client, follower).await;
    let holders: i64 = client
        .query_one(
            "select count(*) from pg_locks where locktype = 'advisory' and granted and objsubid = 2 \
             and classid::int8 = $1 and objid::int8 = $2 \
             and database = (select oid from pg_database where datname = current_database())",
            &[
                &i64::from(pgq_consumers::ticker::LOCK_KEY.0),
                &i64::from(pgq_consumers::ticker::LOCK_KEY.1),
            ],
        )
        .await?
        .try_get(0)?;
    assert_eq!(holders, 1);
    assert_eq!(leader(&client).await.as_ref(), Some(&first));

    // The leader's process stops: the other one takes over within seconds.
    let (stopped, other) = if first.application_name == "ticker-a" {
        (a.take(), "ticker-b")
    } else {
        (b.take(), "ticker-a")
    };
    stopped.context("the leader's task")?.stop().await;
    let second = wait_for("the other ticker to take over", Duration::from_secs(5), || async {
        leader(&client).await.filter(|l| l.application_name == other)
    })
    .await;

    // The new leader's connection dies (the backend is terminated): a fresh
    // ticker takes over, and the old one comes back as a follower.
    let c = start(&db, "ticker-c", fast());
    wait_tried(&client, "ticker-c").await;
    client
        .execute("select pg_terminate_backend($1)", &[&second.pid])
        .await?;
    let third = wait_for(
        "a ticker to take over from the dead one",
        Duration::from_secs(5),
        || async { leader(&client).await.filter(|l| l.pid != second.pid) },
    )
    .await;
    ensure!(third.application_name.starts_with("ticker-"), "{third:?}");

    // Whoever leads ticks.
    let before = last_tick(&client).await?;
    pgq::force_tick(&client, Q).await?;
    wait_for("a tick from the leader", Duration::from_secs(5), || async {
        (last_tick(&client).await.ok()? > before).then_some(())
    })
    .await;

    // Stopping every ticker frees the lock: their connections close, the
    // server ends their sessions.
    c.stop().await;
    if let Some(t) = a {
        t.stop().await;
    }
    if let Some(t) = b {
        t.stop().await;
    }
    wait_for("the lock to be free", Duration::from_secs(2), || async {
        leader(&client).await.is_none().then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn events_of_any_producer_are_ticked_by_the_periodic_pass() -> Result<()> {
    let (db, client) = queue_db().await?;
    register(&client, "c").await?;
    pgq::set_queue_config(&client, Q, "ticker_max_lag", "0.2").await?;
    let ticker = start(&db, "ticker", fast());
    // A plain insert, no notification: the periodic pass ticks it.
    let ev = insert(&client, "plain", "x").await?;
    let batch = wait_for("a batch with the event", Duration::from_secs(10), || async {
        let b = next_batch(&client, "c").await.ok()??;
        let ids = crate::common::event_ids(&client, b.batch_id).await.ok()?;
        pgq::finish_batch(&client, b.batch_id).await.ok()?;
        ids.contains(&ev).then_some(ids)
    })
    .await;
    assert_eq!(batch, vec![ev]);
    ticker.stop().await;
    Ok(())
}

#[tokio::test]
async fn retried_events_come_back_without_pgqd() -> Result<()> {
    let (db, client) = queue_db().await?;
    register(&client, "c").await?;
    let ev = insert(&client, "retry-me", "x").await?;
    crate::common::tick(&client).await?;
    let b = next_batch(&client, "c").await?.context("a batch")?;
    pgq::event_retry(&client, b.batch_id, ev, 0).await?;
    pgq::finish_batch(&client, b.batch_id).await?;

    let ticker = start(&db, "ticker", fast());
    let back = wait_for("the retried event back in a batch", Duration::from_secs(10), || async {
        let b = next_batch(&client, "c").await.ok()??;
        let events = crate::common::events(&client, b.batch_id).await.ok()?;
        pgq::finish_batch(&client, b.batch_id).await.ok()?;
        events.into_iter().find(|e| e.ev_id == ev)
    })
    .await;
    assert_eq!(back.ev_retry, Some(1));
    let left: i64 = client
        .query_one("select count(*) from pgq.retry_queue", &[])
        .await?
        .try_get(0)?;
    assert_eq!(left, 0);
    ticker.stop().await;
    Ok(())
}

/// The queue's current event table, and whether its last rotation is
/// complete (step 2 done).
async fn current_table(client: &Client) -> Option<(i32, bool)> {
    let row = client
        .query_one(
            "select queue_cur_table, queue_switch_step2 is not null from pgq.queue where queue_name = $1",
            &[&Q],
        )
        .await
        .ok()?;
    Some((row.try_get::<_, i32>(0).ok()?, row.try_get::<_, bool>(1).ok()?))
}

#[tokio::test]
async fn maintenance_rotates_the_event_tables() -> Result<()> {
    let (db, client) = queue_db().await?;
    register(&client, "c").await?;
    pgq::set_queue_config(&client, Q, "rotation_period", "0").await?;
    let (first, _) = current_table(&client).await.context("the queue")?;
    let ticker = start(&db, "ticker", fast());
    // The consumer keeps up, so PgQ lets the tables turn: every one of them
    // comes round, each rotation finished by its second step.
    let mut seen = vec![first];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 && std::time::Instant::now() < deadline {
        if let Some(b) = next_batch(&client, "c").await? {
            pgq::finish_batch(&client, b.batch_id).await?;
        }
        if let Some((cur, step2)) = current_table(&client).await {
            if step2 && seen.last() != Some(&cur) {
                seen.push(cur);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(seen.len() >= 4, "rotations: {seen:?}");
    ticker.stop().await;
    Ok(())
}

/// A consumer that reports every event it is handed.
struct Report(tokio::sync::mpsc::UnboundedSender<(i64, std::time::Instant)>);

#[pgq_consumers::async_trait]
impl pgq_consumers::Consumer for Report {
    type Settings = pgq_consumers::NoSettings;

    async fn process_event(
        &mut self,
        ev: &pgq_consumers::Event,
        _cx: &mut pgq_consumers::Context<'_>,
    ) -> Result<pgq_consumers::Outcome, pgq_consumers::BoxError> {
        let _ = self.0.send((ev.ev_id, std::time::Instant::now()));
        Ok(pgq_consumers::Outcome::Ok)
    }
}

#[tokio::test]
async fn a_notified_event_reaches_a_listening_consumer_well_under_delay() -> Result<()> {
    let (db, client) = queue_db().await?;
    register(&client, "c").await?;
    // A default ticker, and a consumer that would poll only every 10 s.
    let ticker = start(&db, "ticker", ticker::TickerConfig::enabled());
    wait_leader(&client, "the ticker to lead").await;
    let config = pgq_consumers::Config::new(db.dsn(), Q, "c").with_delay(Duration::from_secs(10));
    let (sink, mut handled) = tokio::sync::mpsc::unbounded_channel();
    let mut batches = pgq_consumers::BatchLoop::connect(Report(sink), config).await?;
    let delay = Duration::from_secs(10);
    let (idle, first_idle) = tokio::sync::oneshot::channel();
    let mut idle = Some(idle);
    let consumer = tokio::spawn(async move {
        loop {
            while !matches!(batches.round().await?, pgq_consumers::Round::Idle) {}
            if let Some(idle) = idle.take() {
                let _ = idle.send(());
            }
            // What the daemon does between rounds: rest `delay`, or less.
            tokio::select! {
                () = batches.wait_for_tick() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), pgq_consumers::Error>(())
    });
    // The first idle round has passed: what comes now comes by a tick.
    tokio::time::timeout(Duration::from_secs(10), first_idle).await??;

    let mut producer_client = db.connect().await;
    for round in 0..3 {
        let mut producer = pgq::Producer::begin(&mut producer_client, Q).await?;
        producer.send_event("wake", &round.to_string()).await?;
        let committed = std::time::Instant::now();
        producer.commit().await?;
        let (_, at) = tokio::time::timeout(Duration::from_secs(5), handled.recv())
            .await
            .context("the event within 5 s")?
            .context("the consumer is running")?;
        let latency = at.duration_since(committed);
        ensure!(
            latency < Duration::from_secs(1),
            "round {round}: the event took {latency:?} from commit to the handler"
        );
    }
    consumer.abort();
    ticker.stop().await;
    Ok(())
}
