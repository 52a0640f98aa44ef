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
