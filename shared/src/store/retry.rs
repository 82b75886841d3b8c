//! How a store retries a request that failed for a reason that may pass (network, 408, 429, 5xx):
//! exponential backoff with jitter ([`backon`]), bounded by a number of attempts.
//!
//! Only errors of kind [`ErrorKind::Transient`](crate::error::ErrorKind::Transient) are retried;
//! everything else (not found, already exists, permission…) is final at once.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder, Retryable as _};

use crate::error::Classify;

/// How often and how patiently a request is retried.
///
/// The defaults wait 0.4, 0.8, 1.6, 3.2 and 6.4 s before the second to sixth attempt (the
/// schedule lifeboat always had), each wait lengthened by a random part of up to itself (jitter),
/// so that the many requests of a run that failed together (a burst of 429 from GCS) do not come
/// back together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    /// Attempts in all, the first one included (1 = never retry).
    pub max_attempts: u32,
    /// The wait before the first retry.
    pub min_delay: Duration,
    /// The longest wait between two attempts, before jitter.
    pub max_delay: Duration,
    /// Each wait is this many times the one before.
    pub factor: f32,
    /// Lengthen each wait by a random part of up to itself.
    pub jitter: bool,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            min_delay: Duration::from_millis(400),
            max_delay: Duration::from_millis(12_800),
            factor: 2.0,
            jitter: true,
        }
    }
}

impl RetrySettings {
    /// The backoff schedule: one wait per retry, `max_attempts - 1` of them.
    fn builder(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .with_max_times(usize::try_from(self.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX));
        if self.jitter { builder.with_jitter() } else { builder }
    }

    /// The waits before each retry, in order; the iterator ends when no attempt is left.
    /// For loops that retry by hand (a resumable upload's chunk, which asks the server what
    /// arrived before sending again).
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        self.builder().build()
    }

    /// Runs `op` until it succeeds, fails with an error that is not transient, or the attempts
    /// are used up; each retry is logged with `what` was attempted.
    pub async fn retry<T, E, F, Fut>(&self, what: &str, op: F) -> Result<T, E>
    where
        E: Classify + Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0u32;
        op.retry(self.builder())
            .when(|e: &E| e.is_retryable())
            .notify(|e: &E, wait: Duration| {
                attempt += 1;
                tracing::warn!(what, attempt, wait_ms = wait.as_millis(), error = %e, "transient storage error, retrying");
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::error::ErrorKind;

    #[derive(Debug)]
    struct Fail(ErrorKind);

    impl Display for Fail {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    impl Classify for Fail {
        fn kind(&self) -> ErrorKind {
            self.0
        }
    }

    const FAST: RetrySettings = RetrySettings {
        max_attempts: 4,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        factor: 2.0,
        jitter: true,
    };

    #[test]
    fn the_default_schedule_is_the_one_lifeboat_always_had() {
        let plain = RetrySettings { jitter: false, ..RetrySettings::default() };
        let waits: Vec<u128> = plain.backoff().map(|d| d.as_millis()).collect();
        assert_eq!(waits, [400, 800, 1600, 3200, 6400]);
        let capped = RetrySettings { max_attempts: 9, ..plain };
        assert_eq!(capped.backoff().last(), Some(Duration::from_millis(12_800)));
        assert_eq!(RetrySettings { max_attempts: 1, ..plain }.backoff().count(), 0);
    }

    #[test]
    fn jitter_lengthens_each_wait_by_up_to_itself() {
        let settings = RetrySettings::default();
        let plain: Vec<Duration> = RetrySettings { jitter: false, ..settings }.backoff().collect();
        let mut lengthened = false;
        for _ in 0..20 {
            let jittered: Vec<Duration> = settings.backoff().collect();
            assert_eq!(jittered.len(), plain.len());
            for (j, p) in jittered.iter().zip(&plain) {
                assert!(*j >= *p && *j <= *p * 2, "{j:?} for {p:?}");
                lengthened |= j > p;
            }
        }
        assert!(lengthened, "jitter never added anything");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let r: Result<(), Fail> = FAST
            .retry("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Fail(ErrorKind::Transient))
            })
            .await;
        assert!(matches!(r, Err(Fail(ErrorKind::Transient))));
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let calls = AtomicU32::new(0);
        let r = FAST
            .retry("test", || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(Fail(ErrorKind::Transient)),
                    n => Ok(n),
                }
            })
            .await;
        assert_eq!(r.expect("third attempt"), 2);
    }

    #[tokio::test]
    async fn other_failures_are_final_at_once() {
        for kind in [ErrorKind::NotFound, ErrorKind::Conflict, ErrorKind::Refused, ErrorKind::Internal] {
            let calls = AtomicU32::new(0);
            let r: Result<(), Fail> = FAST
                .retry("test", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(Fail(kind))
                })
                .await;
            assert!(r.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{kind:?}");
        }
    }
}
