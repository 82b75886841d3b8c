//! Logging: JSON for Cloud Logging (severity, message, fields) on Cloud Run, readable text elsewhere.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::Env;

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
pub fn init(env: &Env) {
    let filter = EnvFilter::try_new(env.get("RUST_LOG").unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info"));
    if env.on_cloud_run() {
        let _ = tracing_subscriber::registry().with(filter).with(tracing_stackdriver::layer()).try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    }
}
