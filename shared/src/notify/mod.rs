//! Telling the world: result events to Pub/Sub (or the log) and alerts to Slack or a webhook.
//!
//! - [`publisher`]: the [`publisher::Publisher`] trait, Pub/Sub and log implementations.
//! - [`slack`]: webhook delivery with the answers classified (delivered, retry, refused).

pub mod publisher;
pub mod slack;
