//! Service mode: a hyper server. `GET /healthz` answers liveness; `POST /run` runs the same code
//! path as job mode and answers the result as JSON (200 or 500); a second `POST /run` while one
//! is in progress gets 409.
//!
//! Every request is admitted on its head alone, before a byte of its body is read
//! ([`App::admit`]): the route's rule ([`Program::access`]; `POST /run` is the scheduler's) and
//! the caller from the headers ([`crate::runtime::auth`]) give 401 (no or unusable credentials)
//! or 403 (a known caller on the wrong route), so an anonymous 5 MB POST costs us nothing but
//! its head. Admitted bodies are limited to [`MAX_BODY_BYTES`] (413). The server listens on
//! `LIFEBOAT_BIND` (127.0.0.1 off Cloud Run, 0.0.0.0 on it). SIGTERM stops the server
//! gracefully: no new connections, open ones drained within [`CANCEL_GRACE`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use ::http::{Method, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::auth::{Access, AuthError, Caller, Role};
use super::cli::ProgramSpec;
use super::http::{HttpRequest, HttpResponse};
use super::program::{Program, RunContext, Trigger};
use super::services::{Services, publish};
use super::signal::{CANCEL_GRACE, shutdown_signal};
use crate::core::events::Outcome;
use crate::notify::sentry::RunScope;

/// Largest request body accepted (Pub/Sub push envelopes are far smaller).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Serves `program` on `LIFEBOAT_BIND` at `port` until a termination signal.
pub(super) async fn listen<P: Program>(
    spec: &'static ProgramSpec,
    program: Arc<P>,
    services: Services,
    port: u16,
) -> ExitCode {
    let ip = services.common.auth.bind.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let addr = SocketAddr::new(ip, port);
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    serve(listener, App::new(spec, program, services), shutdown_signal()).await;
    ExitCode::SUCCESS
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

    /// Decides on a request from its head alone: the route's rule, then the caller. Refusals
    /// are answered here, before the body is read.
    pub fn admit(&self, method: &Method, path: &str, headers: &::http::HeaderMap) -> Result<Caller, HttpResponse> {
        let access = match (method, path) {
            (_, "/healthz") => Access::Public,
            (&Method::POST, "/run") => Access::Role(Role::Scheduler),
            _ => self.program.access(method, path),
        };
        self.services.common.auth.admit(headers, access).map_err(|e| {
            let status = if e.is_forbidden() { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
            tracing::warn!(%method, path, reason = %e, "refused request");
            refusal(status, &e)
        })
    }

    /// Handles one admitted request (public so tests can drive it without a socket).
    pub async fn handle(&self, request: HttpRequest) -> HttpResponse {
        let route = (request.method.clone(), request.path.as_str());
        if route == (Method::GET, "/healthz") {
            return HttpResponse::json(StatusCode::OK, &serde_json::json!({"status": "ok", "program": self.spec.name}));
        }
        if request.caller != Caller::Anonymous {
            tracing::debug!(caller = request.caller.name(), path = request.path, "admitted");
        }
        if route == (Method::POST, "/run") {
            let Ok(_guard) = self.running.try_lock() else {
                return HttpResponse::error(StatusCode::CONFLICT, "a run is already in progress");
            };
            let mut ctx = RunContext::new(Trigger::Http);
            ctx.cancel = self.cancel.child_token();
            let run = async {
                let result = self.program.run(ctx).await;
                publish(&*self.services.publisher, result).await
            };
            let event = RunScope::new().bind(run).instrument(super::run_span(self.spec)).await;
            let status =
                if event.data.outcome == Outcome::Failure { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
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

/// A 401/403 answer. A 401 says how to authenticate (`WWW-Authenticate`, RFC 9110); the
/// connection is closed, since the unread body would otherwise have to be drained first.
fn refusal(status: StatusCode, e: &AuthError) -> HttpResponse {
    let mut resp = HttpResponse::error(status, e);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers.push(("www-authenticate", "Bearer".to_owned()));
    }
    resp.headers.push(("connection", "close".to_owned()));
    resp
}

/// Admits the request on its head, then reads its (size-limited) body.
async fn to_request<P: Program>(app: &App<P>, req: hyper::Request<Incoming>) -> Result<HttpRequest, HttpResponse> {
    let (parts, body) = req.into_parts();
    let caller = app.admit(&parts.method, parts.uri.path(), &parts.headers)?;
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
        caller,
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
                        let resp = match to_request(&app, req).await {
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
