//! Reading a batch as a stream: binary rows, bounded memory.

use futures_util::{Stream, TryStreamExt};
use tokio_postgres::GenericClient;

use crate::batch::batch_event_sql;
use crate::error::{on_batch, Error, Result};
use crate::event::Event;

/// Streams the events of an open batch without loading them all: the query
/// from `pgq.batch_event_sql` runs with results in PostgreSQL's binary format,
/// and rows are decoded as they are read off the socket. The client reads no
/// further ahead than the stream's consumer, so memory stays bounded however
/// big the batch is.
///
/// The stream borrows nothing: it may outlive `client`'s borrow, but the
/// connection serves nothing else until it is read or dropped.
pub async fn stream_batch_events(
    client: &impl GenericClient,
    batch_id: i64,
) -> Result<impl Stream<Item = Result<Event>> + Send + 'static> {
    let sql = batch_event_sql(client, batch_id).await?;
    let rows = client
        .query_raw(sql.as_str(), std::iter::empty::<&str>())
        .await
        .map_err(Error::sql("pgq.batch_event_sql query", on_batch(batch_id)))?;
    Ok(rows
        .map_err(move |e| Error::Sql {
            function: "pgq.batch_event_sql query",
            context: on_batch(batch_id),
            source: e,
        })
        .and_then(move |row| async move {
            Event::from_row(&row).map_err(Error::row("pgq.batch_event_sql query", on_batch(batch_id)))
        }))
}
