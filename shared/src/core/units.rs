//! Units in one place: human-readable figures for tables, pages, logs and alerts, the times
//! operators type, and the conversion between std and chrono durations.

use chrono::{DateTime, Utc};

/// `1.5 MiB`, `812 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 { format!("{value:.0} {}", UNITS[unit]) } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A signed byte change: `+1.5 MiB`, `-812 B`, `±0 B`.
pub fn bytes_change(n: i64) -> String {
    match n {
        0 => "±0 B".to_owned(),
        n if n > 0 => format!("+{}", bytes(n.unsigned_abs())),
        n => format!("-{}", bytes(n.unsigned_abs())),
    }
}

/// An age in seconds: `45s`, `12m`, `3h05m`, `2d04h`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A configured duration: `25h`, `90m`, `1h30m`, `2d`, `45s`.
pub fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    if s == 0 {
        return "0s".to_owned();
    }
    if seconds != 0 {
        return format!("{s}s");
    }
    if days > 0 && hours == 0 && minutes == 0 {
        return format!("{days}d");
    }
    let hours = hours + days * 24;
    match (hours, minutes) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m:02}m"),
    }
}

/// A time as an operator types it: RFC 3339 (`2026-11-26T03:00:00Z`, any offset), as UTC.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|_| format!("{s:?} is not an RFC 3339 time like 2026-11-26T03:00:00Z"))
}

/// A std duration as a chrono one (saturating: a duration beyond chrono's range is the maximum).
pub fn to_chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(300 * 1024 * 1024), "300 MiB");
        assert_eq!(bytes_change(-2048), "-2.0 KiB");
        assert_eq!(bytes_change(5), "+5 B");
        assert_eq!(bytes_change(0), "±0 B");
        assert_eq!(age(59), "59s");
        assert_eq!(age(3599), "59m");
        assert_eq!(age(25 * 3600 + 60), "1d01h");
        assert_eq!(age(3 * 3600 + 5 * 60), "3h05m");
        let d = std::time::Duration::from_secs;
        assert_eq!(duration(d(25 * 3600)), "25h");
        assert_eq!(duration(d(48 * 3600)), "2d");
        assert_eq!(duration(d(90 * 60)), "1h30m");
        assert_eq!(duration(d(45 * 60)), "45m");
        assert_eq!(duration(d(61)), "61s");
    }

    #[test]
    fn times_and_conversions() {
        let t = parse_time("2026-11-26T03:00:00+01:00").expect("offset");
        assert_eq!(t.to_rfc3339(), "2026-11-26T02:00:00+00:00");
        let e = parse_time("yesterday").expect_err("not a time");
        assert!(e.contains("RFC 3339") && e.contains("\"yesterday\""), "{e}");
        assert_eq!(to_chrono(std::time::Duration::from_secs(90)), chrono::Duration::seconds(90));
        assert_eq!(to_chrono(std::time::Duration::MAX), chrono::Duration::MAX);
    }
}
