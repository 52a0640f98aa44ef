//! Durations written in a config as a number of seconds (`delay = 0.5`,
//! `timeout = 30`): the range they may take, checked when the config is
//! read, and their conversion to [`Duration`], which never panics.
//!
//! Every duration of the config ([`Config`](crate::Config)'s keys, the
//! `[ticker]` periods) is checked by [`check`]; a consumer's settings type
//! gets the same check from `#[serde(with = "pgq_consumers::seconds")]`:
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     #[serde(with = "pgq_consumers::seconds")]
//!     timeout: Duration,
//!     #[serde(default, with = "pgq_consumers::seconds::option")]
//!     grace: Option<Duration>,
//! }
//!
//! let settings: Settings = toml::from_str("timeout = 2.5").unwrap();
//! assert_eq!(settings.timeout, Duration::from_millis(2500));
//! assert!(toml::from_str::<Settings>("timeout = 1e300").is_err());
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration a config may give: one year (365 days), in
/// seconds. A year is far more than any key needs, far less than what
/// [`Duration`], PostgreSQL's `interval` or a deadline computed from it can
/// hold, and a value beyond it (`1e300`) is a mistake to report, not a time
/// to wait.
pub const MAX_SECONDS: f64 = 31_536_000.0;

/// Checks a number of seconds read from a config (`key` names it in the
/// message) and returns it as a [`Duration`]: finite, at most
/// [`MAX_SECONDS`], and 0 or more (more than 0 unless `zero_ok`).
///
/// ```
/// use std::time::Duration;
/// use pgq_consumers::seconds;
///
/// assert_eq!(seconds::check("delay", 1.5, true), Ok(Duration::from_millis(1500)));
/// assert!(seconds::check("delay", 1e300, true).is_err_and(|e| e.contains("`delay`")));
/// ```
pub fn check(key: &str, value: f64, zero_ok: bool) -> Result<Duration, String> {
    in_range(value, zero_ok).map_err(|why| format!("`{key}` is {value:?}; {why}"))
}

/// `Ok` when `value` is a number of seconds in range; else what the range is.
fn in_range(value: f64, zero_ok: bool) -> Result<Duration, String> {
    let least_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    if value.is_finite() && least_ok && value <= MAX_SECONDS {
        return Ok(duration(value));
    }
    let least = if zero_ok { "from 0" } else { "more than 0 and" };
    Err(format!(
        "it must be a number of seconds {least} up to {MAX_SECONDS} (a year)"
    ))
}

/// A number of seconds as a [`Duration`], brought into `0..=MAX_SECONDS`
/// first (NaN counts as 0): for values checked already, or as a last line of
/// defence for values set by code after the check.
pub(crate) fn duration(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.clamp(0.0, MAX_SECONDS)).unwrap_or(Duration::ZERO)
}

/// Reads a number of seconds (integer or not, from 0 up to
/// [`MAX_SECONDS`]) as a [`Duration`]; for
/// `#[serde(with = "pgq_consumers::seconds")]`. The error names the key.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(deserializer)?;
    in_range(secs, true).map_err(|why| serde::de::Error::custom(format!("{secs:?} seconds: {why}")))
}

/// An optional number of seconds; for
/// `#[serde(default, with = "pgq_consumers::seconds::option")]`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Reads an optional number of seconds as an optional [`Duration`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(deserializer)? {
            Some(secs) => super::in_range(secs, true)
                .map(Some)
                .map_err(|why| serde::de::Error::custom(format!("{secs:?} seconds: {why}"))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_out_of_range_are_refused_naming_the_key_and_never_panic() {
        for v in [1e300, f64::INFINITY, f64::NAN, -1.0, MAX_SECONDS * 1.01, f64::MAX] {
            let e = check("min_lag", v, true);
            assert!(e.as_ref().is_err_and(|e| e.contains("`min_lag`")), "{v}: {e:?}");
        }
        assert!(check("ticker_period", 0.0, false).is_err());
        assert_eq!(check("coalesce", 0.0, true), Ok(Duration::ZERO));
        assert_eq!(check("delay", MAX_SECONDS, true), Ok(Duration::from_secs(31_536_000)));
        for v in [1e300, f64::NAN, -5.0, f64::NEG_INFINITY] {
            assert!(duration(v) <= Duration::from_secs(31_536_000), "{v}");
        }
    }

    #[test]
    fn settings_read_seconds_up_to_a_year() {
        #[derive(Deserialize)]
        struct S {
            #[serde(with = "super")]
            t: Duration,
        }
        let read = |text: &str| toml::from_str::<S>(text).map(|s| s.t).map_err(|e| e.to_string());
        assert_eq!(read("t = 2"), Ok(Duration::from_secs(2)));
        assert_eq!(read("t = 0.25"), Ok(Duration::from_millis(250)));
        for bad in ["t = -1", "t = 1e300", "t = inf", "t = nan"] {
            assert!(
                read(bad).is_err_and(|e| e.contains("a year") && e.contains('t')),
                "{bad}"
            );
        }
    }
}
