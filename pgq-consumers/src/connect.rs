//! Opening connections to the queue and remote databases.

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, Notification};

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
    connect_with(dsn, application_name, which, None).await
}

/// Notifications (`LISTEN`/`NOTIFY`) received by a connection from
/// [`connect_listening`]. When nobody reads them for a while, the oldest are
/// kept and later ones dropped: a listener needs to know that something
/// happened, not how often.
pub type Notifications = tokio::sync::mpsc::Receiver<Notification>;

/// How many unread notifications a connection keeps.
const NOTIFICATION_BACKLOG: usize = 256;

/// As [`connect`], and returns the notifications the connection receives:
/// `LISTEN` on it (e.g. with [`pgq::listen`]) and read them from the
/// receiver. The receiver ends when the connection does.
pub async fn connect_listening(
    dsn: &ConnString,
    application_name: &str,
    which: Database,
) -> Result<(Client, Notifications)> {
    let (sink, notifications) = tokio::sync::mpsc::channel(NOTIFICATION_BACKLOG);
    let client = connect_with(dsn, application_name, which, Some(sink)).await?;
    Ok((client, notifications))
}

async fn connect_with(
    dsn: &ConnString,
    application_name: &str,
    which: Database,
    sink: Option<tokio::sync::mpsc::Sender<Notification>>,
) -> Result<Client> {
    let resolved = libpq::resolve(dsn.expose(), &dsn.redacted(), which, &libpq::ProcessEnv)?;
    let mut config = resolved.config;
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    let (wire_mode, tls) = tls::connector(resolved.sslmode, resolved.sslrootcert.as_deref(), which)?;
    config.ssl_mode(wire_mode);
    let target = describe_target(&config);
    let (client, mut connection) =
        config
            .connect(tls)
            .await
            .map_err(|source| Error::Connect { which, target, source })?;
    match sink {
        None => {
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    log::debug!("{which} connection ended: {e}");
                }
            });
        }
        Some(sink) => {
            tokio::spawn(async move {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(AsyncMessage::Notification(n)) => {
                            // Full: the listener has not caught up; it will
                            // still hear that something happened.
                            let _ = sink.try_send(n);
                        }
                        Ok(AsyncMessage::Notice(notice)) => {
                            log::info!("{}: {}", notice.severity(), notice.message());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            log::debug!("{which} connection ended: {e}");
                            break;
                        }
                    }
                }
            });
        }
    }
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
