//! Opening connections to the queue and remote databases.

use tokio_postgres::Client;

use crate::config::ConnString;
use crate::error::{Error, Result};
use crate::{libpq, tls};

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

/// Connects the way libpq would: the `PG*` environment variables and the
/// password file fill in what the connection string leaves out, and
/// `sslmode` / `sslrootcert` choose TLS (rustls). The connection is named
/// `application_name` (unless the string or `PGAPPNAME` names it) so
/// operators can tell it in `pg_stat_activity`. It is driven on a spawned task.
pub async fn connect(dsn: &ConnString, application_name: &str, which: Database) -> Result<Client> {
    let resolved = libpq::resolve(dsn.expose(), &dsn.redacted(), which, &libpq::ProcessEnv)?;
    let mut config = resolved.config;
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    let (wire_mode, tls) = tls::connector(resolved.sslmode, resolved.sslrootcert.as_deref(), which)?;
    config.ssl_mode(wire_mode);
    let target = describe_target(&config);
    let (client, connection) = config
        .connect(tls)
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
