//! The Slack stand-in (`infra/slack_standin.py`, a real HTTP server): one hook id per test, scripted
//! answers, recorded requests.

use serde_json::Value;

use crate::support::{require_env, unique};

/// One hook of the stand-in.
#[derive(Debug)]
pub struct Hook {
    base: String,
    id: String,
    http: reqwest::Client,
}

impl Hook {
    /// A fresh hook id (fails when the stand-in is not running).
    pub async fn new() -> Self {
        let base = require_env("LIFEBOAT_SLACK_STANDIN_URL").trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let id = unique("hook");
        let health = http.get(format!("{base}/healthz")).send().await;
        assert!(
            health.as_ref().is_ok_and(|r| r.status().is_success()),
            "the Slack stand-in at {base} does not answer: run `eval \"$(infra/stack-up.sh)\"` ({health:?})"
        );
        let reset = http.delete(format!("{base}/_control/{id}")).send().await.expect("reset hook");
        assert!(reset.status().is_success());
        Self { base, id, http }
    }

    /// The webhook URL (what `SLACK_WEBHOOK_URL` holds).
    pub fn url(&self) -> String {
        format!("{}/hooks/{}", self.base, self.id)
    }

    /// Queues answers, e.g. `[{"status":429,"body":"rate_limited","headers":{"Retry-After":"2"}}]`.
    pub async fn script(&self, responses: Value) {
        let r = self
            .http
            .post(format!("{}/_control/{}/responses", self.base, self.id))
            .json(&responses)
            .send()
            .await
            .expect("script");
        assert!(r.status().is_success(), "stand-in refused the script: {}", r.text().await.unwrap_or_default());
    }

    /// Every request the hook received: `{"method","path","headers","body","json","status",…}`.
    pub async fn requests(&self) -> Vec<Value> {
        let r = self.http.get(format!("{}/_control/{}/requests", self.base, self.id)).send().await.expect("requests");
        r.json().await.expect("json")
    }

    /// The `text` of every message received.
    pub async fn texts(&self) -> Vec<String> {
        self.requests().await.iter().map(|r| r["json"]["text"].as_str().unwrap_or_default().to_owned()).collect()
    }
}
