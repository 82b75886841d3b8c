//! What the backup store holds, read from the store itself: the listing behind every freshness
//! figure (`health`, `monitor`, `console`) and every retention plan (`prune`).
//!
//! The model and the judgement are pure and live in the core ([`crate::core::series`],
//! [`crate::core::freshness`]); this module only takes the listing and hands it over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;

use crate::core::freshness::{Freshness, evaluate};
use crate::core::object::ObjectMeta;
use crate::core::series::{Kind, Series, series_from_listing};
use crate::store::{ObjectStore, ObjectStoreExt as _, StoreError};

/// Lists the database backups of `source` and every bucket snapshot in the store.
pub async fn load(store: &dyn ObjectStore, source: &str) -> Result<Vec<Series>, StoreError> {
    let db_prefix = format!("db/{}/", crate::core::naming::encode_segment(source));
    let mut objects: Vec<ObjectMeta> = store.list_all(&db_prefix).try_collect().await?;
    let storage = store.list_all("storage/").try_filter(|o| futures::future::ready(o.key.contains("/snapshots/")));
    objects.extend(storage.try_collect::<Vec<_>>().await?);
    Ok(series_from_listing(objects))
}

/// Lists the store and evaluates freshness at `now` (shared by `health`, `monitor` and `console`).
/// `encryption_required`: this deployment has `BACKUP_ENCRYPTION_RECIPIENTS` set (see
/// [`evaluate`]).
pub async fn assess(
    store: &dyn ObjectStore,
    source: &str,
    expected: &[(Kind, String, String)],
    now: DateTime<Utc>,
    max_age: Duration,
    encryption_required: bool,
) -> Result<Vec<Freshness>, StoreError> {
    let series = load(store, source).await?;
    Ok(evaluate(&series, expected, now, max_age, encryption_required))
}

/// One backup or snapshot as the console lists it: what the listing says, what its manifest
/// (or snapshot header) records, and the drills that restored it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackupDetail {
    /// `<ts>-<id>`.
    pub id: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Its completion object exists.
    pub complete: bool,
    /// Flagged for a human look.
    pub suspicious: bool,
    /// Bytes of its own objects.
    pub bytes: u64,
    /// Dump bytes stored (database backups).
    pub stored_bytes: Option<u64>,
    /// Bytes `pg_dump` wrote (database backups).
    pub uncompressed_bytes: Option<u64>,
    /// Objects in the snapshot (bucket snapshots).
    pub objects: Option<u64>,
    /// SHA-256 of the stored dump, hex.
    pub sha256: Option<String>,
    /// CRC32C of the stored dump, base64.
    pub crc32c: Option<String>,
    /// Whether the dump is encrypted, when the manifest says.
    pub encrypted: Option<bool>,
    /// Drill records beside it, oldest first.
    pub drills: Vec<DrillSummary>,
}

/// What a drill record says (read leniently: the record's format belongs to `drill`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrillSummary {
    /// The record's key.
    pub key: String,
    /// `success` or `failure`, when readable.
    pub outcome: Option<String>,
    /// When the drill finished.
    pub finished_at: Option<String>,
    /// The measured recovery time.
    pub rto_seconds: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Manifests and drill records larger than this are not read for a page.
const MAX_DETAIL_BYTES: u64 = 4 * 1024 * 1024;

async fn read_json(store: &dyn ObjectStore, key: &str) -> Option<serde_json::Value> {
    let bytes = store.read_all(key, MAX_DETAIL_BYTES).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The newest `limit` runs of `series`, newest first, with their manifests and drill records
/// read from the store (a record that cannot be read leaves its fields empty).
pub async fn details(store: &dyn ObjectStore, series: &Series, limit: usize) -> Vec<BackupDetail> {
    let mut out = Vec::new();
    for b in series.backups.iter().rev().take(limit) {
        let completion =
            b.keys.iter().find(|k| crate::core::series::is_completion_key(series.kind, k) && !k.contains("/drills/"));
        let manifest = match completion {
            Some(key) if b.complete => read_json(store, key).await,
            _ => None,
        };
        let m = manifest.as_ref();
        let u64_at = |path: &str| m.and_then(|m| m.pointer(path)).and_then(serde_json::Value::as_u64);
        let str_at = |path: &str| m.and_then(|m| m.pointer(path)).and_then(|v| v.as_str()).map(str::to_owned);
        // A database dump is encrypted when the manifest records its encryption (the listing
        // already says so by the dump's `.age` name; the manifest is the authority).
        let encrypted = match (series.kind, m) {
            (crate::core::series::Kind::Database, Some(m)) => {
                Some(m.pointer("/dump/encryption").is_some_and(|e| !e.is_null()))
            }
            (crate::core::series::Kind::Database, None) if b.complete => Some(b.encrypted),
            _ => None,
        };
        let mut drills = Vec::new();
        for key in b.keys.iter().filter(|k| k.contains("/drills/") && k.ends_with(".json")) {
            let record = read_json(store, key).await;
            let r = record.as_ref();
            let text = |name: &str| r.and_then(|r| r.get(name)).and_then(|v| v.as_str()).map(str::to_owned);
            drills.push(DrillSummary {
                key: key.clone(),
                outcome: text("outcome"),
                finished_at: text("finished_at"),
                rto_seconds: r.and_then(|r| r.get("rto_seconds")).and_then(serde_json::Value::as_f64),
                error: text("error"),
            });
        }
        drills.sort_by(|a, b| a.key.cmp(&b.key));
        out.push(BackupDetail {
            id: b.run.to_string(),
            started_at: b.run.started,
            complete: b.complete,
            suspicious: b.suspicious,
            bytes: b.bytes,
            stored_bytes: u64_at("/dump/stored_bytes"),
            uncompressed_bytes: u64_at("/dump/uncompressed_bytes"),
            objects: u64_at("/totals/objects"),
            sha256: str_at("/dump/sha256"),
            crc32c: str_at("/dump/crc32c"),
            encrypted,
            drills,
        });
    }
    out
}
