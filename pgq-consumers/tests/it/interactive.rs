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

/// Its settings: a URL, `bad` (refused by `configure`) and `remote` (which
/// would make it a remote consumer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: String,
    #[serde(default)]
    bad: bool,
    #[serde(default)]
    remote: bool,
}

/// Remembers the settings it was configured with; refuses `bad = true`.
struct Configured {
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Consumer for Configured {
    type Settings = Settings;

    async fn process_event(&mut self, _ev: &Event, _cx: &mut Context<'_>) -> Result<Outcome, BoxError> {
        Ok(Outcome::Ok)
    }

    async fn configure(&mut self, settings: Settings) -> Result<(), BoxError> {
        if settings.bad {
            return Err("bad settings".into());
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(settings.url);
        }
        Ok(())
    }

    fn commit_mode(settings: &Settings) -> pgq_consumers::CommitMode {
        if settings.remote {
            pgq_consumers::CommitMode::Remote
        } else {
            pgq_consumers::CommitMode::Local
        }
    }
}

fn with_settings(db: &pgq_test_support::TestDb, settings: &str) -> Result<Config> {
    let text = format!(
        "db = '{}'\nqueue = 'q'\nconsumer = 'c'\n[settings]\n{settings}\n",
        db.dsn()
    );
    Ok(Config::parse(Path::new("t.toml"), &text)?)
}

/// The message of an error and of its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

#[tokio::test]
async fn typed_settings_are_read_once_at_start_and_again_on_each_reconfigure_and_a_bad_reload_keeps_them() -> Result<()>
{
    let (db, _client) = setup().await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = Configured {
        seen: Arc::clone(&seen),
    };
    let urls = |seen: &Arc<Mutex<Vec<String>>>| seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mut lp = BatchLoop::connect(consumer, with_settings(&db, "url = 'one'")?).await?;
    assert_eq!(urls(&seen), ["one"], "configured once at start");

    lp.reconfigure(with_settings(&db, "url = 'two'")?).await?;
    assert_eq!(urls(&seen), ["one", "two"]);
    assert_eq!(lp.config().settings.get("url").and_then(|v| v.as_str()), Some("two"));

    // Every refused reload keeps the configuration and the settings.
    let refused = [
        ("url = 'three'\nbad = true", "refused its settings"),
        ("url = 'three'\nverbose = true", "unknown field `verbose`"),
        ("url = 3", "invalid type: integer `3`, expected a string"),
        ("url = 'three'\nremote = true", "the commit mode"),
    ];
    for (settings, why) in refused {
        let err = lp
            .reconfigure(with_settings(&db, settings)?)
            .await
            .expect_err("a refused reload");
        assert!(chain(&err).contains(why), "{settings}: {}", chain(&err));
    }
    let moved = Config::parse(
        Path::new("t.toml"),
        &format!(
            "db = '{}'\nqueue = 'other'\nconsumer = 'c'\n[settings]\nurl = 'four'\n",
            db.dsn()
        ),
    )?;
    let err = lp.reconfigure(moved).await.expect_err("another queue");
    assert!(matches!(err, Error::ReloadRefused { key: "`queue`", .. }), "{err:?}");
    assert!(chain(&err).contains("restart"), "{}", chain(&err));
    assert_eq!(urls(&seen), ["one", "two"], "nothing else was configured");
    assert_eq!(lp.config().settings.get("url").and_then(|v| v.as_str()), Some("two"));
    assert_eq!(lp.config().queue, "q");

    for (settings, error) in [
        ("bad = true\nurl = 'x'", "refused"),
        ("uri = 'x'", "unknown field `uri`"),
    ] {
        let refused = BatchLoop::connect(
            Configured {
                seen: Arc::new(Mutex::new(Vec::new())),
            },
            with_settings(&db, settings)?,
        )
        .await;
        match refused {
            Err(e) => assert!(chain(&e).contains(error), "{}", chain(&e)),
            Ok(_) => panic!("{settings} must be refused at start"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_batch_loop_embedded_before_install_is_refused_at_connect_saying_to_run_install() -> Result<()> {
    let db = pgq_test_support::TestDb::create().await;
    let client = db.connect().await;
    client.execute("select pgq.create_queue('q')", &[]).await?;
    crate::common::register(&client, crate::scripted::CONSUMER).await?;
    let refused = BatchLoop::connect(Scripted::by_type(), config(&db, "")).await;
    match refused {
        Err(e @ Error::SchemaOutdated { installed: None, .. }) => {
            assert!(chain(&e).contains("run the `install` command first"), "{}", chain(&e));
        }
        Err(e) => panic!("expected SchemaOutdated, got {}", chain(&e)),
        Ok(_) => panic!("a loop without the framework's SQL must be refused"),
    }
    Ok(())
}

#[tokio::test]
async fn the_frameworks_own_sql_failing_under_the_handler_is_reported_as_itself_not_as_the_handlers_error() -> Result<()>
{
    let (db, mut client) = setup().await?;
    insert_all(&mut client, &["ok", "fail", "ok"]).await?;
    tick(&client).await?;
    let mut lp = batch_loop(Scripted::by_type(), config(&db, "")).await?;
    // Storing the failed event will fail: the framework's table is gone.
    client
        .batch_execute("alter table pgq_consumer.failed_event rename to failed_event_elsewhere")
        .await?;
    let err = lp.round().await.expect_err("storing the failed event fails");
    assert!(
        !matches!(err, Error::Handler { .. }),
        "not the handler's: {}",
        chain(&err)
    );
    assert!(chain(&err).contains("pgq_consumer.failed_event_add"), "{}", chain(&err));
    assert!(done_counts(&client).await?.is_empty(), "the batch was rolled back");
    Ok(())
}
