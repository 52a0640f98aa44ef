//! Figures written for people: durations, sizes, rates.

/// Seconds as `0.4s`, `12.3s`, `4m05s`, `2h10m`, `3d04h`; `-` for none.
pub fn secs(s: Option<f64>) -> String {
    let Some(s) = s else { return "-".into() };
    if !s.is_finite() || s < 0.0 {
        return "-".into();
    }
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let whole = s.round() as u64;
    let (d, h, m, sec) = (whole / 86_400, whole / 3600 % 24, whole / 60 % 60, whole % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else {
        format!("{m}m{sec:02}s")
    }
}

/// Bytes as `8.0 kB`, `1.2 MB`, ...
pub fn bytes(n: Option<i64>) -> String {
    let Some(n) = n else { return "-".into() };
    let mut v = n as f64;
    for unit in ["B", "kB", "MB", "GB", "TB"] {
        if v < 1024.0 || unit == "TB" {
            return if unit == "B" {
                format!("{n} B")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{n} B")
}

/// A number or `-`.
pub fn num<T: std::fmt::Display>(n: Option<T>) -> String {
    n.map(|n| n.to_string()).unwrap_or_else(|| "-".into())
}

/// A rate, one decimal.
pub fn rate(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(secs(Some(0.42)), "0.4s");
        assert_eq!(secs(Some(245.0)), "4m05s");
        assert_eq!(secs(Some(7800.0)), "2h10m");
        assert_eq!(secs(Some(3.0 * 86_400.0 + 4.0 * 3600.0)), "3d04h");
        assert_eq!(secs(None), "-");
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(bytes(Some(512)), "512 B");
        assert_eq!(bytes(Some(8192)), "8.0 kB");
        assert_eq!(bytes(Some(3 * 1024 * 1024 / 2)), "1.5 MB");
    }
}
