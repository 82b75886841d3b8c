//! The dual-mode runtime every binary uses.
//!
//! - Job mode (`CLOUD_RUN_JOB` set, or `--once`): run once, publish the result, exit 0 on
//!   success, 1 on failure, 2 on bad configuration. SIGTERM/SIGINT cancel the run, which then
//!   fails cleanly (no manifest is written by a cancelled run).
//! - Service mode (`PORT` set): a hyper server. `GET /healthz` answers liveness; `POST /run` runs
//!   the same code path as job mode and answers the result as JSON (200 or 500); a second
//!   `POST /run` while one is in progress gets 409. Every POST needs credentials (401 without,
//!   403 for an identity not on the allow-list). SIGTERM stops the server gracefully.

pub mod auth;
pub mod http;
pub mod logging;
pub mod push;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ::http::{Method, StatusCode};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::http::{HttpRequest, HttpResponse};
use crate::config::{Common, ConfigError, Env, Reader, Var, describe_vars};
use crate::core::events::{Event, Outcome, RunResult, SCHEMA_VERSION};
use crate::notify::publisher::{LogPublisher, PubSubPublisher, PublishError, Publisher};
use crate::store::DynStore;

/// Largest request body accepted (Pub/Sub push envelopes are far smaller).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What a binary is: name, purpose, usage and the variables it reads.
#[derive(Debug)]
pub struct ProgramSpec {
    /// Binary name.
    pub name: &'static str,
    /// One paragraph on what it does.
    pub about: &'static str,
    /// Command-line usage beyond the runtime's own flags (may be empty).
    pub usage: &'static str,
    /// The variable groups it reads (the common group is added by the runtime).
    pub vars: &'static [&'static [&'static Var]],
}

impl ProgramSpec {
    /// Every variable this program reads, common ones first.
    pub fn all_vars(&self) -> Vec<&'static Var> {
        let mut out: Vec<&'static Var> = crate::config::vars::COMMON.to_vec();
        for group in self.vars {
            for v in *group {
                if !out.iter().any(|o| o.name == v.name) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// The `--help` text.
    pub fn help(&self) -> String {
        let usage = if self.usage.is_empty() { String::new() } else { format!("\n{}\n", self.usage.trim_end()) };
        format!(
            "{name} — {about}\n\nUsage: {name} [--once] [OPTIONS]\n\n  --once       run once and exit (job mode; implied when CLOUD_RUN_JOB is set)\n  --help       print this help\n  --version    print the version\n\nWith PORT set (and no --once) it serves HTTP: GET /healthz, POST /run.\nExit codes: 0 success, 1 failure, 2 bad configuration.\n{usage}\nEnvironment variables:\n{vars}",
            name = self.name,
            about = self.about,
            vars = describe_vars(&self.all_vars()),
        )
    }
}

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

    /// Extra routes (`None` = not mine). POST routes are authenticated before they get here.
    async fn route(&self, _request: &HttpRequest) -> Option<HttpResponse> {
        None
    }
}

/// The services a program is built from.
#[derive(Debug, Clone)]
pub struct Services {
    /// The environment snapshot.
    pub env: Env,
    /// Shared settings.
    pub common: Common,
    /// The backup store.
    pub store: DynStore,
    /// Where result events go.
    pub publisher: Arc<dyn Publisher>,
}

impl Services {
    /// A result skeleton for `program`, started at `started`.
    pub fn result(&self, program: &str, started: DateTime<Utc>) -> RunResult {
        RunResult {
            schema_version: SCHEMA_VERSION,
            program: program.to_owned(),
            source: self.common.source.clone(),
            outcome: Outcome::Success,
            summary: String::new(),
            started_at: started,
            finished_at: started,
            destination: self.common.destination.to_string(),
            items: Vec::new(),
            figures: Default::default(),
        }
    }
}

/// A start-up failure (after configuration was valid): unreachable store, Pub/Sub, etc.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl From<crate::store::StoreError> for StartError {
    fn from(e: crate::store::StoreError) -> Self {
        Self(e.to_string())
    }
}

impl From<PublishError> for StartError {
    fn from(e: PublishError) -> Self {
        Self(e.to_string())
    }
}

/// How the binary was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Once, then exit.
    Job,
    /// Serve HTTP on this port.
    Service(u16),
}

/// The outcome of reading arguments and environment.
#[derive(Debug)]
pub enum Invocation<C> {
    /// Print this and exit 0.
    Print(String),
    /// Run.
    Run {
        /// Mode.
        mode: Mode,
        /// Shared settings.
        common: Common,
        /// Program settings.
        config: C,
    },
}

/// Reads arguments and environment; every problem is reported at once.
pub fn configure<C>(
    spec: &ProgramSpec,
    args: &[String],
    env: &Env,
    read: fn(&mut Reader<'_>, &[String]) -> Option<C>,
) -> Result<Invocation<C>, ConfigError> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Invocation::Print(spec.help()));
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        return Ok(Invocation::Print(format!("{} {}\n", spec.name, env!("CARGO_PKG_VERSION"))));
    }
    let once = args.iter().any(|a| a == "--once");
    let rest: Vec<String> = args.iter().filter(|a| *a != "--once").cloned().collect();
    let mut r = Reader::new(env);
    let common = Common::read(&mut r);
    let config = read(&mut r, &rest);
    let mode = if once || env.get("CLOUD_RUN_JOB").is_some() {
        Some(Mode::Job)
    } else if let Some(port) = env.get("PORT") {
        match port.parse::<u16>() {
            Ok(p) => Some(Mode::Service(p)),
            Err(_) => {
                r.problem("PORT", format!("{port:?} is not a port number"));
                None
            }
        }
    } else {
        r.problem("mode", "nothing to do: pass --once to run once, or set PORT to serve HTTP");
        None
    };
    r.finish()?;
    match (mode, common, config) {
        (Some(mode), Some(common), Some(config)) => Ok(Invocation::Run { mode, common, config }),
        _ => Err(ConfigError::single("configuration", "could not be read")),
    }
}

/// The whole life of a binary: configuration, logging, mode, exit code. `main` calls only this.
pub fn main<C, P, Fut>(
    spec: &'static ProgramSpec,
    read: fn(&mut Reader<'_>, &[String]) -> Option<C>,
    start: fn(Services, C) -> Fut,
) -> ExitCode
where
    P: Program,
    Fut: Future<Output = Result<P, StartError>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = Env::from_process();
    self::logging::init(&env);
    let (mode, common, config) = match configure(spec, &args, &env, read) {
        Ok(Invocation::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run { mode, common, config }) => (mode, common, config),
        Err(e) => {
            eprintln!("{}: {e}", spec.name);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let publisher = match publisher(&common, &env).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot connect to the results topic");
                return ExitCode::FAILURE;
            }
        };
        let store = match crate::store::open(&common.destination, &env, common.upload_chunk_bytes).await {
            Ok(s) => s,
            Err(e) => {
                return start_failed(spec, &common, &*publisher, &e.to_string()).await;
            }
        };
        let services = Services { env, common: common.clone(), store, publisher: publisher.clone() };
        let program = match start(services.clone(), config).await {
            Ok(p) => Arc::new(p),
            Err(e) => return start_failed(spec, &common, &*publisher, &e.0).await,
        };
        match mode {
            Mode::Job => run_job(spec, program, &*publisher).await,
            Mode::Service(port) => {
                let addr = SocketAddr::from(([0, 0, 0, 0], port));
                let listener = match TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(%addr, error = %e, "cannot listen");
                        return ExitCode::FAILURE;
                    }
                };
                let app = App::new(spec, program, services);
                serve(listener, app, shutdown_signal()).await;
                ExitCode::SUCCESS
            }
        }
    })
}

async fn publisher(common: &Common, env: &Env) -> Result<Arc<dyn Publisher>, StartError> {
    Ok(match &common.results_topic {
        Some(topic) => {
            Arc::new(PubSubPublisher::connect(topic, common.project.as_deref(), env.get("PUBSUB_EMULATOR_HOST")).await?)
        }
        None => Arc::new(LogPublisher),
    })
}

async fn start_failed(spec: &ProgramSpec, common: &Common, publisher: &dyn Publisher, reason: &str) -> ExitCode {
    tracing::error!(error = reason, "start-up failed");
    let now = Utc::now();
    let result = RunResult {
        schema_version: SCHEMA_VERSION,
        program: spec.name.to_owned(),
        source: common.source.clone(),
        outcome: Outcome::Failure,
        summary: format!("{} could not start: {reason}", spec.name),
        started_at: now,
        finished_at: now,
        destination: common.destination.to_string(),
        items: Vec::new(),
        figures: Default::default(),
    };
    publish(publisher, result).await;
    ExitCode::FAILURE
}

/// Publishes a result, logging (not failing) when that is impossible.
pub async fn publish(publisher: &dyn Publisher, result: RunResult) -> Event {
    let event = Event::new(result);
    match publisher.publish(&event).await {
        Ok(id) => {
            tracing::info!(message_id = id, outcome = ?event.data.outcome, summary = event.data.summary, "result published")
        }
        Err(e) => {
            tracing::error!(error = %e, summary = event.data.summary, "could not publish the result event")
        }
    }
    event
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// Cloud Run sends SIGKILL 10 s after SIGTERM; a cancelled run gets this long to clean up.
const CANCEL_GRACE: Duration = Duration::from_secs(8);

async fn run_job<P: Program>(spec: &ProgramSpec, program: Arc<P>, publisher: &dyn Publisher) -> ExitCode {
    let ctx = RunContext::new(Trigger::Job);
    let cancel = ctx.cancel.clone();
    tracing::info!(program = spec.name, "job started");
    let mut run = tokio::spawn({
        let program = program.clone();
        async move { program.run(ctx).await }
    });
    let result: Result<RunResult, String> = tokio::select! {
        r = &mut run => r.map_err(|e| e.to_string()),
        () = shutdown_signal() => {
            tracing::warn!("termination signal: cancelling the run");
            cancel.cancel();
            match tokio::time::timeout(CANCEL_GRACE, &mut run).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => {
                    run.abort();
                    Err("it did not stop within the grace period after a termination signal".to_owned())
                }
            }
        }
    };
    let mut result = match result {
        Ok(r) => r,
        Err(e) => {
            let now = Utc::now();
            RunResult {
                schema_version: SCHEMA_VERSION,
                program: spec.name.to_owned(),
                source: String::from("unknown"),
                outcome: Outcome::Failure,
                summary: format!("{} did not finish: {e}", spec.name),
                started_at: now,
                finished_at: now,
                destination: String::new(),
                items: Vec::new(),
                figures: Default::default(),
            }
        }
    };
    if cancel.is_cancelled() && result.outcome != Outcome::Failure {
        result.outcome = Outcome::Failure;
        result.summary = format!("interrupted by a termination signal: {}", result.summary);
    }
    let failed = result.outcome == Outcome::Failure;
    let summary = result.summary.clone();
    publish(publisher, result).await;
    if failed {
        tracing::error!(summary, "job failed");
        ExitCode::FAILURE
    } else {
        tracing::info!(summary, "job succeeded");
        ExitCode::SUCCESS
    }
}

/// A program served over HTTP.
#[derive(Debug)]
pub struct App<P> {
    spec: &'static ProgramSpec,
    program: Arc<P>,
    services: Services,
    running: tokio::sync::Mutex<()>,
    cancel: CancellationToken,
}

impl<P: Program> App<P> {
    /// Wraps a program.
    pub fn new(spec: &'static ProgramSpec, program: Arc<P>, services: Services) -> Arc<Self> {
        Arc::new(Self {
            spec,
            program,
            services,
            running: tokio::sync::Mutex::new(()),
            cancel: CancellationToken::new(),
        })
    }

    /// Handles one request (public so tests can drive it without a socket).
    pub async fn handle(&self, request: HttpRequest) -> HttpResponse {
        let route = (request.method.clone(), request.path.as_str());
        if route == (Method::GET, "/healthz") {
            return HttpResponse::json(StatusCode::OK, &serde_json::json!({"status": "ok", "program": self.spec.name}));
        }
        if request.method == Method::POST {
            let header = request.headers.get(::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            match self.services.common.auth.authorize(header) {
                Ok(caller) => tracing::debug!(?caller, path = request.path, "authorized"),
                Err(e) => {
                    let status = match e {
                        self::auth::AuthError::Unauthenticated => StatusCode::UNAUTHORIZED,
                        self::auth::AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
                    };
                    tracing::warn!(path = request.path, reason = %e, "refused request");
                    return HttpResponse::error(status, e);
                }
            }
        }
        if route == (Method::POST, "/run") {
            let Ok(_guard) = self.running.try_lock() else {
                return HttpResponse::error(StatusCode::CONFLICT, "a run is already in progress");
            };
            let mut ctx = RunContext::new(Trigger::Http);
            ctx.cancel = self.cancel.child_token();
            let result = self.program.run(ctx).await;
            let status =
                if result.outcome == Outcome::Failure { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
            let event = publish(&*self.services.publisher, result).await;
            return HttpResponse::json(status, &serde_json::to_value(&event.data).unwrap_or_default());
        }
        if let Some(response) = self.program.route(&request).await {
            return response;
        }
        if request.path == "/run" || request.path == "/healthz" {
            return HttpResponse::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {}", request.method, request.path),
            );
        }
        HttpResponse::error(StatusCode::NOT_FOUND, format!("no route for {} {}", request.method, request.path))
    }
}

async fn to_request(req: hyper::Request<Incoming>) -> Result<HttpRequest, HttpResponse> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY_BYTES).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            HttpResponse::error(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {MAX_BODY_BYTES} bytes"))
        } else {
            HttpResponse::error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))
        }
    })?;
    Ok(HttpRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: body.to_bytes(),
    })
}

fn to_hyper(resp: HttpResponse) -> hyper::Response<Full<Bytes>> {
    let mut builder =
        hyper::Response::builder().status(resp.status).header(::http::header::CONTENT_TYPE, resp.content_type);
    for (k, v) in resp.headers {
        builder = builder.header(k, v);
    }
    builder
        .body(Full::new(resp.body))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::from_static(b"internal error"))))
}

/// Serves `app` on `listener` until `shutdown` completes, then drains open connections.
pub async fn serve<P: Program>(listener: TcpListener, app: Arc<App<P>>, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, program = app.spec.name, "serving");
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let app = app.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let app = app.clone();
                    async move {
                        let resp = match to_request(req).await {
                            Ok(r) => app.handle(r).await,
                            Err(resp) => resp,
                        };
                        Ok::<_, Infallible>(to_hyper(resp))
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => {
                tracing::info!("shutting down: no new connections, draining open ones");
                app.cancel.cancel();
                break;
            }
        }
    }
    if tokio::time::timeout(CANCEL_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the grace period");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPEC: ProgramSpec = ProgramSpec { name: "demo", about: "does nothing", usage: "", vars: &[] };

    fn read(_: &mut Reader<'_>, args: &[String]) -> Option<Vec<String>> {
        Some(args.to_vec())
    }

    #[test]
    fn help_lists_every_common_variable() {
        let help = SPEC.help();
        for v in crate::config::vars::COMMON {
            assert!(help.contains(v.name), "{} missing from --help", v.name);
        }
        let Ok(Invocation::Print(p)) = configure(&SPEC, &["--help".into()], &Env::default(), read) else {
            panic!("help")
        };
        assert_eq!(p, help);
    }

    #[test]
    fn modes() {
        let env = Env::from_pairs([("HOME", "/tmp")]);
        let Ok(Invocation::Run { mode, config, .. }) = configure(&SPEC, &["--once".into(), "x".into()], &env, read)
        else {
            panic!("once")
        };
        assert_eq!((mode, config), (Mode::Job, vec!["x".to_owned()]));
        let Ok(Invocation::Run { mode, .. }) = configure(&SPEC, &[], &env.clone().with("CLOUD_RUN_JOB", "j"), read)
        else {
            panic!("job")
        };
        assert_eq!(mode, Mode::Job);
        let Ok(Invocation::Run { mode, .. }) = configure(&SPEC, &[], &env.clone().with("PORT", "8080"), read) else {
            panic!("svc")
        };
        assert_eq!(mode, Mode::Service(8080));
        let err = configure(&SPEC, &[], &env, read).expect_err("no mode");
        assert_eq!(err.problems[0].name, "mode");
    }

    #[test]
    fn config_problems_include_mode_and_variables() {
        let env = Env::from_pairs([("PORT", "eighty"), ("BACKUP_RETENTION_DAYS", "0")]);
        let err = configure(&SPEC, &[], &env, read).expect_err("bad");
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["BACKUP_RETENTION_DAYS", "PORT"]);
    }
}
