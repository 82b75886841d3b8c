//! Result events through the real Pub/Sub emulator: publish with the library, pull back, check.

use std::collections::BTreeMap;

use chrono::Utc;
use lifeboat_core::core::events::{Event, ItemResult, Outcome, RunResult, SCHEMA_VERSION};
use lifeboat_core::notify::publisher::{PubSubPublisher, Publisher};

use crate::support::pubsub::pubsub_fixture;

#[tokio::test]
async fn published_event_is_pulled_back_intact() {
    let fixture = pubsub_fixture().await;

    let now = Utc::now();
    let result = RunResult {
        schema_version: SCHEMA_VERSION,
        program: "db-backup".into(),
        source: "main".into(),
        outcome: Outcome::Failure,
        summary: "app: pg_dump exited with status 1".into(),
        started_at: now,
        finished_at: now + chrono::Duration::seconds(3),
        destination: "gs://bucket-1".into(),
        items: vec![ItemResult {
            kind: "database".into(),
            name: "app".into(),
            outcome: Outcome::Failure,
            error: Some("pg_dump exited with status 1".into()),
            backup_id: None,
            figures: BTreeMap::from([("bytes".into(), serde_json::json!(0))]),
        }],
        figures: BTreeMap::new(),
    };
    let event = Event::new(result);
    let publisher = PubSubPublisher::connect(&fixture.topic_id, Some(fixture.project), Some(&fixture.host))
        .await
        .expect("publisher");
    let message_id = publisher.publish(&event).await.expect("publish");
    assert!(!message_id.is_empty());

    let received = fixture.pull().await;
    assert_eq!(received.len(), 1, "exactly the one event");
    let msg = &received[0];
    assert_eq!(msg.message.message_id, message_id);
    let back = Event::from_json(&msg.message.data).expect("valid event");
    assert_eq!(back, event);
    assert_eq!(msg.message.attributes.get("ce-type").map(String::as_str), Some("dev.lifeboat.db-backup.result"));
    assert_eq!(msg.message.attributes.get("outcome").map(String::as_str), Some("failure"));
    assert_eq!(msg.message.attributes.get("ce-id"), Some(&event.id));
    msg.ack().await.expect("ack");
}
