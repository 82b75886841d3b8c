//! Job executions through the Cloud Run Admin API v2.
//!
//! - Start: `POST {api}/v2/projects/P/locations/R/jobs/J:run` with
//!   `{"overrides": {"containerOverrides": [{"args": [...], "env": [{"name", "value"}]}]}}`;
//!   the answer is a long-running operation whose `metadata` is the new Execution (its `name`
//!   is `projects/P/locations/R/jobs/J/executions/ID`). The console's service account needs
//!   `run.jobs.run` and `run.jobs.runWithOverrides` on exactly the jobs it starts (Terraform).
//! - Follow: `GET {api}/v2/projects/P/locations/R/jobs/J/executions/ID` and
//!   `GET …/jobs/J/executions?pageSize=N`. What Cloud Run tells is the task counts (running,
//!   succeeded, failed), the `Completed` condition and the log URL: that is what a page shows.
//!   The jobs' own progress lines are in Cloud Logging, which the console does not read (that
//!   would need log-reading rights on every job's logs), so the page links to them.
//! - Authorisation: the service account's OAuth access token from the metadata server
//!   (`http://GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/token`,
//!   `Metadata-Flavor: Google`), reused until a minute before it expires.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{ExecError, Execution, Executor, Job, JobRequest, State};
use crate::core::secret::Secret;

/// Connect and whole-request limits of every call (the Admin API answers in well under a second).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the Cloud Run jobs are and how to reach the API.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The API endpoint (`https://run.googleapis.com`, or a stand-in in tests).
    pub api: String,
    /// The metadata server's host (`metadata.google.internal`).
    pub metadata_host: String,
    /// The project of the jobs.
    pub project: String,
    /// The region of the jobs.
    pub region: String,
}

/// Starts and reads Cloud Run job executions.
#[derive(Debug)]
pub struct CloudRun {
    settings: Settings,
    http: reqwest::Client,
    token: Mutex<Option<(Secret, DateTime<Utc>)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: i64,
}

/// An Execution resource (the fields the console reads).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ApiExecution {
    name: String,
    create_time: Option<DateTime<Utc>>,
    completion_time: Option<DateTime<Utc>>,
    task_count: u32,
    running_count: u32,
    succeeded_count: u32,
    failed_count: u32,
    cancelled_count: u32,
    conditions: Vec<Condition>,
    log_uri: Option<String>,
    template: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    state: String,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Operation {
    metadata: Option<ApiExecution>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ExecutionList {
    executions: Vec<ApiExecution>,
}

impl ApiExecution {
    fn into_execution(self) -> Execution {
        let mut parts = self.name.rsplit('/');
        let id = parts.next().unwrap_or_default().to_owned();
        let job = parts.nth(1).unwrap_or_default().to_owned();
        let completed = self.conditions.iter().find(|c| c.kind == "Completed");
        let state = match completed.map(|c| c.state.as_str()) {
            Some("CONDITION_SUCCEEDED") => State::Succeeded,
            Some("CONDITION_FAILED") if self.cancelled_count > 0 => State::Cancelled,
            Some("CONDITION_FAILED") => State::Failed,
            _ if self.running_count > 0 => State::Running,
            _ if self.completion_time.is_some() => State::Failed,
            _ => State::Pending,
        };
        let progress = (self.task_count > 0).then(|| {
            format!(
                "tasks: {} running, {} succeeded, {} failed of {}",
                self.running_count, self.succeeded_count, self.failed_count, self.task_count
            )
        });
        let (args, env) = overrides_of(self.template.as_ref());
        Execution {
            job,
            id,
            name: self.name,
            state,
            created_at: self.create_time.unwrap_or_else(Utc::now),
            finished_at: self.completion_time,
            args,
            env,
            started_by: None,
            progress,
            output: Vec::new(),
            message: completed.and_then(|c| c.message.clone()),
            log_uri: self.log_uri,
        }
    }
}

/// Arguments and plain environment of an execution's template (its overrides applied).
fn overrides_of(template: Option<&serde_json::Value>) -> (Vec<String>, std::collections::BTreeMap<String, String>) {
    let Some(container) = template.and_then(|t| t.pointer("/containers/0")) else { return Default::default() };
    let args =
        container["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
    let env = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .filter(|(k, _)| matches!(k.as_str(), "BACKUP_DATABASES" | "SOURCE_BUCKETS"))
        .collect();
    (args, env)
}

impl CloudRun {
    /// A client for the jobs described by `settings`.
    pub fn new(settings: Settings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT).build()?;
        Ok(Self { settings, http, token: Mutex::new(None) })
    }

    fn job_path(&self, job: Job) -> String {
        format!(
            "{}/v2/projects/{}/locations/{}/jobs/{}",
            self.settings.api.trim_end_matches('/'),
            self.settings.project,
            self.settings.region,
            job.name()
        )
    }

    async fn token(&self) -> Result<Secret, ExecError> {
        let now = Utc::now();
        if let Some((token, until)) = &*self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
            && *until > now
        {
            return Ok(token.clone());
        }
        let what = "fetching the service account's token from the metadata server".to_owned();
        let url = format!(
            "http://{}/computeMetadata/v1/instance/service-accounts/default/token",
            self.settings.metadata_host.trim_end_matches('/')
        );
        let resp = self
            .http
            .get(url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|source| ExecError::Http { what: what.clone(), source })?;
        let answer: TokenAnswer =
            checked(resp, &what).await?.json().await.map_err(|source| ExecError::Http { what, source })?;
        let token = Secret::new(answer.access_token);
        let until = now + chrono::Duration::seconds((answer.expires_in - 60).max(0));
        *self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((token.clone(), until));
        Ok(token)
    }

    async fn call(&self, request: reqwest::RequestBuilder, what: String) -> Result<reqwest::Response, ExecError> {
        let token = self.token().await?;
        let resp = request
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|source| ExecError::Http { what: what.clone(), source })?;
        checked(resp, &what).await
    }
}

/// The response when 2xx; otherwise Google's error message as an [`ExecError::Api`].
async fn checked(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, ExecError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = body.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or("no message").to_owned();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(ExecError::NotFound(format!("{what}: {message}")));
    }
    Err(ExecError::Api { what: what.to_owned(), status: status.as_u16(), message })
}

#[async_trait]
impl Executor for CloudRun {
    async fn start(&self, request: &JobRequest, started_by: &str) -> Result<Execution, ExecError> {
        let mut container = json!({});
        if !request.args.is_empty() {
            container["args"] = json!(request.args);
        }
        if !request.env.is_empty() {
            container["env"] = request.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
        }
        let body = json!({ "overrides": { "containerOverrides": [container] } });
        let what = format!("starting Cloud Run job {}", request.job.name());
        let resp =
            self.call(self.http.post(format!("{}:run", self.job_path(request.job))).json(&body), what.clone()).await?;
        let operation: Operation =
            resp.json().await.map_err(|source| ExecError::Http { what: what.clone(), source })?;
        let mut execution = operation
            .metadata
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| ExecError::Api { what, status: 200, message: "the answer names no execution".into() })?
            .into_execution();
        if execution.args.is_empty() && execution.env.is_empty() {
            execution.args.clone_from(&request.args);
            execution.env = request.env.iter().cloned().collect();
        }
        execution.started_by = Some(started_by.to_owned());
        tracing::info!(job = request.job.name(), execution = execution.name, started_by, "execution started");
        Ok(execution)
    }

    async fn get(&self, job: Job, id: &str) -> Result<Execution, ExecError> {
        let url = format!("{}/executions/{id}", self.job_path(job));
        let what = format!("reading execution {}/{id}", job.name());
        let resp = self.call(self.http.get(url), what.clone()).await?;
        let e: ApiExecution = resp.json().await.map_err(|source| ExecError::Http { what, source })?;
        Ok(e.into_execution())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<Execution>, ExecError> {
        let mut all = Vec::new();
        for job in Job::ALL {
            let url = format!("{}/executions", self.job_path(job));
            let what = format!("listing executions of {}", job.name());
            let resp = match self.call(self.http.get(url).query(&[("pageSize", limit.to_string())]), what.clone()).await
            {
                Ok(r) => r,
                Err(ExecError::NotFound(_)) => continue, // a job this deployment does not have
                Err(e) => return Err(e),
            };
            let list: ExecutionList = resp.json().await.map_err(|source| ExecError::Http { what, source })?;
            all.extend(list.executions.into_iter().map(ApiExecution::into_execution));
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.created_at));
        all.truncate(limit);
        Ok(all)
    }

    fn follows(&self) -> &'static str {
        "Cloud Run execution: the page shows what the Cloud Run Admin API reports (task counts and the Completed condition); the job's progress lines are in its logs (link below)."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_are_read_from_the_api_shape() {
        let e: ApiExecution = serde_json::from_value(json!({
            "name": "projects/p/locations/europe-west1/jobs/db-backup/executions/db-backup-x7k2p",
            "createTime": "2026-12-02T10:00:00Z",
            "taskCount": 1, "runningCount": 1,
            "conditions": [{"type": "Completed", "state": "CONDITION_PENDING"}],
            "template": {"containers": [{"env": [{"name": "BACKUP_DATABASES", "value": "app"}, {"name": "PGPASSWORD", "valueSource": {}}]}]},
            "logUri": "https://console.cloud.google.com/logs?x"
        }))
        .expect("parse");
        let e = e.into_execution();
        assert_eq!((e.job.as_str(), e.id.as_str(), e.state), ("db-backup", "db-backup-x7k2p", State::Running));
        assert_eq!(e.env, [("BACKUP_DATABASES".to_owned(), "app".to_owned())].into());
        assert_eq!(e.progress.as_deref(), Some("tasks: 1 running, 0 succeeded, 0 failed of 1"));
        let done: ApiExecution = serde_json::from_value(json!({
            "name": "projects/p/locations/r/jobs/prune/executions/prune-abc",
            "completionTime": "2026-12-02T10:05:00Z", "taskCount": 1, "failedCount": 1,
            "conditions": [{"type": "Completed", "state": "CONDITION_FAILED", "message": "Task prune-abc-task0 failed"}]
        }))
        .expect("parse");
        let done = done.into_execution();
        assert_eq!((done.state, done.message.as_deref()), (State::Failed, Some("Task prune-abc-task0 failed")));
    }
}
