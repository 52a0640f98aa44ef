//! Opening connections to the queue and remote databases.

use tokio_postgres::{Client, NoTls};

use crate::config::ConnString;
use crate::error::{Error, Result};

/// Which database a connection is for, in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// The database holding the queue.
    Queue,
    /// The remote database of a remote consumer.
    Remote,
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Database::Queue => "queue database",
            Database::Remote => "remote database",
        })
    }
}

/// Connects, naming the connection `application_name` (unless the
/// connection string names it) so operators can tell it in
/// `pg_stat_activity`. The connection is driven on a spawned task.
pub async fn connect(dsn: &ConnString, application_name: &str, which: Database) -> Result<Client> {
    let mut config: tokio_postgres::Config = dsn.expose().parse().map_err(|source| Error::BadConnString {
        which,
        dsn: dsn.redacted(),
        source,
    })?;
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    let target = describe_target(&config);
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|source| Error::Connect { which, target, source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("{which} connection ended: {e}");
        }
    });
    Ok(client)
}

/// `host:port/dbname` of a connection config, for messages (never the password).
fn describe_target(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("{host}:{port}/{db}")
}
