//! The Sentry stand-in (`infra/slack_standin.py` started as the `sentry` component, a real HTTP
//! server that takes Sentry envelopes): one project id per test, envelopes recorded and parsed.

use serde_json::Value;

use crate::support::{require_env, unique};

/// One project of the stand-in.
#[derive(Debug)]
pub struct Project {
    base: String,
    id: String,
    /// The DSN's public key (it travels in the `X-Sentry-Auth` header only).
    pub key: String,
    http: reqwest::Client,
}

impl Project {
    /// A fresh project id (fails when the stand-in is not running).
    pub async fn new() -> Self {
        let base = require_env("LIFEBOAT_SENTRY_STANDIN_URL").trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let health = http.get(format!("{base}/healthz")).send().await;
        assert!(
            health.as_ref().is_ok_and(|r| r.status().is_success()),
            "the Sentry stand-in at {base} does not answer: run `eval \"$(infra/stack-up.sh)\"` ({health:?})"
        );
        let key = uuid::Uuid::new_v4().simple().to_string();
        Self { base, id: unique("project"), key, http }
    }

    /// The DSN (what `SENTRY_DSN` holds).
    pub fn dsn(&self) -> String {
        let host = self.base.trim_start_matches("http://");
        format!("http://{}@{host}/{}", self.key, self.id)
    }

    /// Every envelope request received: `{"headers", "body", "envelope": {"header", "items"}}`.
    pub async fn requests(&self) -> Vec<Value> {
        let r = self.http.get(format!("{}/_control/{}/requests", self.base, self.id)).send().await.expect("requests");
        r.json().await.expect("json")
    }

    /// The payloads of every `event` item received.
    pub async fn events(&self) -> Vec<Value> {
        self.requests()
            .await
            .iter()
            .flat_map(|r| r["envelope"]["items"].as_array().cloned().unwrap_or_default())
            .filter(|item| item["header"]["type"] == "event")
            .map(|item| item["payload"].clone())
            .collect()
    }
}
