//! Progress figures of long work: how much is done, the rate, the estimated total (when one is
//! known: `pg_database_size`, the previous backup's size, the previous snapshot's object count)
//! and the time left. Pure: counts and elapsed time in, numbers and one line of text out. The
//! reporter that logs the line at a steady interval is [`crate::runtime::progress`].

use std::time::Duration;

use crate::core::units;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (shown as KiB, MiB…).
    Bytes,
    /// Objects (shown as a count).
    Objects,
}

impl Unit {
    fn amount(self, n: u64) -> String {
        match self {
            Self::Bytes => units::bytes(n),
            Self::Objects => format!("{n} objects"),
        }
    }

    fn per_second(self, rate: f64) -> String {
        match self {
            Self::Bytes => format!("{}/s", units::bytes(rate.round() as u64)),
            Self::Objects => format!("{rate:.0} objects/s"),
        }
    }
}

/// One reading of a piece of work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Done so far.
    pub done: u64,
    /// The estimated total, when known.
    pub total: Option<u64>,
    /// Time since the work started.
    pub elapsed: Duration,
}

impl Reading {
    /// Units per second so far (0 before any time passed).
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.done as f64 / secs } else { 0.0 }
    }

    /// Share of the estimated total done, capped at 99 % while running (an estimate can be low).
    pub fn percent(&self) -> Option<u8> {
        let total = self.total.filter(|t| *t > 0)?;
        Some(((self.done as f64 / total as f64) * 100.0).floor().clamp(0.0, 99.0) as u8)
    }

    /// Time left at the rate so far; `None` without an estimate, before anything is done, or
    /// once the estimate is exceeded (the total was too low: nothing honest to say).
    pub fn left(&self) -> Option<Duration> {
        let total = self.total?;
        let rate = self.rate();
        if self.done == 0 || rate <= 0.0 || self.done >= total {
            return None;
        }
        Some(Duration::from_secs_f64((total - self.done) as f64 / rate))
    }

    /// One line: `dump of app: 1.2 GiB of ~4.0 GiB (30%), 45.3 MiB/s, about 1m left`.
    pub fn line(&self, what: &str, unit: Unit) -> String {
        let mut out = format!("{what}: {}", unit.amount(self.done));
        if let Some(total) = self.total {
            out.push_str(&format!(" of ~{}", unit.amount(total)));
            if let Some(p) = self.percent() {
                out.push_str(&format!(" ({p}%)"));
            }
        }
        out.push_str(&format!(", {}", unit.per_second(self.rate())));
        match self.left() {
            Some(left) => out.push_str(&format!(", about {} left", units::duration(round_secs(left)))),
            None if self.total.is_some_and(|t| self.done >= t) => out.push_str(", past the estimate"),
            None => {}
        }
        out.push_str(&format!(", {} elapsed", units::duration(round_secs(self.elapsed))));
        out
    }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_millis() >= 500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_share_and_time_left() {
        let r = Reading { done: 300, total: Some(1000), elapsed: Duration::from_secs(10) };
        assert!((r.rate() - 30.0).abs() < f64::EPSILON);
        assert_eq!(r.percent(), Some(30));
        assert_eq!(r.left(), Some(Duration::from_secs(23) + Duration::from_nanos(333_333_333)));
        let line = r.line("snapshot of media", Unit::Objects);
        assert_eq!(
            line,
            "snapshot of media: 300 objects of ~1000 objects (30%), 30 objects/s, about 23s left, 10s elapsed"
        );
    }

    #[test]
    fn without_an_estimate_or_past_it_nothing_is_promised() {
        let none = Reading { done: 5 << 20, total: None, elapsed: Duration::from_secs(5) };
        assert_eq!(none.left(), None);
        assert_eq!(none.line("dump of app", Unit::Bytes), "dump of app: 5.0 MiB, 1.0 MiB/s, 5s elapsed");
        let past = Reading { done: 2000, total: Some(1000), elapsed: Duration::from_secs(2) };
        assert_eq!((past.left(), past.percent()), (None, Some(99)));
        assert!(past.line("x", Unit::Objects).contains("past the estimate"));
        let start = Reading { done: 0, total: Some(10), elapsed: Duration::ZERO };
        assert_eq!((start.rate(), start.left()), (0.0, None));
    }
}
