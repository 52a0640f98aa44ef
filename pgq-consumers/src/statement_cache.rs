//! Statements prepared once per connection: what makes a handler's
//! `cx.tx().execute(sql, params)` one round trip instead of two.
//!
//! tokio-postgres prepares a statement given as text on every call (a round
//! trip), then runs it (another). The batch loop keeps one cache per
//! connection it owns, and empties it when it replaces the connection:
//! prepared statements live in a server session and die with it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

/// How many statements one connection keeps prepared. Past it, a new text
/// is prepared for each use and closed after it (as tokio-postgres does for
/// text), so a handler that builds its SQL text from values does not make
/// the cache, or the server session, grow without bound.
pub(crate) const CAPACITY: usize = 1000;

/// Whether `error`, of running a prepared statement, says the server no
/// longer has the statement as it was prepared: deallocated (`DEALLOCATE`,
/// `DISCARD ALL`), or a table it reads changed its columns ("cached plan must
/// not change result type"). It must be prepared again.
pub(crate) fn is_stale(error: &tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|c| *c == SqlState::INVALID_SQL_STATEMENT_NAME || *c == SqlState::FEATURE_NOT_SUPPORTED)
}

/// The statements prepared on one connection, by their SQL text.
#[derive(Debug, Default)]
pub(crate) struct StatementCache {
    statements: Mutex<HashMap<String, Statement>>,
}

impl StatementCache {
    /// The statement of `sql`, prepared on the connection of `tx` now
    /// unless it was already.
    pub(crate) async fn prepare(&self, tx: &Client, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.lock().get(sql) {
            return Ok(statement.clone());
        }
        let statement = tx.prepare(sql).await?;
        let mut statements = self.lock();
        if statements.len() < CAPACITY {
            // Two calls racing prepare it twice; one copy stays.
            statements.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }

    /// Forgets every statement when `error` (of running one) says the server
    /// no longer has a statement as it was prepared: deallocated
    /// (`DEALLOCATE`, `DISCARD ALL`), or a table it reads changed its columns
    /// ("cached plan must not change result type"). They are prepared again
    /// as they are used. Any other error (a constraint, a lock) leaves them.
    pub(crate) fn forget_all_if_stale(&self, error: &tokio_postgres::Error) {
        if is_stale(error) {
            self.clear();
        }
    }

    /// Forgets every statement: the connection they were prepared on is gone.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.statements.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
