//! Freshness: is the newest good backup of each database recent enough, and is the newest backup
//! a drill restored recent enough? Pure; time is injected.
//!
//! Two ages per source: the newest complete backup's ([`Freshness::age_seconds`], stale after
//! `BACKUP_MAX_AGE`) and the newest *verified* backup's ([`Freshness::verified_age_seconds`]: the
//! newest complete backup with a `passed` drill record, aged by its backup time, not the drill's),
//! unverified after `BACKUP_MAX_UNVERIFIED_AGE`. A source without any verified backup is
//! unverified only once its oldest complete backup is older than that limit, so a new deployment
//! is not unverified on its first day.
//!
//! One status per source; the worse wins, in this order: missing, failed, suspicious,
//! unencrypted, stale, unverified, ok. Unverified is the mildest alarm: a stale source has no
//! recent backup at all (the more urgent fix; drills of a stale source cannot help), while an
//! unverified one has recent backups that nobody proved restorable. The verified age is reported
//! whatever the status, so an operator sees both facts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::series::{DrillOutcome, Kind, Series};
use crate::core::source::SourceSpec;

/// A database's backup status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The newest complete backup is younger than the maximum age.
    Ok,
    /// The newest complete backup is too old.
    Stale,
    /// The newest run left no manifest and is past the grace period: it failed.
    Failed,
    /// The newest complete backup is flagged suspicious (e.g. far fewer objects than before).
    Suspicious,
    /// Encryption is configured (`BACKUP_ENCRYPTION_RECIPIENTS`) but the newest complete database
    /// backup is not encrypted: readable by anyone who can read the bucket.
    Unencrypted,
    /// Recent backups exist, but the newest one a drill restored is older than
    /// `BACKUP_MAX_UNVERIFIED_AGE` (or none was, and the oldest backup is older than that).
    Unverified,
    /// No complete backup at all.
    Missing,
}

impl Status {
    /// The status's name as in the JSON (`ok`, `stale`…).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Stale => "stale",
            Self::Failed => "failed",
            Self::Suspicious => "suspicious",
            Self::Unencrypted => "unencrypted",
            Self::Unverified => "unverified",
            Self::Missing => "missing",
        }
    }
}

/// One row of the evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    /// Database or bucket.
    pub kind: Kind,
    /// Logical source (databases) or source bucket (snapshots).
    pub source: String,
    /// Database name, or `snapshots`.
    pub name: String,
    /// Status.
    pub status: Status,
    /// Id of the newest complete backup.
    pub newest_backup: Option<String>,
    /// Its age in seconds.
    pub age_seconds: Option<i64>,
    /// Its stored bytes.
    pub bytes: Option<u64>,
    /// Whether it is encrypted (databases with a complete backup; `None` otherwise).
    pub encrypted: Option<bool>,
    /// Change in bytes against the previous complete backup.
    pub bytes_change: Option<i64>,
    /// Complete backups held.
    pub complete_backups: usize,
    /// Bytes stored for this database (all runs).
    pub total_bytes: u64,
    /// Sizes of the last [`HISTORY`] complete backups, oldest first (the status page's chart).
    pub recent_sizes: Vec<u64>,
    /// Id of the newest complete backup a drill passed on.
    pub newest_verified_backup: Option<String>,
    /// Its age in seconds (from its backup time, not the drill's).
    pub verified_age_seconds: Option<i64>,
    /// The outcome of the newest drill whose outcome is known (by drill time), if any.
    pub last_drill_outcome: Option<DrillOutcome>,
    /// The backup that drill restored.
    pub last_drill_backup: Option<String>,
}

/// How many complete backups' sizes [`Freshness::recent_sizes`] holds.
pub const HISTORY: usize = 30;

impl Freshness {
    /// `source/name` for databases, `gs://bucket` for snapshots.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Database => format!("{}/{}", self.source, self.name),
            Kind::Bucket => format!("gs://{}", self.source),
        }
    }
}

/// A run without manifest younger than this may still be running; older, it failed.
pub const RUN_GRACE: Duration = Duration::from_secs(6 * 3600);

/// The default `BACKUP_MAX_UNVERIFIED_AGE`: a weekly drill plus a day.
pub const DEFAULT_MAX_UNVERIFIED_AGE: Duration = Duration::from_secs(8 * 24 * 3600);

/// The limits a deployment judges its sources by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Stale after this (`BACKUP_MAX_AGE`).
    pub max_age: Duration,
    /// Unverified after this (`BACKUP_MAX_UNVERIFIED_AGE`).
    pub max_unverified_age: Duration,
    /// Database backups must be encrypted (`BACKUP_ENCRYPTION_RECIPIENTS` is set).
    pub encryption_required: bool,
}

impl Limits {
    /// `max_age`, the default unverified limit, no encryption required.
    pub fn new(max_age: Duration) -> Self {
        Self { max_age, max_unverified_age: DEFAULT_MAX_UNVERIFIED_AGE, encryption_required: false }
    }
}

/// Evaluates every series, plus `expected` databases with no series at all (missing).
///
/// `limits.encryption_required` (recipients are configured for this deployment): a database whose
/// newest complete backup is not encrypted is [`Status::Unencrypted`]. The fact comes from the
/// deployment's configuration, not from the backups, so a `db-backup` that lost its recipients
/// (or an old image, or a manual run with another environment) is caught. Precedence: missing,
/// failed, suspicious, unencrypted (data is exposed now), stale, unverified (see the module).
pub fn evaluate(
    series: &[Series],
    expected: &[(Kind, String, String)],
    now: DateTime<Utc>,
    limits: &Limits,
) -> Vec<Freshness> {
    let max_age = chrono::Duration::from_std(limits.max_age).unwrap_or(chrono::Duration::MAX);
    let max_unverified = chrono::Duration::from_std(limits.max_unverified_age).unwrap_or(chrono::Duration::MAX);
    let encryption_required = limits.encryption_required;
    let grace = chrono::Duration::from_std(RUN_GRACE).unwrap_or(chrono::Duration::MAX);
    let mut rows: Vec<Freshness> = series
        .iter()
        .map(|s| {
            let complete: Vec<_> = s.backups.iter().filter(|b| b.complete).collect();
            let newest = complete.last();
            let previous = complete.len().checked_sub(2).and_then(|i| complete.get(i));
            let age = newest.map(|b| now - b.run.started);
            let newest_run_failed = s.backups.last().is_some_and(|b| !b.complete && now - b.last_write > grace);
            let encrypted = (s.kind == Kind::Database).then(|| newest.map(|b| b.encrypted)).flatten();
            let verified = s.newest_verified();
            let verified_age = verified.map(|b| now - b.run.started);
            let unverified = match (verified_age, complete.first()) {
                (Some(v), _) => v > max_unverified,
                (None, Some(oldest)) => now - oldest.run.started > max_unverified,
                (None, None) => false,
            };
            let last_drill = s
                .backups
                .iter()
                .filter_map(|b| b.last_drill().map(|d| (d, b)))
                .max_by(|(x, bx), (y, by)| (x.drilled_at, &bx.run).cmp(&(y.drilled_at, &by.run)));
            let status = match age {
                None => Status::Missing,
                Some(_) if newest_run_failed => Status::Failed,
                Some(_) if newest.is_some_and(|b| b.suspicious) => Status::Suspicious,
                Some(_) if encryption_required && encrypted == Some(false) => Status::Unencrypted,
                Some(a) if a > max_age => Status::Stale,
                Some(_) if unverified => Status::Unverified,
                Some(_) => Status::Ok,
            };
            Freshness {
                kind: s.kind,
                source: s.source.clone(),
                name: s.name.clone(),
                status,
                newest_backup: newest.map(|b| b.run.to_string()),
                age_seconds: age.map(|a| a.num_seconds()),
                bytes: newest.map(|b| b.bytes),
                encrypted,
                bytes_change: match (newest, previous) {
                    (Some(n), Some(p)) => {
                        Some(i64::try_from(n.bytes).unwrap_or(i64::MAX) - i64::try_from(p.bytes).unwrap_or(i64::MAX))
                    }
                    _ => None,
                },
                complete_backups: complete.len(),
                total_bytes: s.backups.iter().map(|b| b.bytes).sum(),
                recent_sizes: complete[complete.len().saturating_sub(HISTORY)..].iter().map(|b| b.bytes).collect(),
                newest_verified_backup: verified.map(|b| b.run.to_string()),
                verified_age_seconds: verified_age.map(|a| a.num_seconds()),
                last_drill_outcome: last_drill.and_then(|(d, _)| d.outcome),
                last_drill_backup: last_drill.map(|(_, b)| b.run.to_string()),
            }
        })
        .collect();
    for (kind, source, name) in expected {
        if !rows.iter().any(|r| r.kind == *kind && &r.source == source && &r.name == name) {
            rows.push(Freshness {
                kind: *kind,
                source: source.clone(),
                name: name.clone(),
                status: Status::Missing,
                newest_backup: None,
                age_seconds: None,
                bytes: None,
                encrypted: None,
                bytes_change: None,
                complete_backups: 0,
                total_bytes: 0,
                recent_sizes: Vec::new(),
                newest_verified_backup: None,
                verified_age_seconds: None,
                last_drill_outcome: None,
                last_drill_backup: None,
            });
        }
    }
    rows
}

/// The series that must exist: every expected database of `source` and every expected bucket,
/// under the name `storage-backup` writes its snapshots to ([`SourceSpec::bucket`]).
pub fn expected_series(source: &str, databases: &[String], buckets: &[SourceSpec]) -> Vec<(Kind, String, String)> {
    let dbs = databases.iter().map(|d| (Kind::Database, source.to_owned(), d.clone()));
    let buckets = buckets.iter().map(|b| (Kind::Bucket, b.bucket.clone(), "snapshots".to_owned()));
    dbs.chain(buckets).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_series_cover_databases_and_buckets_in_every_documented_form() {
        let sources: Vec<SourceSpec> = ["media", "logs/2026", "gs://photos", "gs://videos/raw/", "file:///srv/uploads"]
            .iter()
            .map(|s| s.parse().expect("a documented form"))
            .collect();
        let e = expected_series("main", &["app".into()], &sources);
        let buckets: Vec<_> = e.iter().filter(|(k, ..)| *k == Kind::Bucket).map(|(_, b, _)| b.as_str()).collect();
        assert_eq!(buckets, ["media", "logs", "photos", "videos", "uploads"], "no phantom gs:// or file: source");
        assert_eq!(e[0], (Kind::Database, "main".into(), "app".into()));
    }
    use crate::core::naming::RunId;
    use crate::core::series::Backup;

    fn backup(started: DateTime<Utc>, complete: bool, bytes: u64) -> Backup {
        Backup {
            run: RunId { started, suffix: format!("{:08x}", started.timestamp() as u32) },
            complete,
            suspicious: false,
            encrypted: false,
            bytes,
            last_write: started,
            keys: Vec::new(),
            drills: Vec::new(),
        }
    }

    fn series(backups: Vec<Backup>) -> Vec<Series> {
        vec![Series { kind: Kind::Database, source: "main".into(), name: "app".into(), backups }]
    }

    const MAX_AGE: Duration = Duration::from_secs(25 * 3600);

    fn limits(encryption_required: bool) -> Limits {
        Limits { encryption_required, ..Limits::new(MAX_AGE) }
    }

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).expect("time").to_utc()
    }

    #[test]
    fn the_25_hour_rule() {
        let now = at("2026-11-26T08:00:00Z");
        let fresh = now - chrono::Duration::minutes(24 * 60 + 59);
        let stale = now - chrono::Duration::minutes(25 * 60 + 1);
        assert_eq!(evaluate(&series(vec![backup(fresh, true, 10)]), &[], now, &limits(false))[0].status, Status::Ok);
        assert_eq!(evaluate(&series(vec![backup(stale, true, 10)]), &[], now, &limits(false))[0].status, Status::Stale);
    }

    #[test]
    fn incomplete_runs_count_as_failed_only_after_the_grace() {
        let now = at("2026-11-26T08:00:00Z");
        let good = backup(now - chrono::Duration::hours(20), true, 10);
        let running = backup(now - chrono::Duration::hours(1), false, 5);
        let dead = backup(now - chrono::Duration::hours(7), false, 5);
        assert_eq!(evaluate(&series(vec![good.clone(), running]), &[], now, &limits(false))[0].status, Status::Ok);
        assert_eq!(evaluate(&series(vec![good.clone(), dead]), &[], now, &limits(false))[0].status, Status::Failed);
        let odd = Backup { suspicious: true, ..good };
        assert_eq!(evaluate(&series(vec![odd]), &[], now, &limits(false))[0].status, Status::Suspicious);
    }

    #[test]
    fn sizes_and_missing() {
        let now = Utc::now();
        let rows = evaluate(
            &series(vec![
                backup(now - chrono::Duration::hours(30), true, 100),
                backup(now - chrono::Duration::hours(2), true, 90),
            ]),
            &[(Kind::Database, "main".into(), "app".into()), (Kind::Database, "main".into(), "billing".into())],
            now,
            &limits(false),
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].bytes, rows[0].bytes_change, rows[0].complete_backups, rows[0].total_bytes),
            (Some(90), Some(-10), 2, 190)
        );
        assert_eq!(rows[0].recent_sizes, [100, 90]);
        assert_eq!(rows[1].status, Status::Missing);
        assert_eq!(rows[1].label(), "main/billing");
        assert_eq!((rows[0].encrypted, rows[1].encrypted), (Some(false), None));
    }

    #[test]
    fn an_unencrypted_newest_backup_is_an_alert_only_where_encryption_is_configured() {
        let now = at("2026-11-26T08:00:00Z");
        let old = Backup { encrypted: true, ..backup(now - chrono::Duration::hours(26), true, 10) };
        let plain = backup(now - chrono::Duration::hours(2), true, 10);
        let sealed = Backup { encrypted: true, ..plain.clone() };
        let rows = |b: Vec<Backup>, required| evaluate(&series(b), &[], now, &limits(required));
        assert_eq!(rows(vec![old.clone(), plain.clone()], true)[0].status, Status::Unencrypted);
        assert_eq!(rows(vec![old.clone(), plain.clone()], true)[0].encrypted, Some(false));
        assert_eq!(rows(vec![old.clone(), plain.clone()], false)[0].status, Status::Ok);
        assert_eq!(rows(vec![plain.clone(), sealed.clone()], true)[0].status, Status::Ok);
        assert_eq!(rows(vec![sealed], true)[0].encrypted, Some(true));
        // A stale backup that is also unencrypted: the exposure is reported first.
        let stale_plain = backup(now - chrono::Duration::hours(30), true, 10);
        assert_eq!(rows(vec![stale_plain], true)[0].status, Status::Unencrypted);
        // Snapshots are not dumps: no flag, never unencrypted.
        let mut snaps = series(vec![plain]);
        snaps[0].kind = Kind::Bucket;
        let row = &evaluate(&snaps, &[], now, &limits(true))[0];
        assert_eq!((row.status, row.encrypted), (Status::Ok, None));
    }

    fn drilled(b: Backup, outcome: DrillOutcome) -> Backup {
        use crate::core::series::DrillRef;
        let at = b.run.started + chrono::Duration::hours(3);
        let drill =
            DrillRef { key: format!("x/drills/{}.json", at.timestamp()), drilled_at: Some(at), outcome: Some(outcome) };
        Backup { drills: vec![drill], ..b }
    }

    #[test]
    fn the_verified_age_and_the_unverified_status() {
        let now = at("2026-12-02T08:00:00Z");
        let days = |d: i64| backup(now - chrono::Duration::days(d) - chrono::Duration::hours(1), true, 10);
        let eval = |b: Vec<Backup>| evaluate(&series(b), &[], now, &limits(false)).remove(0);

        // A new deployment: no drill yet, oldest backup 7 days old: not unverified yet.
        let row = eval((0..8).rev().map(days).collect());
        assert_eq!(
            (row.status, row.newest_verified_backup.as_deref(), row.verified_age_seconds),
            (Status::Ok, None, None)
        );
        // Past the limit without any passed drill: unverified.
        let row = eval((0..9).rev().map(days).collect());
        assert_eq!(row.status, Status::Unverified);
        // A failed drill verifies nothing.
        let mut b: Vec<Backup> = (0..9).rev().map(days).collect();
        b[8] = drilled(b[8].clone(), DrillOutcome::Failed);
        let row = eval(b.clone());
        assert_eq!((row.status, row.last_drill_outcome), (Status::Unverified, Some(DrillOutcome::Failed)));
        assert_eq!(row.last_drill_backup, row.newest_backup);
        // A passed drill of a 7-day-old backup: ok, aged by the backup, not the drill.
        b[1] = drilled(b[1].clone(), DrillOutcome::Passed);
        let row = eval(b.clone());
        assert_eq!(row.status, Status::Ok);
        assert_eq!(row.verified_age_seconds, Some((7 * 24 + 1) * 3600));
        assert_eq!(row.newest_verified_backup, Some(b[1].run.to_string()));
        assert_eq!(row.last_drill_outcome, Some(DrillOutcome::Failed), "the newest drill (of b[8]) failed");
        // Verified 9 days ago: unverified again.
        let mut b: Vec<Backup> = (0..12).rev().map(days).collect();
        b[2] = drilled(b[2].clone(), DrillOutcome::Passed);
        assert_eq!(eval(b.clone()).status, Status::Unverified);
        assert_eq!(eval(b.clone()).verified_age_seconds, Some((9 * 24 + 1) * 3600));
        // Worse statuses win: stale beats unverified, and so do suspicious and unencrypted.
        let old: Vec<Backup> = (2..12).rev().map(days).collect();
        assert_eq!(eval(old.clone()).status, Status::Stale);
        let mut odd = b.clone();
        odd[11].suspicious = true;
        assert_eq!(eval(odd).status, Status::Suspicious);
        assert_eq!(evaluate(&series(b.clone()), &[], now, &limits(true))[0].status, Status::Unencrypted);
        // The limit is the setting's.
        let lenient = Limits { max_unverified_age: Duration::from_secs(10 * 24 * 3600), ..limits(false) };
        assert_eq!(evaluate(&series(b), &[], now, &lenient)[0].status, Status::Ok);
        // An incomplete run with a passed record proves nothing.
        let mut b: Vec<Backup> = (0..12).rev().map(days).collect();
        b[11] = drilled(Backup { complete: false, ..b[11].clone() }, DrillOutcome::Passed);
        assert_eq!(eval(b).newest_verified_backup, None);
    }
}
