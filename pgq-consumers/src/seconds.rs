//! Durations written in a config as a number of seconds (`timeout = 30`,
//! `delay = 0.5`), for settings types:
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
//!
//! A number that is negative, not finite or longer than [`MAX`] is refused,
//! with an error that names the key.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration a config may give: a year.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// `secs` seconds as a [`Duration`]; an error saying what is wrong when it is
/// negative, not a number, or longer than [`MAX`].
pub fn from_secs(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{secs} is not a number of seconds, 0 or more"));
    }
    if secs > MAX.as_secs_f64() {
        return Err(format!(
            "{secs} seconds is more than the {} seconds (a year) a config may give",
            MAX.as_secs()
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{secs} seconds: {e}"))
}

/// Reads a number of seconds (integer or not) as a [`Duration`]; for
/// `#[serde(with = "pgq_consumers::seconds")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(deserializer)?;
    from_secs(secs).map_err(serde::de::Error::custom)
}

/// An optional number of seconds; for
/// `#[serde(default, with = "pgq_consumers::seconds::option")]`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Reads an optional number of seconds as an optional [`Duration`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(deserializer)? {
            Some(secs) => super::from_secs(secs).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_read_up_to_a_year_and_never_panic() {
        assert_eq!(from_secs(1.5), Ok(Duration::from_millis(1500)));
        assert_eq!(from_secs(0.0), Ok(Duration::ZERO));
        assert_eq!(from_secs(MAX.as_secs_f64()), Ok(MAX));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e300, MAX.as_secs_f64() + 1.0] {
            assert!(from_secs(bad).is_err(), "{bad}");
        }
    }
}
