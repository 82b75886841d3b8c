//! What the backup store holds: database backups and bucket snapshots grouped into series,
//! complete or not, suspicious or not, verified by a drill or not. Built from a listing alone (no
//! object is read), so it is cheap, and pure to test. `health`, `monitor` and `prune` all stand on
//! it; the listing itself is taken by [`crate::inventory::load`].
//!
//! Drill records live inside the backup's folder (`<backup>/drills/<ts>.json`), so the listing
//! that finds the backups finds their drills too: no request per backup. A record's outcome comes
//! from its custom metadata [`DRILL_OUTCOME_METADATA`]; a record without it is
//! [`DrillRef::outcome`] `None` here, and [`crate::inventory::load`] reads the few it needs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::drill::{is_drill_file, parse_record_file};
use crate::core::naming::{DRILL_OUTCOME_METADATA, DbBackupPath, RunId, SUSPICIOUS_METADATA, SnapshotPath};
use crate::core::object::ObjectMeta;

/// What a series backs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A PostgreSQL database (`db/<source>/<database>/…`).
    Database,
    /// A GCS bucket (`storage/<bucket>/snapshots/…`).
    Bucket,
}

/// One run: its objects, and whether its completion object exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The run's id.
    pub run: RunId,
    /// The completion object (`manifest.json` / `header.json`) exists.
    pub complete: bool,
    /// Complete, but flagged for a human look (e.g. a snapshot that listed far fewer objects).
    pub suspicious: bool,
    /// A database backup whose dump is encrypted (its name ends in `.age`; the manifest records
    /// the recipients). Always false for snapshots.
    pub encrypted: bool,
    /// Bytes of its own objects (shared blobs and drill records not included).
    pub bytes: u64,
    /// Newest object update (when the run last wrote).
    pub last_write: DateTime<Utc>,
    /// Its object keys (drill records included: deleting a backup deletes its records).
    pub keys: Vec<String>,
    /// Drill records in its `drills/` folder, oldest first.
    pub drills: Vec<DrillRef>,
}

pub use crate::core::drill::DrillOutcome;

/// The outcome named `passed` / `failed` (anything else: `None`), as in a record or its metadata.
pub fn parse_outcome(s: &str) -> Option<DrillOutcome> {
    match s {
        "passed" => Some(DrillOutcome::Passed),
        "failed" => Some(DrillOutcome::Failed),
        _ => None,
    }
}

/// One drill record beside a backup, as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillRef {
    /// The record's key.
    pub key: String,
    /// When the drill ran (from the record's name), if the name is a timestamp.
    pub drilled_at: Option<DateTime<Utc>>,
    /// Its outcome, when the listing says (metadata) or the record was read; `None`: unknown.
    pub outcome: Option<DrillOutcome>,
}

impl Backup {
    /// Complete, and a drill record of it says `passed`.
    pub fn verified(&self) -> bool {
        self.complete && self.drills.iter().any(|d| d.outcome == Some(DrillOutcome::Passed))
    }

    /// The newest drill record whose outcome is known.
    pub fn last_drill(&self) -> Option<&DrillRef> {
        self.drills.iter().rev().find(|d| d.outcome.is_some())
    }
}

/// The runs of one database or bucket, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// Database or bucket.
    pub kind: Kind,
    /// Logical source (`BACKUP_SOURCE`) for databases; the source bucket for snapshots.
    pub source: String,
    /// Database name; `snapshots` for buckets.
    pub name: String,
    /// Runs, oldest first.
    pub backups: Vec<Backup>,
}

impl Series {
    /// The newest complete backup.
    pub fn newest_complete(&self) -> Option<&Backup> {
        self.backups.iter().rev().find(|b| b.complete)
    }

    /// The newest complete backup a drill passed on (its run's start is the verified age).
    pub fn newest_verified(&self) -> Option<&Backup> {
        self.backups.iter().rev().find(|b| b.verified())
    }

    /// `source/name` for databases, `gs://bucket` for snapshots.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Database => format!("{}/{}", self.source, self.name),
            Kind::Bucket => format!("gs://{}", self.source),
        }
    }
}

/// True for the object whose existence makes a run complete (`manifest.json` of a database
/// backup, `header.json` of a snapshot).
pub fn is_completion_key(kind: Kind, key: &str) -> bool {
    match kind {
        Kind::Database => key.ends_with("/manifest.json"),
        Kind::Bucket => key.ends_with("/header.json"),
    }
}

/// True for the file name of an encrypted dump within a database backup (`dump.pgc.zst.age`).
pub fn is_encrypted_dump(file: &str) -> bool {
    file.starts_with("dump.") && file.ends_with(".age")
}

/// Groups a listing into series. Objects outside the layout (blobs, state, strays) are ignored.
pub fn series_from_listing(objects: impl IntoIterator<Item = ObjectMeta>) -> Vec<Series> {
    let mut runs: BTreeMap<(Kind, String, String, RunId), Backup> = BTreeMap::new();
    for o in objects {
        let (kind, source, name, run, file) = if let Some((p, file)) = DbBackupPath::parse_key(&o.key) {
            (Kind::Database, p.source, p.database, p.run, file)
        } else if let Some((p, file)) = SnapshotPath::parse_key(&o.key) {
            (Kind::Bucket, p.bucket, "snapshots".to_owned(), p.run, file)
        } else {
            continue;
        };
        let marker = matches!((kind, file), (Kind::Database, "manifest.json") | (Kind::Bucket, "header.json"));
        let entry = runs.entry((kind, source, name, run.clone())).or_insert_with(|| Backup {
            run,
            complete: false,
            suspicious: false,
            encrypted: false,
            bytes: 0,
            last_write: o.updated,
            keys: Vec::new(),
            drills: Vec::new(),
        });
        if is_drill_file(file) {
            // The drills folder: records (`<ts>.json`), never backup bytes; its objects go with
            // the backup when it is deleted.
            if file.ends_with(".json") {
                let outcome = o.metadata.get(DRILL_OUTCOME_METADATA).and_then(|v| parse_outcome(v));
                let drilled_at = parse_record_file(file);
                entry.drills.push(DrillRef { key: o.key.clone(), drilled_at, outcome });
            }
            entry.last_write = entry.last_write.max(o.updated);
            entry.keys.push(o.key);
            continue;
        }
        entry.encrypted |= kind == Kind::Database && is_encrypted_dump(file);
        if marker {
            entry.complete = true;
            entry.suspicious |= o.metadata.get(SUSPICIOUS_METADATA).is_some_and(|v| v == "true");
        }
        entry.bytes += o.size;
        entry.last_write = entry.last_write.max(o.updated);
        entry.keys.push(o.key);
    }
    let mut series: BTreeMap<(Kind, String, String), Series> = BTreeMap::new();
    for ((kind, source, name, _), backup) in runs {
        series
            .entry((kind, source.clone(), name.clone()))
            .or_insert_with(|| Series { kind, source, name, backups: Vec::new() })
            .backups
            .push(backup);
    }
    let mut series: Vec<Series> = series.into_values().collect();
    for b in series.iter_mut().flat_map(|s| s.backups.iter_mut()) {
        b.drills.sort_by(|x, y| x.key.cmp(&y.key));
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64) -> ObjectMeta {
        ObjectMeta { key: key.into(), size, ..ObjectMeta::default() }
    }

    #[test]
    fn groups_runs_and_marks_complete_ones() {
        let mut suspicious = obj("storage/media/snapshots/20261126T030000Z-00000009/header.json", 5);
        suspicious.metadata.insert(SUSPICIOUS_METADATA.into(), "true".into());
        let series = series_from_listing([
            obj("db/main/app/20261125T020000Z-00000001/dump.pgc.zst", 100),
            obj("db/main/app/20261125T020000Z-00000001/manifest.json", 2),
            obj("db/main/app/20261126T020000Z-00000002/dump.pgc.zst", 50),
            obj("db/main/other/20261126T020000Z-00000003/manifest.json", 2),
            obj("db/main/other/20261126T020000Z-00000003/dump.pgc.zst.age", 40),
            obj("db/main/app/not-a-run/x", 1),
            obj("storage/media/blobs/abc", 1),
            obj("storage/media/snapshots/20261126T030000Z-00000009/part-0.jsonl.zst", 7),
            suspicious,
            obj("state/incidents.json", 1),
        ]);
        assert!(series.iter().all(|s| s.backups.iter().all(|b| b.drills.is_empty())));
        assert_eq!(series.len(), 3);
        let app = &series[0];
        assert_eq!((app.kind, app.label().as_str()), (Kind::Database, "main/app"));
        assert_eq!(app.backups.len(), 2);
        assert!(app.backups[0].complete && !app.backups[1].complete);
        assert_eq!(app.backups[0].bytes, 102);
        assert_eq!(app.newest_complete().map(|b| b.run.suffix.as_str()), Some("00000001"));
        assert!(!app.backups[0].encrypted);
        assert_eq!(series[1].name, "other");
        assert!(series[1].backups[0].encrypted && series[1].backups[0].complete);
        let snap = &series[2];
        assert_eq!((snap.kind, snap.label().as_str()), (Kind::Bucket, "gs://media"));
        assert!(snap.backups[0].complete && snap.backups[0].suspicious);
        assert_eq!(snap.backups[0].bytes, 12);
    }

    fn drill(key: &str, outcome: Option<&str>) -> ObjectMeta {
        let mut o = obj(key, 500);
        if let Some(v) = outcome {
            o.metadata.insert(DRILL_OUTCOME_METADATA.into(), v.into());
        }
        o
    }

    #[test]
    fn drill_records_in_the_listing_make_a_backup_verified() {
        let run1 = "db/main/app/20261125T020000Z-00000001";
        let run2 = "db/main/app/20261126T020000Z-00000002";
        let series = series_from_listing([
            drill(&format!("{run1}/drills/20261125T050000Z.json"), Some("passed")),
            obj(&format!("{run1}/dump.pgc.zst"), 100),
            obj(&format!("{run1}/manifest.json"), 2),
            drill(&format!("{run2}/drills/20261126T050000Z.json"), Some("failed")),
            drill(&format!("{run2}/drills/20261126T060000Z.json"), None),
            drill(&format!("{run2}/drills/notes.txt"), Some("passed")),
            obj(&format!("{run2}/dump.pgc.zst"), 100),
            obj(&format!("{run2}/manifest.json"), 2),
            drill("storage/media/snapshots/20261126T030000Z-00000009/drills/20261126T070000Z.json", Some("passed")),
            obj("storage/media/snapshots/20261126T030000Z-00000009/header.json", 5),
        ]);
        let app = &series[0];
        let (b1, b2) = (&app.backups[0], &app.backups[1]);
        assert!(b1.verified() && !b2.verified(), "a failed or unknown record verifies nothing");
        assert_eq!(b1.bytes, 102, "drill records are not backup bytes");
        assert_eq!(b1.keys.len(), 3, "but they are its objects: deleting the backup deletes them");
        assert_eq!(b2.drills.len(), 2, "notes.txt is no record");
        assert_eq!(b2.keys.len(), 5, "but it goes with the backup");
        assert_eq!(b2.drills[1].outcome, None);
        assert_eq!(b2.drills[0].drilled_at.map(|t| t.to_rfc3339()), Some("2026-11-26T05:00:00+00:00".to_owned()));
        assert_eq!(b2.last_drill().map(|d| d.outcome), Some(Some(DrillOutcome::Failed)));
        assert_eq!(app.newest_verified().map(|b| b.run.suffix.as_str()), Some("00000001"));
        assert!(series[1].backups[0].verified(), "snapshots too");
        // A record of a backup without manifest does not verify it.
        let lone = series_from_listing([drill(&format!("{run1}/drills/20261125T050000Z.json"), Some("passed"))]);
        assert!(!lone[0].backups[0].complete && !lone[0].backups[0].verified());
    }
}
