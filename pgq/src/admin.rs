//! PgQ's small utility functions.

use tokio_postgres::GenericClient;

use crate::call::scalar;
use crate::error::Result;

/// The installed PgQ version (`pgq.version`), e.g. `3.5`.
pub async fn version(client: &impl GenericClient) -> Result<String> {
    scalar(client, "pgq.version", String::new(), "select pgq.version()", &[]).await
}

/// Brings an older PgQ schema's tables up to date (`pgq.upgrade_schema`).
/// PgQ 3.5 counts the fixes it applies but returns 0 whatever it did.
pub async fn upgrade_schema(client: &impl GenericClient) -> Result<i32> {
    scalar(
        client,
        "pgq.upgrade_schema",
        String::new(),
        "select pgq.upgrade_schema()",
        &[],
    )
    .await
}

/// A sequence's last value, read without taking a value from it (`pgq.seq_getval`).
pub async fn seq_getval(client: &impl GenericClient, sequence: &str) -> Result<i64> {
    scalar(
        client,
        "pgq.seq_getval",
        format!("sequence {sequence:?}"),
        "select pgq.seq_getval($1)",
        &[&sequence],
    )
    .await
}

/// Moves a sequence forward to `value` if it is behind (`pgq.seq_setval`);
/// never moves it back. Returns its last value.
pub async fn seq_setval(client: &impl GenericClient, sequence: &str, value: i64) -> Result<i64> {
    scalar(
        client,
        "pgq.seq_setval",
        format!("sequence {sequence:?}"),
        "select pgq.seq_setval($1, $2)",
        &[&sequence, &value],
    )
    .await
}

/// Quotes a possibly schema-qualified name as PostgreSQL would
/// (`pgq.quote_fqname`), defaulting the schema to `public`.
pub async fn quote_fqname(client: &impl GenericClient, name: &str) -> Result<String> {
    scalar(
        client,
        "pgq.quote_fqname",
        format!("name {name:?}"),
        "select pgq.quote_fqname($1)",
        &[&name],
    )
    .await
}
