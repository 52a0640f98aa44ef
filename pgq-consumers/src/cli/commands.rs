//! The commands that manage a consumer's queue, registration and failed
//! events (everything but the daemon commands).

use std::io::Write;

use tokio_postgres::Client;

use crate::batch_loop::application_name;
use crate::cli::{Command, Selection};
use crate::config::Config;
use crate::consumer::{configure, read_settings, CommitMode, Consumer};
use crate::error::{Error, Result};
use crate::net::connect::{connect, connect_control, within_control_timeout, Database};
use crate::{coop, failed, schema};

/// Runs a command. Every one but `install` is a control command: it
/// answers within [`CONTROL_TIMEOUT`](crate::CONTROL_TIMEOUT) whatever the
/// database does (exit 3 when it does not answer). `install` works as a
/// daemon's connection does, since its schema changes and the consumer's
/// own install step may wait for locks or take a while.
pub(crate) async fn run<C: Consumer, F: FnOnce() -> C>(command: Command, config: &Config, make: F) -> Result<()> {
    // A cascaded consumer: `install` registers it on its target node and
    // provider; every other command works on the provider its state names
    // (where its batches and failed events are), as on a queue database.
    if config.cascade {
        let app = application_name(config);
        if let Command::Install = command {
            refuse_while_running(config)?;
            let mut consumer = make();
            let settings = read_settings::<C>(config)?;
            configure(&mut consumer, settings, config).await?;
            crate::cascade::consumer::install(config, &app).await?;
            let target = connect(&config.db, &app, Database::Node).await?;
            return consumer.install(&target, None).await.map_err(|source| Error::Settings {
                consumer: config.consumer.clone(),
                source,
            });
        }
        let st = within_control_timeout(
            &config.db,
            Database::Node,
            crate::cascade::consumer::state(config, &app),
        )
        .await?;
        let view = crate::cascade::consumer::view(config, &st.provider_location);
        return run_plain(command, &view, make).await;
    }
    run_plain(command, config, make).await
}

async fn run_plain<C: Consumer, F: FnOnce() -> C>(command: Command, config: &Config, make: F) -> Result<()> {
    if let Command::Check = command {
        // The consumer's settings are checked before the database is asked.
        read_settings::<C>(config)?;
    }
    match command {
        Command::Install => {
            let db = connect(&config.db, &application_name(config), Database::Queue).await?;
            install(&db, config, make()).await
        }
        // The remote database's business only.
        Command::ForgetApplied { yes } => forget_applied(config, yes).await,
        command => within_control_timeout(&config.db, Database::Queue, control(command, config)).await,
    }
}

/// A control command (any but `install` and `forget-applied`), on a control
/// connection.
async fn control(command: Command, config: &Config) -> Result<()> {
    let db = connect_control(&config.db, &application_name(config), Database::Queue).await?;
    if matches!(
        command,
        Command::Failed { .. } | Command::Delete { .. } | Command::Retry { .. }
    ) {
        verify_schema(&db, config).await?;
    }
    match command {
        Command::Uninstall => uninstall(&db, config).await,
        Command::Check => check(&db, config).await,
        Command::CreateQueue => {
            crate::installed::require_pgq(&db, config).await?;
            let created = pgq::create_queue(&db, &config.queue).await?;
            say(
                if created {
                    "queue {q} created"
                } else {
                    "queue {q} already exists"
                },
                config,
            );
            Ok(())
        }
        Command::DropQueue => {
            refuse_while_running(config)?;
            pgq::drop_queue(&db, &config.queue).await?;
            say("queue {q} dropped", config);
            Ok(())
        }
        Command::Register => register(&db, config).await,
        Command::Unregister { force } => unregister(&db, config, force).await,
        Command::Failed { json } => list_failed(&db, config, json).await,
        Command::Delete { ids } => {
            let n = match selection(&ids) {
                None => failed::delete_all(&db, &config.queue, &config.consumer).await?,
                Some(ids) => failed::delete(&db, &config.queue, &config.consumer, &ids).await?,
            };
            pgq_daemon::outln!("{n} failed event(s) deleted");
            missing_ids(&ids, n)
        }
        Command::Retry { ids } => {
            let n = match selection(&ids) {
                None => failed::retry_all(&db, &config.queue, &config.consumer).await?,
                Some(ids) => failed::retry(&db, &config.queue, &config.consumer, &ids).await?,
            };
            pgq_daemon::outln!(
                "{n} failed event(s) put back into queue {:?} for consumer {:?}",
                config.queue,
                config.consumer
            );
            missing_ids(&ids, n)
        }
        Command::Install | Command::ForgetApplied { .. } | Command::Daemon(_) => not_here(),
    }
}

fn not_here() -> Result<()> {
    // `run` handles `install`; the entry point hands daemon commands to the daemon layer.
    Err(Error::Usage("this command is not handled here".into()))
}

/// `None` for `all`, else the ids.
fn selection(ids: &[Selection]) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(ids.len());
    for s in ids {
        match s {
            Selection::All => return None,
            Selection::Id(id) => out.push(*id),
        }
    }
    Some(out)
}

/// Fails when some of the ids named were not failed events.
fn missing_ids(ids: &[Selection], found: u64) -> Result<()> {
    match selection(ids) {
        Some(ids) if (ids.len() as u64) > found => Err(Error::Usage(format!(
            "{} of the {} event id(s) given are not failed events of this consumer (see the `failed` command)",
            ids.len() as u64 - found,
            ids.len()
        ))),
        _ => Ok(()),
    }
}

fn say(template: &str, config: &Config) {
    pgq_daemon::outln!(
        "{}",
        template
            .replace("{q}", &format!("{:?}", config.queue))
            .replace("{c}", &format!("{:?}", config.consumer))
    );
}

/// Refuses when the consumer's daemon runs. A sub-consumer started with
/// `--subconsumer NAME` holds a pidfile of its own (`NAME.SUB.EXT`): both it
/// and the config's pidfile (a sub-consumer named in the config file) count.
fn refuse_while_running(config: &Config) -> Result<()> {
    let Some(pidfile) = &config.pidfile else {
        return Ok(());
    };
    let own = config
        .subconsumer
        .as_deref()
        .map(|sub| crate::cli::daemon::per_subconsumer(pidfile, sub));
    for pidfile in std::iter::once(pidfile).chain(own.as_ref()) {
        if let Some(pid) = pgq_daemon::running_pid(pidfile).map_err(|e| Error::Daemon(Box::new(e)))? {
            return Err(Error::DaemonRunning { pid });
        }
    }
    Ok(())
}

async fn install<C: Consumer>(db: &Client, config: &Config, mut consumer: C) -> Result<()> {
    refuse_while_running(config)?;
    let settings = read_settings::<C>(config)?;
    let mode = C::commit_mode(&settings);
    configure(&mut consumer, settings, config).await?;
    crate::installed::require_pgq(db, config).await?;
    let version = schema::install(db).await?;
    pgq_daemon::outln!("framework schema pgq_consumer is at version {version}");
    let created = pgq::create_queue(db, &config.queue).await?;
    say(
        if created {
            "queue {q} created"
        } else {
            "queue {q} already exists"
        },
        config,
    );
    register(db, config).await?;
    let remote = match mode {
        CommitMode::Local => None,
        CommitMode::Remote | CommitMode::RemoteEvent => {
            let dsn = config.remote_db.as_ref().ok_or_else(|| Error::ConfigInvalid {
                path: config.origin().to_path_buf(),
                problem: "this is a remote consumer: set `remote_db`".into(),
            })?;
            let remote = connect(dsn, &application_name(config), Database::Remote).await?;
            let version = schema::install(&remote).await?;
            pgq_daemon::outln!("framework schema pgq_consumer is at version {version} in the remote database");
            Some(remote)
        }
    };
    consumer
        .install(db, remote.as_ref())
        .await
        .map_err(|source| Error::Settings {
            consumer: config.consumer.clone(),
            source,
        })?;
    Ok(())
}

/// `forget-applied --yes`: forgets the remote database's record of the
/// batches the consumer (and its sub-consumers) applied from the queue, so
/// that a consumer stopped by [`Error::TrackingInconsistent`] after its queue
/// was dropped and created again can go on. Refused without `--yes`, and
/// while the daemon runs (a batch between its two commits would lose its
/// record).
async fn forget_applied(config: &Config, yes: bool) -> Result<()> {
    let Some(dsn) = &config.remote_db else {
        return Err(Error::Usage(
            "forget-applied is for remote consumers: this config has no `remote_db`".into(),
        ));
    };
    if !yes {
        return Err(Error::Usage(format!(
            "forget-applied forgets what the remote database recorded of the batches consumer {:?} applied from \
             queue {:?}. Do it only after the queue was dropped and created again (or the consumer was moved on \
             purpose): any batch of the same queue that record covers would be applied again. Run \
             `forget-applied --yes` to do it",
            config.consumer, config.queue
        )));
    }
    refuse_while_running(config)?;
    let n = within_control_timeout(dsn, Database::Remote, async {
        let remote = connect_control(dsn, &application_name(config), Database::Remote).await?;
        crate::tracking::forget(&remote, &config.queue, &config.consumer).await
    })
    .await?;
    pgq_daemon::outln!(
        "forgot {n} record(s) of batches consumer {:?} applied from queue {:?} in the remote database",
        config.consumer,
        config.queue
    );
    Ok(())
}

async fn register(db: &Client, config: &Config) -> Result<()> {
    match &config.subconsumer {
        Some(sub) => {
            coop::register(db, &config.queue, &config.consumer, sub).await?;
            pgq_daemon::outln!(
                "sub-consumer {sub:?} of consumer {:?} registered on queue {:?}",
                config.consumer,
                config.queue
            );
        }
        None => {
            let new = pgq::register_consumer(db, &config.queue, &config.consumer).await?;
            say(
                if new {
                    "consumer {c} registered on queue {q}"
                } else {
                    "consumer {c} was already registered on queue {q}"
                },
                config,
            );
        }
    }
    Ok(())
}

async fn unregister(db: &Client, config: &Config, force: bool) -> Result<()> {
    refuse_while_running(config)?;
    if let Some(sub) = &config.subconsumer {
        coop::unregister(db, &config.queue, &config.consumer, sub).await?;
        pgq_daemon::outln!("sub-consumer {sub:?} of consumer {:?} unregistered", config.consumer);
        return Ok(());
    }
    let consumers = pgq::get_consumer_info_queue(db, &config.queue).await?;
    let registered = consumers.iter().any(|c| c.consumer_name == config.consumer);
    if !registered {
        return Err(Error::NotInstalled {
            queue: config.queue.clone(),
            consumer: config.consumer.clone(),
            what: "the consumer is not registered",
        });
    }
    // Sub-consumers (of this consumer or of another group) lose nothing.
    let names = || consumers.iter().map(|c| c.consumer_name.as_str());
    let others = consumers
        .iter()
        .filter(|c| c.consumer_name != config.consumer && coop::group_of(&c.consumer_name, names()).is_none())
        .count();
    if others == 0 && !force {
        return Err(Error::Usage(format!(
            "consumer {:?} is the only consumer of queue {:?}: unregistering it would lose the events it has not read. \
             Use `unregister --force` to do it anyway",
            config.consumer, config.queue
        )));
    }
    pgq::unregister_consumer(db, &config.queue, &config.consumer).await?;
    say("consumer {c} unregistered from queue {q}", config);
    Ok(())
}

async fn uninstall(db: &Client, config: &Config) -> Result<()> {
    refuse_while_running(config)?;
    if pgq::get_queue_info(db, &config.queue).await?.is_none() {
        say("queue {q} does not exist; nothing to uninstall", config);
        return Ok(());
    }
    let consumers = pgq::get_consumer_info_queue(db, &config.queue).await?;
    if consumers.iter().any(|c| c.consumer_name == config.consumer) {
        pgq::unregister_consumer(db, &config.queue, &config.consumer).await?;
        say("consumer {c} unregistered from queue {q}", config);
    }
    let left = pgq::get_consumer_info_queue(db, &config.queue).await?;
    if left.is_empty() {
        pgq::drop_queue(db, &config.queue).await?;
        say("queue {q} dropped", config);
    } else {
        let names: Vec<&str> = left.iter().map(|c| c.consumer_name.as_str()).collect();
        pgq_daemon::outln!(
            "queue {:?} kept: other consumers are registered on it ({})",
            config.queue,
            names.join(", ")
        );
    }
    Ok(())
}

async fn check(db: &Client, config: &Config) -> Result<()> {
    crate::installed::verify(db, config).await?;
    say("queue {q} exists and consumer {c} is registered", config);
    Ok(())
}

/// Fails, saying to run `install`, when the framework's SQL (which keeps the
/// failed events) is not in the queue database.
async fn verify_schema(db: &Client, config: &Config) -> Result<()> {
    if schema::installed_version(db).await?.is_none() {
        return Err(Error::NotInstalled {
            queue: config.queue.clone(),
            consumer: config.consumer.clone(),
            what: "the framework's SQL (schema pgq_consumer, which keeps the failed events) is not installed",
        });
    }
    Ok(())
}

async fn list_failed(db: &Client, config: &Config, json: bool) -> Result<()> {
    let events = failed::list(db, &config.queue, &config.consumer).await?;
    let mut out = std::io::stdout().lock();
    for f in &events {
        let line = if json {
            f.to_json().to_string()
        } else {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                f.event.ev_id,
                f.failed_time.format("%Y-%m-%d %H:%M:%S%.3f %Z"),
                f.event.ev_retry.unwrap_or(0),
                f.event.kind(),
                f.event.data(),
                f.reason
            )
        };
        if writeln!(out, "{line}").is_err() {
            break; // stdout closed (a pager quit): nothing more to say
        }
    }
    if !json && events.is_empty() {
        let _ = writeln!(
            out,
            "no failed events for consumer {:?} on queue {:?}",
            config.consumer, config.queue
        );
    }
    Ok(())
}
