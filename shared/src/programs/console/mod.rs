//! `console` (a Cloud Run service): the deployed dashboard and admin API. It reads the backup
//! store like `health` and holds no state of its own: backups are what the store lists,
//! executions are what the executor reports (Cloud Run's API, or the child processes it runs
//! locally).
//!
//! - Pages (server-rendered, [`crate::report::console`]): `GET /` overview, `GET /sources/db/{database}`,
//!   `GET /sources/bucket/{bucket}`, `GET /executions`, `GET /executions/{job}/{id}`.
//! - JSON API under `/api/`, described by `docs/console.openapi.yaml` (served at
//!   `GET /api/openapi.yaml`): reads ([`api`]) and actions (back up, snapshot, full backup,
//!   prune preview/apply, restore a database or a bucket).
//!
//! Who may do what ([`crate::runtime::auth`]): pages and `GET /api/…` need a viewer (or an
//! admin); every action needs an admin (`LIFEBOAT_ADMINS`). Every action is logged and
//! published as a `console` result event naming the admin: the audit trail.
//!
//! # Why actions are `POST` + JSON + an `Authorization` header (CSRF)
//!
//! A forged cross-site request can only carry what a browser adds by itself: cookies, and
//! behind `gcloud run services proxy` the proxy's identity. So an action must be something a
//! foreign page cannot send without the browser asking us first: it must be `POST` with
//! `Content-Type: application/json` (anything else is 415; a cross-origin JSON `POST` needs a
//! CORS preflight, which we never grant), and a request whose `Sec-Fetch-Site` (or, from a
//! browser too old for it, `Origin`) says it comes from another site is refused (403). There are no cookies and no HTML forms that
//! post on their own: the page's script sends the JSON with the token it was given in the
//! URL fragment (never sent to a server, never logged), or none behind the proxy.

pub mod api;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use clap::Parser;
use http::{Method, StatusCode};

use crate::config::{Reader, vars};
use crate::core::events::{Outcome, RunResult};
use crate::core::freshness::{Freshness, Limits, Status};
use crate::core::series::{Kind, Series};
use crate::core::source::SourceSpec;
use crate::jobs::cloud_run::{CloudRun, Settings};
use crate::jobs::local::Local;
use crate::jobs::{Executor, Job};
use crate::runtime::auth::{Access, Role};
use crate::runtime::http::{HttpRequest, HttpResponse};
use crate::runtime::{self, Program, ProgramSpec, RunContext, Services, StartError};
use crate::store::StoreError;

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec { name: "console", vars: &[vars::CONSOLE] };

/// The dashboard and admin API: status of every source, backups, snapshots, drills and job
/// executions (HTML pages and a JSON API under /api/); admins back up, prune and restore by
/// starting the Cloud Run jobs (locally: the sibling binaries). Job mode evaluates freshness once.
#[derive(Debug, Clone, Default, Parser)]
pub struct Cli {
    /// The runtime's flags (`--once`), read by the runtime.
    #[command(flatten)]
    pub runtime: runtime::Args,
}

/// Where executions run.
#[derive(Debug, Clone)]
pub enum Runner {
    /// Child processes of the binaries next to this one.
    Local,
    /// Cloud Run jobs through the Admin API.
    CloudRun(Settings),
}

/// Settings of `console`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stale and unverified limits, and whether database backups must be encrypted.
    pub limits: Limits,
    /// Databases that must have backups.
    pub expected: Vec<String>,
    /// `SOURCE_BUCKETS`, read as `storage-backup` reads it.
    pub expected_buckets: Vec<SourceSpec>,
    /// Where executions run.
    pub runner: Runner,
}

/// Reads the settings. On Cloud Run (`K_SERVICE`) the jobs' project and region are required.
pub fn read(r: &mut Reader<'_>, _cli: Option<Cli>) -> Option<Config> {
    let limits = crate::config::limits(r);
    let expected = r.names(&vars::DATABASES);
    let expected_buckets = r.sources();
    let runner = if r.env().get(vars::K_SERVICE.name).is_some() {
        let region = r.text(&vars::REGION);
        let project = r.text(&vars::PROJECT);
        if region.is_none() {
            r.problem(vars::REGION.name, "is required on Cloud Run: the console starts the jobs of this region");
        }
        if project.is_none() {
            r.problem(vars::PROJECT.name, "is required on Cloud Run: the console starts the jobs of this project");
        }
        Runner::CloudRun(Settings {
            api: r.text(&vars::RUN_API_URL).unwrap_or_default(),
            metadata_host: r.text(&vars::METADATA_HOST).unwrap_or_default(),
            project: project.unwrap_or_default(),
            region: region.unwrap_or_default(),
        })
    } else {
        Runner::Local
    };
    Some(Config { limits: limits?, expected, expected_buckets, runner })
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
    config: Config,
    executor: Arc<dyn Executor>,
}

/// Builds the program with the executor its configuration names.
pub async fn start(services: Services, config: Config) -> Result<App, StartError> {
    let executor: Arc<dyn Executor> = match &config.runner {
        Runner::Local => Arc::new(Local::beside_current_exe().map_err(|e| StartError::Executor(e.to_string()))?),
        Runner::CloudRun(settings) => {
            Arc::new(CloudRun::new(settings.clone()).map_err(|e| StartError::Executor(e.to_string()))?)
        }
    };
    Ok(App::with_executor(services, config, executor))
}

impl App {
    /// The program with a given executor (tests).
    pub fn with_executor(services: Services, config: Config, executor: Arc<dyn Executor>) -> Self {
        Self { services, config, executor }
    }

    fn expected(&self) -> Vec<(Kind, String, String)> {
        crate::core::freshness::expected_series(
            &self.services.common.source,
            &self.config.expected,
            &self.config.expected_buckets,
        )
    }

    /// Freshness of every source at now.
    pub async fn status(&self) -> Result<Vec<Freshness>, StoreError> {
        let now = self.services.clock.now();
        crate::inventory::assess(
            &*self.services.store,
            &self.services.common.source,
            &self.expected(),
            now,
            &self.config.limits,
        )
        .await
    }

    /// Every series the store holds.
    async fn series(&self) -> Result<Vec<Series>, StoreError> {
        crate::inventory::load(&*self.services.store, &self.services.common.source).await
    }

    /// The database's series, if it is known (configured or backed up).
    async fn database(&self, name: &str) -> Result<Option<Series>, StoreError> {
        let source = &self.services.common.source;
        let found = self
            .series()
            .await?
            .into_iter()
            .find(|s| s.kind == Kind::Database && s.source == *source && s.name == name);
        Ok(match found {
            Some(s) => Some(s),
            None if self.config.expected.iter().any(|d| d == name) => Some(Series {
                kind: Kind::Database,
                source: source.clone(),
                name: name.to_owned(),
                backups: Vec::new(),
            }),
            None => None,
        })
    }

    /// The bucket's series and its `SOURCE_BUCKETS` entry, if it is known.
    async fn bucket(&self, name: &str) -> Result<Option<(Series, String)>, StoreError> {
        // The entry whose bucket (as storage-backup names it in the store) is `name`.
        let entry = self.config.expected_buckets.iter().find(|b| b.bucket == name).map(ToString::to_string);
        let found = self.series().await?.into_iter().find(|s| s.kind == Kind::Bucket && s.source == name);
        Ok(match (found, entry) {
            (Some(s), entry) => Some((s, entry.unwrap_or_else(|| name.to_owned()))),
            (None, Some(entry)) => Some((
                Series { kind: Kind::Bucket, source: name.to_owned(), name: "snapshots".into(), backups: Vec::new() },
                entry,
            )),
            (None, None) => None,
        })
    }

    /// The backup store's own bucket (never a restore target).
    fn backup_bucket(&self) -> Option<String> {
        match &self.services.common.destination {
            crate::store::Location::Gcs { bucket, .. } => Some(bucket.clone()),
            _ => None,
        }
    }

    /// Publishes the audit event of an action.
    async fn audit(&self, result: RunResult) {
        runtime::publish(&*self.services.publisher, result).await;
    }
}

#[async_trait]
impl Program for App {
    /// Job mode and `POST /run`: the freshness evaluation, like `health`'s.
    async fn run(&self, ctx: RunContext) -> RunResult {
        let mut result = self.services.result(SPEC.name, ctx.started);
        match self.status().await {
            Ok(rows) => {
                let bad = rows.iter().filter(|r| r.status != Status::Ok).count();
                result.outcome = if bad == 0 && !rows.is_empty() { Outcome::Success } else { Outcome::Failure };
                result.summary = format!("{} of {} sources ok", rows.len() - bad, rows.len());
            }
            Err(e) => {
                result.outcome = Outcome::Failure;
                result.summary = format!("cannot read the backup store: {e}");
            }
        }
        result.finished_at = Utc::now();
        result
    }

    /// Reads are for viewers, actions (any other method) for admins; the liveness and the API
    /// description stay as the runtime and the route say.
    fn access(&self, method: &Method, _path: &str) -> Access {
        if method == Method::GET || method == Method::HEAD {
            Access::Role(Role::Viewer)
        } else {
            Access::Role(Role::Admin)
        }
    }

    async fn route(&self, request: &HttpRequest) -> Option<HttpResponse> {
        let segments: Vec<String> = match request
            .path
            .trim_start_matches('/')
            .split('/')
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8().map(|c| c.into_owned()))
            .collect::<Result<_, _>>()
        {
            Ok(s) => s,
            Err(_) => return Some(HttpResponse::error(StatusCode::BAD_REQUEST, "the path is not UTF-8")),
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        if segments.first() == Some(&"api") {
            return api::route(self, request, &segments[1..]).await;
        }
        if request.method != Method::GET {
            return None;
        }
        Some(match segments.as_slice() {
            [""] => self.overview_page().await,
            ["sources", "db", name] => self.source_page(Kind::Database, name).await,
            ["sources", "bucket", name] => self.source_page(Kind::Bucket, name).await,
            ["executions"] => match self.executor.recent(50).await {
                Ok(list) => HttpResponse::html(
                    StatusCode::OK,
                    crate::report::console::executions(&list, self.executor.follows()),
                ),
                Err(e) => api::exec_error(&e),
            },
            ["executions", job, id] => match Job::parse(job) {
                None => HttpResponse::error(StatusCode::NOT_FOUND, format!("no job {job:?}")),
                Some(job) => match self.executor.get(job, id).await {
                    Ok(e) => HttpResponse::html(
                        StatusCode::OK,
                        crate::report::console::execution(&e, self.executor.follows()),
                    ),
                    Err(e) => api::exec_error(&e),
                },
            },
            _ => return None,
        })
    }
}

impl App {
    async fn overview_page(&self) -> HttpResponse {
        let rows = match self.status().await {
            Ok(rows) => rows,
            Err(e) => return api::store_error(&e),
        };
        let executions = self.executor.recent(10).await.unwrap_or_default();
        let common = &self.services.common;
        HttpResponse::html(
            StatusCode::OK,
            crate::report::console::overview(
                &rows,
                &executions,
                self.services.clock.now(),
                common.timezone,
                &common.destination.to_string(),
                &self.config.limits,
            ),
        )
    }

    async fn source_page(&self, kind: Kind, name: &str) -> HttpResponse {
        let series = match kind {
            Kind::Database => self.database(name).await.map(|s| s.map(|s| (s, String::new()))),
            Kind::Bucket => self.bucket(name).await,
        };
        let series = match series {
            Ok(Some((s, _))) => s,
            Ok(None) => {
                return HttpResponse::error(
                    StatusCode::NOT_FOUND,
                    format!("no {} {name:?} is configured or backed up", kind_name(kind)),
                );
            }
            Err(e) => return api::store_error(&e),
        };
        let details = crate::inventory::details(&*self.services.store, &series, api::DETAIL_LIMIT).await;
        let rows = self.status().await.unwrap_or_default();
        let row = rows.iter().find(|r| r.kind == kind && r.source == series.source && r.name == series.name);
        let page = crate::report::console::source(kind, name, row, &details, self.backup_bucket().as_deref());
        HttpResponse::html(StatusCode::OK, page)
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Database => "database",
        Kind::Bucket => "bucket",
    }
}
