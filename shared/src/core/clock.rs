//! Time as a dependency: programs ask a [`Clock`] for "now", so tests inject time instead of sleeping.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Clone, Default)]
pub struct Clock(Source);

#[derive(Clone, Default)]
enum Source {
    #[default]
    System,
    Manual(Arc<Mutex<DateTime<Utc>>>),
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock(system)"),
            Source::Manual(_) => write!(f, "Clock(manual: {})", self.now()),
        }
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that stands still at `at` until set or advanced (tests). Clones share the time.
    pub fn manual(at: DateTime<Utc>) -> Self {
        Self(Source::Manual(Arc::new(Mutex::new(at))))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Source::System => Utc::now(),
            Source::Manual(t) => *t.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set(&self, at: DateTime<Utc>) {
        if let Source::Manual(t) = &self.0 {
            *t.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = at;
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: chrono::Duration) {
        if let Source::Manual(t) = &self.0 {
            let mut guard = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *guard += by;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clocks_share_their_time() {
        let t = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").expect("t").to_utc();
        let a = Clock::manual(t);
        let b = a.clone();
        a.advance(chrono::Duration::minutes(5));
        assert_eq!(b.now(), t + chrono::Duration::minutes(5));
        b.set(t);
        assert_eq!(a.now(), t);
        assert!(Clock::system().now() > t - chrono::Duration::days(365 * 100));
    }
}
