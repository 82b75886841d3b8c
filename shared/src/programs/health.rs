//! `health`: reads the backup store itself and reports, per database, the age of the newest
//! complete backup; stale after `BACKUP_MAX_AGE` (25 h by default).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use http::{Method, StatusCode};

use crate::config::{Reader, vars};
use crate::events::{ItemResult, Outcome, RunResult};
use crate::freshness::{Freshness, Status, evaluate};
use crate::http::{HttpRequest, HttpResponse};
use crate::inventory::Kind;
use crate::runtime::{Program, ProgramSpec, RunContext, Services, StartError};
use crate::store::StoreError;

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec {
    name: "health",
    about: "Reads the backup store and reports, per database, the age of the newest complete backup; stale after BACKUP_MAX_AGE. Job mode exits 1 unless all are ok; service mode serves GET /status.",
    usage: "",
    vars: &[vars::HEALTH, &[&vars::DATABASES]],
};

/// Settings of `health`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stale after this.
    pub max_age: Duration,
    /// Databases that must have backups (others found in the store are reported too).
    pub expected: Vec<String>,
}

/// Reads the settings.
pub fn read(r: &mut Reader<'_>, _args: &[String]) -> Option<Config> {
    let max_age = r.duration(&vars::MAX_AGE);
    let expected = r.list(&vars::DATABASES);
    Some(Config { max_age: max_age?, expected })
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
    /// Evaluates freshness now.
    pub async fn evaluate(&self, now: chrono::DateTime<Utc>) -> Result<Vec<Freshness>, StoreError> {
        let source = &self.services.common.source;
        let series = crate::inventory::load(&*self.services.store, source).await?;
        let expected: Vec<(Kind, String, String)> =
            self.config.expected.iter().map(|d| (Kind::Database, source.clone(), d.clone())).collect();
        Ok(evaluate(&series, &expected, now, self.config.max_age))
    }
}

/// A plain-text table of the evaluation, for terminals.
pub fn table(rows: &[Freshness]) -> String {
    let mut out = format!(
        "{:<10} {:<24} {:<8} {:>10} {:>12}  {}\n",
        "SOURCE", "DATABASE", "STATUS", "AGE", "BYTES", "NEWEST BACKUP"
    );
    for r in rows {
        let age = r.age_seconds.map_or_else(|| "-".to_owned(), |s| format!("{}h{:02}m", s / 3600, (s % 3600) / 60));
        let status =
            serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        out.push_str(&format!(
            "{:<32} {:<10} {:>10} {:>12}  {}\n",
            r.label(),
            status,
            age,
            r.bytes.map_or_else(|| "-".to_owned(), |b| b.to_string()),
            r.newest_backup.as_deref().unwrap_or("-")
        ));
    }
    out
}

fn item(r: &Freshness) -> ItemResult {
    let figures: BTreeMap<String, serde_json::Value> = match serde_json::to_value(r) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    ItemResult {
        kind: serde_json::to_value(r.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        name: r.label(),
        outcome: if r.status == Status::Ok { Outcome::Success } else { Outcome::Failure },
        error: (r.status != Status::Ok)
            .then(|| format!("{} backups of {}", figures["status"].as_str().unwrap_or("bad"), r.label())),
        backup_id: r.newest_backup.clone(),
        figures,
    }
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let mut result = self.services.result(SPEC.name, ctx.started);
        match self.evaluate(Utc::now()).await {
            Ok(rows) => {
                if ctx.trigger == crate::runtime::Trigger::Job {
                    print!("{}", table(&rows));
                }
                let bad = rows.iter().filter(|r| r.status != Status::Ok).count();
                result.items = rows.iter().map(item).collect();
                result.outcome = if bad == 0 && !rows.is_empty() { Outcome::Success } else { Outcome::Failure };
                result.summary = if rows.is_empty() {
                    format!("no database backups found in {}", self.services.common.destination)
                } else {
                    format!("{} of {} databases ok", rows.len() - bad, rows.len())
                };
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
        if (request.method.clone(), request.path.as_str()) != (Method::GET, "/status") {
            return None;
        }
        Some(match self.evaluate(Utc::now()).await {
            Ok(rows) => {
                let all_ok = !rows.is_empty() && rows.iter().all(|r| r.status == Status::Ok);
                let status = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                HttpResponse::json(status, &serde_json::json!({ "ok": all_ok, "sources": rows }))
            }
            Err(e) => {
                HttpResponse::error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the backup store: {e}"))
            }
        })
    }
}
