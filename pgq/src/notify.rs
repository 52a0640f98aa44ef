//! Wake-ups through LISTEN/NOTIFY: producers tell the ticker that events were
//! committed, the ticker tells consumers that a queue has a new tick.
//!
//! Neither is needed for correctness (a periodic ticker and polling consumers
//! see everything); they only cut the time from commit to consumer. A
//! notification is sent at commit of the transaction that sends it, and
//! PostgreSQL folds identical notifications of one transaction into one, so a
//! producer may notify once per event at no extra cost.

use tokio_postgres::GenericClient;

use crate::error::{on_queue, Error, Result};
use crate::ident::quote_ident;

/// The channel producers notify when they commit events, with the queue's
/// name as payload ([`notify_events`]); the ticker listens on it and ticks
/// that queue promptly.
pub const EVENTS_CHANNEL: &str = "pgq_events";

/// The longest channel name PostgreSQL accepts (`NAMEDATALEN - 1` bytes).
const MAX_CHANNEL: usize = 63;

/// The channel the ticker notifies when it made a tick on `queue`; its
/// consumers listen on it and look for a batch at once.
///
/// `pgq_tick.` followed by the queue's name. A name too long for a channel
/// (63 bytes) is cut and followed by a hash of the whole name, so that two
/// long names sharing a prefix still get two channels.
pub fn tick_channel(queue: &str) -> String {
    const PREFIX: &str = "pgq_tick.";
    if PREFIX.len() + queue.len() <= MAX_CHANNEL {
        return format!("{PREFIX}{queue}");
    }
    // 16 hex digits of hash and a dot after the cut.
    let room = MAX_CHANNEL - PREFIX.len() - 17;
    let mut cut = room;
    while !queue.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{PREFIX}{}.{:016x}", &queue[..cut], fnv1a(queue.as_bytes()))
}

/// FNV-1a, 64 bits: stable across processes, versions and platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Tells the ticker, at commit of the caller's transaction, that `queue`
/// has new events (`pg_notify` on [`EVENTS_CHANNEL`]). Outside a
/// transaction the notification goes at once.
pub async fn notify_events(client: &impl GenericClient, queue: &str) -> Result<()> {
    client
        .execute("select pg_notify($1, $2)", &[&EVENTS_CHANNEL, &queue])
        .await
        .map_err(Error::sql("pg_notify", on_queue(queue)))?;
    Ok(())
}

/// Tells `queue`'s consumers that it has a new tick (`pg_notify` on
/// [`tick_channel`]), at commit of the caller's transaction.
pub async fn notify_tick(client: &impl GenericClient, queue: &str) -> Result<()> {
    client
        .execute("select pg_notify($1, '')", &[&tick_channel(queue)])
        .await
        .map_err(Error::sql("pg_notify", on_queue(queue)))?;
    Ok(())
}

/// Subscribes the connection to a channel (`LISTEN`). Notifications arrive
/// on the connection itself: drive it with
/// [`Connection::poll_message`](tokio_postgres::Connection::poll_message)
/// and keep the [`AsyncMessage::Notification`](tokio_postgres::AsyncMessage)s.
pub async fn listen(client: &impl GenericClient, channel: &str) -> Result<()> {
    let sql = format!("listen {}", quote_ident(channel)?);
    client
        .batch_execute(&sql)
        .await
        .map_err(Error::sql("listen", format!("channel {channel:?}")))
}

/// Unsubscribes the connection from a channel (`UNLISTEN`).
pub async fn unlisten(client: &impl GenericClient, channel: &str) -> Result<()> {
    let sql = format!("unlisten {}", quote_ident(channel)?);
    client
        .batch_execute(&sql)
        .await
        .map_err(Error::sql("unlisten", format!("channel {channel:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_queue_names_are_kept_whole() {
        assert_eq!(tick_channel("orders"), "pgq_tick.orders");
    }

    #[test]
    fn long_queue_names_fit_and_stay_apart() {
        let a = format!("{}a", "x".repeat(80));
        let b = format!("{}b", "x".repeat(80));
        assert!(tick_channel(&a).len() <= MAX_CHANNEL);
        assert_ne!(tick_channel(&a), tick_channel(&b));
        let wide = "ü".repeat(40);
        assert!(tick_channel(&wide).len() <= MAX_CHANNEL);
    }
}
