//! The `console` binary on the local stack, and a stand-in for the Cloud Run Admin API (with the
//! metadata server's token endpoint): a real HTTP server on port 0 that checks what it is sent
//! (path, body, OAuth token) and records it, the way the Slack stand-in does.

use std::convert::Infallible;

use lifeboat_core::store::ObjectStore as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::binaries::{Service, command};
use super::postgres::Server;

/// The console's static token in these tests.
pub const TOKEN: &str = "console-test-token-0123456789";

/// The `console` binary serving `home/backups` off Cloud Run, its children on the stack's
/// PostgreSQL; `vars` are added.
pub async fn local_console(home: &Path, vars: &[(&str, &str)]) -> Service {
    let mut c = command("console", home);
    c.env("LIFEBOAT_DESTINATION", format!("file://{}/backups", home.display()))
        .env("LIFEBOAT_API_TOKEN", TOKEN)
        .env("LIFEBOAT_PROGRESS_INTERVAL", "1s")
        .envs(Server::from_env().vars())
        .envs(vars.iter().copied());
    Service::start(c).await
}

/// A console client: `get`/`post` with or without the token, JSON answers.
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the console at `base`.
    pub fn new(base: &str) -> Self {
        Self { base: base.to_owned(), http: reqwest::Client::new() }
    }

    /// `GET path` with `headers`: status and JSON body (`Null` when not JSON).
    pub async fn get(&self, path: &str, headers: &[(&str, String)]) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let resp = r.send().await.expect("get");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` with a JSON `body` and `headers`.
    pub async fn post(&self, path: &str, body: &Value, headers: &[(&str, String)]) -> (u16, Value) {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(body);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let resp = r.send().await.expect("post");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` as the token holder.
    pub async fn act(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, body, &[("authorization", format!("Bearer {TOKEN}"))]).await
    }

    /// Waits (60 s at most) for execution `url` (`/executions/JOB/ID`) to end; its JSON.
    pub async fn wait(&self, url: &str) -> Value {
        let api = format!("/api{url}");
        for _ in 0..600 {
            let (status, e) = self.get(&api, &[("authorization", format!("Bearer {TOKEN}"))]).await;
            assert_eq!(status, 200, "{api}: {e}");
            if matches!(e["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{url} did not end within 60 s");
    }

    /// How many executions the console knows.
    pub async fn execution_count(&self) -> usize {
        let (status, list) = self.get("/api/executions", &[("authorization", format!("Bearer {TOKEN}"))]).await;
        assert_eq!(status, 200, "{list}");
        list["executions"].as_array().map_or(0, Vec::len)
    }
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Metadata-Flavor` header.
    pub metadata_flavor: Option<String>,
    /// The body, as JSON (`Null` when empty).
    pub body: Value,
}

/// The Cloud Run Admin API and metadata server stand-in.
#[derive(Debug)]
pub struct RunApi {
    /// `127.0.0.1:PORT` (what `GCE_METADATA_HOST` holds).
    pub host: String,
    /// `http://127.0.0.1:PORT` (what `LIFEBOAT_RUN_API_URL` holds).
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

/// The access token the stand-in's metadata server hands out and its API demands.
pub const ACCESS_TOKEN: &str = "ya29.standin-access-token";

impl RunApi {
    /// Starts the stand-in on 127.0.0.1, port 0.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorded = seen.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let recorded = recorded.clone();
                        async move { Ok::<_, Infallible>(answer(req, &recorded).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { host: addr.to_string(), url: format!("http://{addr}"), seen, server }
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The `jobs.run` calls received.
    pub fn runs(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.method == "POST" && s.path.ends_with(":run")).collect()
    }
}

impl Drop for RunApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn reply(status: u16, body: &Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn error(status: u16, message: &str) -> hyper::Response<Full<Bytes>> {
    reply(status, &json!({"error": {"code": status, "message": message}}))
}

/// An execution resource of `job` with `overrides` applied, as Cloud Run answers it.
fn execution(project_region: &str, job: &str, id: &str, container: &Value, done: bool) -> Value {
    let mut e = json!({
        "name": format!("{project_region}/jobs/{job}/executions/{id}"),
        "createTime": "2026-12-02T10:00:00Z",
        "taskCount": 1,
        "runningCount": if done { 0 } else { 1 },
        "succeededCount": if done { 1 } else { 0 },
        "template": {"containers": [container]},
        "logUri": "https://console.cloud.google.com/logs/viewer?standin",
        "conditions": [{"type": "Completed", "state": if done { "CONDITION_SUCCEEDED" } else { "CONDITION_PENDING" }}],
    });
    if done {
        e["completionTime"] = json!("2026-12-02T10:01:00Z");
    }
    e
}

async fn answer(req: hyper::Request<Incoming>, recorded: &Mutex<Vec<Seen>>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(ToString::to_string).unwrap_or_default(),
        authorization: header("authorization"),
        metadata_flavor: header("metadata-flavor"),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    recorded.lock().expect("lock").push(seen.clone());
    let path = parts.uri.path();
    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if seen.metadata_flavor.as_deref() != Some("Google") {
            return error(403, "Missing Metadata-Flavor:Google header");
        }
        return reply(200, &json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}));
    }
    if seen.authorization.as_deref() != Some(&format!("Bearer {ACCESS_TOKEN}")) {
        return error(401, "Request had invalid authentication credentials.");
    }
    // /v2/projects/P/locations/R/jobs/J:run | …/jobs/J/executions[/ID]
    let Some(rest) = path.strip_prefix("/v2/") else { return error(404, "not found") };
    let Some((project_region, job_part)) = rest.split_once("/jobs/") else { return error(404, "not found") };
    let known = ["db-backup", "storage-backup", "prune", "restore"];
    if let Some(job) = job_part.strip_suffix(":run") {
        if parts.method != http::Method::POST || !known.contains(&job) {
            return error(404, &format!("Resource '{job}' of kind 'JOB' does not exist."));
        }
        let overrides = &seen.body["overrides"]["containerOverrides"];
        let Some(container) = overrides.get(0).filter(|_| overrides.as_array().is_some_and(|a| a.len() == 1)) else {
            return error(400, "exactly one container override expected");
        };
        let id = format!("{job}-{}", &uuid::Uuid::new_v4().simple().to_string()[..5]);
        return reply(
            200,
            &json!({
                "name": format!("{project_region}/operations/{}", uuid::Uuid::new_v4()),
                "metadata": execution(project_region, job, &id, container, false),
            }),
        );
    }
    let segments: Vec<&str> = job_part.split('/').collect();
    match segments.as_slice() {
        [job, "executions"] if known.contains(job) => {
            let list: Vec<Value> = recorded
                .lock()
                .expect("lock")
                .iter()
                .filter(|s| s.path.ends_with(&format!("/jobs/{job}:run")))
                .enumerate()
                .map(|(i, s)| {
                    execution(
                        project_region,
                        job,
                        &format!("{job}-run{i}"),
                        &s.body["overrides"]["containerOverrides"][0],
                        true,
                    )
                })
                .collect();
            reply(200, &json!({ "executions": list }))
        }
        [job, "executions", id] if known.contains(job) => {
            reply(200, &execution(project_region, job, id, &json!({}), true))
        }
        _ => error(404, "not found"),
    }
}

/// The `console` binary "on Cloud Run" (`K_SERVICE` set) against the stand-in: its identities
/// come from the (unsigned, as Cloud Run forwards them) ID tokens.
pub async fn cloud_console(home: &Path, api: &RunApi, vars: &[(&str, &str)]) -> Service {
    // On Cloud Run the backup store is a bucket: a fresh one on the stack's fake-gcs-server.
    let store = super::gcs::gcs_store_with(8 << 20, "").await;
    let mut c = command("console", home);
    c.env("LIFEBOAT_DESTINATION", store.location().to_string())
        .env("STORAGE_EMULATOR_HOST", super::require_env("STORAGE_EMULATOR_HOST"))
        .env("K_SERVICE", "console")
        // The Pub/Sub emulator's project, so that the audit events can be pulled back.
        .env("GOOGLE_CLOUD_PROJECT", "lifeboat-local")
        .env("LIFEBOAT_REGION", "europe-west1")
        .env("LIFEBOAT_RUN_API_URL", &api.url)
        .env("GCE_METADATA_HOST", &api.host)
        .envs(vars.iter().copied());
    Service::start(c).await
}
