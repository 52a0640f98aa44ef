//! Opening connections to the queue and remote databases.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use rand::seq::SliceRandom;
use tokio_postgres::config::{Host, LoadBalanceHosts, TargetSessionAttrs};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Notification, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::ConnString;
use crate::error::{Error, Result};
use crate::net::silence::{self, Watched};
use crate::net::socket::{self, Keepalive, NetStream, SocketOptions};
use crate::net::{libpq, tls};

/// Which database a connection is for, in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Database {
    /// The database holding the queue.
    Queue,
    /// The remote database of a remote consumer.
    Remote,
    /// A node of a cascade that a worker keeps, or a cascaded consumer's
    /// target node.
    Node,
    /// The provider node a cascade's worker or consumer reads batches from.
    Provider,
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Database::Queue => "queue database",
            Database::Remote => "remote database",
            Database::Node => "node database",
            Database::Provider => "provider node",
        })
    }
}

/// How long a control command (`status`, `check`, `failed`, ...) waits for
/// its database: for connecting and for all its statements together, and
/// how long each statement may run on the server (`statement_timeout`).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection is for: it decides what silence and slowness it bears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Work (a daemon's, a library user's): statements run as long as they
    /// need; a silent database is given up after the `net_timeout` of the
    /// connection string.
    Work,
    /// A control command's: its caller gives up after [`CONTROL_TIMEOUT`]
    /// (see [`within_control_timeout`]), and the server cuts a statement
    /// running longer.
    Control,
}

/// Connects the way libpq would: the `PG*` environment variables and the
/// password file fill in what the connection string leaves out, and
/// `sslmode` / `sslrootcert` choose TLS (rustls). The connection is named
/// `application_name` (unless the string or `PGAPPNAME` names it) so
/// operators can tell it in `pg_stat_activity`. It is driven on a spawned task.
///
/// A silent database is noticed within about the string's
/// [`net_timeout`](ConnString::net_timeout): connecting gives up after it
/// (unless the string sets `connect_timeout`); the socket's TCP keepalives
/// and `TCP_USER_TIMEOUT` follow it (unless the string sets libpq's
/// `keepalives*` and `tcp_user_timeout` keys), and so do the server's for
/// this session; and a request left unanswered that long by a server that
/// does not answer a question on a connection of its own either fails the
/// connection, as a lost one: its requests fail with a closed-connection
/// error, and a WARNING says why. A statement running long is no silence.
///
/// The socket is this crate's, so tokio-postgres does not know where it
/// goes: to cancel a query, use the client's cancel token with
/// `cancel_query_raw` over a connection of your own.
pub async fn connect(dsn: &ConnString, application_name: &str, which: Database) -> Result<Client> {
    connect_with(dsn, application_name, which, None, Purpose::Work).await
}

/// As [`connect`], for a control command: connecting gives up after
/// [`CONTROL_TIMEOUT`] at most, and so does every statement on the server
/// (`statement_timeout`). Run the command within [`within_control_timeout`].
pub(crate) async fn connect_control(dsn: &ConnString, application_name: &str, which: Database) -> Result<Client> {
    connect_with(dsn, application_name, which, None, Purpose::Control).await
}

/// Runs a control command's database work (connecting included), giving it
/// up with [`Error::NoAnswer`] after [`CONTROL_TIMEOUT`].
pub(crate) async fn within_control_timeout<T>(
    dsn: &ConnString,
    which: Database,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(CONTROL_TIMEOUT, work).await {
        Ok(done) => done,
        Err(_) => Err(Error::NoAnswer {
            which,
            target: target_of(dsn, which),
            after: CONTROL_TIMEOUT,
        }),
    }
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
    let client = connect_with(dsn, application_name, which, Some(sink), Purpose::Work).await?;
    Ok((client, notifications))
}

/// The connection tokio-postgres drives: over a watched socket, with or without TLS.
type Connection =
    tokio_postgres::Connection<Watched<NetStream>, <MakeRustlsConnect as MakeTlsConnect<Watched<NetStream>>>::Stream>;

async fn connect_with(
    dsn: &ConnString,
    application_name: &str,
    which: Database,
    sink: Option<tokio::sync::mpsc::Sender<Notification>>,
    purpose: Purpose,
) -> Result<Client> {
    let resolved = libpq::resolve(dsn.expose(), &dsn.redacted(), which, &libpq::ProcessEnv)?;
    let mut config = resolved.config;
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    let (wire_mode, tls) = tls::connector(resolved.sslmode, resolved.sslrootcert.as_deref(), which)?;
    config.ssl_mode(wire_mode);
    let target = describe_target(&config);
    let net_timeout = dsn.net_timeout();
    let mut options = SocketOptions::new(net_timeout, &resolved.socket, config.get_connect_timeout().copied());
    if purpose == Purpose::Control {
        options.connect_timeout = options.connect_timeout.map(|t| t.min(CONTROL_TIMEOUT));
        options.silence = None;
    }
    let (client, connection, tcp) = open(&config, &options, tls).await.map_err(|failed| match failed {
        Failed::Postgres(source) => Error::Connect {
            which,
            target: target.clone(),
            source,
        },
        Failed::Io(source) => Error::Unreachable {
            which,
            target: target.clone(),
            source,
        },
    })?;
    let session = session_settings(&connection, net_timeout, purpose, tcp);
    drive(connection, which, target.clone(), sink);
    if !session.is_empty() {
        // Sent now, and its answer not waited for (no round trip more to
        // connect): a connection runs its requests in order, so the settings
        // hold for every statement after them. Refused, they would leave the
        // server's defaults (the answer nobody reads says so).
        if let Some(Err(source)) = client.batch_execute(&session).now_or_never() {
            return Err(Error::Connect { which, target, source });
        }
    }
    Ok(client)
}

/// The `SET` statements a new session runs (sent at connect time, their
/// answer not waited for): over TCP, the server's keepalives and `tcp_user_timeout` follow
/// `net_timeout`, so the server, too, ends a session whose client has
/// vanished and rolls back its transaction, instead of holding it (and
/// PgQ's rotation and vacuum) for the hours of the system's defaults. A
/// control command's session also gets a `statement_timeout` of
/// [`CONTROL_TIMEOUT`]. A work session gets none, nor an
/// `idle_in_transaction_session_timeout`: a handler's statements, a big
/// batch's query and a handler working outside the database with the
/// batch's transaction open may all take long (set them in the connection
/// string's `options` if that is wanted).
fn session_settings(connection: &Connection, net_timeout: Duration, purpose: Purpose, tcp: bool) -> String {
    let mut sets = Vec::new();
    if purpose == Purpose::Control {
        sets.push(format!("set statement_timeout = {}", CONTROL_TIMEOUT.as_millis()));
    }
    if tcp {
        let keepalive = Keepalive::within(net_timeout);
        let secs = |d: Option<Duration>| d.map_or(0, |d| d.as_secs());
        sets.push(format!("set tcp_keepalives_idle = {}", secs(keepalive.idle)));
        sets.push(format!("set tcp_keepalives_interval = {}", secs(keepalive.interval)));
        sets.push(format!("set tcp_keepalives_count = {}", keepalive.count.unwrap_or(0)));
        // `tcp_user_timeout` came with PostgreSQL 12.
        if server_major(connection).is_some_and(|major| major >= 12) {
            sets.push(format!("set tcp_user_timeout = {}", net_timeout.as_millis()));
        }
    }
    sets.join("; ")
}

/// The server's major version, from what it reported at connect time.
fn server_major(connection: &Connection) -> Option<u32> {
    let version = connection.parameter("server_version")?;
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Drives a connection on a task of its own, passing its notifications to
/// `sink` when there is one. A connection given up as silent says so, before
/// its requests hear that it is gone (they do once it is dropped).
fn drive(
    mut connection: Connection,
    which: Database,
    target: String,
    sink: Option<tokio::sync::mpsc::Sender<Notification>>,
) {
    let ended = move |e: tokio_postgres::Error| match silence::silent_in(&e) {
        Some(silent) => log::warn!(
            "no answer from the {which} at {target} for {:.1}s, nor from its server on a connection of its own: \
             connection given up (a silent network or server)",
            silent.after.as_secs_f64()
        ),
        None => log::debug!("{which} connection ended: {e}"),
    };
    match sink {
        None => {
            tokio::spawn(async move {
                if let Err(e) = (&mut connection).await {
                    ended(e);
                }
                drop(connection);
            });
        }
        Some(sink) => {
            tokio::spawn(async move {
                let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
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
                            ended(e);
                            break;
                        }
                    }
                }
                drop(messages);
                drop(connection);
            });
        }
    }
}

/// Why no connection could be opened.
enum Failed {
    /// The server refused it, or the protocol failed (TLS, authentication).
    Postgres(tokio_postgres::Error),
    /// No server was reached: no such host, refused, no answer in time.
    Io(std::io::Error),
}

/// Where one connection attempt goes.
enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Opens a connection the way tokio-postgres (and libpq) would, over a
/// socket of [`crate::net::socket`]: each host in turn (in a random order with
/// `load_balance_hosts=random`), each of its addresses in turn, each
/// attempt within the connect timeout, until one gives a connection that
/// has the `target_session_attrs` asked for. The last failure otherwise.
/// Also says whether the connection is over TCP.
async fn open(
    config: &tokio_postgres::Config,
    options: &SocketOptions,
    mut tls: MakeRustlsConnect,
) -> std::result::Result<(Client, Connection, bool), Failed> {
    use std::io::{Error as IoError, ErrorKind};
    let (hosts, hostaddrs, ports) = (config.get_hosts(), config.get_hostaddrs(), config.get_ports());
    let count = hosts.len().max(hostaddrs.len());
    if !hosts.is_empty() && !hostaddrs.is_empty() && hosts.len() != hostaddrs.len() {
        return Err(Failed::Io(IoError::new(
            ErrorKind::InvalidInput,
            format!(
                "{} host(s) but {} hostaddr(s): give as many of each",
                hosts.len(),
                hostaddrs.len()
            ),
        )));
    }
    if ports.len() > 1 && ports.len() != count {
        return Err(Failed::Io(IoError::new(
            ErrorKind::InvalidInput,
            format!(
                "{count} host(s) but {} ports: give one port, or one per host",
                ports.len()
            ),
        )));
    }
    let random = config.get_load_balance_hosts() == LoadBalanceHosts::Random;
    let mut order: Vec<usize> = (0..count).collect();
    if random {
        order.shuffle(&mut rand::rng());
    }
    let mut last = None;
    for i in order {
        let host = hosts.get(i);
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        // The name TLS checks the certificate against.
        let name = match (host, hostaddrs.get(i)) {
            (Some(Host::Tcp(name)), _) => name.clone(),
            (_, Some(addr)) => addr.to_string(),
            _ => "localhost".to_string(),
        };
        let endpoints = match (hostaddrs.get(i), host) {
            (Some(addr), _) => vec![Endpoint::Tcp(SocketAddr::new(*addr, port))],
            (None, Some(Host::Unix(dir))) => vec![Endpoint::Unix(dir.join(format!(".s.PGSQL.{port}")))],
            (None, Some(Host::Tcp(name))) => {
                let lookup = tokio::net::lookup_host((name.as_str(), port));
                let found = match options.connect_timeout {
                    Some(t) => tokio::time::timeout(t, lookup).await.unwrap_or_else(|_| {
                        Err(IoError::new(
                            ErrorKind::TimedOut,
                            "the host name did not resolve in time",
                        ))
                    }),
                    None => lookup.await,
                };
                match found {
                    Ok(addrs) => {
                        let mut addrs: Vec<Endpoint> = addrs.map(Endpoint::Tcp).collect();
                        if random {
                            addrs.shuffle(&mut rand::rng());
                        }
                        addrs
                    }
                    Err(e) => {
                        last = Some(Failed::Io(e));
                        continue;
                    }
                }
            }
            (None, None) => continue,
        };
        for endpoint in endpoints {
            match attempt(config, options, &mut tls, endpoint, &name).await {
                Ok(opened) => return Ok(opened),
                Err(e) => last = Some(e),
            }
        }
    }
    Err(last.unwrap_or_else(|| Failed::Io(IoError::new(ErrorKind::NotFound, "no address to connect to"))))
}

/// One connection attempt, within the connect timeout.
async fn attempt(
    config: &tokio_postgres::Config,
    options: &SocketOptions,
    tls: &mut MakeRustlsConnect,
    endpoint: Endpoint,
    name: &str,
) -> std::result::Result<(Client, Connection, bool), Failed> {
    let tls = match MakeTlsConnect::<Watched<NetStream>>::make_tls_connect(tls, name) {
        Ok(tls) => tls,
        Err(never) => match never {},
    };
    let work = async {
        let (stream, tcp) = match endpoint {
            Endpoint::Tcp(addr) => (socket::open_tcp(addr, options).await.map_err(Failed::Io)?, true),
            Endpoint::Unix(path) => (socket::open_unix(path, options).await.map_err(Failed::Io)?, false),
        };
        let (client, mut connection) = config.connect_raw(stream, tls).await.map_err(Failed::Postgres)?;
        check_session_attrs(config, &client, &mut connection).await?;
        Ok((client, connection, tcp))
    };
    match options.connect_timeout {
        Some(t) => tokio::time::timeout(t, work).await.unwrap_or_else(|_| {
            Err(Failed::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no working connection within {:.1}s (connect_timeout)", t.as_secs_f64()),
            )))
        }),
        None => work.await,
    }
}

/// Refuses a session whose `transaction_read_only` is not what
/// `target_session_attrs` asks for, as libpq does.
async fn check_session_attrs(
    config: &tokio_postgres::Config,
    client: &Client,
    connection: &mut Connection,
) -> std::result::Result<(), Failed> {
    use std::io::{Error as IoError, ErrorKind};
    let wanted = config.get_target_session_attrs();
    if wanted == TargetSessionAttrs::Any {
        return Ok(());
    }
    let query = client.simple_query("show transaction_read_only");
    tokio::pin!(query);
    let messages = tokio::select! {
        rows = &mut query => rows.map_err(Failed::Postgres)?,
        ended = &mut *connection => {
            return Err(match ended {
                Err(e) => Failed::Postgres(e),
                Ok(()) => Failed::Io(IoError::new(ErrorKind::UnexpectedEof, "the server closed the connection")),
            })
        }
    };
    let read_only = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "on"),
        _ => None,
    });
    match (wanted, read_only) {
        (TargetSessionAttrs::ReadWrite, Some(true)) => Err(Failed::Io(IoError::new(
            ErrorKind::PermissionDenied,
            "the database does not allow writes (target_session_attrs=read-write)",
        ))),
        (TargetSessionAttrs::ReadOnly, Some(false)) => Err(Failed::Io(IoError::new(
            ErrorKind::PermissionDenied,
            "the database is not read only (target_session_attrs=read-only)",
        ))),
        _ => Ok(()),
    }
}

/// `host:port/dbname` of a connection string, for messages; the string,
/// password hidden, when it cannot be resolved.
pub(crate) fn target_of(dsn: &ConnString, which: Database) -> String {
    match libpq::resolve(dsn.expose(), &dsn.redacted(), which, &libpq::ProcessEnv) {
        Ok(resolved) => describe_target(&resolved.config),
        Err(_) => dsn.redacted(),
    }
}

/// `host:port/dbname` of a connection config, for messages (never the password).
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("{host}:{port}/{db}")
}
