//! Who may write: the token, the sessions it opens, and their CSRF tokens.
//!
//! Writes are off unless `serve --writes`; then an operator posts the token
//! (from `--token-file` or `PGQ_ADMIN_TOKEN`) to `/login` and gets a session
//! cookie (`HttpOnly`, `SameSite=Strict`). A write needs that session and
//! the session's CSRF token in the form (the synchronizer-token pattern),
//! and is refused when the browser says it comes from another origin.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::failure::Usage;

/// The environment variable that may hold the token.
pub const TOKEN_ENV: &str = "PGQ_ADMIN_TOKEN";

/// The session cookie's name.
pub const COOKIE: &str = "pgq_admin_session";

/// How long a session lasts.
const SESSION_LIFE: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept; the oldest goes first.
const MAX_SESSIONS: usize = 256;

/// The shortest token accepted.
const MIN_TOKEN: usize = 16;

/// The write token and the open sessions.
pub struct Auth {
    token: String,
    sessions: Mutex<HashMap<String, Session>>,
}

struct Session {
    csrf: String,
    opened: Instant,
}

impl Auth {
    /// The token from `file` (its first line) or [`TOKEN_ENV`].
    pub fn load(file: Option<&Path>) -> anyhow::Result<Auth> {
        let token = match file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            None => std::env::var(TOKEN_ENV).unwrap_or_default().trim().to_string(),
        };
        if token.is_empty() {
            return Err(Usage(format!(
                "--writes needs a token: put one in a file given with --token-file, or in {TOKEN_ENV}"
            ))
            .into());
        }
        if token.chars().count() < MIN_TOKEN {
            return Err(Usage(format!(
                "the token is too short: use at least {MIN_TOKEN} characters (e.g. `openssl rand -hex 24`)"
            ))
            .into());
        }
        Ok(Auth {
            token,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Opens a session when `token` is the token: its id and CSRF token.
    pub fn login(&self, token: &str) -> Option<(String, String)> {
        if !same(token.trim().as_bytes(), self.token.as_bytes()) {
            return None;
        }
        let (id, csrf) = (random_hex(), random_hex());
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.opened.elapsed() < SESSION_LIFE);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.opened).map(|(k, _)| k.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                opened: Instant::now(),
            },
        );
        Some((id, csrf))
    }

    /// The CSRF token of the live session `id`.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .filter(|s| s.opened.elapsed() < SESSION_LIFE)
            .map(|s| s.csrf.clone())
    }

    /// Whether `csrf` is the CSRF token of the live session `id`.
    pub fn allows(&self, id: &str, csrf: &str) -> bool {
        self.csrf(id).is_some_and(|mine| same(mine.as_bytes(), csrf.as_bytes()))
    }

    /// Closes session `id`.
    pub fn logout(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// Compares in time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes as hex.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session id in a `Cookie` header, if any.
pub fn session_of(cookie_header: Option<&str>) -> Option<String> {
    cookie_header?.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE && !v.is_empty()).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_opens_a_session_and_only_its_csrf_token_allows_writes() {
        let auth = Auth {
            token: "0123456789abcdef0123".into(),
            sessions: Mutex::new(HashMap::new()),
        };
        assert!(auth.login("0123456789abcdef0124").is_none());
        let (id, csrf) = auth.login("0123456789abcdef0123").expect("the token opens a session");
        assert!(auth.allows(&id, &csrf));
        assert!(!auth.allows(&id, "x"));
        assert!(!auth.allows("other", &csrf));
        assert_eq!(session_of(Some(&format!("a=b; {COOKIE}={id}"))), Some(id.clone()));
        auth.logout(&id);
        assert!(!auth.allows(&id, &csrf));
    }
}
