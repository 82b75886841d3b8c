//! Job executions, started and followed on the console's behalf: one small trait
//! ([`Executor`]), two implementations.
//!
//! - [`cloud_run::CloudRun`]: on Cloud Run, through the Cloud Run Admin API v2 (`jobs.run` with
//!   container overrides: arguments and environment), authorised by the service account's OAuth
//!   token from the metadata server. Executions live in Cloud Run; we only read them back.
//! - [`local::Local`]: elsewhere, the same jobs as child processes: the sibling binaries found
//!   next to the running executable, run with `--once`, their output kept (the last lines) so a
//!   page can follow them. The process table is the only state, kept in memory.
//!
//! A job is one of the programs that run to completion ([`Job`]); what an action asks of it is a
//! [`JobRequest`] (arguments and environment overrides, built by [`crate::core::actions`]).

pub mod cloud_run;
pub mod local;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Classify, ErrorKind};

pub use crate::core::actions::{Job, JobRequest};

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Asked for, not started yet.
    Pending,
    /// Running.
    Running,
    /// Ended with success (exit 0 / every task succeeded).
    Succeeded,
    /// Ended with a failure.
    Failed,
    /// Cancelled before its end.
    Cancelled,
}

impl State {
    /// True once the execution has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The state's name as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One execution of a job, as far as its executor can tell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Execution {
    /// The job (program) it runs.
    pub job: String,
    /// Its id, unique within the job (the last segment of a Cloud Run execution name).
    pub id: String,
    /// Its full name (`projects/P/locations/R/jobs/J/executions/ID` on Cloud Run; `local/J/ID` here).
    pub name: String,
    /// Where it is.
    pub state: State,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The arguments it was given.
    pub args: Vec<String>,
    /// The environment overrides it was given (names and values; never a secret).
    pub env: std::collections::BTreeMap<String, String>,
    /// Who started it, when the executor knows (the console's local runs).
    pub started_by: Option<String>,
    /// The newest progress line or status the executor can see.
    pub progress: Option<String>,
    /// The last lines of its output (local runs only: Cloud Run keeps logs in Cloud Logging).
    pub output: Vec<String>,
    /// A message about how it ended (exit code, Cloud Run's condition message).
    pub message: Option<String>,
    /// Where its logs are (Cloud Run's log URL).
    pub log_uri: Option<String>,
}

/// Why an execution could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No such execution.
    #[error("no execution {0}")]
    NotFound(String),
    /// The job is already running (local runs: one at a time per job).
    #[error("{0} is already running; wait for it to end")]
    Busy(String),
    /// The sibling binary cannot be started.
    #[error("cannot start {job}: {source}")]
    Spawn {
        /// The job.
        job: String,
        /// Why.
        source: std::io::Error,
    },
    /// The Cloud Run Admin API (or the metadata server) refused or failed.
    #[error("{what}: HTTP {status}: {message}")]
    Api {
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// Google's error message.
        message: String,
    },
    /// The API could not be reached.
    #[error("{what}: {source}")]
    Http {
        /// What was asked.
        what: String,
        /// Why.
        source: reqwest::Error,
    },
}

impl Classify for ExecError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) | Self::Busy(_) => ErrorKind::Refused,
            Self::Spawn { .. } => ErrorKind::Config,
            Self::Api { status, .. } if *status == 429 || *status >= 500 => ErrorKind::Transient,
            Self::Api { .. } => ErrorKind::Refused,
            Self::Http { .. } => ErrorKind::Transient,
        }
    }
}

/// Starts and follows job executions.
#[async_trait]
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// Starts `request` on behalf of `started_by` and reports the new execution.
    async fn start(&self, request: &JobRequest, started_by: &str) -> Result<Execution, ExecError>;
    /// Reads one execution.
    async fn get(&self, job: Job, id: &str) -> Result<Execution, ExecError>;
    /// The newest executions of every job, newest first, at most `limit`.
    async fn recent(&self, limit: usize) -> Result<Vec<Execution>, ExecError>;
    /// What this executor can show of a running execution (said on the execution page).
    fn follows(&self) -> &'static str;
}
