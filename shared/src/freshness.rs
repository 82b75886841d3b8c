//! Freshness: is the newest good backup of each database recent enough? Pure; time is injected.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::inventory::Series;

/// A database's backup status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The newest complete backup is younger than the maximum age.
    Ok,
    /// The newest complete backup is too old.
    Stale,
    /// The newest run left no manifest and is past the grace period: it failed.
    Failed,
    /// No complete backup at all.
    Missing,
}

/// One row of the evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    /// Logical source.
    pub source: String,
    /// Database.
    pub database: String,
    /// Status.
    pub status: Status,
    /// Id of the newest complete backup.
    pub newest_backup: Option<String>,
    /// Its age in seconds.
    pub age_seconds: Option<i64>,
    /// Its stored bytes.
    pub bytes: Option<u64>,
    /// Change in bytes against the previous complete backup.
    pub bytes_change: Option<i64>,
    /// Complete backups held.
    pub complete_backups: usize,
    /// Bytes stored for this database (all runs).
    pub total_bytes: u64,
}

/// A run without manifest younger than this may still be running; older, it failed.
pub const RUN_GRACE: Duration = Duration::from_secs(6 * 3600);

/// Evaluates every series, plus `expected` databases with no series at all (missing).
pub fn evaluate(
    series: &[Series],
    expected: &[(String, String)],
    now: DateTime<Utc>,
    max_age: Duration,
) -> Vec<Freshness> {
    let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    let grace = chrono::Duration::from_std(RUN_GRACE).unwrap_or(chrono::Duration::MAX);
    let mut rows: Vec<Freshness> = series
        .iter()
        .map(|s| {
            let complete: Vec<_> = s.backups.iter().filter(|b| b.complete).collect();
            let newest = complete.last();
            let previous = complete.len().checked_sub(2).and_then(|i| complete.get(i));
            let age = newest.map(|b| now - b.path.run.started);
            let newest_run_failed = s
                .backups
                .last()
                .is_some_and(|b| !b.complete && now - b.last_write > grace);
            let status = match age {
                None => Status::Missing,
                Some(_) if newest_run_failed => Status::Failed,
                Some(a) if a > max_age => Status::Stale,
                Some(_) => Status::Ok,
            };
            Freshness {
                source: s.source.clone(),
                database: s.database.clone(),
                status,
                newest_backup: newest.map(|b| b.path.run.to_string()),
                age_seconds: age.map(|a| a.num_seconds()),
                bytes: newest.map(|b| b.bytes),
                bytes_change: match (newest, previous) {
                    (Some(n), Some(p)) => Some(
                        i64::try_from(n.bytes).unwrap_or(i64::MAX)
                            - i64::try_from(p.bytes).unwrap_or(i64::MAX),
                    ),
                    _ => None,
                },
                complete_backups: complete.len(),
                total_bytes: s.backups.iter().map(|b| b.bytes).sum(),
            }
        })
        .collect();
    for (source, database) in expected {
        if !rows
            .iter()
            .any(|r| &r.source == source && &r.database == database)
        {
            rows.push(Freshness {
                source: source.clone(),
                database: database.clone(),
                status: Status::Missing,
                newest_backup: None,
                age_seconds: None,
                bytes: None,
                bytes_change: None,
                complete_backups: 0,
                total_bytes: 0,
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{DbBackupPath, RunId};
    use crate::inventory::DbBackup;

    fn backup(started: DateTime<Utc>, complete: bool, bytes: u64) -> DbBackup {
        DbBackup {
            path: DbBackupPath {
                source: "main".into(),
                database: "app".into(),
                run: RunId {
                    started,
                    suffix: format!("{:08x}", started.timestamp() as u32),
                },
            },
            complete,
            bytes,
            last_write: started,
            keys: Vec::new(),
        }
    }

    fn series(backups: Vec<DbBackup>) -> Vec<Series> {
        vec![Series {
            source: "main".into(),
            database: "app".into(),
            backups,
        }]
    }

    const MAX_AGE: Duration = Duration::from_secs(25 * 3600);

    #[test]
    fn the_25_hour_rule() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .expect("t")
            .to_utc();
        let fresh = now - chrono::Duration::minutes(24 * 60 + 59);
        let stale = now - chrono::Duration::minutes(25 * 60 + 1);
        assert_eq!(
            evaluate(&series(vec![backup(fresh, true, 10)]), &[], now, MAX_AGE)[0].status,
            Status::Ok
        );
        assert_eq!(
            evaluate(&series(vec![backup(stale, true, 10)]), &[], now, MAX_AGE)[0].status,
            Status::Stale
        );
    }

    #[test]
    fn incomplete_runs_count_as_failed_only_after_the_grace() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .expect("t")
            .to_utc();
        let good = backup(now - chrono::Duration::hours(20), true, 10);
        let running = backup(now - chrono::Duration::hours(1), false, 5);
        let dead = backup(now - chrono::Duration::hours(7), false, 5);
        assert_eq!(
            evaluate(&series(vec![good.clone(), running]), &[], now, MAX_AGE)[0].status,
            Status::Ok
        );
        assert_eq!(
            evaluate(&series(vec![good, dead]), &[], now, MAX_AGE)[0].status,
            Status::Failed
        );
    }

    #[test]
    fn sizes_and_missing() {
        let now = Utc::now();
        let rows = evaluate(
            &series(vec![
                backup(now - chrono::Duration::hours(30), true, 100),
                backup(now - chrono::Duration::hours(2), true, 90),
            ]),
            &[
                ("main".into(), "app".into()),
                ("main".into(), "billing".into()),
            ],
            now,
            MAX_AGE,
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].bytes,
                rows[0].bytes_change,
                rows[0].complete_backups,
                rows[0].total_bytes
            ),
            (Some(90), Some(-10), 2, 190)
        );
        assert_eq!(rows[1].status, Status::Missing);
        assert_eq!(rows[1].database, "billing");
    }
}
