//! Job mode: run once, publish the result, exit 0 on success and 1 on failure. SIGTERM/SIGINT
//! cancel the run, which then fails cleanly within [`CANCEL_GRACE`] (no manifest is written by
//! a cancelled run).

use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument as _;

use super::cli::ProgramSpec;
use super::program::{Program, RunContext, Trigger};
use super::services::{Services, publish};
use super::signal::{CANCEL_GRACE, shutdown_signal};
use crate::core::events::Outcome;
use crate::notify::sentry::RunScope;

/// Why a run gave no result.
#[derive(Debug, thiserror::Error)]
enum Unfinished {
    /// It panicked (or was aborted).
    #[error(transparent)]
    Crashed(#[from] tokio::task::JoinError),
    /// It ignored the cancellation.
    #[error("it did not stop within the grace period after a termination signal")]
    Overran,
}

/// Runs `program` once and publishes its result; the exit code says whether it succeeded.
pub(super) async fn run<P: Program>(spec: &ProgramSpec, program: Arc<P>, services: &Services) -> ExitCode {
    let scope = RunScope::new();
    scope.bind(run_in_scope(spec, program, services, scope.clone())).instrument(super::run_span(spec)).await
}

async fn run_in_scope<P: Program>(
    spec: &ProgramSpec,
    program: Arc<P>,
    services: &Services,
    scope: RunScope,
) -> ExitCode {
    let ctx = RunContext::new(Trigger::Job);
    let (started, cancel) = (ctx.started, ctx.cancel.clone());
    tracing::info!(program = spec.name, "job started");
    // Catch SIGTERM from here on (the handler is installed by this call).
    let shutdown = shutdown_signal();
    let mut run = tokio::spawn(scope.bind(async move { program.run(ctx).await }.in_current_span()));
    let finished = tokio::select! {
        r = &mut run => r.map_err(Unfinished::from),
        () = shutdown => {
            tracing::warn!("termination signal: cancelling the run");
            cancel.cancel();
            match tokio::time::timeout(CANCEL_GRACE, &mut run).await {
                Ok(r) => r.map_err(Unfinished::from),
                Err(_) => {
                    run.abort();
                    Err(Unfinished::Overran)
                }
            }
        }
    };
    let mut result = match finished {
        Ok(r) => r,
        Err(e) => {
            let mut r = services.result(spec.name, started).failed(format!("{} did not finish: {e}", spec.name));
            r.finished_at = Utc::now();
            r
        }
    };
    if cancel.is_cancelled() && result.outcome != Outcome::Failure {
        result.outcome = Outcome::Failure;
        result.summary = format!("interrupted by a termination signal: {}", result.summary);
    }
    let failed = result.outcome == Outcome::Failure;
    let summary = result.summary.clone();
    publish(&*services.publisher, result).await;
    if failed {
        tracing::error!(summary, "job failed");
        ExitCode::FAILURE
    } else {
        tracing::info!(summary, "job succeeded");
        ExitCode::SUCCESS
    }
}
