//! Durations given in seconds in a config file: the range they may take,
//! checked when the config is read, and their conversion to [`Duration`],
//! which never panics.

use std::time::Duration;

/// The longest duration a config key may give: one year (365 days), in
/// seconds. Every duration in the config (`delay`, `dead_interval`,
/// `min_interval`, `min_lag`, the `[ticker]` periods, the examples'
/// `[settings]`) is checked against it when the config is read. A year is
/// far more than any of them needs, far less than what [`Duration`],
/// PostgreSQL's `interval` or a deadline computed from it can hold, and a
/// value beyond it (`1e300`) is a mistake to report, not a time to wait.
pub const MAX_SECONDS: f64 = 31_536_000.0;

/// Checks a number of seconds read from a config (`key` names it in the
/// message) and returns it as a [`Duration`]: finite, at most
/// [`MAX_SECONDS`], and 0 or more (more than 0 unless `zero_ok`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(pgq_consumers::check_seconds("delay", 1.5, true), Ok(Duration::from_millis(1500)));
/// assert!(pgq_consumers::check_seconds("delay", 1e300, true).is_err_and(|e| e.contains("`delay`")));
/// ```
pub fn check_seconds(key: &str, value: f64, zero_ok: bool) -> Result<Duration, String> {
    let least_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    if value.is_finite() && least_ok && value <= MAX_SECONDS {
        return Ok(duration(value));
    }
    let least = if zero_ok { "from 0" } else { "more than 0 and" };
    Err(format!(
        "`{key}` is {value:?}; it must be a number of seconds {least} up to {MAX_SECONDS} (a year)"
    ))
}

/// A number of seconds as a [`Duration`], brought into `0..=MAX_SECONDS`
/// first (NaN counts as 0): for values checked already, or as a last line of
/// defence for values set by code after the check.
pub(crate) fn duration(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.clamp(0.0, MAX_SECONDS)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_out_of_range_are_refused_naming_the_key_and_never_panic() {
        for v in [1e300, f64::INFINITY, f64::NAN, -1.0, MAX_SECONDS * 1.01, f64::MAX] {
            let e = check_seconds("min_lag", v, true);
            assert!(e.as_ref().is_err_and(|e| e.contains("`min_lag`")), "{v}: {e:?}");
        }
        assert!(check_seconds("ticker_period", 0.0, false).is_err());
        assert_eq!(check_seconds("coalesce", 0.0, true), Ok(Duration::ZERO));
        assert_eq!(
            check_seconds("delay", MAX_SECONDS, true),
            Ok(Duration::from_secs(31_536_000))
        );
        for v in [1e300, f64::NAN, -5.0, f64::NEG_INFINITY] {
            assert!(duration(v) <= Duration::from_secs(31_536_000), "{v}");
        }
    }
}
