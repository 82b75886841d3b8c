//! `storage-backup`: bucket snapshots against real stores, fake-gcs-server (the shared one, and a
//! private one for the test that stops it) and the local directory store; the program in-process
//! and its binary as sharded Cloud Run tasks. Restoring a snapshot is tested in `restore`; the
//! round trips here restore to prove a snapshot holds what the bucket held.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use lifeboat_core::bucket::backup::{HeaderState, SnapshotObserver, SnapshotSettings, take_snapshot};
use lifeboat_core::bucket::read::{self, Selector};
use lifeboat_core::bucket::{SnapshotError, part_summary_key};
use lifeboat_core::config::Env;
use lifeboat_core::core::events::{Outcome, RunResult};
use lifeboat_core::core::naming::{SUSPICIOUS_METADATA, SnapshotPath};
use lifeboat_core::core::snapshot_manifest::{SnapshotEntry, SnapshotHeader, part_key};
use lifeboat_core::programs::storage_backup;
use lifeboat_core::runtime::{Program, RunContext, Trigger};
use lifeboat_core::store::{DynStore, Location, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions};
use tokio_util::sync::CancellationToken;

use crate::support::binaries::job;
use crate::support::buckets::{
    CHUNK, bucket_of, capture, gcs_bucket, overwrite, put, request, restore, run_id, settings, snap, source_and_backup,
    source_of, typed, written,
};
use crate::support::gcs::{Backend, CountingProxy, PrivateGcs, fresh_bucket_as_deployed, shared};
use crate::support::stack::{config, local_store_at, services_on};
use crate::support::unique;

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
    let (src, backup, source) = source_and_backup().await;
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
    let (src, backup, source) = source_and_backup().await;
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

/// Requests per object, counted at a real HTTP proxy in front of the emulator, with both stores
/// opened as the program opens them: exactly one request (the create-only copy) per object whose
/// content is not known from the previous snapshot, none per unchanged object, never a lookup
/// or metadata read of one object; the rest (listing pages, the previous snapshot, the part,
/// summary and header) does not grow with the object count.
#[tokio::test]
async fn one_request_per_new_blob_and_none_per_unchanged_object() {
    const OBJECTS: usize = 150;
    const FIXED: usize = 12; // an upper bound on what a run asks besides copies
    let proxy = CountingProxy::start(&crate::support::require_env("STORAGE_EMULATOR_HOST")).await;
    let src: DynStore = Arc::new(fresh_bucket_as_deployed(&proxy.url, "").await);
    let backup: DynStore = Arc::new(fresh_bucket_as_deployed(&proxy.url, "lifeboat/backups").await);
    let source = source_of(&src);
    for i in 0..OBJECTS {
        put(&*src, &format!("o/{i:04}"), format!("object number {i}").as_bytes(), PutOptions::default()).await;
    }
    let count = |what: &str, copies: usize| {
        let requests = proxy.requests();
        let rewrites = requests.iter().filter(|r| r.is_rewrite()).count();
        let stats: Vec<_> = requests.iter().filter(|r| r.is_stat()).collect();
        assert_eq!(rewrites, copies, "{what}: copies");
        assert!(stats.is_empty(), "{what}: no object is looked up: {stats:?}");
        assert!(requests.iter().filter(|r| r.is_rewrite()).all(|r| r.has_param("ifGenerationMatch", "0")));
        let lists = requests.iter().filter(|r| r.is_list()).count();
        assert!(lists >= 1, "{what}: the source was listed");
        let other = requests.len() - rewrites;
        assert!(other <= FIXED, "{what}: {other} requests besides copies: {requests:#?}");
        eprintln!("{what}: {rewrites} copies, {other} other requests ({lists} listing pages)");
    };

    proxy.reset();
    let first = snap(&backup, &source, &run_id(1), &settings(16)).await;
    assert_eq!(written(&first).totals.new_objects, OBJECTS as u64);
    count("first snapshot", OBJECTS);

    proxy.reset();
    let unchanged = snap(&backup, &source, &run_id(2), &settings(16)).await;
    assert_eq!((written(&unchanged).totals.new_objects, unchanged.known), (0, OBJECTS as u64));
    count("unchanged", 0);

    // Three rewritten, one added, one new name for known content: five copies (the last one
    // finds its blob stored on GCS; fake-gcs-server replaces it with the same bytes).
    for i in [3, 70, 140] {
        overwrite(&*src, &format!("o/{i:04}"), format!("rewritten {i}").as_bytes(), PutOptions::default()).await;
    }
    put(&*src, "p/added", b"added", PutOptions::default()).await;
    put(&*src, "p/same-as-5", b"object number 5", PutOptions::default()).await;
    proxy.reset();
    let changed = snap(&backup, &source, &run_id(3), &settings(16)).await;
    let h = written(&changed);
    assert_eq!((h.totals.objects, changed.known, changed.copy_attempts), (OBJECTS as u64 + 2, OBJECTS as u64 - 3, 5));
    count("1 % changed", 5);

    let target = gcs_bucket().await;
    let (report, _) = restore(&backup, &*target, &request(&source.spec.bucket, Selector::Latest)).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(capture(&*target, "").await, capture(&*src, "").await);
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
/// its new generation and counted; neither fails the snapshot. Against a backup store that
/// checks the copy's source precondition (as GCS does, here by a lookup), and against one as
/// deployed, which fake-gcs-server lets copy the rewritten bytes: the snapshot's check of each
/// copy against the listing finds other bytes under the listed content's name, removes them and
/// copies the new generation.
#[tokio::test]
async fn objects_deleted_or_rewritten_mid_run_are_counted_not_fatal() {
    let (src, backup, source) = source_and_backup().await;
    deleted_or_rewritten_mid_run(src, backup, source).await;
    let (src, _, source) = source_and_backup().await;
    let endpoint = crate::support::require_env("STORAGE_EMULATOR_HOST");
    let as_deployed: DynStore = Arc::new(fresh_bucket_as_deployed(&endpoint, "lifeboat/backups").await);
    deleted_or_rewritten_mid_run(src, as_deployed.clone(), source).await;
    let blobs: Vec<ObjectMeta> = as_deployed.list_all("").try_collect().await.expect("list");
    let blobs: Vec<_> = blobs.iter().filter(|o| o.key.contains("/blobs/")).collect();
    assert_eq!(blobs.len(), 4, "no blob of the listed content with the rewritten bytes is left: {blobs:#?}");
}

async fn deleted_or_rewritten_mid_run(src: DynStore, backup: DynStore, source: lifeboat_core::bucket::backup::Source) {
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

/// A snapshot after a first one lists the source in key ranges split at the first one's names,
/// several at once (`startOffset`/`endOffset`), and still records exactly what the bucket holds:
/// objects added before the first split key, around split keys and after the last one, a split
/// key deleted, objects rewritten.
#[tokio::test]
async fn a_listing_split_at_the_previous_snapshot_misses_nothing() {
    let proxy = CountingProxy::start(&crate::support::require_env("STORAGE_EMULATOR_HOST")).await;
    let src: DynStore = Arc::new(fresh_bucket_as_deployed(&proxy.url, "").await);
    let backup: DynStore = Arc::new(fresh_bucket_as_deployed(&proxy.url, "lifeboat/backups").await);
    let source = source_of(&src);
    for i in 0..120 {
        put(&*src, &format!("o/{:05}", i * 10), format!("object {i}").as_bytes(), PutOptions::default()).await;
    }
    // A split key every 10 entries: o/00090, o/00190, …, o/01190.
    let ranged = SnapshotSettings { range_objects: 10, ..settings(8) };
    proxy.reset();
    let first = snap(&backup, &source, &run_id(1), &ranged).await;
    assert_eq!(written(&first).totals.objects, 120);
    assert!(
        proxy.requests().iter().filter(|r| r.is_list()).all(|r| !r.query.contains("Offset=")),
        "nothing to split the first listing at"
    );

    assert!(src.delete("o/00190").await.expect("delete a split key"));
    for k in ["a/before-everything", "o/00089", "o/00091", "o/00190x", "o/01191", "z/after-everything"] {
        put(&*src, k, format!("added {k}").as_bytes(), PutOptions::default()).await;
    }
    overwrite(&*src, "o/00500", b"rewritten", PutOptions::default()).await;
    proxy.reset();
    let second = snap(&backup, &source, &run_id(2), &ranged).await;
    let lists: Vec<_> =
        proxy.requests().into_iter().filter(|r| r.is_list() && r.path.contains(&source.spec.bucket)).collect();
    let ranges = lists.iter().filter(|r| r.query.contains("startOffset=") || r.query.contains("endOffset=")).count();
    assert_eq!(ranges, 13, "12 split keys make 13 ranges: {lists:#?}");
    assert_eq!((written(&second).totals.objects, written(&second).totals.new_objects), (125, 7));

    let (_, entries) = newest_entries(&*backup, &source.spec.bucket).await;
    let listed: Vec<ObjectMeta> = src.list_all("").try_collect().await.expect("list");
    let by_name = |e: &SnapshotEntry| (e.name.clone(), e.size, e.md5.clone());
    let by_key = |o: &ObjectMeta| (o.key.clone(), o.size, o.md5.clone());
    assert_eq!(entries.iter().map(by_name).collect::<Vec<_>>(), listed.iter().map(by_key).collect::<Vec<_>>());
    let target = gcs_bucket().await;
    let (report, _) = restore(&backup, &*target, &request(&source.spec.bucket, Selector::Latest)).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(capture(&*target, "").await, capture(&*src, "").await);
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
    let gcs = PrivateGcs::start(Backend::Filesystem).await;
    let src: DynStore = Arc::new(gcs.store("stop-source", "", CHUNK).await);
    let backup: DynStore = Arc::new(gcs.store("stop-backup", "", CHUNK).await);
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
    gcs.restart().await;
    let backup: DynStore = Arc::new(gcs.store("stop-backup", "", CHUNK).await);
    let path = SnapshotPath { bucket: "stop-source".into(), run: run_id(1) };
    for key in [path.header_key(), part_key(&path, 0, 1), part_summary_key(&path, 0, 1)] {
        assert!(backup.stat(&key).await.expect_err("absent").is_not_found(), "{key} exists after a failed run");
    }
    let snapshots = read::list_snapshots(&*backup, "stop-source").await.expect("list");
    assert!(snapshots.iter().all(|s| !s.complete));
}

/// The all entries of the newest complete snapshot of `bucket`.
async fn newest_entries(backup: &dyn ObjectStore, bucket: &str) -> (SnapshotHeader, Vec<SnapshotEntry>) {
    let (path, header) = read::find(backup, bucket, &Selector::Latest).await.expect("a complete snapshot");
    let entries = read::entries(backup, &path, &header).try_collect().await.expect("entries");
    (header, entries)
}

/// The `storage-backup` binary in job mode, snapshotting `source_bucket` into `destination`.
fn storage_backup_binary(destination: &str, source_bucket: &str) -> std::process::Command {
    let mut c = job("storage-backup", &std::env::temp_dir(), destination);
    c.env("SOURCE_BUCKETS", source_bucket).env("RUST_LOG", "warn");
    c
}

/// Issue 11: the snapshot-id claim of a sharded execution (the only object storage-backup ever
/// needed to write besides the snapshot) goes to `LIFEBOAT_STATE_DESTINATION`; the backup bucket,
/// write-once under its retention policy, receives snapshots and blobs only.
#[tokio::test]
async fn the_execution_claim_goes_to_the_state_destination() {
    let src = gcs_bucket().await;
    let bucket = bucket_of(&*src);
    for i in 0..20 {
        put(&*src, &format!("f/{i:02}"), format!("content {i}").as_bytes(), typed("text/plain")).await;
    }
    let backup = gcs_bucket().await;
    let state = gcs_bucket().await;
    let execution = unique("storage-backup-exec");
    let tasks: Vec<_> = (0..2)
        .map(|i| {
            storage_backup_binary(&backup.location().to_string(), &bucket)
                .env("LIFEBOAT_STATE_DESTINATION", state.location().to_string())
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
    let snapshots = read::list_snapshots(&*backup, &bucket).await.expect("list");
    assert_eq!(snapshots.len(), 1, "both tasks shared the claimed snapshot id");
    assert!(snapshots[0].complete);
    let in_backup: Vec<String> = backup.list_all("").map_ok(|o| o.key).try_collect().await.expect("list backup");
    let (snapshots_prefix, blobs_prefix) = (SnapshotPath::series_prefix(&bucket), SnapshotPath::blobs_prefix(&bucket));
    assert!(
        in_backup.iter().all(|k| k.starts_with(&snapshots_prefix) || k.starts_with(&blobs_prefix)),
        "only snapshots and blobs in the backup bucket: {in_backup:?}"
    );
    let in_state: Vec<String> = state.list_all("").map_ok(|o| o.key).try_collect().await.expect("list state");
    assert_eq!(in_state, [lifeboat_core::bucket::backup::claim_key(&bucket, &execution)]);
}

/// A source of the other kind than the destination (copies are server-side), an empty item or a
/// bucket listed twice: configuration problems (exit 2, naming SOURCE_BUCKETS) before any work,
/// no longer a start-up failure (exit 1) or a silently dropped item.
#[tokio::test]
async fn sources_that_cannot_be_snapshotted_exit_2() {
    let dir = tempfile::tempdir().expect("dir");
    let file_destination = format!("file://{}", dir.path().join("backups").display());
    let src = gcs_bucket().await;
    let gcs_destination = src.location().to_string();
    let cases = [
        (file_destination.as_str(), "media-1".to_owned(), "both be gs:// (or both file://)"),
        (gcs_destination.as_str(), format!("file://{}", dir.path().join("uploads").display()), "both be gs://"),
        (gcs_destination.as_str(), "media-1,,media-2".to_owned(), "item 2"),
        (gcs_destination.as_str(), "media-1,".to_owned(), "is empty"),
        (gcs_destination.as_str(), "media-1/a,gs://media-1/b".to_owned(), "listed twice"),
    ];
    for (destination, sources, why) in cases {
        let out = storage_backup_binary(destination, &sources).output().expect("run storage-backup");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sources} into {destination}: {err}");
        assert!(err.contains("SOURCE_BUCKETS: ") && err.contains(why), "{sources}: {err}");
    }
    assert!(!dir.path().join("backups").exists(), "nothing was written");
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
            storage_backup_binary(&format!("gs://{backup_bucket}/sharded"), &bucket)
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
    let single = storage_backup_binary(&format!("gs://{backup_bucket}/single"), &bucket).output().expect("single task");
    assert!(single.status.success(), "{}", String::from_utf8_lossy(&single.stderr));

    let sharded = shared(&format!("gs://{backup_bucket}/sharded"), CHUNK).await;
    let single = shared(&format!("gs://{backup_bucket}/single"), CHUNK).await;
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

/// Runs the program once on the `file://` store its environment names.
async fn run_program(env: &Env) -> RunResult {
    let destination: Location = env.get("LIFEBOAT_DESTINATION").expect("a destination").parse().expect("location");
    let Location::Local { root } = destination else { panic!("local stores only here") };
    let config = config(env, &[], storage_backup::read);
    let app = storage_backup::start(services_on(env, local_store_at(root)), config).await.expect("start");
    app.run(RunContext::new(Trigger::Job)).await
}

fn local_dir(parent: &std::path::Path, name: &str) -> DynStore {
    local_store_at(parent.join(name))
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
    let (src, backup, source) = source_and_backup().await;
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
