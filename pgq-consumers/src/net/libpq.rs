//! libpq's conventions, which users already rely on: the `PG*` environment
//! variables fill in what a connection string leaves out, the password file
//! (`PGPASSFILE` or `~/.pgpass`) supplies a missing password, the TLS
//! keys `sslmode` (all six values) and `sslrootcert` are understood, and so
//! are the socket keys `keepalives`, `keepalives_idle`, `keepalives_interval`,
//! `keepalives_count` and `tcp_user_timeout` (milliseconds), in libpq's units.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::error::{Error, Result};
use crate::net::connect::Database;
use crate::net::conninfo;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server wants it (treated as `prefer`).
    Allow,
    /// TLS when the server offers it, without checking the certificate (the default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is checked against `sslrootcert`
    /// when one is given, as libpq does.
    Require,
    /// TLS with a certificate signed by `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// A connection string resolved the way libpq resolves it.
pub(crate) struct Resolved {
    /// What tokio-postgres connects with.
    pub config: tokio_postgres::Config,
    /// The TLS mode.
    pub sslmode: SslMode,
    /// The CA certificate file for verifying the server.
    pub sslrootcert: Option<PathBuf>,
    /// The socket keys the string sets.
    pub socket: SocketKeys,
}

/// libpq's socket keys as a connection string sets them: `None` when it
/// does not (the caller picks a value), `Some(0)` for the system's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SocketKeys {
    /// `keepalives=0` turns TCP keepalives off.
    pub keepalives_off: bool,
    /// `keepalives_idle`, seconds.
    pub keepalives_idle: Option<u64>,
    /// `keepalives_interval`, seconds.
    pub keepalives_interval: Option<u64>,
    /// `keepalives_count` (or tokio-postgres' `keepalives_retries`).
    pub keepalives_count: Option<u64>,
    /// `tcp_user_timeout`, milliseconds.
    pub tcp_user_timeout: Option<u64>,
}

/// Where the process environment comes from: the real one, or a test's.
pub(crate) trait Environment {
    /// An environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// The user's home directory.
    fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from)
    }
}

/// The process's own environment.
pub(crate) struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// Parses a connection string (`key=value ...` or a `postgres://` URL) and
/// fills in what it leaves out from the environment and the password file.
pub(crate) fn resolve(dsn: &str, redacted: &str, which: Database, env: &dyn Environment) -> Result<Resolved> {
    let bad = |problem: String| Error::ConnString {
        which,
        dsn: redacted.to_string(),
        problem,
    };
    let (rest, own) = take_own_keys(dsn).map_err(&bad)?;
    let socket = own.socket_keys().map_err(&bad)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|source| Error::BadConnString {
        which,
        dsn: redacted.to_string(),
        source,
    })?;

    if config.get_hosts().is_empty() {
        let hosts = env.var("PGHOST").unwrap_or_else(default_host);
        for h in hosts.split(',') {
            if h.starts_with('/') {
                config.host_path(h);
            } else {
                config.host(h);
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(p) = env.var("PGPORT") {
            let port = p
                .parse::<u16>()
                .map_err(|_| bad(format!("PGPORT is {p:?}, not a port number")))?;
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = env
            .var("PGUSER")
            .or_else(|| env.var("USER"))
            .or_else(|| env.var("LOGNAME"))
        {
            config.user(&user);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env.var("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if config.get_application_name().is_none() {
        if let Some(app) = env.var("PGAPPNAME") {
            config.application_name(&app);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(t) = env.var("PGCONNECT_TIMEOUT") {
            let secs = t
                .parse::<u64>()
                .map_err(|_| bad(format!("PGCONNECT_TIMEOUT is {t:?}, not seconds")))?;
            config.connect_timeout(Duration::from_secs(secs.max(2)));
        }
    }
    if config.get_password().is_none() {
        if let Some(pw) = env.var("PGPASSWORD") {
            config.password(pw);
        } else if let Some(pw) = password_from_file(&config, env) {
            config.password(pw);
        }
    }

    let sslmode_text = own.sslmode.or_else(|| env.var("PGSSLMODE"));
    let sslmode = match sslmode_text {
        None => SslMode::default(),
        Some(s) => SslMode::parse(&s).ok_or_else(|| {
            bad(format!(
                "sslmode is {s:?}; use disable, allow, prefer, require, verify-ca or verify-full"
            ))
        })?,
    };
    let mut sslrootcert = own.sslrootcert.or_else(|| env.var("PGSSLROOTCERT")).map(PathBuf::from);
    if sslrootcert.is_none() && matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) {
        // libpq's default place for the CA of the servers one trusts.
        sslrootcert = env.home().map(|h| h.join(".postgresql/root.crt"));
    }
    Ok(Resolved {
        config,
        sslmode,
        sslrootcert,
        socket,
    })
}

fn default_host() -> String {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql".into()
    } else {
        "localhost".into()
    }
}

/// The keys this module handles itself, taken out of a connection string:
/// tokio-postgres knows only three of the six TLS modes and no CA file,
/// calls `keepalives_count` `keepalives_retries`, and reads
/// `tcp_user_timeout` in seconds where libpq reads milliseconds.
#[derive(Default)]
struct OwnKeys {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    keepalives: Option<String>,
    keepalives_idle: Option<String>,
    keepalives_interval: Option<String>,
    keepalives_count: Option<String>,
    tcp_user_timeout: Option<String>,
}

/// Keys tokio-postgres takes (those of [`OwnKeys`] are taken out before it
/// sees the string). Any other key is refused here, by a message that names
/// it only when that is safe ([`crate::net::conninfo`]), instead of by
/// tokio-postgres, whose message would name it whatever it is.
const TOKIO_KEYS: [&str; 13] = [
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Says that a key is not one this program takes, naming it when it may be shown.
fn unknown_key(shown: Option<&str>) -> String {
    match shown {
        Some(key) => format!("`{key}` is not a connection option this program knows"),
        None => "an option this program does not know follows a hidden value (a password with a space, `&` or `@` \
                 in it? quote it, 'like this', or put a backslash before the space; in a URL, percent-encode it)"
            .into(),
    }
}

impl OwnKeys {
    /// Takes `key=value` if it is one of these keys; gives it back otherwise.
    fn take(&mut self, key: &str, value: String) -> Option<String> {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "keepalives" => &mut self.keepalives,
            "keepalives_idle" => &mut self.keepalives_idle,
            "keepalives_interval" => &mut self.keepalives_interval,
            "keepalives_count" | "keepalives_retries" => &mut self.keepalives_count,
            "tcp_user_timeout" => &mut self.tcp_user_timeout,
            _ => return Some(value),
        };
        *slot = Some(value);
        None
    }

    /// The socket keys' values, checked as libpq checks them: integers, a
    /// negative one counting as 0 (the system's default).
    fn socket_keys(&self) -> std::result::Result<SocketKeys, String> {
        let int = |key: &str, value: &Option<String>| -> std::result::Result<Option<u64>, String> {
            value
                .as_deref()
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map(|n| n.max(0).unsigned_abs())
                        .map_err(|_| format!("`{key}` is {v:?}, not an integer"))
                })
                .transpose()
        };
        Ok(SocketKeys {
            keepalives_off: int("keepalives", &self.keepalives)? == Some(0),
            keepalives_idle: int("keepalives_idle", &self.keepalives_idle)?,
            keepalives_interval: int("keepalives_interval", &self.keepalives_interval)?,
            keepalives_count: int("keepalives_count", &self.keepalives_count)?,
            tcp_user_timeout: int("tcp_user_timeout", &self.tcp_user_timeout)?,
        })
    }
}

/// Takes the keys of [`OwnKeys`] out of a connection string. The rest is
/// checked (every key one tokio-postgres knows, a URL that reads the same to
/// every parser) and handed on as tokio-postgres will read it.
fn take_own_keys(dsn: &str) -> std::result::Result<(String, OwnKeys), String> {
    let trimmed = dsn.trim();
    if conninfo::is_url(trimmed) {
        return take_own_keys_url(trimmed);
    }
    let read = conninfo::key_values(trimmed);
    if let Some((_, error)) = read.error {
        return Err(error.to_string());
    }
    let mut keys = OwnKeys::default();
    let mut kept = Vec::new();
    for pair in read.pairs {
        let shown = pair.shown_key().map(str::to_owned);
        match keys.take(&pair.key, pair.value) {
            None => {}
            Some(value) if TOKIO_KEYS.contains(&pair.key.as_str()) => {
                kept.push(format!("{}={}", pair.key, quote_value(&value)));
            }
            Some(_) => return Err(unknown_key(shown.as_deref())),
        }
    }
    Ok((kept.join(" "), keys))
}

fn take_own_keys_url(url: &str) -> std::result::Result<(String, OwnKeys), String> {
    conninfo::check_url(url)?;
    let mut keys = OwnKeys::default();
    let Some(q) = url.find('?') else {
        return Ok((url.to_string(), keys));
    };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let mut kept = Vec::new();
    for (item, pair) in conninfo::query_items(url, q + 1).into_iter().zip(query.split('&')) {
        let value = pair.split_once('=').map(|(_, v)| v).unwrap_or_default();
        let Some(key) = item.key.as_deref() else {
            return Err("a parameter of the URL is not `key=value`".into());
        };
        match keys.take(key, percent_decode(value)) {
            None => {}
            Some(_) if TOKIO_KEYS.contains(&key) => kept.push(pair),
            Some(_) => return Err(unknown_key(Some(key).filter(|_| item.key_shown))),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, keys))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn quote_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The password for this connection from `PGPASSFILE` or `~/.pgpass`, as
/// libpq finds it: the first line whose host, port, database and user match
/// (`*` matches anything). A file others can read is ignored, with a warning.
fn password_from_file(config: &tokio_postgres::Config, env: &dyn Environment) -> Option<String> {
    let path = env
        .var("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env.home().map(|h| h.join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "password file {} has group or world access; it is ignored (chmod 0600 it)",
                path.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(_)) | None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = config.get_user().unwrap_or("").to_string();
    let db = config.get_dbname().map(str::to_string).unwrap_or_else(|| user.clone());
    pgpass_lookup(&text, [&host, &port, &db, &user])
}

/// Finds the password in password-file text for `[host, port, db, user]`.
fn pgpass_lookup(text: &str, want: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() != 5 {
            continue;
        }
        if fields[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return Some(fields[4].clone());
        }
    }
    None
}

/// Splits a password-file line at unescaped colons, removing the escapes.
fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct FakeEnv(HashMap<&'static str, String>);

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn env(pairs: &[(&'static str, &str)]) -> FakeEnv {
        FakeEnv(pairs.iter().map(|(k, v)| (*k, v.to_string())).collect())
    }

    fn resolved(dsn: &str, e: &FakeEnv) -> Resolved {
        resolve(dsn, dsn, Database::Queue, e).expect("resolves")
    }

    #[test]
    fn environment_fills_what_the_string_leaves_out() {
        let e = env(&[
            ("PGHOST", "db.example"),
            ("PGPORT", "6543"),
            ("PGUSER", "u"),
            ("PGDATABASE", "d"),
        ]);
        let r = resolved("application_name=x", &e);
        assert_eq!(r.config.get_hosts(), &[Host::Tcp("db.example".into())]);
        assert_eq!(r.config.get_ports(), &[6543]);
        assert_eq!(r.config.get_user(), Some("u"));
        assert_eq!(r.config.get_dbname(), Some("d"));
    }

    #[test]
    fn the_string_wins_over_the_environment() {
        let e = env(&[("PGHOST", "elsewhere"), ("PGUSER", "other"), ("PGPASSWORD", "envpw")]);
        let r = resolved("host=here user=me password=strpw", &e);
        assert_eq!(r.config.get_hosts(), &[Host::Tcp("here".into())]);
        assert_eq!(r.config.get_user(), Some("me"));
        assert_eq!(r.config.get_password(), Some(&b"strpw"[..]));
    }

    #[test]
    fn password_file_supplies_a_missing_password() {
        let dir = std::env::temp_dir().join(format!("pgpass-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\nh:5432:db:me:pa\\:ss\n*:*:*:*:fallback\n",
        )
        .expect("write");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let e = env(&[("PGPASSFILE", file.to_str().unwrap_or_default())]);
        let r = resolved("host=h port=5432 dbname=db user=me", &e);
        assert_eq!(r.config.get_password(), Some(&b"pa:ss"[..]));
        let r = resolved("host=h2 dbname=db user=me", &e);
        assert_eq!(r.config.get_password(), Some(&b"fallback"[..]));
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let r = resolved("host=h port=5432 dbname=db user=me", &e);
        assert_eq!(
            r.config.get_password(),
            None,
            "a world-readable password file is ignored"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn all_six_ssl_modes_and_the_root_cert_are_understood() {
        let e = env(&[("HOME", "/home/me")]);
        let r = resolved("host=h sslmode=verify-full sslrootcert='/etc/ca dir/ca.pem'", &e);
        assert_eq!(r.sslmode, SslMode::VerifyFull);
        assert_eq!(r.sslrootcert, Some(PathBuf::from("/etc/ca dir/ca.pem")));
        let r = resolved("host=h sslmode=verify-ca", &e);
        assert_eq!(r.sslrootcert, Some(PathBuf::from("/home/me/.postgresql/root.crt")));
        let r = resolved("postgres://u@h/db?sslmode=require&connect_timeout=5", &e);
        assert_eq!(r.sslmode, SslMode::Require);
        assert!(resolve("host=h sslmode=bogus", "x", Database::Queue, &e).is_err());
    }

    #[test]
    fn socket_keys_are_read_in_libpqs_units_and_names() {
        let e = env(&[]);
        let r = resolved(
            "host=h keepalives=1 keepalives_idle=7 keepalives_interval=2 keepalives_count=4 tcp_user_timeout=1500",
            &e,
        );
        assert_eq!(
            r.socket,
            SocketKeys {
                keepalives_off: false,
                keepalives_idle: Some(7),
                keepalives_interval: Some(2),
                keepalives_count: Some(4),
                tcp_user_timeout: Some(1500),
            }
        );
        let r = resolved(
            "postgres://u@h/db?keepalives=0&keepalives_retries=9&tcp_user_timeout=-1",
            &e,
        );
        assert!(r.socket.keepalives_off);
        assert_eq!(r.socket.keepalives_count, Some(9), "tokio-postgres' name for it");
        assert_eq!(
            r.socket.tcp_user_timeout,
            Some(0),
            "negative: the system's default, as libpq"
        );
        assert_eq!(resolved("host=h", &e).socket, SocketKeys::default());
        let err = resolve("host=h keepalives_idle=soon", "x", Database::Queue, &e)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("keepalives_idle"), "{err}");
    }

    #[test]
    fn quoted_values_and_escapes_survive() {
        let e = env(&[]);
        let r = resolved(r"host=h user='x y' password=c\ d options='it\'s'", &e);
        assert_eq!(r.config.get_user(), Some("x y"));
        assert_eq!(r.config.get_password(), Some(&b"c d"[..]));
        assert_eq!(r.config.get_options(), Some("it's"));
        assert!(resolve("host=h password='open", "x", Database::Queue, &e).is_err());
    }

    #[test]
    fn errors_never_name_a_part_of_a_password() {
        let e = env(&[]);
        for dsn in [
            "host=h password=Qz9 Xw7 port=5",
            "host=h password=Qz9 Xw7=1",
            r"password=Qz9\ Xw7 bogus=1",
            "postgres://u:Qz9@Xw7@h/db",
            "postgres://u:Qz9/Xw7@h/db",
            "postgres://h/db?password=Qz9&Xw7=1",
            "postgres://h/db?password=Qz9@Xw7",
        ] {
            let redacted = crate::net::conninfo::redact(dsn);
            let message = match resolve(dsn, &redacted, Database::Queue, &e) {
                Ok(_) => panic!("{dsn}: accepted"),
                Err(err) => pgq_daemon::error_chain(&err),
            };
            for part in ["Qz9", "Xw7"] {
                assert!(!message.contains(part), "{dsn}: {message}");
            }
        }
        let message = resolve("host=h bogus=1", "host=h bogus=***", Database::Queue, &e)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("`bogus` is not a connection option"), "{message}");
    }
}
