//! Small but real backups written through the store API: a dump object plus a real
//! `manifest.json`, or a bucket snapshot (blobs, a zstd JSON-lines part, `header.json`). Their run
//! ids carry the start time, so tests choose how old a backup is; objects' `updated` is the
//! server's clock (real time), which is what the grace rules look at.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use lifeboat_core::core::db_manifest::{Compression, DB_FORMAT, DbManifest, DumpObject, Encryption, EncryptionFormat};
use lifeboat_core::core::drill::{DrillKind, DrillOutcome, DrillRecord, RECORD_VERSION};
use lifeboat_core::core::naming::{
    DRILL_OUTCOME_METADATA, DbBackupPath, RunId, SUSPICIOUS_METADATA, SnapshotPath, TS_FORMAT,
};
use lifeboat_core::core::snapshot_manifest::{
    PartEncoder, SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_VERSION, SnapshotEntry, SnapshotHeader, SnapshotTotals, part_key,
};
use lifeboat_core::store::{ObjectStore, ObjectStoreExt as _, PutOptions, StoreError};

/// A run id starting at `started` (whole seconds) with a random suffix.
pub fn run_at(started: DateTime<Utc>) -> RunId {
    RunId::new(started)
}

/// Writes a database backup of run `run`: `dump.pgc.zst` of `size` bytes, then (when `complete`) its manifest.
pub async fn db_backup(
    store: &dyn ObjectStore,
    source: &str,
    database: &str,
    run: &RunId,
    size: usize,
    complete: bool,
) -> DbBackupPath {
    db_backup_to(store, source, database, run, size, complete, &[]).await
}

/// [`db_backup`] of an encrypted dump (`dump.pgc.zst.age`, the manifest naming `recipients`).
pub async fn encrypted_db_backup(
    store: &dyn ObjectStore,
    source: &str,
    database: &str,
    run: &RunId,
    size: usize,
    recipients: &[String],
) -> DbBackupPath {
    db_backup_to(store, source, database, run, size, true, recipients).await
}

async fn db_backup_to(
    store: &dyn ObjectStore,
    source: &str,
    database: &str,
    run: &RunId,
    size: usize,
    complete: bool,
    recipients: &[String],
) -> DbBackupPath {
    let path = DbBackupPath { source: source.into(), database: database.into(), run: run.clone() };
    let dump = Bytes::from(vec![b'd'; size]);
    let extension = if recipients.is_empty() { "zst" } else { "zst.age" };
    store.put(&path.dump_key(extension), dump.clone(), PutOptions::default()).await.expect("put dump");
    if complete {
        let encryption = (!recipients.is_empty())
            .then(|| Encryption { format: EncryptionFormat::Age, recipients: recipients.to_vec() });
        let dump_object = DumpObject {
            name: format!("dump.pgc.{extension}"),
            compression: Compression::Zstd,
            level: 3,
            uncompressed_bytes: size as u64 * 3,
            stored_bytes: size as u64,
            sha256: "00".repeat(32),
            crc32c: lifeboat_core::store::crc32c_base64(crc32c::crc32c(&dump)),
            encryption,
        };
        let manifest = DbManifest {
            format: DB_FORMAT.into(),
            format_version: dump_object.format_version(),
            backup_id: path.run.to_string(),
            source: source.into(),
            database: database.into(),
            server_version: "15.20".into(),
            pg_dump_version: "pg_dump (PostgreSQL) 15.20".into(),
            lifeboat_version: env!("CARGO_PKG_VERSION").into(),
            started_at: path.run.started,
            finished_at: path.run.started + chrono::Duration::seconds(30),
            dump: dump_object,
            row_counts: None,
            table_checksums: None,
        };
        let options = PutOptions { content_type: Some("application/json".into()), ..PutOptions::default() };
        store.put(&path.manifest_key(), Bytes::from(manifest.to_json()), options).await.expect("put manifest");
    }
    path
}

/// The key of blob `name` of `bucket`.
pub fn blob_key(bucket: &str, name: &str) -> String {
    format!("{}{name}", SnapshotPath::blobs_prefix(bucket))
}

/// Writes a snapshot of `bucket` whose objects are `objects` (object name, blob name); blobs are
/// created when missing. The header is written last, only when `complete`.
pub async fn snapshot(
    store: &dyn ObjectStore,
    bucket: &str,
    run: &RunId,
    objects: &[(&str, &str)],
    complete: bool,
    suspicious: bool,
) -> SnapshotPath {
    let path = SnapshotPath { bucket: bucket.into(), run: run.clone() };
    let mut part = PartEncoder::new().expect("encoder");
    let mut bytes = 0;
    for (name, blob) in objects {
        let key = blob_key(bucket, blob);
        let content = Bytes::from(format!("content of {blob}"));
        match store.put(&key, content.clone(), PutOptions::default()).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("put blob: {e}"),
        }
        bytes += content.len() as u64;
        part.push(&SnapshotEntry {
            name: (*name).into(),
            size: content.len() as u64,
            generation: 1,
            md5: None,
            crc32c: None,
            content_type: None,
            content_encoding: None,
            cache_control: None,
            content_disposition: None,
            content_language: None,
            metadata: BTreeMap::new(),
            blob: key,
        })
        .expect("push");
    }
    let part = part.finish().expect("finish part");
    store.put(&part_key(&path, 0, 1), Bytes::from(part), PutOptions::default()).await.expect("put part");
    if complete {
        let header = SnapshotHeader {
            format: SNAPSHOT_FORMAT.into(),
            format_version: SNAPSHOT_FORMAT_VERSION,
            snapshot_id: path.run.to_string(),
            bucket: bucket.into(),
            prefix: String::new(),
            started_at: path.run.started,
            finished_at: path.run.started + chrono::Duration::seconds(10),
            parts: 1,
            totals: SnapshotTotals { objects: objects.len() as u64, bytes, ..SnapshotTotals::default() },
            suspicious: suspicious.then(|| "listed far fewer objects than before".to_owned()),
            lifeboat_version: env!("CARGO_PKG_VERSION").into(),
        };
        let mut options = PutOptions { content_type: Some("application/json".into()), ..PutOptions::default() };
        if suspicious {
            options.metadata.insert(SUSPICIOUS_METADATA.into(), "true".into());
        }
        let json = serde_json::to_vec(&header).expect("header json");
        store.put(&path.header_key(), Bytes::from(json), options).await.expect("put header");
    }
    path
}

/// How a test drill record is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drill {
    /// `outcome: passed`, with the outcome metadata (as `drill` writes it).
    Passed,
    /// `outcome: failed`, with the outcome metadata.
    Failed,
    /// `outcome: passed`, without metadata (readers must read the record).
    PassedNoMetadata,
    /// `outcome: failed`, without metadata.
    FailedNoMetadata,
}

/// The backup a test drill record is about.
#[derive(Debug, Clone, Copy)]
pub struct Drilled<'a> {
    /// The backup folder (`DbBackupPath::prefix()` or `SnapshotPath::prefix()`).
    pub prefix: &'a str,
    /// `db` or `bucket`.
    pub kind: &'a str,
    /// `BACKUP_SOURCE` (db) or the source bucket.
    pub source: &'a str,
    /// Database or bucket name.
    pub name: &'a str,
    /// `<ts>-<id>` of the backup.
    pub backup_id: &'a str,
}

/// Writes a drill record (the contract's JSON, create-only) into the folder of `backup`, drilled
/// at `drilled_at`. Returns its key.
pub async fn drill_record(
    store: &dyn ObjectStore,
    backup: Drilled<'_>,
    drilled_at: DateTime<Utc>,
    drill: Drill,
) -> String {
    let Drilled { prefix, kind, source, name, backup_id } = backup;
    let key = format!("{prefix}drills/{}.json", drilled_at.format(TS_FORMAT));
    let db = kind == "db";
    let failed = matches!(drill, Drill::Failed | Drill::FailedNoMetadata);
    let record = DrillRecord {
        version: RECORD_VERSION,
        kind: if db { DrillKind::Db } else { DrillKind::Bucket },
        source: source.into(),
        name: name.into(),
        backup_id: backup_id.parse().expect("backup id"),
        started_at: drilled_at,
        finished_at: drilled_at + chrono::Duration::seconds(95),
        outcome: if failed { DrillOutcome::Failed } else { DrillOutcome::Passed },
        error: failed.then(|| "row counts differ from the manifest".to_owned()),
        rto_seconds: db.then_some(95.0),
        bytes: 4096,
        tables: db.then_some(3),
        rows: db.then_some(1000),
        objects_checked: (!db).then_some(5),
        objects_sampled: (!db).then_some(1),
    };
    let outcome = record.outcome.as_str();
    let mut options = PutOptions { content_type: Some("application/json".into()), ..PutOptions::default() };
    if matches!(drill, Drill::Passed | Drill::Failed) {
        options.metadata.insert(DRILL_OUTCOME_METADATA.into(), outcome.into());
    }
    store.put(&key, Bytes::from(record.to_json()), options).await.expect("put drill record");
    key
}

/// [`drill_record`] for a database backup at `path`.
pub async fn db_drill(store: &dyn ObjectStore, path: &DbBackupPath, drilled_at: DateTime<Utc>, drill: Drill) -> String {
    let id = path.run.to_string();
    let prefix = path.prefix();
    let backup = Drilled { prefix: &prefix, kind: "db", source: &path.source, name: &path.database, backup_id: &id };
    drill_record(store, backup, drilled_at, drill).await
}

/// [`drill_record`] for a snapshot at `path`.
pub async fn snapshot_drill(
    store: &dyn ObjectStore,
    path: &SnapshotPath,
    drilled_at: DateTime<Utc>,
    drill: Drill,
) -> String {
    let id = path.run.to_string();
    let prefix = path.prefix();
    let backup = Drilled { prefix: &prefix, kind: "bucket", source: &path.bucket, name: &path.bucket, backup_id: &id };
    drill_record(store, backup, drilled_at, drill).await
}

/// Every key in the store, sorted.
pub async fn keys(store: &dyn ObjectStore) -> Vec<String> {
    let mut keys: Vec<String> = store.list_all("").map_ok(|o| o.key).try_collect().await.expect("list");
    keys.sort();
    keys
}
