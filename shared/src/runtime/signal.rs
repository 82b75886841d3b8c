//! Termination: Cloud Run sends SIGTERM, then SIGKILL 10 s later.

use std::time::Duration;

/// How long a cancelled run (job mode) or open connections (service mode) get after a
/// termination signal: within Cloud Run's 10 s, with room to publish the result.
pub const CANCEL_GRACE: Duration = Duration::from_secs(8);

/// Waits for SIGTERM or SIGINT. The SIGTERM handler is installed when this is called, not when
/// the future is first polled: a signal that arrives between the call and the first poll (a
/// server that accepted a connection first, on a loaded machine) is caught, never fatal.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! { () = ctrl_c => {}, () = term => {} }
    }
}
