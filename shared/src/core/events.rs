//! Result events: one versioned JSON schema for every program, with CloudEvents 1.0 attributes.
//! The publishers (Pub/Sub, or the log) live in [`crate::notify::publisher`].
//!
//! On Pub/Sub the message data is the whole event (structured mode) and the CloudEvents
//! attributes are repeated as `ce-*` message attributes (binary mode) so subscriptions can filter.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The version of [`RunResult`]'s shape. Readers refuse versions they do not know.
pub const SCHEMA_VERSION: u32 = 1;
/// CloudEvents `dataschema` of [`RunResult`].
pub const DATA_SCHEMA: &str = "https://lifeboat.dev/schemas/run-result/v1";

/// Every program that publishes result events (the `program` of [`RunResult`], the `<program>` of
/// the CloudEvents `source` and `type`). `monitor` refuses events of any other program.
pub const KNOWN_PROGRAMS: &[&str] =
    &["db-backup", "storage-backup", "restore", "prune", "health", "monitor", "drill", "console"];

/// How a run or an item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done as asked.
    Success,
    /// Done, but something deserves a human look (e.g. a suspicious snapshot).
    Warning,
    /// Not done.
    Failure,
}

/// One thing a run worked on (a database, a bucket, a source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// `database`, `bucket`, `source`…
    pub kind: String,
    /// Its name.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed (redacted of secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The backup or snapshot id written, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Figures: bytes, durations, throughput, counts.
    #[serde(default)]
    pub figures: BTreeMap<String, serde_json::Value>,
}

/// The `data` of every result event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The program (`db-backup`, `prune`…).
    pub program: String,
    /// The logical source (`BACKUP_SOURCE`).
    pub source: String,
    /// How the run ended.
    pub outcome: Outcome,
    /// One line for humans.
    pub summary: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Where backups live.
    pub destination: String,
    /// Per-item results.
    #[serde(default)]
    pub items: Vec<ItemResult>,
    /// Run-level figures.
    #[serde(default)]
    pub figures: BTreeMap<String, serde_json::Value>,
}

impl RunResult {
    /// The result of `program` (from `source` into `destination`) that started at `started_at`,
    /// before the run reports anything: a success with no items, finished when it started. Every
    /// result is built here; the run then fills in its outcome, summary, items and figures.
    pub fn new(
        program: impl Into<String>,
        source: impl Into<String>,
        destination: impl Into<String>,
        started_at: DateTime<Utc>,
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            program: program.into(),
            source: source.into(),
            outcome: Outcome::Success,
            summary: String::new(),
            started_at,
            finished_at: started_at,
            destination: destination.into(),
            items: Vec::new(),
            figures: BTreeMap::new(),
        }
    }

    /// The same result, failed: `summary` says why.
    #[must_use]
    pub fn failed(mut self, summary: impl Into<String>) -> Self {
        self.outcome = Outcome::Failure;
        self.summary = summary.into();
        self
    }

    /// Wall time in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        (self.finished_at - self.started_at).num_milliseconds()
    }
}

/// A CloudEvents 1.0 envelope around a [`RunResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique id of this event.
    pub id: String,
    /// `//lifeboat/<program>/<source>`.
    pub source: String,
    /// `dev.lifeboat.<program>.result`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the event was made.
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// [`DATA_SCHEMA`].
    pub dataschema: String,
    /// The destination the run wrote to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The result.
    pub data: RunResult,
}

/// Why bytes are not a valid event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON of the expected shape.
    #[error("not a lifeboat result event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A field has a value we do not accept.
    #[error("invalid result event: {0}")]
    Invalid(String),
}

impl Event {
    /// Wraps a result.
    pub fn new(data: RunResult) -> Self {
        Self {
            specversion: "1.0".into(),
            id: uuid::Uuid::new_v4().to_string(),
            source: format!("//lifeboat/{}/{}", data.program, data.source),
            kind: format!("dev.lifeboat.{}.result", data.program),
            time: Utc::now(),
            datacontenttype: "application/json".into(),
            dataschema: DATA_SCHEMA.into(),
            subject: Some(data.destination.clone()),
            data,
        }
    }

    /// Parses and validates an event.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        let e: Self = serde_json::from_slice(bytes)?;
        e.validate()?;
        Ok(e)
    }

    /// Checks the invariants a reader relies on.
    pub fn validate(&self) -> Result<(), EventError> {
        let invalid = |m: String| Err(EventError::Invalid(m));
        if self.specversion != "1.0" {
            return invalid(format!("specversion {:?} is not 1.0", self.specversion));
        }
        if self.data.schema_version != SCHEMA_VERSION {
            return invalid(format!("schema_version {} is not {SCHEMA_VERSION}", self.data.schema_version));
        }
        if self.kind != format!("dev.lifeboat.{}.result", self.data.program) {
            return invalid(format!("type {:?} does not match program {:?}", self.kind, self.data.program));
        }
        if self.source != format!("//lifeboat/{}/{}", self.data.program, self.data.source) {
            return invalid(format!(
                "source {:?} does not match program {:?} and source {:?}",
                self.source, self.data.program, self.data.source
            ));
        }
        if self.id.is_empty() || self.data.program.is_empty() || self.data.source.is_empty() {
            return invalid("id, program and source must not be empty".into());
        }
        if self.data.finished_at < self.data.started_at {
            return invalid("finished_at is before started_at".into());
        }
        Ok(())
    }

    /// The event as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `ce-*` attributes and filtering attributes of the Pub/Sub message.
    pub fn attributes(&self) -> HashMap<String, String> {
        HashMap::from([
            ("ce-specversion".into(), self.specversion.clone()),
            ("ce-id".into(), self.id.clone()),
            ("ce-source".into(), self.source.clone()),
            ("ce-type".into(), self.kind.clone()),
            ("ce-time".into(), self.time.to_rfc3339()),
            ("content-type".into(), self.datacontenttype.clone()),
            ("program".into(), self.data.program.clone()),
            (
                "outcome".into(),
                serde_json::to_value(self.data.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let t = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").expect("time").to_utc();
        Event::new(RunResult {
            schema_version: SCHEMA_VERSION,
            program: "db-backup".into(),
            source: "main".into(),
            outcome: Outcome::Failure,
            summary: "1 of 2 databases failed".into(),
            started_at: t,
            finished_at: t + chrono::Duration::seconds(90),
            destination: "gs://b-1".into(),
            items: vec![ItemResult {
                kind: "database".into(),
                name: "app".into(),
                outcome: Outcome::Failure,
                error: Some("pg_dump exited with status 1".into()),
                backup_id: None,
                figures: BTreeMap::new(),
            }],
            figures: BTreeMap::new(),
        })
    }

    #[test]
    fn round_trips_and_validates() {
        let e = sample();
        let back = Event::from_json(e.to_json().as_bytes()).expect("valid");
        assert_eq!(back, e);
        assert_eq!(e.kind, "dev.lifeboat.db-backup.result");
        assert_eq!(e.source, "//lifeboat/db-backup/main");
        assert_eq!(e.data.duration_ms(), 90_000);
        let attrs = e.attributes();
        assert_eq!(attrs["outcome"], "failure");
        assert_eq!(attrs["ce-type"], e.kind);
    }

    #[test]
    fn golden_shape() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).expect("json");
        let keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
        assert_eq!(
            keys,
            ["data", "datacontenttype", "dataschema", "id", "source", "specversion", "subject", "time", "type"]
        );
        assert_eq!(v["data"]["outcome"], "failure");
        assert_eq!(v["data"]["items"][0]["error"], "pg_dump exited with status 1");
    }

    #[test]
    fn rejects_bad_events() {
        let mut e = sample();
        e.specversion = "0.3".into();
        assert!(matches!(e.validate(), Err(EventError::Invalid(_))));
        let mut e = sample();
        e.data.schema_version = 99;
        assert!(e.validate().is_err());
        let mut e = sample();
        e.kind = "dev.lifeboat.prune.result".into();
        assert!(e.validate().is_err());
        let mut e = sample();
        e.source = "//lifeboat/db-backup/other".into();
        assert!(e.validate().is_err(), "the CloudEvents source must be the program's and the data's");
        assert!(matches!(Event::from_json(b"{\"nope\":1}"), Err(EventError::Malformed(_))));
        assert!(Event::from_json(b"\xff").is_err());
    }
}
