//! `monitor` end to end: served in-process over a real socket (`runtime::serve`, port 0, API
//! token), its state in fake-gcs-server, events through the real Pub/Sub emulator (published
//! with the library's publisher, pulled back, wrapped in the real push envelope) and alerts to the
//! Slack stand-in. Time is injected with a manual clock, never slept.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use lifeboat_core::core::clock::Clock;
use lifeboat_core::core::events::{Event, ItemResult, Outcome, RunResult, SCHEMA_VERSION};
use lifeboat_core::core::incidents::MessageRecord;
use lifeboat_core::notify::publisher::{PubSubPublisher, Publisher};
use lifeboat_core::programs::monitor;
use lifeboat_core::runtime::App;
use lifeboat_core::store::{DynStore, ObjectStoreExt as _};
use serde_json::{Value, json};

use crate::support::binaries::{Service, command, job};
use crate::support::fake_backups::{Drill, db_backup, db_drill, encrypted_db_backup, keys, run_at};
use crate::support::gcs::gcs_store_with;
use crate::support::pubsub::pubsub_fixture;
use crate::support::slack::Hook;
use crate::support::stack::{Served, config, services};

const TOKEN: &str = "monitor-test-token-0123456789";

/// A monitor served in-process (port 0, API token) until dropped.
struct Monitor(Served);

impl std::ops::Deref for Monitor {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.0
    }
}

impl Monitor {
    async fn post(&self, path: &str, body: &Value) -> (u16, Option<String>, Value) {
        let r =
            self.http.post(format!("{}{path}", self.base)).bearer_auth(TOKEN).json(body).send().await.expect("post");
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = r.json().await.unwrap_or(Value::Null);
        (status, retry_after, body)
    }

    async fn check(&self) -> (u16, Value) {
        let (status, _, body) = self.post("/check", &json!({})).await;
        (status, body)
    }
}

async fn serve_monitor(store: &DynStore, vars: &[(&str, &str)], clock: &Clock) -> Monitor {
    let mut all = vec![("LIFEBOAT_API_TOKEN", TOKEN), ("LIFEBOAT_REGION", "europe-west1")];
    all.extend_from_slice(vars);
    let (services, env) = services(store.clone(), &all);
    let services = services.with_clock(clock.clone());
    let program = monitor::start(services.clone(), config(&env, &[], monitor::read)).await.expect("start monitor");
    let app = App::new(&monitor::SPEC, Arc::new(program), services);
    Monitor(Served::start(app).await)
}

async fn store() -> DynStore {
    Arc::new(gcs_store_with(1 << 20, "backups").await)
}

/// The result of a run of `program` of this deployment (source `main`, into `store`).
fn result(store: &DynStore, program: &str, outcome: Outcome, error: Option<&str>) -> RunResult {
    let now = Utc::now();
    RunResult {
        schema_version: SCHEMA_VERSION,
        program: program.into(),
        source: "main".into(),
        outcome,
        summary: match outcome {
            Outcome::Success => "1 database backed up".into(),
            _ => "1 of 1 databases failed".into(),
        },
        started_at: now - Duration::seconds(42),
        finished_at: now,
        destination: store.location().to_string(),
        items: vec![ItemResult {
            kind: "database".into(),
            name: "app".into(),
            outcome,
            error: error.map(str::to_owned),
            backup_id: None,
            figures: BTreeMap::new(),
        }],
        figures: BTreeMap::new(),
    }
}

/// Publishes `result` with the library's publisher on a fresh topic of the emulator, pulls it
/// back and returns the push envelope Pub/Sub would POST, with the message id.
async fn through_pubsub(result: RunResult) -> (Value, String) {
    let fixture = pubsub_fixture().await;
    let publisher = PubSubPublisher::connect(&fixture.topic_id, Some(fixture.project), Some(&fixture.host))
        .await
        .expect("publisher");
    let message_id = publisher.publish(&Event::new(result)).await.expect("publish");
    let mut received = fixture.pull().await;
    let m = received.pop().expect("the published message");
    m.ack().await.expect("ack");
    assert_eq!(m.message.message_id, message_id);
    let publish_time = m
        .message
        .publish_time
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .unwrap_or_else(Utc::now);
    let attributes: BTreeMap<String, String> = m.message.attributes.clone().into_iter().collect();
    let envelope = lifeboat_core::runtime::push::envelope(
        &m.message.data,
        &attributes,
        &m.message.message_id,
        publish_time,
        fixture.subscription.fully_qualified_name(),
    );
    (envelope, message_id)
}

/// The key of the record of the event inside a push envelope.
fn record_key(envelope: &Value) -> String {
    let message = lifeboat_core::runtime::push::parse(envelope.to_string().as_bytes()).expect("envelope");
    let event = Event::from_json(&message.data).expect("event");
    MessageRecord::key(&message.subscription, &event.source, &event.kind, &event.id)
}

/// `event` in a push envelope under the Pub/Sub message id `message_id` (what anyone allowed to
/// push can post).
fn envelope_with_id(event: &Event, message_id: &str) -> Value {
    lifeboat_core::runtime::push::envelope(
        event.to_json().as_bytes(),
        &BTreeMap::new(),
        message_id,
        Utc::now(),
        "projects/acme/subscriptions/lifeboat-results-push",
    )
}

#[tokio::test]
async fn a_failure_event_from_pubsub_alerts_slack_once() {
    let store = store().await;
    let slack = Hook::new().await;
    let clock = Clock::manual(Utc::now());
    let url = slack.url();
    let monitor = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &url), ("GOOGLE_CLOUD_PROJECT", "acme")], &clock).await;
    let (envelope, message_id) = through_pubsub(result(
        &store,
        "db-backup",
        Outcome::Failure,
        Some("pg_dump exited with status 1: FATAL: no such database"),
    ))
    .await;

    let anonymous = monitor.http.post(format!("{}/pubsub", monitor.base)).json(&envelope).send().await.expect("post");
    assert_eq!(anonymous.status(), 401, "push requests are authenticated");
    assert!(slack.requests().await.is_empty());

    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alerted")), "{body}");
    let requests = slack.requests().await;
    assert_eq!(requests.len(), 1);
    let msg = &requests[0]["json"];
    assert_eq!(msg["text"], ":red_circle: db-backup failed (main: app): 1 of 1 databases failed");
    let blocks = msg["blocks"].to_string();
    for expected in [
        "db-backup failed",
        "*Source*\\nmain: app",
        "pg_dump exited with status 1: FATAL: no such database",
        "*When*",
        "gcloud run jobs execute db-backup --region europe-west1 --project acme",
        &message_id,
    ] {
        assert!(blocks.contains(expected), "{expected} missing from {blocks}");
    }
    let headers = requests[0]["headers"].as_object().expect("headers");
    let content_type = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.clone());
    assert_eq!(content_type, Some(json!("application/json")));

    // Pub/Sub delivers at least once: the same message again, here and on another instance.
    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
    let other = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &url)], &clock).await;
    let (status, _, body) = other.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")), "the record is shared through the store");
    assert_eq!(slack.requests().await.len(), 1, "never alerted twice");
    let record = store.read_all(&record_key(&envelope), 1 << 20).await.expect("record");
    let record: Value = serde_json::from_slice(&record).expect("json");
    assert_eq!(record["message_id"], message_id);
    assert_eq!((record["state"].as_str(), record["settled"].clone()), (Some("done"), json!(["slack"])));

    // The next success recovers the incident the failure opened, once; a further success raises
    // nothing; health's evaluations are left to /check.
    let (envelope, _) = through_pubsub(result(&store, "db-backup", Outcome::Success, None)).await;
    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("recovered")));
    let (envelope, _) = through_pubsub(result(&store, "db-backup", Outcome::Success, None)).await;
    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (envelope, _) =
        through_pubsub(result(&store, "health", Outcome::Failure, Some("stale backups of main/app"))).await;
    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ignored")));
    assert_eq!(slack.requests().await.len(), 2);
}

#[tokio::test]
async fn slack_429_is_redelivered_after_retry_after() {
    let store = store().await;
    let slack = Hook::new().await;
    slack.script(json!([{"status": 429, "body": "rate_limited", "headers": {"Retry-After": "30"}}])).await;
    let clock = Clock::manual(Utc::now());
    let monitor = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &slack.url())], &clock).await;
    let (envelope, _) =
        through_pubsub(result(&store, "storage-backup", Outcome::Failure, Some("bucket media not found"))).await;

    let (status, retry_after, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("30")), "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("rate-limiting"), "{body}");
    assert_eq!(slack.requests().await.len(), 1);

    // Pub/Sub redelivers early: Slack is not called before Retry-After has passed.
    clock.advance(Duration::seconds(10));
    let (status, retry_after, _) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("20")));
    assert_eq!(slack.requests().await.len(), 1, "Retry-After honoured");

    clock.advance(Duration::seconds(21));
    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alerted")));
    let statuses: Vec<_> = slack.requests().await.iter().map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, [Some(429), Some(200)]);
    let (_, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!(body["status"], "duplicate");
    assert_eq!(slack.requests().await.len(), 2);
}

#[tokio::test]
async fn slack_500_is_retried_and_404_is_acknowledged() {
    let store = store().await;
    let slack = Hook::new().await;
    slack.script(json!([{"status": 500, "body": "internal_error"}])).await;
    let clock = Clock::manual(Utc::now());
    let monitor = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &slack.url())], &clock).await;

    let (envelope, _) = through_pubsub(result(&store, "prune", Outcome::Failure, Some("permission denied"))).await;
    let (status, retry_after, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, retry_after), (503, None), "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("answered 500"), "{body}");
    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alerted")), "the redelivery succeeds");
    assert_eq!(slack.requests().await.len(), 2);
    assert!(slack.texts().await[1].contains("prune failed"));

    slack.script(json!([{"status": 404, "body": "channel_not_found"}])).await;
    let (envelope, message_id) = through_pubsub(result(&store, "db-backup", Outcome::Warning, Some("slow"))).await;
    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alerted")), "4xx: logged and acknowledged");
    let (_, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!(body["status"], "duplicate", "a refused alert is not retried");
    assert_eq!(slack.requests().await.len(), 3);
    let record = store.read_all(&record_key(&envelope), 1 << 20).await.expect("record");
    assert!(String::from_utf8_lossy(&record).contains(r#""state":"done""#));
    assert!(String::from_utf8_lossy(&record).contains(&message_id));
}

#[tokio::test]
async fn malformed_push_requests_get_400_with_a_reason() {
    let store = store().await;
    let slack = Hook::new().await;
    let monitor = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &slack.url())], &Clock::system()).await;
    let t = Utc::now();
    let wrap = |data: &[u8]| {
        lifeboat_core::runtime::push::envelope(data, &BTreeMap::new(), "77", t, "projects/p/subscriptions/s")
    };
    let mut wrong_version: Value =
        serde_json::from_str(&Event::new(result(&store, "db-backup", Outcome::Failure, None)).to_json())
            .expect("event json");
    wrong_version["data"]["schema_version"] = json!(99);
    let cases = [
        (json!("not an object"), "not a Pub/Sub push envelope"),
        (json!({"message": {"data": "eA=="}}), "no message.messageId"),
        (json!({"message": {"messageId": "1", "data": "***"}}), "not base64"),
        (wrap(b"{\"hello\": 1}"), "not a lifeboat result event"),
        (wrap(wrong_version.to_string().as_bytes()), "schema_version 99"),
    ];
    for (body, reason) in cases {
        let (status, _, answer) = monitor.post("/pubsub", &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer["error"].as_str().unwrap_or_default().contains(reason), "{answer} should say {reason}");
    }
    let raw = monitor
        .http
        .post(format!("{}/pubsub", monitor.base))
        .bearer_auth(TOKEN)
        .body(vec![0xff, 0x00, 0x7b])
        .send()
        .await
        .expect("post");
    assert_eq!(raw.status(), 400);
    let health = monitor.http.get(format!("{}/healthz", monitor.base)).send().await.expect("healthz");
    assert_eq!(health.status(), 200, "still serving");
    assert!(slack.requests().await.is_empty());
}

#[tokio::test]
async fn the_25_hour_rule_alerts_once_reminds_and_recovers() {
    let store = store().await;
    let (slack, webhook) = (Hook::new().await, Hook::new().await);
    let t0 = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let clock = Clock::manual(t0);
    db_backup(&*store, "main", "app", &run_at(t0 - Duration::minutes(24 * 60 + 59)), 1000, true).await;
    db_backup(&*store, "main", "billing", &run_at(t0 - Duration::minutes(25 * 60 + 1)), 2000, true).await;
    let vars = [
        ("SLACK_WEBHOOK_URL", slack.url()),
        ("ALERT_WEBHOOK_URL", webhook.url()),
        ("ALERT_REMINDER_INTERVAL", "6h".to_owned()),
        ("BACKUP_DATABASES", "app,billing,ledger".to_owned()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let monitor = serve_monitor(&store, &vars, &clock).await;

    // 24 h 59 min: ok. 25 h 1 min: stale. ledger has no backup at all: missing.
    let (status, body) = monitor.check().await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<_> = body["sources"].as_array().expect("sources").iter().map(|s| s["status"].clone()).collect();
    assert_eq!(statuses, [json!("ok"), json!("stale"), json!("missing")]);
    let mut texts = slack.texts().await;
    texts.sort();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].starts_with(":red_circle: main/billing backups are stale: newest complete backup"), "{texts:?}");
    assert!(texts[0].contains("is 1d01h old, older than the limit of 25h"), "{texts:?}");
    assert!(texts[1].starts_with(":red_circle: main/ledger backups are missing"), "{texts:?}");
    let hooked = webhook.requests().await;
    assert_eq!(hooked.len(), 2, "the generic webhook gets the same alerts");
    assert_eq!(hooked[0]["json"]["schema"], "lifeboat.alert/v1");

    // Still stale a minute later: no second alert.
    clock.advance(Duration::minutes(1));
    monitor.check().await;
    assert_eq!(slack.requests().await.len(), 2);

    // Another minute: app crosses 25 h (25 h 1 min) and raises its own alert.
    clock.advance(Duration::minutes(1));
    monitor.check().await;
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 3);
    assert!(texts[2].starts_with(":red_circle: main/app backups are stale"), "{texts:?}");

    // Reminders: at most one per ALERT_REMINDER_INTERVAL (6 h) per incident.
    clock.set(t0 + Duration::hours(6));
    monitor.check().await;
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 5, "billing and ledger reminded, app not yet: {texts:?}");
    assert!(texts[3..].iter().all(|t| t.contains("still stale") || t.contains("still missing")), "{texts:?}");
    clock.set(t0 + Duration::hours(6) + Duration::minutes(2));
    monitor.check().await;
    assert_eq!(slack.texts().await.len(), 6, "now app's reminder");
    clock.set(t0 + Duration::hours(7));
    monitor.check().await;
    assert_eq!(slack.texts().await.len(), 6, "no more within the interval");

    // Fresh backups: one "recovered" message per source, then silence.
    let now = clock.now();
    for db in ["app", "billing", "ledger"] {
        db_backup(&*store, "main", db, &run_at(now - Duration::hours(1)), 1500, true).await;
    }
    let (status, body) = monitor.check().await;
    assert_eq!(status, 200);
    assert_eq!(body["changes"].as_array().map(Vec::len), Some(3), "{body}");
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 9);
    assert!(texts[6..].iter().all(|t| t.starts_with(":white_check_mark:") && t.contains("recovered")), "{texts:?}");
    monitor.check().await;
    assert_eq!(slack.texts().await.len(), 9);
    assert_eq!(webhook.requests().await.len(), 9);
    let book = store.read_all("state/monitor/incidents.json", 1 << 20).await.expect("state");
    let book: Value = serde_json::from_slice(&book).expect("json");
    assert_eq!((book["incidents"].clone(), book["outbox"].clone()), (json!({}), json!([])));
}

/// A deployment with recipients whose newest backup is not encrypted: one alert that says what to
/// check, and a recovery once an encrypted backup follows.
#[tokio::test]
async fn an_unencrypted_backup_where_encryption_is_configured_alerts_and_recovers() {
    let store = store().await;
    let slack = Hook::new().await;
    let t0 = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let clock = Clock::manual(t0);
    let key = lifeboat_core::db::encryption::Identities::generate().recipients();
    encrypted_db_backup(&*store, "main", "app", &run_at(t0 - Duration::hours(20)), 1000, &key).await;
    db_backup(&*store, "main", "app", &run_at(t0 - Duration::hours(2)), 1000, true).await;
    let vars = [("SLACK_WEBHOOK_URL", slack.url()), ("BACKUP_ENCRYPTION_RECIPIENTS", key.join(","))];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let monitor = serve_monitor(&store, &vars, &clock).await;

    let (status, body) = monitor.check().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sources"][0]["status"], "unencrypted", "{body}");
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].starts_with(":red_circle: main/app backups are unencrypted"), "{texts:?}");
    assert!(texts[0].contains("NOT encrypted although BACKUP_ENCRYPTION_RECIPIENTS is set"), "{texts:?}");

    clock.advance(Duration::minutes(30));
    encrypted_db_backup(&*store, "main", "app", &run_at(t0), 1000, &key).await;
    monitor.check().await;
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].starts_with(":white_check_mark:") && texts[1].contains("recovered"), "{texts:?}");
}

/// Backups for ten days and no drill: one "unverified" alert (pointing at the drill job), no second
/// one while it lasts, one recovery once a drill passes on a recent backup.
#[tokio::test]
async fn an_unverified_source_alerts_once_and_recovers_once() {
    let store = store().await;
    let slack = Hook::new().await;
    let t0 = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let clock = Clock::manual(t0);
    let mut backups = Vec::new();
    for d in (0..10).rev() {
        backups.push(
            db_backup(&*store, "main", "app", &run_at(t0 - Duration::days(d) - Duration::hours(1)), 100, true).await,
        );
    }
    // A drill that failed on the newest backup verifies nothing.
    db_drill(&*store, &backups[9], t0 - Duration::minutes(30), Drill::Failed).await;
    let url = slack.url();
    let monitor = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &url), ("BACKUP_DATABASES", "app")], &clock).await;

    let (status, body) = monitor.check().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sources"][0]["status"], "unverified", "{body}");
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].starts_with(":red_circle: main/app backups are unverified"), "{texts:?}");
    assert!(
        texts[0].contains(
            "no backup was ever verified by a drill, and backups have been held for longer than the limit of 8d"
        ),
        "{texts:?}"
    );
    let blocks = slack.requests().await[0]["json"]["blocks"].to_string();
    assert!(blocks.contains("gcloud run jobs execute drill --region europe-west1"), "{blocks}");

    clock.advance(Duration::hours(1));
    monitor.check().await;
    assert_eq!(slack.texts().await.len(), 1, "once per incident");

    db_drill(&*store, &backups[9], t0 + Duration::minutes(30), Drill::Passed).await;
    clock.advance(Duration::minutes(30));
    let (_, body) = monitor.check().await;
    assert_eq!(body["sources"][0]["status"], "ok", "{body}");
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].starts_with(":white_check_mark: main/app backups recovered"), "{texts:?}");
    assert!(texts[1].contains(&format!("newest verified backup {}", backups[9].run)), "{texts:?}");
    clock.advance(Duration::hours(1));
    monitor.check().await;
    assert_eq!(slack.texts().await.len(), 2, "one recovery message only");
}

/// A failed `drill` run (its result event through the real Pub/Sub emulator) alerts at once, with
/// the drill job's rerun command; a drill event about a database this deployment does not back
/// up is refused.
#[tokio::test]
async fn a_failed_drill_alerts_at_once() {
    let store = store().await;
    let slack = Hook::new().await;
    let clock = Clock::manual(Utc::now());
    let url = slack.url();
    let monitor = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &url), ("BACKUP_DATABASES", "app")], &clock).await;
    let mut failed = result(&store, "drill", Outcome::Failure, Some("restored row counts differ from the manifest"));
    failed.summary = "1 of 1 drills failed".into();
    failed.items[0].backup_id = Some("20261201T020000Z-1a2b3c4d".into());
    let (envelope, _) = through_pubsub(failed.clone()).await;
    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alerted")), "{body}");
    let requests = slack.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["json"]["text"], ":red_circle: drill failed (main: app): 1 of 1 drills failed");
    let blocks = requests[0]["json"]["blocks"].to_string();
    for expected in [
        "restored row counts differ from the manifest",
        "20261201T020000Z-1a2b3c4d",
        "gcloud run jobs execute drill --region europe-west1",
    ] {
        assert!(blocks.contains(expected), "{expected} missing from {blocks}");
    }
    let mut foreign = failed;
    foreign.items[0].name = "payroll".into();
    let (envelope, _) = through_pubsub(foreign).await;
    let (status, _, body) = monitor.post("/pubsub", &envelope).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(slack.requests().await.len(), 1);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_by_the_next_check_without_repeating_the_others() {
    let store = store().await;
    let (slack, webhook) = (Hook::new().await, Hook::new().await);
    webhook.script(json!([{"status": 503, "body": "down", "headers": {"Retry-After": "60"}}])).await;
    let t0 = Utc::now();
    let clock = Clock::manual(t0);
    db_backup(&*store, "main", "app", &run_at(t0 - Duration::hours(30)), 10, true).await;
    let (s, w) = (slack.url(), webhook.url());
    let monitor = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &s), ("ALERT_WEBHOOK_URL", &w)], &clock).await;
    let (status, body) = monitor.check().await;
    assert_eq!((status, body["alerts_pending"].as_u64()), (503, Some(1)), "{body}");
    assert_eq!((slack.requests().await.len(), webhook.requests().await.len()), (1, 1));
    clock.advance(Duration::minutes(5));
    let (status, body) = monitor.check().await;
    assert_eq!((status, body["alerts_delivered"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!((slack.requests().await.len(), webhook.requests().await.len()), (1, 2), "slack is not sent twice");
}

#[tokio::test]
async fn two_monitors_racing_on_the_same_incident_send_one_alert() {
    let store = store().await;
    let slack = Hook::new().await;
    let t0 = Utc::now();
    let clock = Clock::manual(t0);
    let url = slack.url();
    let a = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &url)], &clock).await;
    let b = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &url)], &clock).await;
    for round in 0..5 {
        // A new database turns stale; both instances check at the same moment.
        db_backup(&*store, "main", &format!("db{round}"), &run_at(t0 - Duration::hours(26)), 10, true).await;
        let ((sa, _), (sb, _)) = tokio::join!(a.check(), b.check());
        assert_eq!((sa, sb), (200, 200));
        let texts = slack.texts().await;
        assert_eq!(texts.len(), round + 1, "round {round}: {texts:?}");
        assert!(texts[round].contains(&format!("main/db{round} backups are stale")), "{texts:?}");
    }
    // The same Pub/Sub message pushed to both at once: one alert.
    let (envelope, _) = through_pubsub(result(&store, "db-backup", Outcome::Failure, Some("boom"))).await;
    let ((s1, _, b1), (s2, _, b2)) = tokio::join!(a.post("/pubsub", &envelope), b.post("/pubsub", &envelope));
    let answers = [(s1, b1["status"].clone()), (s2, b2["status"].clone())];
    assert!(answers.contains(&(200, json!("alerted"))), "{answers:?}");
    assert_eq!(slack.requests().await.len(), 6, "{answers:?}");
}

#[tokio::test]
async fn job_mode_binary_runs_one_check() {
    let store = store().await;
    let slack = Hook::new().await;
    db_backup(&*store, "main", "app", &run_at(Utc::now() - Duration::hours(30)), 10, true).await;
    let home = tempfile::tempdir().expect("home");
    let out = job("monitor", home.path(), &store.location().to_string())
        .env("SLACK_WEBHOOK_URL", slack.url())
        .output()
        .expect("run monitor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(&slack.url()) && !stderr.contains("/hooks/"), "the webhook URL leaked into the log");
    assert!(stderr.contains("checked 1 sources (1 not ok); 1 alerts delivered"), "{stderr}");
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 1);
    assert!(texts[0].contains("main/app backups are stale"));
}

/// Deduplication keys on the subscription and the CloudEvent's source, type and id, not on the
/// sender-chosen Pub/Sub message id: a message posted first under the id of a later real failure
/// used to make that failure a "duplicate", silencing it.
#[tokio::test]
async fn an_earlier_post_under_the_same_message_id_does_not_suppress_the_real_failure() {
    let store = store().await;
    let slack = Hook::new().await;
    let monitor = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &slack.url())], &Clock::system()).await;
    let decoy = Event::new(result(&store, "db-backup", Outcome::Warning, Some("slow, nothing to see")));
    let (status, _, body) = monitor.post("/pubsub", &envelope_with_id(&decoy, "4242")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alerted")), "{body}");
    let real = Event::new(result(&store, "db-backup", Outcome::Failure, Some("pg_dump: disk full")));
    let (status, _, body) = monitor.post("/pubsub", &envelope_with_id(&real, "4242")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("alerted")),
        "the real failure is not a duplicate: {body}"
    );
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].contains("db-backup failed"), "{texts:?}");
    // The real failure redelivered (any message id) is a duplicate.
    let (_, _, body) = monitor.post("/pubsub", &envelope_with_id(&real, "4243")).await;
    assert_eq!(body["status"], "duplicate");
    assert_eq!(slack.requests().await.len(), 2);
}

/// Events of unknown programs, or about a source, destination, database or bucket this
/// deployment does not run, are refused with 422 (Pub/Sub then dead-letters them) and alert
/// nobody; every known program (drill and console included) is accepted.
#[tokio::test]
async fn events_this_deployment_does_not_run_are_refused() {
    let store = store().await;
    let slack = Hook::new().await;
    let vars = [("SLACK_WEBHOOK_URL", slack.url()), ("BACKUP_DATABASES", "app".to_owned())];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let monitor = serve_monitor(&store, &vars, &Clock::system()).await;
    let failure = || result(&store, "db-backup", Outcome::Failure, Some("boom"));
    let unknown = RunResult { program: "evil".into(), ..failure() };
    let other_source = RunResult { source: "elsewhere".into(), ..failure() };
    let other_destination = RunResult { destination: "gs://someone-else".into(), ..failure() };
    let mut unexpected_db = failure();
    unexpected_db.items[0].name = "ghost".into();
    let cases = [
        (unknown, "program \"evil\" is not a lifeboat program"),
        (other_source, "source \"elsewhere\" is not this deployment's"),
        (other_destination, "destination \"gs://someone-else\" is not this deployment's"),
        (unexpected_db, "database \"ghost\" is not one this deployment backs up"),
    ];
    for (i, (data, why)) in cases.into_iter().enumerate() {
        let (status, _, body) = monitor.post("/pubsub", &envelope_with_id(&Event::new(data), &format!("9{i}"))).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["error"].as_str().unwrap_or_default().contains(why), "{body} should say {why}");
    }
    assert!(slack.requests().await.is_empty(), "nothing refused reached Slack");
    // A CloudEvents source that does not match the data is malformed (400).
    let mut forged = Event::new(failure());
    forged.source = "//lifeboat/db-backup/elsewhere".into();
    let (status, _, body) = monitor.post("/pubsub", &envelope_with_id(&forged, "98")).await;
    assert_eq!(status, 400, "{body}");
    for program in ["drill", "console"] {
        let data = RunResult { program: program.into(), ..failure() };
        let (status, _, body) = monitor.post("/pubsub", &envelope_with_id(&Event::new(data), program)).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("alerted")), "{program}: {body}");
    }
}

/// A failed run opens an incident for its program and source; the next success of the same pair
/// closes it with one "recovered" message, even when two instances receive it at once; an older
/// success (Pub/Sub does not keep order) and another program's success close nothing.
#[tokio::test]
async fn a_failed_run_recovers_once_with_the_next_success_of_its_program_and_source() {
    let store = store().await;
    let slack = Hook::new().await;
    let clock = Clock::system();
    let url = slack.url();
    let a = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &url)], &clock).await;
    let b = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &url)], &clock).await;
    let older_success = Event::new(result(&store, "db-backup", Outcome::Success, None));
    let (envelope, _) = through_pubsub(result(&store, "db-backup", Outcome::Failure, Some("disk full"))).await;
    let (status, _, body) = a.post("/pubsub", &envelope).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alerted")), "{body}");
    let book: Value =
        serde_json::from_slice(&store.read_all("state/monitor/incidents.json", 1 << 20).await.expect("book"))
            .expect("json");
    assert_eq!(book["runs"]["db-backup main"]["failures"], 1, "{book}");

    for (event, id) in [(older_success, "1"), (Event::new(result(&store, "prune", Outcome::Success, None)), "2")] {
        let (status, _, body) = a.post("/pubsub", &envelope_with_id(&event, id)).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "{body}");
    }
    assert_eq!(slack.requests().await.len(), 1, "no recovery yet");

    let (envelope, _) = through_pubsub(result(&store, "db-backup", Outcome::Success, None)).await;
    let ((s1, _, b1), (s2, _, b2)) = tokio::join!(a.post("/pubsub", &envelope), b.post("/pubsub", &envelope));
    assert!(matches!((s1, s2), (200, 200) | (200, 409) | (409, 200)), "{b1} {b2}");
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 2, "one recovery message: {texts:?}");
    assert!(texts[1].starts_with(":white_check_mark: db-backup recovered"), "{texts:?}");
    assert!(texts[1].contains("after 1 failed run"), "{texts:?}");
    // Once: the next success says nothing.
    let (envelope, _) = through_pubsub(result(&store, "db-backup", Outcome::Success, None)).await;
    let (_, _, body) = b.post("/pubsub", &envelope).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(slack.requests().await.len(), 2);
    let book: Value =
        serde_json::from_slice(&store.read_all("state/monitor/incidents.json", 1 << 20).await.expect("book"))
            .expect("json");
    assert_eq!((book["runs"].clone(), book["outbox"].clone()), (json!({}), json!([])), "{book}");
}

/// Names and texts that come from events are escaped for Slack's mrkdwn in the top-level `text`
/// too (it used to be escaped in the blocks only): a database named `<!channel> x` must not ping
/// the channel, a forged summary must not carry a disguised link.
#[tokio::test]
async fn hostile_names_cannot_ping_or_link_in_slack() {
    let store = store().await;
    let slack = Hook::new().await;
    let monitor = serve_monitor(&store, &[("SLACK_WEBHOOK_URL", &slack.url())], &Clock::system()).await;
    let mut data = result(&store, "db-backup", Outcome::Failure, Some("<!here> <@U024BE7LH> failed"));
    data.summary = "<https://evil.example/login|click to fix> & <!channel>".into();
    data.items[0].name = "<!channel> x".into();
    let (status, _, body) = monitor.post("/pubsub", &envelope_with_id(&Event::new(data), "66")).await;
    assert_eq!(status, 200, "{body}");
    let requests = slack.requests().await;
    let message = &requests[0]["json"];
    let text = message["text"].as_str().expect("text");
    assert!(
        text.contains("&lt;!channel&gt; x") && text.contains("&lt;https://evil.example/login|click to fix&gt; &amp;"),
        "{text}"
    );
    // Nothing anywhere in the payload opens a Slack control sequence except the date we format.
    let raw = message.to_string();
    let controls: Vec<&str> = raw.match_indices('<').map(|(i, _)| &raw[i..(i + 12).min(raw.len())]).collect();
    assert!(controls.iter().all(|c| c.starts_with("<!date^")), "{controls:?} in {raw}");
    assert_eq!(message["unfurl_links"], false);
}

/// Issue 11: with `LIFEBOAT_STATE_DESTINATION` (the deployed state bucket), the real binaries keep
/// the incident state and the message records there, and write nothing into the backup bucket,
/// which a retention policy makes write-once. The deployed sources (`BACKUP_DATABASES`) make a
/// database that was never backed up an alert, not silence.
#[tokio::test]
async fn state_goes_to_the_state_destination_never_among_the_backups() {
    let backups = store().await;
    let state: DynStore = Arc::new(gcs_store_with(1 << 20, "state").await);
    let slack = Hook::new().await;
    db_backup(&*backups, "main", "app", &run_at(Utc::now() - Duration::hours(30)), 10, true).await;
    let before = keys(&*backups).await;
    let home = tempfile::tempdir().expect("home");
    let (destination, state_destination) = (backups.location().to_string(), state.location().to_string());

    // A check (job mode): one stale database, one that never had a backup.
    let out = job("monitor", home.path(), &destination)
        .env("LIFEBOAT_STATE_DESTINATION", &state_destination)
        .env("BACKUP_DATABASES", "app,never_backed_up")
        .env("SLACK_WEBHOOK_URL", slack.url())
        .output()
        .expect("run monitor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("checked 2 sources (2 not ok); 2 alerts delivered"), "{stderr}");
    let texts = slack.texts().await;
    assert!(texts.iter().any(|t| t.contains("never_backed_up")), "the missing database is alerted: {texts:?}");

    // A pushed failure (service mode): its message record goes to the state destination too.
    let mut monitor = command("monitor", home.path());
    monitor
        .env("STORAGE_EMULATOR_HOST", crate::support::require_env("STORAGE_EMULATOR_HOST"))
        .env("LIFEBOAT_DESTINATION", &destination)
        .env("LIFEBOAT_STATE_DESTINATION", &state_destination)
        .env("LIFEBOAT_API_TOKEN", TOKEN)
        .env("SLACK_WEBHOOK_URL", slack.url());
    let service = Service::start(monitor).await;
    let (envelope, _) = through_pubsub(result(&backups, "db-backup", Outcome::Failure, Some("boom"))).await;
    let answer = reqwest::Client::new()
        .post(format!("{}/pubsub", service.base))
        .bearer_auth(TOKEN)
        .json(&envelope)
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);

    assert_eq!(keys(&*backups).await, before, "monitor wrote into the backup bucket");
    let stored = keys(&*state).await;
    assert!(stored.contains(&"state/monitor/incidents.json".to_owned()), "{stored:?}");
    assert!(stored.contains(&record_key(&envelope)), "{stored:?}");
    assert!(stored.iter().all(|k| k.starts_with("state/monitor/")), "{stored:?}");
}
