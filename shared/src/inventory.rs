//! What the backup store holds, read from the store itself: the listing behind every freshness
//! figure (`health`, `monitor`, `console`) and every retention plan (`prune`).
//!
//! The model and the judgement are pure and live in the core ([`crate::core::series`],
//! [`crate::core::freshness`]); this module only takes the listing and hands it over.
//!
//! Drill records sit inside the backup folders the listing already covers, so finding which
//! backups are verified costs no request per backup: a record's outcome is in its metadata.
//! A record without it (written by hand, or by an older drill) is read, but only where it
//! matters: newest backup first, until a verified one is found (one read per series at most in
//! the usual case, whatever the number of backups).

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;

use crate::core::freshness::{Freshness, Limits, evaluate};
use crate::core::object::ObjectMeta;
use crate::core::series::{DrillOutcome, Kind, Series, series_from_listing};
use crate::store::{ObjectStore, ObjectStoreExt as _, StoreError};

/// Lists the database backups of `source` and every bucket snapshot in the store, with the drill
/// records inside them (see [`resolve_drills`]).
pub async fn load(store: &dyn ObjectStore, source: &str) -> Result<Vec<Series>, StoreError> {
    let db_prefix = format!("db/{}/", crate::core::naming::encode_segment(source));
    let mut objects: Vec<ObjectMeta> = store.list_all(&db_prefix).try_collect().await?;
    let storage = store.list_all("storage/").try_filter(|o| futures::future::ready(o.key.contains("/snapshots/")));
    objects.extend(storage.try_collect::<Vec<_>>().await?);
    let mut series = series_from_listing(objects);
    for s in &mut series {
        resolve_drills(store, s).await?;
    }
    Ok(series)
}

/// The outcome a drill record states for the backup `backup_id` (a record that names another
/// backup, or is not a record of a known version, states nothing).
pub fn drill_outcome(record: &[u8], backup_id: &str) -> Option<DrillOutcome> {
    let record = crate::core::drill::DrillRecord::from_json(record).ok()?;
    (record.backup_id.to_string() == backup_id).then_some(record.outcome)
}

/// At most this many drill records are read per series and listing (records without the outcome
/// metadata only): the request count stays flat however many backups and drills a series holds.
/// A series whose newest verified backup lies behind more unreadable or failed records than
/// this has had that many drills fail in a row: it is reported unverified, which it then is.
pub const MAX_RECORD_READS: usize = 16;

/// Fills in the outcome of drill records the listing left unknown (no metadata), newest complete
/// backup first, until the newest verified backup is known (at most [`MAX_RECORD_READS`] reads).
/// Records that cannot be read or parsed stay unknown (they verify nothing); a store failure
/// other than "not found" is an error.
pub async fn resolve_drills(store: &dyn ObjectStore, series: &mut Series) -> Result<(), StoreError> {
    let mut reads = 0;
    let series_label = series.label();
    for b in series.backups.iter_mut().rev().filter(|b| b.complete) {
        if b.verified() {
            return Ok(());
        }
        let id = b.run.to_string();
        for d in b.drills.iter_mut().rev().filter(|d| d.outcome.is_none()) {
            if reads == MAX_RECORD_READS {
                tracing::warn!(
                    series = series_label,
                    "drill records without outcome metadata: only the newest are read"
                );
                return Ok(());
            }
            reads += 1;
            match store.read_all(&d.key, crate::core::drill::MAX_RECORD_BYTES).await {
                Ok(bytes) => d.outcome = drill_outcome(&bytes, &id),
                Err(e) if e.is_not_found() || matches!(e, StoreError::Integrity { .. }) => {
                    tracing::warn!(key = d.key, error = %e, "drill record unreadable: it verifies nothing");
                }
                Err(e) => return Err(e),
            }
            if d.outcome == Some(DrillOutcome::Passed) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Lists the store and evaluates freshness at `now` against `limits` (shared by `health`,
/// `monitor` and `console`; see [`evaluate`]).
pub async fn assess(
    store: &dyn ObjectStore,
    source: &str,
    expected: &[(Kind, String, String)],
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Vec<Freshness>, StoreError> {
    let series = load(store, source).await?;
    Ok(evaluate(&series, expected, now, limits))
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
    /// Complete, and a drill passed on it.
    pub verified: bool,
    /// Drill records beside it, oldest first.
    pub drills: Vec<DrillSummary>,
}

/// What a drill record says (read leniently: the record's format belongs to `drill`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrillSummary {
    /// The record's key.
    pub key: String,
    /// `passed` or `failed`, when readable.
    pub outcome: Option<String>,
    /// When the drill started.
    pub started_at: Option<String>,
    /// When the drill finished.
    pub finished_at: Option<String>,
    /// The measured recovery time (databases: restore start to a usable, verified database).
    pub rto_seconds: Option<f64>,
    /// Bytes read and verified.
    pub bytes: Option<u64>,
    /// Tables restored (databases).
    pub tables: Option<u64>,
    /// Rows counted (databases).
    pub rows: Option<u64>,
    /// Blobs whose size and hash were checked (buckets).
    pub objects_checked: Option<u64>,
    /// Objects restored and compared byte for byte (buckets).
    pub objects_sampled: Option<u64>,
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
        let completion = b
            .keys
            .iter()
            .find(|k| crate::core::series::is_completion_key(series.kind, k) && !b.drills.iter().any(|d| &d.key == *k));
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
        let id = b.run.to_string();
        for d in &b.drills {
            let record = read_json(store, &d.key).await;
            let r = record.as_ref().filter(|r| r.get("backup_id").and_then(|v| v.as_str()).is_none_or(|v| v == id));
            let text = |name: &str| r.and_then(|r| r.get(name)).and_then(|v| v.as_str()).map(str::to_owned);
            let number = |name: &str| r.and_then(|r| r.get(name)).and_then(serde_json::Value::as_u64);
            drills.push(DrillSummary {
                key: d.key.clone(),
                outcome: d.outcome.map(|o| o.as_str().to_owned()).or_else(|| text("outcome")),
                started_at: text("started_at"),
                finished_at: text("finished_at"),
                rto_seconds: r.and_then(|r| r.get("rto_seconds")).and_then(serde_json::Value::as_f64),
                bytes: number("bytes"),
                tables: number("tables"),
                rows: number("rows"),
                objects_checked: number("objects_checked"),
                objects_sampled: number("objects_sampled"),
                error: text("error"),
            });
        }
        let verified = b.complete && drills.iter().any(|d| d.outcome.as_deref() == Some("passed"));
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
            verified,
            drills,
        });
    }
    out
}
