//! Termination: Cloud Run sends SIGTERM, then SIGKILL 10 s later.

use std::time::Duration;

/// How long a cancelled run (job mode) or open connections (service mode) get after a
/// termination signal: within Cloud Run's 10 s, with room to publish the result.
pub const CANCEL_GRACE: Duration = Duration::from_secs(8);

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
