//! What a consumer needs installed before it runs: its queue and its
//! registration (the framework's SQL is checked by
//! [`schema::require`](crate::schema::require)). The `install` command puts
//! them there.

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::{Error, Result};

/// Fails, saying to run `install`, unless the queue exists and the consumer
/// is registered on it.
pub(crate) async fn verify(db: &Client, config: &Config) -> Result<()> {
    require_pgq(db, config).await?;
    if pgq::get_queue_info(db, &config.queue).await?.is_none() {
        return Err(Error::NotInstalled {
            queue: config.queue.clone(),
            consumer: config.consumer.clone(),
            what: "the queue does not exist",
        });
    }
    let consumers = pgq::get_consumer_info_queue(db, &config.queue).await?;
    if !consumers.iter().any(|c| c.consumer_name == config.consumer) {
        return Err(Error::NotInstalled {
            queue: config.queue.clone(),
            consumer: config.consumer.clone(),
            what: "the consumer is not registered",
        });
    }
    Ok(())
}

/// Fails with [`Error::PgqMissing`] unless PgQ is installed in `db` (its
/// schema is there, whether the extension or an older install made it).
pub(crate) async fn require_pgq(db: &Client, config: &Config) -> Result<()> {
    let row = db
        .query_one("select to_regnamespace('pgq') is not null", &[])
        .await
        .map_err(Error::db(&config.queue, &config.consumer))?;
    let present: bool = row.try_get(0).map_err(Error::db(&config.queue, &config.consumer))?;
    if present {
        Ok(())
    } else {
        Err(Error::PgqMissing {
            queue: config.queue.clone(),
        })
    }
}
