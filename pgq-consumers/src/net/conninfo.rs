//! libpq's connection strings, read the way libpq reads them: `key=value`
//! pairs (a value quoted with `'` or not, a backslash escaping the next
//! character, inside quotes or not) and `postgres://` URLs. Connecting
//! ([`crate::net::libpq`]) and hiding passwords ([`redact`]) share this reading,
//! so what is hidden is what libpq would take for a password, and a string
//! that cannot be read is not shown beyond the point where reading stopped.
//!
//! What is shown is only what is certainly not a secret:
//!
//! - the value of a key libpq knows and that holds no secret (`host`,
//!   `port`, `dbname`, `user`, ...); every other value is hidden: `password`,
//!   and any key libpq does not know, since a mistyped `passwrd=...` holds a
//!   password too;
//! - a key, unless it is one libpq does not know and directly follows a
//!   hidden value written without quotes: `password=Ab cd=x` is libpq's
//!   password `Ab` and an unknown key `cd`, but the password meant was
//!   likely `Ab cd=x`;
//! - in a URL, the user name, the host, the port and the database name. The
//!   password is what lies between the first `:` and the last `@` or, as
//!   libpq and tokio-postgres read it, the first `@`: whichever reading is
//!   right, none of it shows. Query parameters are treated as `key=value`
//!   pairs are.

use std::fmt;
use std::ops::Range;

/// Keys of a libpq connection string whose values are shown.
const SHOWN_KEYS: [&str; 38] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "passfile",
    "options",
    "application_name",
    "fallback_application_name",
    "connect_timeout",
    "client_encoding",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requirepeer",
    "require_auth",
    "channel_binding",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// Keys libpq knows whose values are secret.
const SECRET_KEYS: [&str; 2] = ["password", "sslpassword"];

/// Whether libpq knows this key (so its name is no secret).
pub(crate) fn is_libpq_key(key: &str) -> bool {
    SHOWN_KEYS.contains(&key) || SECRET_KEYS.contains(&key)
}

/// Whether the value of this key is shown.
fn value_shown(key: &str) -> bool {
    SHOWN_KEYS.contains(&key)
}

/// libpq's white space (C's `isspace`): ASCII only, vertical tab included.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

/// Whether the string is a URL (`postgres://` or `postgresql://`), leading
/// white space aside.
pub(crate) fn is_url(s: &str) -> bool {
    let s = s.trim_start_matches(is_space);
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// One `key=value` of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair {
    /// The key.
    pub key: String,
    /// The value, quotes and escapes removed.
    pub value: String,
    /// Where the key is in the text.
    key_span: Range<usize>,
    /// Where the value is in the text, quotes included.
    value_span: Range<usize>,
    /// Whether the value was quoted (then nothing after its closing quote
    /// can belong to it).
    quoted: bool,
    /// Whether the key's name may be shown (see the module's rules).
    key_shown: bool,
}

impl Pair {
    /// The key's name when it may be shown.
    pub fn shown_key(&self) -> Option<&str> {
        self.key_shown.then_some(self.key.as_str())
    }
}

/// Why a `key=value` string cannot be read. The messages name no part of
/// the string but keys libpq knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyntaxError {
    /// A word with no `=value` after it.
    NoEquals {
        /// The last key libpq knows before it.
        after: Option<String>,
    },
    /// `=value` with no key before it.
    NoKey {
        /// The last key libpq knows before it.
        after: Option<String>,
    },
    /// A quoted value without its closing quote.
    Unterminated {
        /// Its key, when libpq knows it.
        key: Option<String>,
    },
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let after = |f: &mut fmt::Formatter<'_>, key: &Option<String>| match key {
            Some(key) => write!(f, " after the value of `{key}`"),
            None => Ok(()),
        };
        match self {
            SyntaxError::NoEquals { after: key } => {
                f.write_str("a word")?;
                after(f, key)?;
                f.write_str(
                    " is not `key=value` (a value with a space in it must be quoted, 'like this', or have a \
                     backslash before the space)",
                )
            }
            SyntaxError::NoKey { after: key } => {
                f.write_str("an `=`")?;
                after(f, key)?;
                f.write_str(" has no key before it")
            }
            SyntaxError::Unterminated { key: Some(key) } => {
                write!(f, "the quoted value of `{key}` has no closing quote")
            }
            SyntaxError::Unterminated { key: None } => f.write_str("a quoted value has no closing quote"),
        }
    }
}

/// A `key=value` string as libpq reads it: the pairs up to where reading
/// stopped, and why it stopped, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyValues {
    /// The pairs read.
    pub pairs: Vec<Pair>,
    /// Where reading stopped (the byte where the unreadable part starts), and why.
    pub error: Option<(usize, SyntaxError)>,
}

/// Reads a `key=value` string as libpq's `conninfo_parse` does: white space
/// between pairs and around `=`; a value is quoted (`'...'`, ending at the
/// first unescaped quote) or runs to the next white space; in both, a
/// backslash takes the next character as it is.
pub(crate) fn key_values(s: &str) -> KeyValues {
    let mut pairs: Vec<Pair> = Vec::new();
    let mut chars = s.char_indices().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|&(_, c)| is_space(c)).is_some() {}
    };
    let pos = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| chars.peek().map_or(s.len(), |&(i, _)| i);
    loop {
        skip_space(&mut chars);
        let start = pos(&mut chars);
        if start == s.len() {
            return KeyValues { pairs, error: None };
        }
        let last_known = || pairs.iter().rev().find(|p| is_libpq_key(&p.key)).map(|p| p.key.clone());
        while chars.next_if(|&(_, c)| c != '=' && !is_space(c)).is_some() {}
        let key_end = pos(&mut chars);
        skip_space(&mut chars);
        if chars.next_if(|&(_, c)| c == '=').is_none() {
            let error = SyntaxError::NoEquals { after: last_known() };
            return KeyValues {
                pairs,
                error: Some((start, error)),
            };
        }
        if key_end == start {
            let error = SyntaxError::NoKey { after: last_known() };
            return KeyValues {
                pairs,
                error: Some((start, error)),
            };
        }
        let key = &s[start..key_end];
        skip_space(&mut chars);
        let value_start = pos(&mut chars);
        let mut value = String::new();
        let quoted = chars.next_if(|&(_, c)| c == '\'').is_some();
        if quoted {
            loop {
                match chars.next() {
                    None => {
                        let key = is_libpq_key(key).then(|| key.to_string());
                        return KeyValues {
                            pairs,
                            error: Some((start, SyntaxError::Unterminated { key })),
                        };
                    }
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|&(_, c)| !is_space(c)) {
                if c == '\\' {
                    value.extend(chars.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
        }
        let value_end = pos(&mut chars);
        let key_shown = is_libpq_key(key)
            || pairs
                .last()
                .is_none_or(|prev| prev.quoted || (prev.key_shown && value_shown(&prev.key)));
        pairs.push(Pair {
            key: key.to_string(),
            value,
            key_span: start..key_end,
            value_span: value_start..value_end,
            quoted,
            key_shown,
        });
    }
}

/// One `key=value` of a URL's query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryItem {
    /// The key, percent-decoded; `None` for an item without `=`.
    pub key: Option<String>,
    /// Whether the key's name may be shown.
    pub key_shown: bool,
    /// The whole item in the text.
    span: Range<usize>,
    /// The value in the text.
    value_span: Option<Range<usize>>,
}

/// The items of the query string that starts at byte `start` of `url` (after
/// its `?`), split at `&`, keys percent-decoded, with the same rules for
/// what shows as `key=value` strings.
pub(crate) fn query_items(url: &str, start: usize) -> Vec<QueryItem> {
    let mut items: Vec<QueryItem> = Vec::new();
    let mut at = start;
    for raw in url[start..].split('&') {
        let span = at..at + raw.len();
        at = span.end + 1;
        let item = match raw.split_once('=') {
            None => QueryItem {
                key: None,
                key_shown: false,
                span,
                value_span: None,
            },
            Some((k, _)) => {
                let key = percent_encoding::percent_decode_str(k).decode_utf8_lossy().into_owned();
                let after_hidden = items
                    .last()
                    .is_some_and(|prev| !prev.key_shown || prev.key.as_deref().is_none_or(|k| !value_shown(k)));
                QueryItem {
                    key_shown: is_libpq_key(&key) || !after_hidden,
                    key: Some(key),
                    value_span: Some(span.start + k.len() + 1..span.end),
                    span,
                }
            }
        };
        items.push(item);
    }
    items
}

/// The connection string with every password hidden (`***`), in both the
/// `key=value` and the URL forms, and with nothing shown that is not
/// certainly free of secrets (see the module's rules): the value of any key
/// libpq does not know is hidden too, and so is the rest of a string from
/// where it cannot be read.
pub fn redact(dsn: &str) -> String {
    if is_url(dsn) {
        return redact_url(dsn);
    }
    let read = key_values(dsn);
    let mut hidden = Vec::new();
    for p in &read.pairs {
        if !p.key_shown {
            hidden.push(p.key_span.start..p.value_span.end);
        } else if !value_shown(&p.key) {
            hidden.push(p.value_span.clone());
        }
    }
    if let Some((at, _)) = &read.error {
        hidden.push(*at..dsn.len());
    }
    render(dsn, &hidden)
}

/// The text with each hidden range (merged where they touch or overlap)
/// replaced by `***`.
fn render(text: &str, hidden: &[Range<usize>]) -> String {
    let mut mask = vec![false; text.len()];
    for r in hidden {
        for m in &mut mask[r.start.min(text.len())..r.end.min(text.len())] {
            *m = true;
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut in_hidden = false;
    for (i, c) in text.char_indices() {
        if mask[i] {
            if !in_hidden {
                out.push_str("***");
                in_hidden = true;
            }
        } else {
            in_hidden = false;
            out.push(c);
        }
    }
    out
}

/// A URL with its password hidden, however its `@` are read: the userinfo
/// running to the last `@` (what an unencoded `@` in a password means), to
/// the first (libpq and tokio-postgres), or absent when a `/` comes first
/// (libpq); every range that any reading takes for a password or a hidden
/// query value is hidden.
fn redact_url(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let mut hidden = Vec::new();
    let mut readings = Vec::new();
    if let (Some(first), Some(last)) = (rest.find('@'), rest.rfind('@')) {
        readings.push(Some(last));
        readings.push(Some(first));
        if rest[..first].contains('/') {
            readings.push(None);
        }
    } else {
        readings.push(None);
    }
    for at in readings {
        let host_start = match at {
            Some(at) => {
                let userinfo = &rest[..at];
                if let Some(colon) = userinfo.find(':') {
                    hidden.push(scheme_end + colon + 1..scheme_end + at);
                }
                at + 1
            }
            None => 0,
        };
        if let Some(q) = rest[host_start..].find('?') {
            let query_start = scheme_end + host_start + q + 1;
            for item in query_items(url, query_start) {
                let shows_value = item.key.as_deref().is_some_and(value_shown);
                if !item.key_shown {
                    hidden.push(item.span);
                } else if !shows_value {
                    hidden.extend(item.value_span);
                }
            }
        }
    }
    render(url, &hidden)
}

/// Checks that a URL reads the same to libpq, to tokio-postgres and to its
/// writer: at most one `@`, and none after a `/` or a `?` (an `@`, `/` or
/// `?` in a user name or password must be percent-encoded). The message
/// names no part of the URL.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let ats = rest.matches('@').count();
    if ats > 1 {
        return Err(format!(
            "the URL has {ats} `@`; in a user name or password, write `@` as %40"
        ));
    }
    if let Some(at) = rest.find('@') {
        if rest[..at].contains(['/', '?']) {
            return Err(
                "the URL's `@` comes after a `/` or `?`; in a user name or password, write `/` as %2F and `?` as %3F"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_key_value_strings() {
        assert_eq!(redact("host=h password=s3cret user=u"), "host=h password=*** user=u");
        assert_eq!(redact("password = 'a b\\' c' host=h"), "password = *** host=h");
        assert_eq!(redact("host=h"), "host=h");
        assert_eq!(redact("user=passwordless host=h"), "user=passwordless host=h");
    }

    #[test]
    fn an_escaped_space_outside_quotes_stays_in_the_password() {
        assert_eq!(redact(r"password=Ab\ c@d:e/f bogus=1"), "password=*** ***");
        assert_eq!(
            redact(r"host=h password=Ab\ c@d:e/f port=5"),
            "host=h password=*** port=5"
        );
        let read = key_values(r"password=Ab\ c@d:e/f");
        assert_eq!(read.pairs[0].value, "Ab c@d:e/f");
    }

    #[test]
    fn an_unescaped_space_in_a_password_hides_what_follows_it() {
        // libpq reads `c@d:e/f` as a word without `=`: not readable, not shown.
        assert_eq!(redact("host=h password=Ab c@d:e/f port=5"), "host=h password=*** ***");
        // libpq reads `cd=x` as an unknown key: maybe the rest of the password.
        assert_eq!(redact("password=Ab cd=x host=h"), "password=*** *** host=h");
        let read = key_values("password=Ab cd=x");
        assert_eq!(read.pairs[1].shown_key(), None);
        // After a quoted value, nothing can belong to it.
        assert_eq!(redact("password='Ab' cd=x"), "password=*** cd=***");
        // A quoted value without its end: hidden to the end.
        assert_eq!(redact("host=h password='Ab c"), "host=h ***");
    }

    #[test]
    fn syntax_errors_name_no_part_of_the_string() {
        let read = key_values("host=h password=Ab c@d:e/f");
        let (at, error) = read.error.expect("not readable");
        assert_eq!(at, "host=h password=Ab ".len());
        let text = error.to_string();
        assert!(text.contains("after the value of `password`"), "{text}");
        assert!(!text.contains("c@d"), "{text}");
        let read = key_values("Qz9Xw");
        let text = read.error.map(|(_, e)| e.to_string()).unwrap_or_default();
        assert!(!text.is_empty() && !text.contains("Qz9Xw"), "{text}");
    }

    #[test]
    fn values_of_keys_libpq_does_not_know_are_hidden_too() {
        assert_eq!(
            redact("host=h passwrd=s3cret dbname=d"),
            "host=h passwrd=*** dbname=d",
            "a mistyped password key"
        );
        assert_eq!(redact("PASSWORD='x y' port=5"), "PASSWORD=*** port=5");
        assert_eq!(redact("host = h  sslmode=require"), "host = h  sslmode=require");
        assert_eq!(redact("host=h junk = =x"), "host=h junk = ***", "the value is `=x`");
        assert_eq!(
            redact("postgres://u@h/db?passwrd=x&sslmode=require"),
            "postgres://u@h/db?passwrd=***&sslmode=require"
        );
    }

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(redact("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(
            redact("postgresql://u@h/db?password=x&sslmode=require"),
            "postgresql://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://u:p%40w@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn an_unencoded_at_or_slash_in_a_url_password_never_shows_any_of_it() {
        assert_eq!(
            redact("postgres://sec2:Ab c@d:e/f@host/db"),
            "postgres://sec2:***@host/db"
        );
        assert_eq!(redact("postgres://u:p/w@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:p?w@h/db"), "postgres://u:***@h/db");
        // An `@` in a query value: every reading's password is hidden.
        assert_eq!(
            redact("postgres://u@h/db?password=Qz@Xw"),
            "postgres://u@h/db?password=***"
        );
        assert_eq!(redact("postgres://h/db?password=Qz@Xw"), "postgres://h/db?password=***");
        assert_eq!(redact("postgres://host:5432/db?password=Qz@Xw"), "postgres://host:***");
        // A query value with `&` in it: the key after it may be part of it.
        assert_eq!(
            redact("postgres://h/db?password=a&b=c&sslmode=require"),
            "postgres://h/db?password=***&***&sslmode=require"
        );
    }

    #[test]
    fn urls_that_read_differently_to_libpq_and_tokio_postgres_are_refused() {
        assert!(check_url("postgres://sec2:Ab c@d:e/f@host/db").is_err());
        assert!(check_url("postgres://u:p/w@h/db").is_err());
        assert!(check_url("postgres://h/db?password=a@b").is_err());
        assert!(check_url("postgres://u:p%40w@h/db?sslmode=disable").is_ok());
        assert!(check_url("postgres://h/db").is_ok());
        let message = check_url("postgres://u:Qz@Xw@Kj@h/db").err().unwrap_or_default();
        assert!(["Qz", "Xw", "Kj"].iter().all(|s| !message.contains(s)), "{message}");
    }
}
