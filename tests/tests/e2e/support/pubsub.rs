//! The Pub/Sub emulator of the local stack: a fresh topic with a pull subscription per test.

use std::time::Duration;

use gcloud_pubsub::subscriber::ReceivedMessage;
use gcloud_pubsub::subscription::{Subscription, SubscriptionConfig};

use super::{require_env, unique};

/// A fresh topic on the Pub/Sub emulator with a pull subscription to it.
#[derive(Debug)]
pub struct PubSubFixture {
    /// `PUBSUB_EMULATOR_HOST`.
    pub host: String,
    /// The emulator project.
    pub project: &'static str,
    /// The topic id.
    pub topic_id: String,
    /// A pull subscription to the topic.
    pub subscription: Subscription,
}

/// Creates a uniquely named topic and subscription on the emulator.
pub async fn pubsub_fixture() -> PubSubFixture {
    let host = require_env("PUBSUB_EMULATOR_HOST");
    let project = "lifeboat-local";
    let client =
        lifeboat_core::notify::publisher::pubsub_client(Some(project), Some(&host)).await.expect("pubsub client");
    let topic_id = unique("results");
    let topic = client.topic(&topic_id);
    topic.create(None, None).await.expect("create topic on the emulator");
    let subscription = client
        .create_subscription(&unique("sub"), topic.fully_qualified_name(), SubscriptionConfig::default(), None)
        .await
        .expect("create subscription");
    PubSubFixture { host, project, topic_id, subscription }
}

impl PubSubFixture {
    /// Pulls until something arrived (5 s at most) and returns all that did (up to 10 messages).
    pub async fn pull(&self) -> Vec<ReceivedMessage> {
        for _ in 0..50 {
            let received = self.subscription.pull(10, None).await.expect("pull");
            if !received.is_empty() {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Vec::new()
    }
}
