//! The limits every network request obeys (GCS, Pub/Sub, Slack and webhooks, Sentry, the Cloud
//! Run Admin API): how long connecting may take, how long a request may go without progress, and
//! how many times a request that failed for a passing reason is sent in all.
//!
//! A frozen endpoint (one that accepts a connection and then never answers, or sends headers and
//! then no more bytes) therefore fails a run in bounded time: at most about
//! `attempts × (connect + stall)` plus the backoff waits between attempts, per request.

use std::time::Duration;

/// Connect and stall timeouts, and attempts per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLimits {
    /// The longest a TCP (and TLS) connection may take to open.
    pub connect: Duration,
    /// The longest a request may wait for its answer's headers, or for the next bytes of the
    /// answer's body, before it is abandoned (and retried when attempts are left).
    pub stall: Duration,
    /// Attempts in all per request, the first one included (1 = never retry).
    pub attempts: u32,
}

impl Default for NetLimits {
    fn default() -> Self {
        Self { connect: Duration::from_secs(10), stall: Duration::from_secs(60), attempts: 6 }
    }
}

impl NetLimits {
    /// The longest one attempt of a request may take without progress: connecting, then stalling.
    pub fn attempt_bound(&self) -> Duration {
        self.connect + self.stall
    }
}
