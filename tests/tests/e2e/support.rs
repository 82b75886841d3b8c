//! Shared fixtures: service endpoints from the environment (set by `infra/stack-up.sh`),
//! unique names, stores in temp dirs and fresh emulator buckets.

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
