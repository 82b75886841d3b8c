//! Bucket contents for the snapshot and bucket-restore tests: objects written with metadata,
//! read back as a user sees them, snapshotted, and restored.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::DateTime;
use futures::TryStreamExt as _;
use lifeboat_core::bucket::backup::{HeaderState, NoObserver, SnapshotSettings, Source, TaskOutcome, take_snapshot};
use lifeboat_core::bucket::read::Selector;
use lifeboat_core::bucket::restore::{Action, RestoreReport, RestoreRequest, restore_bucket};
use lifeboat_core::bucket::source::SourceSpec;
use lifeboat_core::core::naming::RunId;
use lifeboat_core::core::snapshot_manifest::SnapshotHeader;
use lifeboat_core::store::{
    DynStore, Location, ObjectMeta, ObjectStore, ObjectStoreExt as _, Precondition, PutOptions,
};
use tokio_util::sync::CancellationToken;

use super::gcs::gcs_store_with;

/// Upload chunk of the stores these tests open.
pub const CHUNK: usize = 1024 * 1024;

/// What an object is, as a user sees it: bytes and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// Custom metadata.
    pub metadata: BTreeMap<String, String>,
}

/// Every object of `store` (under `prefix`), read back.
pub async fn capture(store: &dyn ObjectStore, prefix: &str) -> BTreeMap<String, Seen> {
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

/// The bucket a store is on (the directory name of a local store).
pub fn bucket_of(store: &dyn ObjectStore) -> String {
    match store.location() {
        Location::Gcs { bucket, .. } => bucket.clone(),
        Location::Local { root } => root.file_name().and_then(|n| n.to_str()).expect("dir name").to_owned(),
    }
}

/// A fresh emulator bucket, as a store on its root.
pub async fn gcs_bucket() -> DynStore {
    Arc::new(gcs_store_with(CHUNK, "").await)
}

/// A fresh emulator bucket under a prefix (backup stores live under one, to exercise it).
pub async fn gcs_backup_store() -> DynStore {
    Arc::new(gcs_store_with(CHUNK, "lifeboat/backups").await)
}

/// A fresh source bucket and a fresh backup store on the emulator, and the source as a snapshot
/// task sees it.
pub async fn source_and_backup() -> (DynStore, DynStore, Source) {
    let src = gcs_bucket().await;
    let source = source_of(&src);
    (src, gcs_backup_store().await, source)
}

/// `store` as the source of a snapshot.
pub fn source_of(store: &DynStore) -> Source {
    let spec: SourceSpec = store.location().to_string().parse().expect("source spec");
    assert_eq!(spec.bucket, bucket_of(&**store));
    Source { spec, store: store.clone() }
}

/// Distinct, increasing snapshot ids (a second apart), so "previous" is never ambiguous.
pub fn run_id(n: i64) -> RunId {
    let base = DateTime::parse_from_rfc3339("2026-11-26T03:00:00Z").expect("time").to_utc();
    RunId { started: base + chrono::Duration::seconds(n), suffix: format!("{:08x}", n) }
}

/// Snapshot settings with `concurrency` copies at once.
pub fn settings(concurrency: usize) -> SnapshotSettings {
    SnapshotSettings { concurrency, ..SnapshotSettings::default() }
}

/// One snapshot task that must succeed.
pub async fn snap(backup: &DynStore, source: &Source, run: &RunId, s: &SnapshotSettings) -> TaskOutcome {
    take_snapshot(backup, source, run, s, &NoObserver, &CancellationToken::new()).await.expect("snapshot")
}

/// The header a lone task wrote.
pub fn written(o: &TaskOutcome) -> &SnapshotHeader {
    match &o.header {
        HeaderState::Written(h) => h,
        other => panic!("the only task must write the header, got {other:?}"),
    }
}

/// A plain restore of `bucket` (no dry run, no prefix, extras kept).
pub fn request(bucket: &str, selector: Selector) -> RestoreRequest {
    RestoreRequest {
        bucket: bucket.to_owned(),
        selector,
        only_prefix: String::new(),
        dry_run: false,
        delete_extra: false,
        concurrency: 8,
    }
}

/// Restores from `backup` into `target`; the report and every action, in order.
pub async fn restore(
    backup: &DynStore,
    target: &dyn ObjectStore,
    req: &RestoreRequest,
) -> (RestoreReport, Vec<Action>) {
    let seen = Mutex::new(Vec::new());
    let record = |a: &Action| seen.lock().expect("lock").push(a.clone());
    let report =
        restore_bucket(&**backup, target, req, &record, &CancellationToken::new()).await.expect("restore runs");
    (report, seen.into_inner().expect("lock"))
}

/// Writes an object (create-only unless `options` say otherwise).
pub async fn put(store: &dyn ObjectStore, key: &str, data: &[u8], options: PutOptions) {
    store.put(key, Bytes::copy_from_slice(data), options).await.unwrap_or_else(|e| panic!("put {key:?}: {e}"));
}

/// Replaces an object's bytes (and metadata) in place.
pub async fn overwrite(store: &dyn ObjectStore, key: &str, data: &[u8], mut options: PutOptions) {
    let current = store.stat(key).await.expect("stat before overwrite");
    options.precondition = Precondition::GenerationMatches(current.generation);
    put(store, key, data, options).await;
}

/// Put options with a content type.
pub fn typed(content_type: &str) -> PutOptions {
    PutOptions { content_type: Some(content_type.into()), ..PutOptions::default() }
}
