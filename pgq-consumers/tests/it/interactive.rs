//! The interactive consumer (`BatchLoop::consume_available`: everything
//! there is, then return what was done) and the `config` hook.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use pgq_consumers::{async_trait, BatchLoop, BoxError, Config, Consumer, Context, Error, Event, Outcome};

use crate::common::tick;
use crate::scripted::{batch_loop, config, counts, done_counts, insert_all, setup, Scripted};

#[tokio::test]
async fn consume_available_processes_every_batch_there_is_and_says_what_each_came_to() -> Result<()> {
    let (db, mut client) = setup().await?;
    for types in [&["ok", "ok"][..], &["fail"], &["ok", "retry"]] {
        insert_all(&mut client, types).await?;
        tick(&client).await?;
    }
    let mut lp = batch_loop(Scripted::by_type(), config(&db, "")).await?;

    let reports = lp.consume_available().await?;
    assert_eq!(
        reports.iter().map(counts).collect::<Vec<_>>(),
        [(2, 2, 0, 0), (1, 0, 1, 0), (2, 1, 0, 1)]
    );
    assert!(reports.windows(2).all(|w| w[0].batch_id < w[1].batch_id), "{reports:?}");
    assert!(lp.consume_available().await?.is_empty(), "nothing left");
    Ok(())
}

#[tokio::test]
async fn consume_available_stops_at_an_aborted_batch_and_the_next_call_does_it() -> Result<()> {
    let (db, mut client) = setup().await?;
    let mut ids = Vec::new();
    for types in [&["ok"][..], &["abort"], &["ok"]] {
        ids.extend(insert_all(&mut client, types).await?);
        tick(&client).await?;
    }
    let mut lp = batch_loop(Scripted::by_type(), config(&db, "")).await?;

    assert_eq!(lp.consume_available().await?.len(), 1, "up to the aborted batch");
    assert_eq!(
        lp.consume_available().await?.len(),
        2,
        "the aborted batch again, and the rest"
    );
    assert_eq!(done_counts(&client).await?, ids.iter().map(|id| (*id, 1)).collect());
    Ok(())
}

#[tokio::test]
async fn consume_available_returns_the_handlers_error_and_the_next_call_does_the_batch() -> Result<()> {
    let (db, mut client) = setup().await?;
    let ids = insert_all(&mut client, &["ok", "error"]).await?;
    tick(&client).await?;
    let mut lp = batch_loop(Scripted::by_type(), config(&db, "")).await?;

    let err = lp.consume_available().await.expect_err("the handler's error");
    assert!(matches!(err, Error::Handler { .. }), "{err:?}");
    assert!(done_counts(&client).await?.is_empty());
    assert_eq!(lp.consume_available().await?.len(), 1);
    assert_eq!(done_counts(&client).await?, ids.iter().map(|id| (*id, 1)).collect());
    Ok(())
}

/// Remembers the `[settings]` it was configured with; refuses `bad = true`.
struct Configured {
    seen: Arc<Mutex<Vec<toml::Table>>>,
}

#[async_trait]
impl Consumer for Configured {
    async fn process_event(&mut self, _ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        Ok(Outcome::Ok)
    }

    async fn config(&mut self, settings: &toml::Table) -> Result<(), BoxError> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(settings.clone());
        }
        if settings.get("bad").and_then(toml::Value::as_bool) == Some(true) {
            return Err("bad settings".into());
        }
        Ok(())
    }
}

fn with_settings(db: &pgq_test_support::TestDb, settings: &str) -> Result<Config> {
    let text = format!(
        "db = '{}'\nqueue = 'q'\nconsumer = 'c'\n[settings]\n{settings}\n",
        db.dsn()
    );
    Ok(Config::parse(Path::new("t.toml"), &text)?)
}

#[tokio::test]
async fn config_hook_gets_the_settings_once_at_start_and_again_on_each_reconfigure() -> Result<()> {
    let (db, _client) = setup().await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = Configured {
        seen: Arc::clone(&seen),
    };
    let settings = |seen: &Arc<Mutex<Vec<toml::Table>>>| {
        seen.lock()
            .map(|s| s.iter().map(ToString::to_string).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let mut lp = BatchLoop::connect(consumer, with_settings(&db, "url = 'one'")?).await?;
    assert_eq!(settings(&seen), ["url = \"one\"\n"], "called once at start");

    lp.reconfigure(with_settings(&db, "url = 'two'")?).await?;
    assert_eq!(settings(&seen).len(), 2);
    assert_eq!(lp.config().settings.get("url").and_then(|v| v.as_str()), Some("two"));

    let err = lp
        .reconfigure(with_settings(&db, "url = 'three'\nbad = true")?)
        .await
        .expect_err("the consumer refuses these settings");
    assert!(matches!(err, Error::Settings { .. }), "{err:?}");
    assert_eq!(
        lp.config().settings.get("url").and_then(|v| v.as_str()),
        Some("two"),
        "a refused reload keeps the configuration"
    );

    let refused = BatchLoop::connect(
        Configured {
            seen: Arc::new(Mutex::new(Vec::new())),
        },
        with_settings(&db, "bad = true")?,
    )
    .await;
    assert!(matches!(refused, Err(Error::Settings { .. })));
    Ok(())
}
