//! Where a batch's events come from: the batch query streamed from the
//! reader connection, or, when that cannot be used, PgQ's batch cursor in
//! the batch's transaction, `fetch_size` events at a time.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use pgq::{Event, EventFilter};
use tokio_postgres::Client;

use crate::config::Config;
use crate::error::Result;

/// A batch's events as the batch query streams them.
pub(crate) type EventStream = Pin<Box<dyn Stream<Item = pgq::Result<Event>> + Send>>;

/// The name of PgQ's batch cursor, in the batch's transaction.
const CURSOR: &str = "pgq_consumer_batch";

/// A batch's events, read no further ahead than the handler.
pub(crate) enum EventSource {
    /// The batch query, streamed from the reader connection. (In a mutex
    /// only to keep the source `Sync`; it is never locked, only reached
    /// through `&mut self`.)
    Stream(std::sync::Mutex<EventStream>),
    /// PgQ's batch cursor in the batch's transaction.
    Cursor(Cursor),
    /// Every event was read.
    Done,
}

/// PgQ's batch cursor, and the events fetched and not handed out yet.
pub(crate) struct Cursor {
    /// `[filter]` as a condition.
    condition: Option<String>,
    fetch_size: u32,
    opened: bool,
    exhausted: bool,
    buffer: VecDeque<Event>,
}

impl EventSource {
    /// The events of a batch: `stream` when the batch query could be
    /// started, else a cursor as `config` says (`fetch_size`, `[filter]`).
    pub(crate) fn new(stream: Option<EventStream>, config: &Config) -> Result<EventSource> {
        Ok(match stream {
            Some(stream) => EventSource::Stream(std::sync::Mutex::new(stream)),
            None => EventSource::Cursor(Cursor {
                condition: filter_sql(config)?,
                fetch_size: config.fetch_size,
                opened: false,
                exhausted: false,
                buffer: VecDeque::new(),
            }),
        })
    }

    /// The next event, `None` when all were read. An event that cannot be
    /// decoded is [`pgq::Error::Undecodable`], and the next call goes on
    /// with the event after it.
    pub(crate) async fn next(&mut self, tx: &Client, batch_id: i64) -> pgq::Result<Option<Event>> {
        let next = match self {
            EventSource::Stream(stream) => {
                let stream = stream.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
                stream.next().await.transpose()?
            }
            EventSource::Cursor(cursor) => cursor.next(tx, batch_id).await?,
            EventSource::Done => None,
        };
        if next.is_none() {
            *self = EventSource::Done;
        }
        Ok(next)
    }
}

impl Cursor {
    async fn next(&mut self, tx: &Client, batch_id: i64) -> pgq::Result<Option<Event>> {
        if self.buffer.is_empty() && !self.exhausted {
            let quick = i32::try_from(self.fetch_size).unwrap_or(i32::MAX);
            let events = if !self.opened {
                self.opened = true;
                match &self.condition {
                    Some(cond) => pgq::get_batch_cursor_where(tx, batch_id, CURSOR, quick, cond).await?,
                    None => pgq::get_batch_cursor(tx, batch_id, CURSOR, quick).await?,
                }
            } else {
                pgq::fetch_batch_cursor(tx, CURSOR, self.fetch_size).await?
            };
            if events.len() < self.fetch_size as usize {
                self.exhausted = true;
            }
            self.buffer.extend(events);
        }
        Ok(self.buffer.pop_front())
    }
}

/// `[filter]` as the batch query's parameters.
pub(crate) fn event_filter(c: &Config) -> EventFilter {
    let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    EventFilter {
        ev_type: list(&c.filter.ev_type),
        ev_extra1: list(&c.filter.ev_extra1),
    }
}

/// `[filter]` as an SQL condition for PgQ's batch cursor, values written as
/// literals.
fn filter_sql(config: &Config) -> Result<Option<String>> {
    let mut parts = Vec::new();
    for (column, values) in [
        ("ev_type", &config.filter.ev_type),
        ("ev_extra1", &config.filter.ev_extra1),
    ] {
        if values.is_empty() {
            continue;
        }
        let list = values
            .iter()
            .map(|v| pgq::quote_literal(v))
            .collect::<pgq::Result<Vec<_>>>()?;
        parts.push(format!("{column} in ({})", list.join(", ")));
    }
    Ok((!parts.is_empty()).then(|| parts.join(" and ")))
}
