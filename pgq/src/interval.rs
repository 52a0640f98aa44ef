//! PostgreSQL `interval` as a Rust value.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use postgres_types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// A PostgreSQL `interval`: months, days and microseconds kept apart, as the
/// server keeps them.
///
/// PgQ's intervals (lags, ticker periods) are made of days and microseconds;
/// [`Interval::as_duration`] turns one into a [`Duration`] counting a month as
/// 30 days, as PostgreSQL's own `extract(epoch ...)` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interval {
    /// Whole months.
    pub months: i32,
    /// Whole days.
    pub days: i32,
    /// Microseconds.
    pub microseconds: i64,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Interval {
    /// An interval of exactly this many microseconds (saturating).
    pub fn from_duration(d: Duration) -> Interval {
        Interval {
            months: 0,
            days: 0,
            microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// The interval as a [`Duration`], a month counted as 30 days; a negative
    /// interval becomes zero.
    pub fn as_duration(&self) -> Duration {
        let micros = i128::from(self.microseconds)
            + i128::from(self.days) * i128::from(MICROS_PER_DAY)
            + i128::from(self.months) * 30 * i128::from(MICROS_PER_DAY);
        Duration::from_micros(u64::try_from(micros.max(0)).unwrap_or(u64::MAX))
    }
}

impl From<Duration> for Interval {
    fn from(d: Duration) -> Interval {
        Interval::from_duration(d)
    }
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, mut raw: &'a [u8]) -> Result<Interval, Box<dyn StdError + Sync + Send>> {
        if raw.len() != 16 {
            return Err(format!("interval: expected 16 bytes, got {}", raw.len()).into());
        }
        let microseconds = raw.get_i64();
        let days = raw.get_i32();
        let months = raw.get_i32();
        Ok(Interval {
            months,
            days,
            microseconds,
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

impl ToSql for Interval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.put_i64(self.microseconds);
        out.put_i32(self.days);
        out.put_i32(self.months);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_round_trips_through_interval() {
        let d = Duration::from_millis(1_500);
        assert_eq!(Interval::from(d).as_duration(), d);
    }

    #[test]
    fn days_and_months_count_into_the_duration() {
        let i = Interval {
            months: 1,
            days: 1,
            microseconds: 1,
        };
        assert_eq!(i.as_duration(), Duration::from_micros(31 * 86_400_000_000 + 1));
    }

    #[test]
    fn negative_interval_is_zero_duration() {
        let i = Interval {
            months: 0,
            days: 0,
            microseconds: -5,
        };
        assert_eq!(i.as_duration(), Duration::ZERO);
    }
}
