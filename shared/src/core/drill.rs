//! Drill records: what `drill` writes, create-only, next to the backup or snapshot it restored,
//! and what the readers (`health`, `monitor`, `console`, `prune`) take as proof that a backup
//! restores. The format is a storage contract (docs: the README's bucket layout):
//!
//! ```text
//! db/<source>/<database>/<backup ts>-<id>/drills/<drill ts>.json
//! storage/<source-bucket>/snapshots/<snapshot ts>-<id>/drills/<drill ts>.json
//! ```
//!
//! Only a [`DrillOutcome::Passed`] record makes a backup *verified*. The verified age of a source
//! is the age of the newest backup (its backup timestamp, not the drill's) holding a passed record.
//!
//! Also here, pure: the scratch database names a drill restores into (always starting with
//! [`SCRATCH_PREFIX`], so a drill can only ever create and drop databases of its own).

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::naming::{DbBackupPath, RunId, SnapshotPath, TS_FORMAT};

/// The version of the record format written by this code.
pub const RECORD_VERSION: u32 = 1;
/// The folder inside a backup's or snapshot's prefix that holds its drill records.
pub const DRILLS_FOLDER: &str = "drills/";
/// Drill records larger than this are refused by readers (a record is a few hundred bytes).
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// Every scratch database of a drill starts with this; nothing else is ever created or dropped.
pub const SCRATCH_PREFIX: &str = "lifeboat_drill_";
/// PostgreSQL's longest identifier (NAMEDATALEN - 1), in bytes.
const MAX_IDENTIFIER: usize = 63;

/// What was drilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillKind {
    /// A database backup, restored into a scratch database.
    Db,
    /// A bucket snapshot: every blob checked by metadata, a sample read back byte for byte.
    Bucket,
}

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillOutcome {
    /// Everything checked restored and verified.
    Passed,
    /// Something did not restore or did not verify (see the record's `error`).
    Failed,
}

impl DrillOutcome {
    /// `passed` or `failed`, as in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
        }
    }
}

/// One drill's record (`drills/<drill ts>.json`). Every field is always written (`null` when it
/// does not apply), so readers see one shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// Database backup or bucket snapshot.
    pub kind: DrillKind,
    /// The `BACKUP_SOURCE` name (database) or the source bucket (bucket).
    pub source: String,
    /// The database name, or `bucket[/prefix]`.
    pub name: String,
    /// `<ts>-<id>` of the drilled backup or snapshot.
    #[serde(with = "run_id_text")]
    pub backup_id: RunId,
    /// When the drill of this backup started.
    pub started_at: DateTime<Utc>,
    /// When it ended (the record is written right after).
    pub finished_at: DateTime<Utc>,
    /// Passed or failed.
    pub outcome: DrillOutcome,
    /// Why it failed (never a secret); `None` when it passed.
    pub error: Option<String>,
    /// Database: seconds from the restore's start to a usable, verified database.
    pub rto_seconds: Option<f64>,
    /// Bytes read and verified.
    pub bytes: u64,
    /// Database: tables whose row counts were compared.
    #[serde(default)]
    pub tables: Option<u64>,
    /// Database: rows restored (the sum of the compared counts).
    #[serde(default)]
    pub rows: Option<u64>,
    /// Bucket: snapshot entries whose blob was checked by server metadata.
    #[serde(default)]
    pub objects_checked: Option<u64>,
    /// Bucket: entries read back and compared byte for byte.
    #[serde(default)]
    pub objects_sampled: Option<u64>,
}

impl DrillRecord {
    /// The record of a drill of `backup_id` starting at `now`: failed with no figures until the
    /// drill fills them in, so an early return still writes an honest record.
    pub fn started(kind: DrillKind, source: String, name: String, backup_id: RunId, now: DateTime<Utc>) -> Self {
        Self {
            version: RECORD_VERSION,
            kind,
            source,
            name,
            backup_id,
            started_at: now,
            finished_at: now,
            outcome: DrillOutcome::Failed,
            error: None,
            rto_seconds: None,
            bytes: 0,
            tables: None,
            rows: None,
            objects_checked: None,
            objects_sampled: None,
        }
    }

    /// True when this record makes its backup verified.
    pub fn passed(&self) -> bool {
        self.outcome == DrillOutcome::Passed
    }

    /// The record as written (pretty JSON, a trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses a record, refusing a version this code does not know.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BadRecord> {
        let record: Self = serde_json::from_slice(bytes).map_err(|e| BadRecord::Json(e.to_string()))?;
        if record.version != RECORD_VERSION {
            return Err(BadRecord::Version(record.version));
        }
        Ok(record)
    }
}

/// Why bytes are not a drill record this code reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    /// Not JSON of the record's shape.
    #[error("not a drill record: {0}")]
    Json(String),
    /// A version this code does not know.
    #[error("drill record version {0} is not known (this lifeboat reads version {RECORD_VERSION})")]
    Version(u32),
}

/// `RunId` as its text `<ts>-<id>` in JSON.
mod run_id_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::core::naming::RunId;

    pub fn serialize<S: Serializer>(id: &RunId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RunId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The drill ts of a record's file name (second precision, as every `<ts>` of the layout).
fn record_file(drilled_at: DateTime<Utc>) -> String {
    format!("{DRILLS_FOLDER}{}.json", drilled_at.format(TS_FORMAT))
}

/// `db/<source>/<database>/<ts>-<id>/drills/` — where the drill records of one backup are listed.
pub fn db_drills_prefix(backup: &DbBackupPath) -> String {
    format!("{}{DRILLS_FOLDER}", backup.prefix())
}

/// `storage/<bucket>/snapshots/<ts>-<id>/drills/` — the drill records of one snapshot.
pub fn snapshot_drills_prefix(snapshot: &SnapshotPath) -> String {
    format!("{}{DRILLS_FOLDER}", snapshot.prefix())
}

/// The record of a drill of a database backup that started at `drilled_at`.
pub fn db_record_key(backup: &DbBackupPath, drilled_at: DateTime<Utc>) -> String {
    format!("{}{}", backup.prefix(), record_file(drilled_at))
}

/// The record of a drill of a bucket snapshot that started at `drilled_at`.
pub fn snapshot_record_key(snapshot: &SnapshotPath, drilled_at: DateTime<Utc>) -> String {
    format!("{}{}", snapshot.prefix(), record_file(drilled_at))
}

/// The drill time of a file name relative to a backup's prefix (`drills/<ts>.json`, as
/// [`DbBackupPath::parse_key`] and [`SnapshotPath::parse_key`] return it); `None` for any other
/// file, so a listing's drill records are told apart from the backup's own objects.
pub fn parse_record_file(file: &str) -> Option<DateTime<Utc>> {
    let ts = file.strip_prefix(DRILLS_FOLDER)?.strip_suffix(".json")?;
    Some(NaiveDateTime::parse_from_str(ts, TS_FORMAT).ok()?.and_utc())
}

/// True for a key inside a backup's `drills/` folder (whatever its file name).
pub fn is_drill_file(file: &str) -> bool {
    file.starts_with(DRILLS_FOLDER)
}

/// Where a drill record lives, parsed from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    /// A record of a database backup.
    Db {
        /// The drilled backup.
        backup: DbBackupPath,
        /// When the drill started.
        drilled_at: DateTime<Utc>,
    },
    /// A record of a bucket snapshot.
    Bucket {
        /// The drilled snapshot.
        snapshot: SnapshotPath,
        /// When the drill started.
        drilled_at: DateTime<Utc>,
    },
}

impl RecordKey {
    /// Parses a full key; `None` unless it is a drill record of the layout.
    pub fn parse(key: &str) -> Option<Self> {
        if let Some((backup, file)) = DbBackupPath::parse_key(key) {
            return Some(Self::Db { backup, drilled_at: parse_record_file(file)? });
        }
        let (snapshot, file) = SnapshotPath::parse_key(key)?;
        Some(Self::Bucket { snapshot, drilled_at: parse_record_file(file)? })
    }

    /// The drilled backup's or snapshot's run.
    pub fn run(&self) -> &RunId {
        match self {
            Self::Db { backup, .. } => &backup.run,
            Self::Bucket { snapshot, .. } => &snapshot.run,
        }
    }
}

/// The scratch database a drill of `database` starting at `now` restores into:
/// `lifeboat_drill_<db>_<ts>`, where `<db>` keeps the name's ASCII letters and digits (lower
/// case; anything else becomes `_`), cut so the whole stays a PostgreSQL identifier (63 bytes),
/// and `<ts>` is the drill's time (`20261202t031500z`).
pub fn scratch_database_name(database: &str, now: DateTime<Utc>) -> String {
    let ts = now.format(TS_FORMAT).to_string().to_ascii_lowercase();
    let room = MAX_IDENTIFIER - SCRATCH_PREFIX.len() - 1 - ts.len();
    let db: String = database
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(room)
        .collect();
    format!("{SCRATCH_PREFIX}{db}_{ts}")
}

/// When the drill that named a scratch database started (the `<ts>` at its end), so a scratch
/// database left behind by a killed drill can be told apart from one in use; `None` for a name
/// that is not a scratch name.
pub fn scratch_started(name: &str) -> Option<DateTime<Utc>> {
    check_scratch_name(name).ok()?;
    let ts = name.rsplit('_').next()?.to_ascii_uppercase();
    Some(NaiveDateTime::parse_from_str(&ts, TS_FORMAT).ok()?.and_utc())
}

/// A scratch name refused: it does not start with [`SCRATCH_PREFIX`], or is not a plain
/// lower-case identifier a drill would have made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a drill scratch database (lifeboat_drill_…): refused")]
pub struct NotScratch(pub String);

/// Checks that `name` is a scratch database a drill may create and drop: starts with
/// [`SCRATCH_PREFIX`], has more after it, at most 63 bytes of `[a-z0-9_]`.
pub fn check_scratch_name(name: &str) -> Result<(), NotScratch> {
    let ok = name.len() > SCRATCH_PREFIX.len()
        && name.len() <= MAX_IDENTIFIER
        && name.starts_with(SCRATCH_PREFIX)
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { Ok(()) } else { Err(NotScratch(name.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid").to_utc()
    }

    fn backup() -> DbBackupPath {
        DbBackupPath {
            source: "main".into(),
            database: "Sales \"EU\"".into(),
            run: "20261202T020000Z-1a2b3c4d".parse().expect("id"),
        }
    }

    fn snapshot() -> SnapshotPath {
        SnapshotPath { bucket: "media-prod".into(), run: "20261202T030000Z-0000abcd".parse().expect("id") }
    }

    fn record() -> DrillRecord {
        DrillRecord {
            version: RECORD_VERSION,
            kind: DrillKind::Db,
            source: "main".into(),
            name: "app".into(),
            backup_id: "20261202T020000Z-1a2b3c4d".parse().expect("id"),
            started_at: at("2026-12-02T03:15:00Z"),
            finished_at: at("2026-12-02T03:15:42.5Z"),
            outcome: DrillOutcome::Passed,
            error: None,
            rto_seconds: Some(41.25),
            bytes: 1234,
            tables: Some(3),
            rows: Some(1000),
            objects_checked: None,
            objects_sampled: None,
        }
    }

    #[test]
    fn record_keys_follow_the_contract() {
        let t = at("2026-12-02T03:15:00.900Z");
        assert_eq!(
            db_record_key(&backup(), t),
            "db/main/Sales%20%22EU%22/20261202T020000Z-1a2b3c4d/drills/20261202T031500Z.json"
        );
        assert_eq!(db_drills_prefix(&backup()), "db/main/Sales%20%22EU%22/20261202T020000Z-1a2b3c4d/drills/");
        assert_eq!(
            snapshot_record_key(&snapshot(), t),
            "storage/media-prod/snapshots/20261202T030000Z-0000abcd/drills/20261202T031500Z.json"
        );
        assert_eq!(
            snapshot_drills_prefix(&snapshot()),
            "storage/media-prod/snapshots/20261202T030000Z-0000abcd/drills/"
        );
    }

    #[test]
    fn record_keys_parse_back() {
        let t = at("2026-12-02T03:15:00Z");
        assert_eq!(
            RecordKey::parse(&db_record_key(&backup(), t)),
            Some(RecordKey::Db { backup: backup(), drilled_at: t })
        );
        let key = RecordKey::parse(&snapshot_record_key(&snapshot(), t)).expect("a record");
        assert_eq!(key, RecordKey::Bucket { snapshot: snapshot(), drilled_at: t });
        assert_eq!(key.run(), &snapshot().run);
        assert_eq!(RecordKey::parse(&backup().manifest_key()), None, "a manifest is no record");
        assert_eq!(RecordKey::parse(&snapshot().header_key()), None);
        assert_eq!(RecordKey::parse("db/main/app/20261202T020000Z-1a2b3c4d/drills/notes.txt"), None);
        assert!(is_drill_file("drills/anything"));
        assert!(!is_drill_file("manifest.json"));
        assert_eq!(parse_record_file("drills/20261202T031500Z.json"), Some(t));
        assert_eq!(parse_record_file("drills/20261202T031500Z.json.tmp"), None);
    }

    #[test]
    fn the_record_json_is_pinned() {
        let json: serde_json::Value = serde_json::from_slice(&record().to_json()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
                "kind": "db",
                "source": "main",
                "name": "app",
                "backup_id": "20261202T020000Z-1a2b3c4d",
                "started_at": "2026-12-02T03:15:00Z",
                "finished_at": "2026-12-02T03:15:42.500Z",
                "outcome": "passed",
                "error": null,
                "rto_seconds": 41.25,
                "bytes": 1234,
                "tables": 3,
                "rows": 1000,
                "objects_checked": null,
                "objects_sampled": null
            })
        );
        assert_eq!(DrillRecord::from_json(&record().to_json()), Ok(record()));
        assert!(record().passed());
    }

    #[test]
    fn a_failed_bucket_record_round_trips() {
        let r = DrillRecord {
            kind: DrillKind::Bucket,
            source: "media-prod".into(),
            name: "media-prod/photos".into(),
            outcome: DrillOutcome::Failed,
            error: Some("blob storage/media-prod/blobs/ab… is missing".into()),
            rto_seconds: None,
            tables: None,
            rows: None,
            objects_checked: Some(120),
            objects_sampled: Some(20),
            ..record()
        };
        let json: serde_json::Value = serde_json::from_slice(&r.to_json()).expect("json");
        assert_eq!(json["kind"], "bucket");
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["objects_checked"], 120);
        assert_eq!(DrillRecord::from_json(&r.to_json()), Ok(r.clone()));
        assert!(!r.passed());
    }

    #[test]
    fn readers_refuse_unknown_versions_and_shapes() {
        let mut json: serde_json::Value = serde_json::from_slice(&record().to_json()).expect("json");
        json["version"] = 2.into();
        assert_eq!(DrillRecord::from_json(json.to_string().as_bytes()), Err(BadRecord::Version(2)));
        json["version"] = 1.into();
        json["outcome"] = "success".into();
        assert!(matches!(DrillRecord::from_json(json.to_string().as_bytes()), Err(BadRecord::Json(_))));
        json["outcome"] = "passed".into();
        json["backup_id"] = "yesterday".into();
        assert!(matches!(DrillRecord::from_json(json.to_string().as_bytes()), Err(BadRecord::Json(_))));
        assert!(DrillRecord::from_json(b"not json").is_err());
    }

    #[test]
    fn scratch_names_are_ours_and_fit_an_identifier() {
        let t = at("2026-12-02T03:15:00Z");
        assert_eq!(scratch_database_name("app", t), "lifeboat_drill_app_20261202t031500z");
        assert_eq!(scratch_database_name("Sales \"EU\"", t), "lifeboat_drill_sales__eu__20261202t031500z");
        let long = scratch_database_name(&"x".repeat(200), t);
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("_20261202t031500z"));
        assert_eq!(scratch_database_name("日本", t), "lifeboat_drill____20261202t031500z");
        for name in ["lifeboat_drill_app_20261202t031500z", "lifeboat_drill_x"] {
            assert_eq!(check_scratch_name(name), Ok(()), "{name}");
        }
        for name in [
            "app",
            "postgres",
            "template1",
            "lifeboat_drill_",
            "Lifeboat_drill_x",
            "lifeboat_drill_x; drop",
            "lifeboat_drillx",
        ] {
            assert!(check_scratch_name(name).is_err(), "{name}");
        }
        assert!(check_scratch_name(&format!("lifeboat_drill_{}", "x".repeat(60))).is_err(), "too long");
        assert_eq!(scratch_started("lifeboat_drill_app_20261202t031500z"), Some(t));
        assert_eq!(scratch_started("lifeboat_drill_app"), None);
        assert_eq!(scratch_started("app_20261202t031500z"), None, "not ours");
    }

    proptest! {
        #[test]
        fn every_scratch_name_passes_the_check(db in "\\PC{0,80}", secs in 0i64..4_000_000_000) {
            let t = DateTime::from_timestamp(secs, 0).expect("in range");
            let name = scratch_database_name(&db, t);
            prop_assert_eq!(check_scratch_name(&name), Ok(()));
            prop_assert_eq!(scratch_started(&name), Some(t));
        }
    }
}
