//! The console's JSON API (`/api/…`), described by `docs/console.openapi.yaml`. Reads answer
//! what the store and the executor say; actions are checked ([`crate::core::actions`]) before
//! anything starts, then start their executions and answer `202` with them.
//!
//! Answers: 400 a request that fails a check (the reason in `error`), 404 an unknown database,
//! bucket, backup or execution, 409 a job that is already running (local runs), 415 an action
//! that is not JSON, 403 an action from another site, 502 when Cloud Run refused or failed.

use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{App, Kind};
use crate::core::actions::{Action, BadInput, BucketRestoreBody, DbRestoreBody, Job, NoOptions, check_name};
use crate::core::events::Outcome;
use crate::jobs::{ExecError, Execution};
use crate::runtime::http::{HttpRequest, HttpResponse};
use crate::store::StoreError;

/// Backups or snapshots listed per source (newest first).
pub const DETAIL_LIMIT: usize = 50;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../../../../docs/console.openapi.yaml");

/// A store that cannot be read: 503 with the reason.
pub fn store_error(e: &StoreError) -> HttpResponse {
    tracing::error!(error = %e, "cannot read the backup store");
    HttpResponse::error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the backup store: {e}"))
}

/// An executor error as an answer.
pub fn exec_error(e: &ExecError) -> HttpResponse {
    let status = match e {
        ExecError::NotFound(_) => StatusCode::NOT_FOUND,
        ExecError::Busy(_) => StatusCode::CONFLICT,
        ExecError::Spawn { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        ExecError::Api { .. } | ExecError::Http { .. } => StatusCode::BAD_GATEWAY,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "executor failed");
    }
    HttpResponse::error(status, e)
}

fn bad(e: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::error(StatusCode::BAD_REQUEST, e)
}

fn not_found(what: &str) -> HttpResponse {
    HttpResponse::error(StatusCode::NOT_FOUND, what)
}

/// An execution as the API shows it: with the page that follows it.
fn execution_json(e: &Execution) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    v["url"] = json!(format!(
        "/executions/{}/{}",
        crate::report::console::url_segment(&e.job),
        crate::report::console::url_segment(&e.id)
    ));
    v
}

/// CSRF guard of actions (see the module docs of `console`): JSON only, and nothing a browser
/// says came from another site. Browsers tell with `Sec-Fetch-Site`; only `same-origin` (the
/// console's own page) and `none` (typed by the user) pass. `Origin` is compared with `Host`
/// only when a browser too old for `Sec-Fetch-Site` sent it: behind `gcloud run services proxy`
/// the `Host` is the service's, not the page's, so the comparison would refuse the console's own
/// page.
fn same_origin_json(request: &HttpRequest) -> Result<(), HttpResponse> {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    let is_json = header("content-type")
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(HttpResponse::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "actions take a JSON body: send Content-Type: application/json",
        ));
    }
    match header("sec-fetch-site") {
        Some("same-origin" | "none") => return Ok(()),
        Some(site) => {
            return Err(HttpResponse::error(StatusCode::FORBIDDEN, format!("{site} requests may not act")));
        }
        None => {}
    }
    if let (Some(origin), Some(host)) = (header("origin"), header("host")) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if !origin_host.eq_ignore_ascii_case(host) {
            return Err(HttpResponse::error(StatusCode::FORBIDDEN, format!("requests from {origin} may not act")));
        }
    }
    Ok(())
}

/// The JSON body as `T` (an empty body is `{}`).
fn body<T: DeserializeOwned>(request: &HttpRequest) -> Result<T, HttpResponse> {
    let bytes: &[u8] = if request.body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &request.body };
    serde_json::from_slice(bytes).map_err(|e| bad(format!("the body is not the expected JSON object: {e}")))
}

/// Routes `/api/<rest>`.
pub async fn route(app: &App, request: &HttpRequest, rest: &[&str]) -> Option<HttpResponse> {
    let get = request.method == Method::GET || request.method == Method::HEAD;
    if get {
        return read(app, rest).await;
    }
    if request.method != Method::POST {
        return Some(HttpResponse::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed here", request.method),
        ));
    }
    if let Err(resp) = same_origin_json(request) {
        return Some(resp);
    }
    let action = match check(app, request, rest).await? {
        Ok(a) => a,
        Err(resp) => return Some(resp),
    };
    Some(act(app, request, action).await)
}

async fn read(app: &App, rest: &[&str]) -> Option<HttpResponse> {
    Some(match rest {
        ["openapi.yaml"] => {
            let mut r = HttpResponse::html(StatusCode::OK, OPENAPI.to_owned());
            r.content_type = "application/yaml";
            r
        }
        ["status"] => match app.status().await {
            Ok(rows) => {
                let ok = !rows.is_empty() && rows.iter().all(|r| r.status == crate::core::freshness::Status::Ok);
                HttpResponse::json(
                    StatusCode::OK,
                    &json!({"ok": ok, "checked_at": app.services.clock.now(), "sources": rows}),
                )
            }
            Err(e) => store_error(&e),
        },
        ["databases", name, "backups"] => match app.database(name).await {
            Ok(Some(series)) => {
                let backups = crate::inventory::details(&*app.services.store, &series, DETAIL_LIMIT).await;
                HttpResponse::json(
                    StatusCode::OK,
                    &json!({"database": name, "source": series.source, "backups": backups}),
                )
            }
            Ok(None) => not_found(&format!("no database {name:?} is configured or backed up")),
            Err(e) => store_error(&e),
        },
        ["buckets", name, "snapshots"] => match app.bucket(name).await {
            Ok(Some((series, _))) => {
                let snapshots = crate::inventory::details(&*app.services.store, &series, DETAIL_LIMIT).await;
                HttpResponse::json(StatusCode::OK, &json!({"bucket": name, "snapshots": snapshots}))
            }
            Ok(None) => not_found(&format!("no bucket {name:?} is configured or snapshotted")),
            Err(e) => store_error(&e),
        },
        ["executions"] => match app.executor.recent(50).await {
            Ok(list) => HttpResponse::json(
                StatusCode::OK,
                &json!({"executions": list.iter().map(execution_json).collect::<Vec<_>>(), "follows": app.executor.follows()}),
            ),
            Err(e) => exec_error(&e),
        },
        ["executions", job, id] => match Job::parse(job) {
            None => not_found(&format!("no job {job:?}")),
            Some(job) => match app.executor.get(job, id).await {
                Ok(e) => HttpResponse::json(StatusCode::OK, &execution_json(&e)),
                Err(e) => exec_error(&e),
            },
        },
        _ => return None,
    })
}

/// A database the console knows (configured or backed up).
async fn known_db(app: &App, name: &str) -> Result<(), HttpResponse> {
    check_name("database", name).map_err(bad)?;
    match app.database(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(not_found(&format!("no database {name:?} is configured or backed up"))),
        Err(e) => Err(store_error(&e)),
    }
}

/// A bucket the console knows, and its `SOURCE_BUCKETS` entry.
async fn known_bucket(app: &App, name: &str) -> Result<String, HttpResponse> {
    check_name("bucket", name).map_err(bad)?;
    match app.bucket(name).await {
        Ok(Some((_, entry))) => Ok(entry),
        Ok(None) => Err(not_found(&format!("no bucket {name:?} is configured or snapshotted"))),
        Err(e) => Err(store_error(&e)),
    }
}

/// The checked action of a `POST`, or the 4xx answer; `None` for a path that is no action.
async fn check(app: &App, request: &HttpRequest, rest: &[&str]) -> Option<Result<Action, HttpResponse>> {
    Some(match rest {
        ["databases", name, "backup"] => {
            async {
                body::<NoOptions>(request)?;
                known_db(app, name).await?;
                Ok(Action::BackupDatabase { database: (*name).to_owned() })
            }
            .await
        }
        ["buckets", name, "snapshot"] => {
            async {
                body::<NoOptions>(request)?;
                let entry = known_bucket(app, name).await?;
                Ok(Action::SnapshotBucket { entry })
            }
            .await
        }
        ["backup"] => body::<NoOptions>(request).map(|_| Action::FullBackup),
        ["prune", "preview"] => body::<NoOptions>(request).map(|_| Action::Prune { apply: false }),
        ["prune", "apply"] => body::<NoOptions>(request).map(|_| Action::Prune { apply: true }),
        ["databases", name, "restore"] => {
            async {
                let b: DbRestoreBody = body(request)?;
                known_db(app, name).await?;
                let action = b.check(name).map_err(bad)?;
                known_backup(app, Kind::Database, name, &action).await?;
                Ok(action)
            }
            .await
        }
        ["buckets", name, "restore"] => {
            async {
                let b: BucketRestoreBody = body(request)?;
                known_bucket(app, name).await?;
                let action = b.check(name, app.backup_bucket().as_deref()).map_err(bad)?;
                known_backup(app, Kind::Bucket, name, &action).await?;
                Ok(action)
            }
            .await
        }
        _ => return None,
    })
}

/// A restore of an exact backup id must name one the store holds complete.
async fn known_backup(app: &App, kind: Kind, name: &str, action: &Action) -> Result<(), HttpResponse> {
    use crate::core::actions::Choice;
    let choice = match action {
        Action::RestoreDatabase { choice, .. } | Action::RestoreBucket { choice, .. } => choice,
        _ => return Ok(()),
    };
    let series = match kind {
        Kind::Database => app.database(name).await,
        Kind::Bucket => app.bucket(name).await.map(|s| s.map(|(s, _)| s)),
    }
    .map_err(|e| store_error(&e))?;
    let Some(series) = series else { return Err(not_found(name)) };
    match choice {
        Choice::Id(id) if !series.backups.iter().any(|b| b.complete && b.run == *id) => {
            Err(not_found(&format!("{name} has no complete backup {id}")))
        }
        Choice::Newest if series.newest_complete().is_none() => {
            Err(not_found(&format!("{name} has no complete backup yet")))
        }
        Choice::Before(t) if !series.backups.iter().any(|b| b.complete && b.run.started <= *t) => {
            Err(not_found(&format!("{name} has no complete backup started at or before {t}")))
        }
        _ => Ok(()),
    }
}

/// Starts the action's executions, logs and publishes the audit event, answers 202.
async fn act(app: &App, request: &HttpRequest, action: Action) -> HttpResponse {
    let admin = request.caller.name().to_owned();
    let started_at = chrono::Utc::now();
    let mut started = Vec::new();
    let mut failure = None;
    for job in action.requests() {
        match app.executor.start(&job, &admin).await {
            Ok(e) => started.push(e),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let names: Vec<&str> = started.iter().map(|e| e.name.as_str()).collect();
    let mut audit = app.services.result(super::SPEC.name, started_at);
    audit.figures.insert("action".into(), json!(action.name()));
    audit.figures.insert("admin".into(), json!(admin));
    audit.figures.insert("executions".into(), json!(names));
    audit.finished_at = chrono::Utc::now();
    match &failure {
        None => {
            audit.outcome = Outcome::Success;
            audit.summary = format!("{admin}: {} (started {})", action.describe(), names.join(", "));
            tracing::info!(admin, action = action.name(), executions = ?names, "action started");
        }
        Some(e) => {
            audit.outcome = Outcome::Failure;
            audit.summary = format!("{admin}: {} could not start: {e}", action.describe());
            tracing::warn!(admin, action = action.name(), error = %e, "action not started");
        }
    }
    app.audit(audit).await;
    if let Some(e) = failure
        && started.is_empty()
    {
        return exec_error(&e);
    }
    HttpResponse::json(
        StatusCode::ACCEPTED,
        &json!({
            "action": action.name(),
            "summary": action.describe(),
            "admin": admin,
            "executions": started.iter().map(execution_json).collect::<Vec<_>>(),
        }),
    )
}

impl From<BadInput> for HttpResponse {
    fn from(e: BadInput) -> Self {
        bad(e)
    }
}
