//! Events: what a batch delivers and what a producer inserts.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use tokio_postgres::Row;

use crate::error::{Error, Result};

/// One event of a batch, as `pgq.get_batch_events` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Event id, unique within its queue.
    pub ev_id: i64,
    /// When the event was inserted.
    pub ev_time: DateTime<Utc>,
    /// Id of the transaction that inserted it.
    pub ev_txid: i64,
    /// How many times it was retried; `None` on first delivery.
    pub ev_retry: Option<i32>,
    /// Event type, chosen by the producer.
    pub ev_type: Option<String>,
    /// Payload.
    pub ev_data: Option<String>,
    /// Extra field 1 (PgQ's triggers put the table name here).
    pub ev_extra1: Option<String>,
    /// Extra field 2.
    pub ev_extra2: Option<String>,
    /// Extra field 3.
    pub ev_extra3: Option<String>,
    /// Extra field 4.
    pub ev_extra4: Option<String>,
}

impl Event {
    /// Reads an event from a row with PgQ's event columns (`ev_id` ...
    /// `ev_extra4`), as returned by `get_batch_events`, `get_batch_cursor` and
    /// the query of `batch_event_sql`.
    pub fn from_row(row: &Row) -> std::result::Result<Event, tokio_postgres::Error> {
        Ok(Event {
            ev_id: row.try_get(0)?,
            ev_time: row.try_get(1)?,
            ev_txid: row.try_get(2)?,
            ev_retry: row.try_get(3)?,
            ev_type: row.try_get(4)?,
            ev_data: row.try_get(5)?,
            ev_extra1: row.try_get(6)?,
            ev_extra2: row.try_get(7)?,
            ev_extra3: row.try_get(8)?,
            ev_extra4: row.try_get(9)?,
        })
    }

    /// Reads an event from a row of a batch query that selects the text
    /// fields as their bytes (`convert_to(ev_type, 'SQL_ASCII')` and so on),
    /// as [`BatchReader`](crate::BatchReader) does in a database whose
    /// encoding is `SQL_ASCII`. The inner `Err` names the first field whose
    /// bytes are not UTF-8.
    pub fn from_raw_row(
        row: &Row,
    ) -> std::result::Result<std::result::Result<Event, &'static str>, tokio_postgres::Error> {
        const FIELDS: [&str; 6] = ["ev_type", "ev_data", "ev_extra1", "ev_extra2", "ev_extra3", "ev_extra4"];
        let mut text: [Option<String>; 6] = Default::default();
        for (i, (slot, name)) in text.iter_mut().zip(FIELDS).enumerate() {
            let bytes: Option<Vec<u8>> = row.try_get(4 + i)?;
            *slot = match bytes.map(String::from_utf8) {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(_)) => return Ok(Err(name)),
            };
        }
        let [ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4] = text;
        Ok(Ok(Event {
            ev_id: row.try_get(0)?,
            ev_time: row.try_get(1)?,
            ev_txid: row.try_get(2)?,
            ev_retry: row.try_get(3)?,
            ev_type,
            ev_data,
            ev_extra1,
            ev_extra2,
            ev_extra3,
            ev_extra4,
        }))
    }

    /// How many times the event was retried: `ev_retry`, 0 on first delivery.
    pub fn retries(&self) -> u32 {
        self.ev_retry.map_or(0, |n| u32::try_from(n).unwrap_or(0))
    }

    /// The payload, or `""` when it is NULL.
    pub fn data(&self) -> &str {
        self.ev_data.as_deref().unwrap_or("")
    }

    /// The event type, or `""` when it is NULL.
    pub fn kind(&self) -> &str {
        self.ev_type.as_deref().unwrap_or("")
    }

    /// Decodes a urlencoded payload, as `pgq.logutriga` writes it
    /// (`id=1&name=x`), into a map. A key without `=` maps to `None` (SQL NULL
    /// in logutriga's encoding); a key given twice keeps its last value.
    pub fn urlencoded(&self) -> Result<BTreeMap<String, Option<String>>> {
        decode_urlencoded(self.ev_id, self.data())
    }

    /// Decodes a JSON payload, as `pgq.jsontriga` writes it, into a JSON value.
    pub fn json(&self) -> Result<serde_json::Value> {
        self.json_as()
    }

    /// Decodes a JSON payload into a type of the caller's.
    pub fn json_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(self.data()).map_err(|e| Error::Payload {
            ev_id: self.ev_id,
            format: "JSON",
            source: Some(Box::new(e)),
        })
    }

    /// The operation and primary key columns of a trigger event, read from
    /// `ev_type`: logutriga writes `I:id`, `U:id,name` or `D:id`, sqltriga
    /// just `I`/`U`/`D`, and jsontriga a JSON object such as
    /// `{"op":"INSERT","table":["public","t"],"pkey":["id"]}`. Returns `None`
    /// for other events.
    pub fn trigger_op(&self) -> Option<(TriggerOp, Vec<Cow<'_, str>>)> {
        let ty = self.ev_type.as_deref()?;
        if ty.starts_with('{') {
            #[derive(serde::Deserialize)]
            struct JsonType<'a> {
                #[serde(borrow)]
                op: Cow<'a, str>,
                #[serde(default)]
                pkey: Vec<String>,
            }
            let t: JsonType<'_> = serde_json::from_str(ty).ok()?;
            let op = match t.op.as_ref() {
                "INSERT" => TriggerOp::Insert,
                "UPDATE" => TriggerOp::Update,
                "DELETE" => TriggerOp::Delete,
                "TRUNCATE" => TriggerOp::Truncate,
                _ => return None,
            };
            return Some((op, t.pkey.into_iter().map(Cow::Owned).collect()));
        }
        let (op, keys) = match ty.split_once(':') {
            Some((op, keys)) => (
                op,
                keys.split(',').filter(|k| !k.is_empty()).map(Cow::Borrowed).collect(),
            ),
            None => (ty, Vec::new()),
        };
        let op = match op {
            "I" => TriggerOp::Insert,
            "U" => TriggerOp::Update,
            "D" => TriggerOp::Delete,
            "R" => TriggerOp::Truncate,
            _ => return None,
        };
        Some((op, keys))
    }
}

/// The table operation a trigger event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerOp {
    /// A row was inserted.
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
    /// The table was truncated.
    Truncate,
}

fn decode_urlencoded(ev_id: i64, data: &str) -> Result<BTreeMap<String, Option<String>>> {
    let bad = |problem: String| Error::Payload {
        ev_id,
        format: "urlencoded",
        source: Some(problem.into()),
    };
    let mut map = BTreeMap::new();
    if data.is_empty() {
        return Ok(map);
    }
    for pair in data.split('&') {
        if pair.is_empty() {
            return Err(bad("empty field between '&'".into()));
        }
        let (key, value) = match pair.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        let key = percent_decode(key).ok_or_else(|| bad(format!("bad escape in key {key:?}")))?;
        if key.is_empty() {
            return Err(bad("a field has no name".into()));
        }
        let value = match value {
            Some(v) => Some(percent_decode(v).ok_or_else(|| bad(format!("bad escape in value of {key:?}")))?),
            None => None,
        };
        map.insert(key, value);
    }
    Ok(map)
}

/// Decodes `%XX` escapes and `+` (space). A malformed escape or bytes that
/// are not UTF-8 give `None`: a payload is refused, never guessed at.
fn percent_decode(s: &str) -> Option<String> {
    // The decoder leaves a `%` that starts no escape as it is; such a
    // payload is malformed here.
    let bytes = s.as_bytes();
    let malformed = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return None;
    }
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

/// An event to insert: what a producer chooses. PgQ assigns the id, time and
/// transaction id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEvent {
    /// Event type.
    pub ev_type: Option<String>,
    /// Payload.
    pub ev_data: Option<String>,
    /// Extra field 1.
    pub ev_extra1: Option<String>,
    /// Extra field 2.
    pub ev_extra2: Option<String>,
    /// Extra field 3.
    pub ev_extra3: Option<String>,
    /// Extra field 4.
    pub ev_extra4: Option<String>,
}

impl NewEvent {
    /// An event with a type and a payload and no extra fields.
    pub fn new(ev_type: impl Into<String>, ev_data: impl Into<String>) -> NewEvent {
        NewEvent {
            ev_type: Some(ev_type.into()),
            ev_data: Some(ev_data.into()),
            ..NewEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> Event {
        Event {
            ev_id: 7,
            ev_time: DateTime::<Utc>::UNIX_EPOCH,
            ev_txid: 1,
            ev_retry: None,
            ev_type: Some("I:id".into()),
            ev_data: Some(data.into()),
            ev_extra1: None,
            ev_extra2: None,
            ev_extra3: None,
            ev_extra4: None,
        }
    }

    #[test]
    fn urlencoded_payload_decodes_values_and_nulls() {
        let map = ev("id=1&name=J%C3%BCri+X&note").urlencoded().expect("valid payload");
        assert_eq!(map.get("id"), Some(&Some("1".to_string())));
        assert_eq!(map.get("name"), Some(&Some("Jüri X".to_string())));
        assert_eq!(map.get("note"), Some(&None));
        let map = ev("sum=1%2B1+%3D+2&%26=%25").urlencoded().expect("valid payload");
        assert_eq!(map.get("sum"), Some(&Some("1+1 = 2".to_string())));
        assert_eq!(map.get("&"), Some(&Some("%".to_string())));
    }

    #[test]
    fn malformed_urlencoded_payload_is_an_error_naming_the_event() {
        for bad in ["id=%zz", "a=1&&b=2", "=x", "k=%C3", "k=%4", "k=%", "%zz=1"] {
            let err = ev(bad).urlencoded().expect_err(bad);
            assert!(err.to_string().contains("event 7"), "{err}");
        }
    }

    #[test]
    fn json_payload_decodes_and_malformed_json_is_an_error() {
        let e = ev(r#"{"id": 3}"#);
        assert_eq!(e.json().expect("valid")["id"], 3);
        assert!(ev("{not json").json().is_err());
    }

    #[test]
    fn trigger_op_reads_operation_and_keys() {
        let event = ev("");
        let (op, keys) = event.trigger_op().expect("a trigger event");
        assert_eq!(op, TriggerOp::Insert);
        assert_eq!(keys, vec!["id"]);
    }

    #[test]
    fn trigger_op_reads_jsontriga_s_json_event_type() {
        let mut event = ev("");
        event.ev_type = Some(r#"{"op":"UPDATE","table":["public","t"],"pkey":["id","na\"me"]}"#.into());
        let (op, keys) = event.trigger_op().expect("a trigger event");
        assert_eq!(op, TriggerOp::Update);
        assert_eq!(keys, vec!["id", "na\"me"]);
        event.ev_type = Some(r#"{"op":"MERGE"}"#.into());
        assert!(event.trigger_op().is_none());
        event.ev_type = Some("{broken".into());
        assert!(event.trigger_op().is_none());
    }
}
