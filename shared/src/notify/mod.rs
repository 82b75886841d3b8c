//! Telling the world: result events to Pub/Sub (or the log), alerts to Slack or a webhook, and
//! errors to Sentry.
//!
//! - [`publisher`]: the [`publisher::Publisher`] trait, Pub/Sub and log implementations.
//! - [`slack`]: webhook delivery with the answers classified (delivered, retry, refused).
//! - [`sentry`]: optional reporting of failed runs and errors, secrets scrubbed.

pub mod publisher;
pub mod sentry;
pub mod slack;
