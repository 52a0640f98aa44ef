//! libpq's conventions, which users already rely on: the `PG*` environment
//! variables fill in what a connection string leaves out, the password file
//! (`PGPASSFILE` or `~/.pgpass`) supplies a missing password, and the TLS
//! keys `sslmode` (all six values) and `sslrootcert` are understood.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::connect::Database;
use crate::conninfo;
use crate::error::{Error, Result};

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
    let (rest, ssl_keys) = take_ssl_keys(dsn).map_err(&bad)?;
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

    let sslmode_text = ssl_keys.sslmode.or_else(|| env.var("PGSSLMODE"));
    let sslmode = match sslmode_text {
        None => SslMode::default(),
        Some(s) => SslMode::parse(&s).ok_or_else(|| {
            bad(format!(
                "sslmode is {s:?}; use disable, allow, prefer, require, verify-ca or verify-full"
            ))
        })?,
    };
    let mut sslrootcert = ssl_keys
        .sslrootcert
        .or_else(|| env.var("PGSSLROOTCERT"))
        .map(PathBuf::from);
    if sslrootcert.is_none() && matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) {
        // libpq's default place for the CA of the servers one trusts.
        sslrootcert = env.home().map(|h| h.join(".postgresql/root.crt"));
    }
    Ok(Resolved {
        config,
        sslmode,
        sslrootcert,
    })
}

fn default_host() -> String {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql".into()
    } else {
        "localhost".into()
    }
}

#[derive(Default)]
struct SslKeys {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Keys tokio-postgres takes (`sslmode` and `sslrootcert` are taken out
/// before it sees the string). Any other key is refused here, by a message
/// that names it only when that is safe ([`crate::conninfo`]), instead of by
/// tokio-postgres, whose message would name it whatever it is.
const TOKIO_KEYS: [&str; 18] = [
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
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
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

/// Takes `sslmode` and `sslrootcert` out of a connection string: tokio-postgres
/// knows only three of the six modes and no CA file, so these are handled here.
/// The rest is checked (every key one tokio-postgres knows, a URL that reads
/// the same to every parser) and handed on as tokio-postgres will read it.
fn take_ssl_keys(dsn: &str) -> std::result::Result<(String, SslKeys), String> {
    let trimmed = dsn.trim();
    if conninfo::is_url(trimmed) {
        return take_ssl_keys_url(trimmed);
    }
    let read = conninfo::key_values(trimmed);
    if let Some((_, error)) = read.error {
        return Err(error.to_string());
    }
    let mut keys = SslKeys::default();
    let mut kept = Vec::new();
    for pair in read.pairs {
        match pair.key.as_str() {
            "sslmode" => keys.sslmode = Some(pair.value),
            "sslrootcert" => keys.sslrootcert = Some(pair.value),
            key if TOKIO_KEYS.contains(&key) => kept.push(format!("{key}={}", quote_value(&pair.value))),
            _ => return Err(unknown_key(pair.shown_key())),
        }
    }
    Ok((kept.join(" "), keys))
}

fn take_ssl_keys_url(url: &str) -> std::result::Result<(String, SslKeys), String> {
    conninfo::check_url(url)?;
    let mut keys = SslKeys::default();
    let Some(q) = url.find('?') else {
        return Ok((url.to_string(), keys));
    };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let mut kept = Vec::new();
    for (item, pair) in conninfo::query_items(url, q + 1).into_iter().zip(query.split('&')) {
        let value = pair.split_once('=').map(|(_, v)| v).unwrap_or_default();
        match item.key.as_deref() {
            Some("sslmode") => keys.sslmode = Some(percent_decode(value)),
            Some("sslrootcert") => keys.sslrootcert = Some(percent_decode(value)),
            Some(key) if TOKIO_KEYS.contains(&key) => kept.push(pair),
            Some(_) => return Err(unknown_key(item.key.as_deref().filter(|_| item.key_shown))),
            None => return Err("a parameter of the URL is not `key=value`".into()),
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
            let redacted = crate::conninfo::redact(dsn);
            let message = match resolve(dsn, &redacted, Database::Queue, &e) {
                Ok(_) => panic!("{dsn}: accepted"),
                Err(err) => crate::cli::error_chain(&err),
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
