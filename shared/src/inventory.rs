//! What the backup store holds: database backups grouped into series, complete or not.
//! Built from a listing alone (no object is read), so it is cheap and pure to test.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;

use crate::catalog::{DbBackupPath, RunId};
use crate::store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, StoreError};

/// One backup run of one database: its objects, and whether its manifest exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbBackup {
    /// Where it lives.
    pub path: DbBackupPath,
    /// The manifest exists: the backup is complete.
    pub complete: bool,
    /// Bytes of its objects (dump and manifest).
    pub bytes: u64,
    /// Newest object update (when the run last wrote).
    pub last_write: DateTime<Utc>,
    /// Every object key of the run.
    pub keys: Vec<String>,
}

/// The backups of one database, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Series {
    /// Logical source.
    pub source: String,
    /// Database.
    pub database: String,
    /// Runs, oldest first.
    pub backups: Vec<DbBackup>,
}

impl Series {
    /// The newest complete backup.
    pub fn newest_complete(&self) -> Option<&DbBackup> {
        self.backups.iter().rev().find(|b| b.complete)
    }
}

/// Groups a listing of `db/` into series. Objects that do not follow the layout are ignored.
pub fn db_series(objects: impl IntoIterator<Item = ObjectMeta>) -> Vec<Series> {
    let mut runs: BTreeMap<(String, String, RunId), DbBackup> = BTreeMap::new();
    for o in objects {
        let Some((path, file)) = DbBackupPath::parse_key(&o.key) else {
            continue;
        };
        let entry = runs
            .entry((path.source.clone(), path.database.clone(), path.run.clone()))
            .or_insert_with(|| DbBackup {
                path,
                complete: false,
                bytes: 0,
                last_write: o.updated,
                keys: Vec::new(),
            });
        entry.complete |= file == "manifest.json";
        entry.bytes += o.size;
        entry.last_write = entry.last_write.max(o.updated);
        entry.keys.push(o.key);
    }
    let mut series: BTreeMap<(String, String), Series> = BTreeMap::new();
    for ((source, database, _), backup) in runs {
        series
            .entry((source.clone(), database.clone()))
            .or_insert_with(|| Series {
                source,
                database,
                backups: Vec::new(),
            })
            .backups
            .push(backup);
    }
    series.into_values().collect()
}

/// Lists the store's database backups (optionally of one source).
pub async fn load_db_series(
    store: &dyn ObjectStore,
    source: Option<&str>,
) -> Result<Vec<Series>, StoreError> {
    let prefix = match source {
        Some(s) => format!("db/{}/", crate::catalog::encode_segment(s)),
        None => "db/".to_owned(),
    };
    let objects: Vec<ObjectMeta> = store.list_all(&prefix).try_collect().await?;
    Ok(db_series(objects))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn groups_runs_and_marks_complete_ones() {
        let series = db_series([
            obj("db/main/app/20261125T020000Z-00000001/dump.pgc.zst", 100),
            obj("db/main/app/20261125T020000Z-00000001/manifest.json", 2),
            obj("db/main/app/20261126T020000Z-00000002/dump.pgc.zst", 50),
            obj("db/main/other/20261126T020000Z-00000003/manifest.json", 2),
            obj("db/main/app/not-a-run/x", 1),
            obj("storage/b/snapshots/x", 1),
        ]);
        assert_eq!(series.len(), 2);
        let app = &series[0];
        assert_eq!(
            (app.source.as_str(), app.database.as_str()),
            ("main", "app")
        );
        assert_eq!(app.backups.len(), 2);
        assert!(app.backups[0].complete && !app.backups[1].complete);
        assert_eq!(app.backups[0].bytes, 102);
        assert_eq!(
            app.newest_complete().map(|b| b.path.run.suffix.as_str()),
            Some("00000001")
        );
        assert_eq!(series[1].database, "other");
    }
}
