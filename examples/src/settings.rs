//! Reading a program's `[settings]` table, with messages that name the key.
//!
//! Every reader returns `Err(message)` for a value of the wrong type or out
//! of range; the message names the key and says what is expected, so a
//! consumer's `config` hook can return it as is.

use std::time::Duration;

/// Fails on a key that is not in `known`, so a misspelt setting is not
/// silently ignored.
pub fn only(settings: &toml::Table, program: &str, known: &[&str]) -> Result<(), String> {
    match settings.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(format!(
            "{program}: unknown key `{key}` in [settings]; the keys are {}",
            known.join(", ")
        )),
    }
}

/// A number of seconds (integer or float, 0 or more); `default` when absent.
pub fn seconds(settings: &toml::Table, key: &str, default: Duration) -> Result<Duration, String> {
    let secs = match settings.get(key) {
        None => return Ok(default),
        Some(toml::Value::Integer(n)) => *n as f64,
        Some(toml::Value::Float(f)) => *f,
        Some(other) => return Err(format!("[settings] {key} is {other}; it must be a number of seconds")),
    };
    pgq_consumers::check_seconds(&format!("[settings] {key}"), secs, true)
}

/// A number of milliseconds (a whole number, 0 or more); `default` when absent.
pub fn millis(settings: &toml::Table, key: &str, default: Duration) -> Result<Duration, String> {
    match settings.get(key) {
        None => Ok(default),
        Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Duration::from_millis(n.unsigned_abs())),
        Some(other) => Err(format!(
            "[settings] {key} is {other}; it must be a whole number of milliseconds, 0 or more"
        )),
    }
}

/// A whole number of at least `min`; `default` when absent.
pub fn count(settings: &toml::Table, key: &str, default: u64, min: u64) -> Result<u64, String> {
    match settings.get(key) {
        None => Ok(default),
        Some(toml::Value::Integer(n)) if *n >= 0 && n.unsigned_abs() >= min => Ok(n.unsigned_abs()),
        Some(other) => Err(format!(
            "[settings] {key} is {other}; it must be a whole number, {min} or more"
        )),
    }
}

/// A string; `None` when absent.
pub fn string(settings: &toml::Table, key: &str) -> Result<Option<String>, String> {
    match settings.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("[settings] {key} is {other}; it must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap_or_default()
    }

    #[test]
    fn values_are_read_and_bad_ones_named() {
        let t = table("a = 2\nb = 0.5\nc = 'x'\nd = -1\ne = 1e300\n");
        assert_eq!(seconds(&t, "a", Duration::ZERO), Ok(Duration::from_secs(2)));
        assert_eq!(seconds(&t, "b", Duration::ZERO), Ok(Duration::from_millis(500)));
        assert_eq!(seconds(&t, "z", Duration::from_secs(7)), Ok(Duration::from_secs(7)));
        assert!(seconds(&t, "c", Duration::ZERO).is_err_and(|e| e.contains("[settings] c")));
        assert!(seconds(&t, "d", Duration::ZERO).is_err_and(|e| e.contains("from 0")));
        assert!(seconds(&t, "e", Duration::ZERO).is_err_and(|e| e.contains("`[settings] e`") && e.contains("a year")));
        assert_eq!(count(&t, "a", 1, 1), Ok(2));
        assert!(count(&t, "d", 1, 1).is_err());
        assert_eq!(millis(&t, "a", Duration::ZERO), Ok(Duration::from_millis(2)));
        assert_eq!(string(&t, "c"), Ok(Some("x".into())));
        assert!(only(&t, "p", &["a", "b", "c"]).is_err_and(|e| e.contains("`d`")));
    }
}
