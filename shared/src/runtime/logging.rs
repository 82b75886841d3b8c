//! Logging: JSON for Cloud Logging (severity, message, fields) on Cloud Run, readable text elsewhere.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::Env;

/// Installs the global subscriber once; later calls are no-ops (tests call it freely). With
/// `SENTRY_DSN` set, log lines also feed Sentry ([`crate::notify::sentry::layer`]; inert until
/// the client is started, after the configuration is read).
pub fn init(env: &Env) {
    let filter = EnvFilter::try_new(env.get("RUST_LOG").unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info"));
    let sentry = env.get(crate::config::vars::SENTRY_DSN.name).is_some();
    if env.on_cloud_run() {
        let sentry = sentry.then(crate::notify::sentry::layer);
        let _ = tracing_subscriber::registry().with(filter).with(tracing_stackdriver::layer()).with(sentry).try_init();
    } else {
        let sentry = sentry.then(crate::notify::sentry::layer);
        let text = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
        let _ = tracing_subscriber::registry().with(filter).with(text).with(sentry).try_init();
    }
}
