//! What a program is to the runtime: work done once per run, and optional extra HTTP routes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::auth::{Access, Role};
use super::http::{HttpRequest, HttpResponse};
use crate::core::events::RunResult;

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Job mode.
    Job,
    /// `POST /run`.
    Http,
}

/// What a run is given.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// When the run started.
    pub started: DateTime<Utc>,
    /// Cancelled on SIGTERM/SIGINT: stop, clean up, report failure.
    pub cancel: CancellationToken,
    /// Why it runs.
    pub trigger: Trigger,
}

impl RunContext {
    /// A fresh context (tests, embedding).
    pub fn new(trigger: Trigger) -> Self {
        Self { started: Utc::now(), cancel: CancellationToken::new(), trigger }
    }
}

/// A program: the work and, optionally, extra HTTP routes.
#[async_trait]
pub trait Program: Send + Sync + 'static {
    /// Does the work once. Never panics on bad input; failures are in the result.
    async fn run(&self, ctx: RunContext) -> RunResult;

    /// Extra routes (`None` = not mine). The caller was admitted by [`Program::access`] before
    /// the body was read.
    async fn route(&self, _request: &HttpRequest) -> Option<HttpResponse> {
        None
    }

    /// Who may call `method path` of [`Program::route`]. By default reads are public and every
    /// other method is for the scheduler identities (like `POST /run`).
    fn access(&self, method: &http::Method, _path: &str) -> Access {
        if method == http::Method::GET || method == http::Method::HEAD {
            Access::Public
        } else {
            Access::Role(Role::Scheduler)
        }
    }
}
