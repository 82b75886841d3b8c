//! `health`: reads the backup store itself and reports, per source (each database of
//! `BACKUP_SOURCE` and each snapshotted bucket), the age of the newest complete backup, its size,
//! the change against the previous one, whether it is encrypted, and a status; stale after
//! `BACKUP_MAX_AGE` (25 h); `unencrypted` when `BACKUP_ENCRYPTION_RECIPIENTS` is set (the same
//! value db-backup gets) and a database's newest backup is not encrypted; beside it the age of
//! the newest backup a `drill` restored (verified age), `unverified` past
//! `BACKUP_MAX_UNVERIFIED_AGE` (8 days; precedence in [`crate::core::freshness`]).
//!
//! Job mode prints a table, publishes the evaluation and exits 1 unless everything is ok.
//! Service mode: `GET /status` answers JSON (200 all ok, 503 otherwise), or the HTML page when
//! the client accepts `text/html`; `GET /` is the HTML page.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use clap::Parser;
use http::{Method, StatusCode};

use crate::config::{Reader, vars};
use crate::core::events::{ItemResult, Outcome, RunResult};
use crate::core::freshness::{Freshness, Limits, Status};
use crate::core::series::Kind;
use crate::core::source::SourceSpec;
use crate::runtime::http::{HttpRequest, HttpResponse};
use crate::runtime::{self, Program, ProgramSpec, RunContext, Services, StartError};
use crate::store::StoreError;

/// The program's specification.
pub static SPEC: ProgramSpec =
    ProgramSpec { name: "health", vars: &[vars::HEALTH, &[&vars::DATABASES, &vars::SOURCE_BUCKETS]] };

/// Reads the backup store and reports, per source (database or bucket), the age of the newest
/// complete backup, its size and status; stale after BACKUP_MAX_AGE; the age of the newest
/// drill-verified backup, unverified after BACKUP_MAX_UNVERIFIED_AGE (worse statuses win:
/// missing, failed, suspicious, unencrypted, stale, then unverified). Job mode exits 1 unless all
/// are ok; service mode serves GET /status (JSON, or HTML for browsers) and GET / (HTML).
#[derive(Debug, Clone, Default, Parser)]
pub struct Cli {
    /// The runtime's flags (`--once`), read by the runtime.
    #[command(flatten)]
    pub runtime: runtime::Args,
}

/// Settings of `health`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stale and unverified limits, and whether database backups must be encrypted.
    pub limits: Limits,
    /// Databases that must have backups (others found in the store are reported too).
    pub expected: Vec<String>,
    /// Buckets that must have snapshots (`SOURCE_BUCKETS`, read as `storage-backup` reads it).
    pub expected_buckets: Vec<SourceSpec>,
}

/// Reads the settings.
pub fn read(r: &mut Reader<'_>, _cli: Option<Cli>) -> Option<Config> {
    let limits = crate::config::limits(r);
    let expected = r.names(&vars::DATABASES);
    let expected_buckets = r.sources();
    Some(Config { limits: limits?, expected, expected_buckets })
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
    config: Config,
}

/// Builds the program.
pub async fn start(services: Services, config: Config) -> Result<App, StartError> {
    Ok(App { services, config })
}

impl App {
    /// Evaluates freshness at `now`.
    pub async fn evaluate(&self, now: DateTime<Utc>) -> Result<Vec<Freshness>, StoreError> {
        let source = &self.services.common.source;
        let expected =
            crate::core::freshness::expected_series(source, &self.config.expected, &self.config.expected_buckets);
        crate::inventory::assess(&*self.services.store, source, &expected, now, &self.config.limits).await
    }

    fn page(&self, rows: &[Freshness], now: DateTime<Utc>) -> String {
        crate::report::page::render(
            rows,
            now,
            self.services.common.timezone,
            &self.services.common.destination.to_string(),
            &self.config.limits,
        )
    }
}

/// A plain-text table of the evaluation, for terminals.
pub fn table(rows: &[Freshness]) -> String {
    let mut out = format!(
        "{:<32} {:<11} {:>8} {:>9} {:>10} {:>11} {:>9} {:>7} {:>10}  {}\n",
        "SOURCE", "STATUS", "AGE", "VERIFIED", "SIZE", "CHANGE", "ENCRYPTED", "COUNT", "STORED", "NEWEST BACKUP"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<32} {:<11} {:>8} {:>9} {:>10} {:>11} {:>9} {:>7} {:>10}  {}\n",
            r.label(),
            r.status.name(),
            r.age_seconds.map_or_else(|| "-".to_owned(), crate::core::units::age),
            r.verified_age_seconds.map_or_else(|| "-".to_owned(), crate::core::units::age),
            r.bytes.map_or_else(|| "-".to_owned(), crate::core::units::bytes),
            r.bytes_change.map_or_else(|| "-".to_owned(), crate::core::units::bytes_change),
            encrypted_word(r.encrypted),
            r.complete_backups,
            crate::core::units::bytes(r.total_bytes),
            r.newest_backup.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// `yes`, `no`, or `-` where the question does not apply (snapshots, no backup).
pub fn encrypted_word(encrypted: Option<bool>) -> &'static str {
    match encrypted {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

fn item(r: &Freshness) -> ItemResult {
    let figures: BTreeMap<String, serde_json::Value> = match serde_json::to_value(r) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    ItemResult {
        kind: match r.kind {
            Kind::Database => "database".into(),
            Kind::Bucket => "bucket".into(),
        },
        name: r.label(),
        outcome: if r.status == Status::Ok { Outcome::Success } else { Outcome::Failure },
        error: (r.status != Status::Ok).then(|| format!("{} backups of {}", r.status.name(), r.label())),
        backup_id: r.newest_backup.clone(),
        figures,
    }
}

fn wants_html(request: &HttpRequest) -> bool {
    request
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/html")))
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let mut result = self.services.result(SPEC.name, ctx.started);
        match self.evaluate(self.services.clock.now()).await {
            Ok(rows) => {
                if ctx.trigger == crate::runtime::Trigger::Job {
                    print!("{}", table(&rows));
                }
                let bad = rows.iter().filter(|r| r.status != Status::Ok).count();
                result.items = rows.iter().map(item).collect();
                result.outcome = if bad == 0 && !rows.is_empty() { Outcome::Success } else { Outcome::Failure };
                result.summary = if rows.is_empty() {
                    format!("no backups found in {}", self.services.common.destination)
                } else {
                    let problems: Vec<String> = rows
                        .iter()
                        .filter(|r| r.status != Status::Ok)
                        .map(|r| format!("{} {}", r.label(), r.status.name()))
                        .collect();
                    let mut s = format!("{} of {} sources ok", rows.len() - bad, rows.len());
                    if !problems.is_empty() {
                        s.push_str(&format!(": {}", problems.join(", ")));
                    }
                    s
                };
                result.figures = BTreeMap::from([
                    ("sources".into(), serde_json::json!(rows.len())),
                    ("not_ok".into(), serde_json::json!(bad)),
                    ("backups".into(), serde_json::json!(rows.iter().map(|r| r.complete_backups).sum::<usize>())),
                    ("bytes_stored".into(), serde_json::json!(rows.iter().map(|r| r.total_bytes).sum::<u64>())),
                ]);
            }
            Err(e) => {
                result.outcome = Outcome::Failure;
                result.summary = format!("cannot read the backup store: {e}");
            }
        }
        result.finished_at = Utc::now();
        result
    }

    async fn route(&self, request: &HttpRequest) -> Option<HttpResponse> {
        if request.method != Method::GET {
            return None;
        }
        let html = match request.path.as_str() {
            "/" => true,
            "/status" => wants_html(request),
            _ => return None,
        };
        let now = self.services.clock.now();
        Some(match self.evaluate(now).await {
            Ok(rows) => {
                let all_ok = !rows.is_empty() && rows.iter().all(|r| r.status == Status::Ok);
                let status = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                if html {
                    HttpResponse::html(status, self.page(&rows, now))
                } else {
                    HttpResponse::json(status, &serde_json::json!({ "ok": all_ok, "checked_at": now, "sources": rows }))
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the backup store");
                HttpResponse::error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the backup store: {e}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_negotiated() {
        let mut req = HttpRequest {
            method: Method::GET,
            path: "/status".into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
            caller: crate::runtime::auth::Caller::Anonymous,
        };
        assert!(!wants_html(&req));
        req.headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        );
        assert!(wants_html(&req));
    }
}
