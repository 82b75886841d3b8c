//! Fixtures of the e2e tests, one module per kind; the tests themselves are in one module per
//! program (`db_backup`, `storage_backup`, `restore`, `prune`, `health`, `monitor`) and a few
//! cross-cutting ones (`runtime`, `events`, `store_conformance`).
//!
//! - [`stack`]: the services a program runs on (environment, stores) and serving it in-process.
//! - [`postgres`]: the stack's PostgreSQL server, throwaway databases, a password-protected cluster.
//! - [`db`]: `db-backup` and `restore` run in-process, and what they left in the store.
//! - [`gcs`]: buckets on the stack's fake-gcs-server; a private one behind a proxy that fails on cue.
//! - [`buckets`]: bucket contents written, read back, snapshotted and restored.
//! - [`fake_backups`]: small but real backups written through the store API.
//! - [`pubsub`]: topics and subscriptions on the Pub/Sub emulator.
//! - [`slack`]: the Slack stand-in.
//! - [`sentry`]: the Sentry stand-in (envelopes).
//! - [`binaries`]: the programs' real binaries, run with a clean environment.
//! - [`browser`]: headless Chromium through chromedriver (WebDriver).
//! - [`console`]: the `console` binary, and a stand-in of the Cloud Run Admin API.
//! - [`counting`]: a real store whose requests are counted (request budgets of readers).
//!
//! Every server a test starts binds port 0 (or a Unix socket) and the port is read back, so tests
//! running at the same time never race for a port.

pub mod binaries;
pub mod browser;
pub mod buckets;
pub mod console;
pub mod counting;
pub mod db;
pub mod fake_backups;
pub mod gcs;
pub mod postgres;
pub mod pubsub;
pub mod sentry;
pub mod slack;
pub mod stack;

/// A variable the local stack sets. Missing means the stack is not running: fail, never skip.
pub fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need the local stack. Run `eval \"$(infra/stack-up.sh)\"` first \
             (infra/test.sh does it for you)."
        ),
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A port on 127.0.0.1 that nothing listens on, for as long as the returned socket lives: it is
/// bound (so no one else can take it) but never listens, so connecting is refused.
pub fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1:0");
    let port = socket.local_addr().expect("bound address").port();
    (socket, port)
}
