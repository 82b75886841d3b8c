//! Service mode: a hyper server. `GET /healthz` answers liveness; `POST /run` runs the same code
//! path as job mode and answers the result as JSON (200 or 500); a second `POST /run` while one
//! is in progress gets 409. Every POST needs credentials (401 without, 403 for an identity not on
//! the allow-list). Bodies are limited to [`MAX_BODY_BYTES`]. SIGTERM stops the server
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

use super::auth::AuthError;
use super::cli::ProgramSpec;
use super::http::{HttpRequest, HttpResponse};
use super::program::{Program, RunContext, Trigger};
use super::services::{Services, publish};
use super::signal::{CANCEL_GRACE, shutdown_signal};
use crate::core::events::Outcome;
use crate::notify::sentry::RunScope;

/// Largest request body accepted (Pub/Sub push envelopes are far smaller).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Serves `program` on every interface at `port` until a termination signal.
pub(super) async fn listen<P: Program>(
    spec: &'static ProgramSpec,
    program: Arc<P>,
    services: Services,
    port: u16,
) -> ExitCode {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
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
                        AuthError::Unauthenticated => StatusCode::UNAUTHORIZED,
                        AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
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
