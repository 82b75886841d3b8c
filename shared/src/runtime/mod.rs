//! The dual-mode runtime every binary uses: [`main`] reads the command line and the environment
//! ([`cli`]), connects the [`Services`], builds the program, then runs it once (`job`) or
//! serves it over HTTP (`server`).
//!
//! - Job mode (`--once`, or `CLOUD_RUN_JOB` set): run once, publish the result, exit 0 on
//!   success, 1 on failure, 2 on bad configuration. SIGTERM/SIGINT cancel the run.
//! - Service mode (`PORT` set): `GET /healthz`, `POST /run` (authenticated), the program's own
//!   routes; SIGTERM stops the server gracefully.

pub mod auth;
pub mod cli;
pub mod http;
mod job;
pub mod logging;
mod program;
pub mod progress;
pub mod push;
mod server;
mod services;
mod signal;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

pub use self::cli::{Args, Invocation, Mode, ProgramSpec, configure};
pub use self::program::{Program, RunContext, Trigger};
pub use self::server::{App, MAX_BODY_BYTES, serve};
pub use self::services::{Services, StartError, publish};
pub use self::signal::shutdown_signal;
use tracing::Instrument as _;

use crate::config::{Env, Reader};

/// The span a run (and the report of its result) executes in: see
/// [`crate::notify::sentry::RUN_SPAN`].
pub fn run_span(spec: &ProgramSpec) -> tracing::Span {
    tracing::info_span!("run", program = spec.name)
}

/// The whole life of a binary: configuration, logging, mode, exit code. `main` calls only this,
/// with the program's declaration, its `read` (settings from the parsed command line `A` and
/// the environment) and its `start` (the program from its services and settings).
pub fn main<A, C, P, Fut>(
    spec: &'static ProgramSpec,
    read: fn(&mut Reader<'_>, Option<A>) -> Option<C>,
    start: fn(Services, C) -> Fut,
) -> ExitCode
where
    A: clap::Parser,
    P: Program,
    Fut: Future<Output = Result<P, StartError>>,
{
    let env = Env::from_process();
    self::logging::init(&env);
    let (mode, common, config) = match configure(spec, std::env::args_os().skip(1), &env, read) {
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
    // Held until `main` returns: dropping it flushes the reports still queued.
    let _reporting = common
        .sentry_dsn
        .as_ref()
        .and_then(|dsn| crate::notify::sentry::init(dsn, crate::notify::sentry::scrubber(&env, &spec.all_vars())));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let publisher = match services::connect_publisher(&common, &env).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot connect to the results topic");
                return ExitCode::FAILURE;
            }
        };
        let started = async {
            let store = crate::store::open(&common.destination, &env, common.upload_chunk_bytes, &common.net).await?;
            let state = if common.state_destination == common.destination {
                store.clone()
            } else {
                crate::store::open(&common.state_destination, &env, common.upload_chunk_bytes, &common.net).await?
            };
            let services = Services::new(env, common.clone(), store, publisher.clone()).with_state(state);
            let program = start(services.clone(), config).await?;
            Ok::<_, StartError>((services, Arc::new(program)))
        };
        let (services, program) = match started.await {
            Ok(built) => built,
            Err(e) => {
                let report = services::publish_start_failure(spec.name, &common, &*publisher, &e);
                crate::notify::sentry::RunScope::new().bind(report).instrument(run_span(spec)).await;
                return ExitCode::FAILURE;
            }
        };
        match mode {
            Mode::Job => job::run(spec, program, &services).await,
            Mode::Service(port) => server::listen(spec, program, services, port).await,
        }
    })
}
