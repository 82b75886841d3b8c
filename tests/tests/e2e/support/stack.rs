//! The services a program runs on, built as its binary would build them (configuration read from
//! an environment, every problem reported), over a store the test chooses; and a program served
//! in-process over a real socket.

use std::sync::Arc;

use lifeboat_core::config::{Common, Env, Reader};
use lifeboat_core::notify::publisher::{LogPublisher, Publisher};
use lifeboat_core::runtime::{App, Program, Services, serve};
use lifeboat_core::store::local::LocalStore;
use lifeboat_core::store::{DynStore, Location};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A local store in a fresh temp dir.
pub fn local_store() -> (tempfile::TempDir, DynStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(Location::Local { root: dir.path().to_path_buf() }).expect("open local store");
    (dir, Arc::new(store))
}

/// A local store rooted at `root` (created when missing).
pub fn local_store_at(root: std::path::PathBuf) -> DynStore {
    Arc::new(LocalStore::open(Location::Local { root }).expect("local store"))
}

/// Services over `store`, configured by `env`, results logged (no Pub/Sub).
pub fn services_on(env: &Env, store: DynStore) -> Services {
    services_on_with(env, store, Arc::new(LogPublisher))
}

fn services_on_with(env: &Env, store: DynStore, publisher: Arc<dyn Publisher>) -> Services {
    let mut r = Reader::new(env);
    let common = Common::read(&mut r);
    r.finish().unwrap_or_else(|e| panic!("test configuration: {e}"));
    Services::new(env.clone(), common.expect("common settings"), store, publisher)
}

/// Services over `store`, configured by `vars` on top of the store's location.
pub fn services(store: DynStore, vars: &[(&str, &str)]) -> (Services, Env) {
    services_with(store, vars, Arc::new(LogPublisher))
}

/// [`services`] with a given publisher.
pub fn services_with(store: DynStore, vars: &[(&str, &str)], publisher: Arc<dyn Publisher>) -> (Services, Env) {
    let mut env = Env::from_pairs([("LIFEBOAT_DESTINATION", store.location().to_string())]);
    for (k, v) in vars {
        env = env.with(k, v);
    }
    (services_on_with(&env, store, publisher), env)
}

/// Reads a program's configuration from `env` and its arguments (panics with every problem).
pub fn config<A: clap::Parser, C>(env: &Env, args: &[&str], read: fn(&mut Reader<'_>, Option<A>) -> Option<C>) -> C {
    let mut r = Reader::new(env);
    let cli = A::try_parse_from(std::iter::once("program").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("program arguments {args:?}: {e}"));
    let c = read(&mut r, Some(cli));
    r.finish().unwrap_or_else(|e| panic!("program configuration: {e}"));
    c.expect("config")
}

/// A program served in-process on 127.0.0.1, port 0 (the listener is bound here and handed to
/// the server, so the port is known before anyone connects); stopped when dropped.
#[derive(Debug)]
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client for it.
    pub http: reqwest::Client,
    stop: Arc<Notify>,
    server: Option<JoinHandle<()>>,
}

impl Served {
    /// Serves `app` until [`Served::stop`] or drop.
    pub async fn start<P: Program>(app: Arc<App<P>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let stop = Arc::new(Notify::new());
        let signal = stop.clone();
        let server = tokio::spawn(async move { serve(listener, app, async move { signal.notified().await }).await });
        Self { base, http: reqwest::Client::new(), stop, server: Some(server) }
    }

    /// Asks the server to stop and waits until it has drained its connections (10 s at most).
    pub async fn stop(mut self) {
        self.stop.notify_one();
        let server = self.server.take().expect("running");
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("the server stops within 10 s")
            .expect("server task");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}
