//! The few helpers every wrapper calls: run one bound statement and read
//! typed values with `try_get`, turning failures into [`Error`]s that name the
//! function and what it was called on.

use postgres_types::{FromSqlOwned, ToSql};
use tokio_postgres::{GenericClient, Row};

use crate::error::{Error, Result};

/// Parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs a statement returning one row and reads its first column.
pub(crate) async fn scalar<T: FromSqlOwned>(
    client: &impl GenericClient,
    function: &'static str,
    context: String,
    sql: &str,
    params: Params<'_>,
) -> Result<T> {
    let row = client
        .query_one(sql, params)
        .await
        .map_err(Error::sql(function, context.clone()))?;
    row.try_get(0).map_err(Error::row(function, context))
}

/// Runs a statement and returns its rows.
pub(crate) async fn rows(
    client: &impl GenericClient,
    function: &'static str,
    context: &str,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>> {
    client.query(sql, params).await.map_err(Error::sql(function, context))
}

/// Runs a statement and maps every row with `read`.
pub(crate) async fn map_rows<T>(
    client: &impl GenericClient,
    function: &'static str,
    context: String,
    sql: &str,
    params: Params<'_>,
    read: impl Fn(&Row) -> std::result::Result<T, tokio_postgres::Error>,
) -> Result<Vec<T>> {
    let rows = rows(client, function, &context, sql, params).await?;
    rows.iter()
        .map(|r| read(r).map_err(Error::row(function, context.clone())))
        .collect()
}
