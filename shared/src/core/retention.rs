//! Retention: which backups a prune keeps, which it deletes, and why. Pure: the series come from
//! a listing ([`crate::core::series`]), time and time zone are injected.
//!
//! Keep rules (a backup is kept when any rule keeps it; every rule that does is recorded):
//! - retention: every complete backup younger than `BACKUP_RETENTION_DAYS`;
//! - keep-last N: the N newest complete backups;
//! - keep-daily/weekly/monthly N: the newest complete backup of each of the N most recent calendar
//!   days / ISO weeks / months (in `BACKUP_TIMEZONE`) that have a complete backup.
//!
//! Safety rules no policy overrides:
//! - the newest complete, non-suspicious backup of a series is always kept;
//! - the newest verified backup of a series (complete, with a `passed` drill record) is always
//!   kept, so the series never loses its last proof of a restore (its drill records stay with it:
//!   records live in the backup's folder and go only with a deleted backup);
//! - nothing is deleted in a series whose newest run failed (no manifest past
//!   [`RUN_GRACE`]) or whose newest complete backup is suspicious;
//! - one run deletes at most `max_delete_fraction` of a series' complete backups unless forced
//!   (otherwise its backups are held; orphans are still collected);
//! - runs without completion object are orphans only when they have not written for the grace
//!   period (and never less than [`RUN_GRACE`]), so a running backup is never deleted.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::core::freshness::RUN_GRACE;
use crate::core::naming::RunId;
use crate::core::object::ObjectMeta;
use crate::core::series::{Kind, Series, is_completion_key};

/// The retention policy and the safety settings of a prune.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Complete backups younger than this many days are kept.
    pub retention_days: u32,
    /// Keep the N newest complete backups.
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the N most recent days that have one.
    pub keep_daily: Option<u32>,
    /// … of each of the N most recent ISO weeks.
    pub keep_weekly: Option<u32>,
    /// … of each of the N most recent months.
    pub keep_monthly: Option<u32>,
    /// Orphans and unreferenced blobs younger than this are never deleted.
    pub grace: Duration,
    /// One run deletes at most this share of a series' complete backups…
    pub max_delete_fraction: f64,
    /// …unless forced.
    pub force: bool,
}

impl Policy {
    /// A policy with only the retention floor, the default grace (48 h) and share (0.5).
    pub fn new(retention_days: u32) -> Self {
        Self {
            retention_days,
            keep_last: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            grace: Duration::from_secs(48 * 3600),
            max_delete_fraction: 0.5,
            force: false,
        }
    }

    /// The age after which runs without completion object count as orphans.
    pub fn orphan_age(&self) -> Duration {
        self.grace.max(RUN_GRACE)
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeepReason {
    /// The newest complete, non-suspicious backup (safety rule).
    NewestGood,
    /// The newest backup a drill restored (safety rule).
    NewestVerified,
    /// The series is held (see [`Hold`]).
    Held,
    /// No completion object yet, but it wrote recently: it may still be running.
    InProgress,
    /// Younger than the retention floor.
    Retention {
        /// The floor in days.
        days: u32,
    },
    /// Among the newest N.
    Last {
        /// 1 = newest.
        rank: u32,
        /// N.
        of: u32,
    },
    /// Newest of its day.
    Daily {
        /// The day (in the policy's time zone).
        day: NaiveDate,
    },
    /// Newest of its ISO week.
    Weekly {
        /// ISO year.
        year: i32,
        /// ISO week.
        week: u32,
    },
    /// Newest of its month.
    Monthly {
        /// Year.
        year: i32,
        /// Month, 1-12.
        month: u32,
    },
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NewestGood => f.write_str("newest good"),
            Self::NewestVerified => f.write_str("newest verified"),
            Self::Held => f.write_str("held"),
            Self::InProgress => f.write_str("in progress"),
            Self::Retention { days } => write!(f, "younger than {days}d"),
            Self::Last { rank, of } => write!(f, "last {of} (#{rank})"),
            Self::Daily { day } => write!(f, "daily {day}"),
            Self::Weekly { year, week } => write!(f, "weekly {year}-W{week:02}"),
            Self::Monthly { year, month } => write!(f, "monthly {year}-{month:02}"),
        }
    }
}

/// Why a backup is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Complete, but no rule keeps it.
    Expired,
    /// No completion object and no write for longer than the grace period.
    Orphan,
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Expired => "no rule keeps it",
            Self::Orphan => "orphan (no manifest, past the grace period)",
        })
    }
}

/// What happens to one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Kept, for these reasons (at least one).
    Keep(Vec<KeepReason>),
    /// Deleted, for this reason.
    Delete(DeleteReason),
}

/// The decision on one run of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The run.
    pub run: RunId,
    /// Its completion object exists.
    pub complete: bool,
    /// Flagged suspicious.
    pub suspicious: bool,
    /// Complete, and a drill passed on it.
    pub verified: bool,
    /// Bytes of its objects.
    pub bytes: u64,
    /// When it last wrote.
    pub last_write: DateTime<Utc>,
    /// Its objects.
    pub keys: Vec<String>,
    /// Keep or delete.
    pub action: Action,
}

impl Decision {
    /// True when the backup is to be deleted.
    pub fn is_delete(&self) -> bool {
        matches!(self.action, Action::Delete(_))
    }
}

/// Why nothing (or only orphans) is deleted in a series.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// The newest run left no manifest past [`RUN_GRACE`].
    NewestFailed {
        /// Its id.
        backup_id: String,
    },
    /// The newest complete backup is suspicious.
    NewestSuspicious {
        /// Its id.
        backup_id: String,
    },
    /// The plan would delete a larger share than allowed.
    TooManyDeletes {
        /// Backups the rules would delete.
        deletes: usize,
        /// Complete backups in the series.
        backups: usize,
        /// The allowed share.
        max_fraction: f64,
    },
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NewestFailed { backup_id } => {
                write!(f, "newest run {backup_id} failed (no manifest): nothing is pruned until a backup succeeds")
            }
            Self::NewestSuspicious { backup_id } => write!(
                f,
                "newest backup {backup_id} is suspicious: nothing is pruned until a human looks or a good backup follows"
            ),
            Self::TooManyDeletes { deletes, backups, max_fraction } => write!(
                f,
                "the rules would delete {deletes} of {backups} backups, more than the allowed share {max_fraction}: \
                 backups kept (orphans still collected); rerun with --force to apply"
            ),
        }
    }
}

/// The plan of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPlan {
    /// Database or bucket.
    pub kind: Kind,
    /// Logical source, or the source bucket.
    pub source: String,
    /// Database name, or `snapshots`.
    pub name: String,
    /// Set when a safety rule holds the series.
    pub hold: Option<Hold>,
    /// One decision per run, oldest first.
    pub decisions: Vec<Decision>,
}

impl SeriesPlan {
    /// `source/name` for databases, `gs://bucket` for snapshots.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Database => format!("{}/{}", self.source, self.name),
            Kind::Bucket => format!("gs://{}", self.source),
        }
    }

    /// The decisions to delete.
    pub fn deletions(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.is_delete())
    }

    /// The runs kept.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.is_delete())
    }

    /// The keys of a deleted run in the order they must go: the completion object first, so a
    /// half-deleted backup never looks complete (a crash leaves an orphan the next run collects).
    pub fn deletion_order<'a>(&self, decision: &'a Decision) -> Vec<&'a str> {
        let (mut first, rest): (Vec<&str>, Vec<&str>) =
            decision.keys.iter().map(String::as_str).partition(|k| is_completion_key(self.kind, k));
        first.extend(rest);
        first
    }
}

/// Counts of a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Series planned.
    pub series: usize,
    /// Series held by a safety rule.
    pub held: usize,
    /// Runs kept.
    pub kept: usize,
    /// Complete backups deleted.
    pub backups: usize,
    /// Orphaned runs deleted.
    pub orphans: usize,
    /// Objects deleted.
    pub objects: usize,
    /// Bytes deleted.
    pub bytes: u64,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// One entry per series.
    pub series: Vec<SeriesPlan>,
}

impl Plan {
    /// Counts.
    pub fn totals(&self) -> Totals {
        let mut t = Totals { series: self.series.len(), ..Totals::default() };
        for s in &self.series {
            t.held += usize::from(s.hold.is_some());
            for d in &s.decisions {
                match d.action {
                    Action::Keep(_) => t.kept += 1,
                    Action::Delete(reason) => {
                        match reason {
                            DeleteReason::Expired => t.backups += 1,
                            DeleteReason::Orphan => t.orphans += 1,
                        }
                        t.objects += d.keys.len();
                        t.bytes += d.bytes;
                    }
                }
            }
        }
        t
    }

    /// A readable table of every decision (what `--dry-run` prints).
    pub fn table(&self, tz: Tz) -> String {
        let started = format!("STARTED ({})", tz.name());
        let w = started.len().max(16);
        let mut out = format!(
            "{:<28} {:<26} {:<w$} {:<10} {:>10}  {:<6} {}\n",
            "SERIES", "BACKUP", started, "STATE", "SIZE", "ACTION", "WHY"
        );
        for s in &self.series {
            let label = s.label();
            for d in &s.decisions {
                let state = match (d.complete, d.suspicious, d.verified) {
                    (true, false, false) => "complete",
                    (true, false, true) => "verified",
                    (true, true, _) => "suspicious",
                    (false, ..) => "incomplete",
                };
                let (action, why) = match &d.action {
                    Action::Keep(reasons) => {
                        ("keep", reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
                    }
                    Action::Delete(reason) => ("DELETE", reason.to_string()),
                };
                out.push_str(&format!(
                    "{:<28} {:<26} {:<w$} {:<10} {:>10}  {:<6} {}\n",
                    label,
                    d.run.to_string(),
                    d.run.started.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string(),
                    state,
                    crate::core::units::bytes(d.bytes),
                    action,
                    why
                ));
            }
        }
        for s in &self.series {
            if let Some(hold) = &s.hold {
                out.push_str(&format!("held: {}: {hold}\n", s.label()));
            }
        }
        let t = self.totals();
        out.push_str(&format!(
            "plan: {} series ({} held); keep {} runs; delete {} backups and {} orphans ({} objects, {})\n",
            t.series,
            t.held,
            t.kept,
            t.backups,
            t.orphans,
            t.objects,
            crate::core::units::bytes(t.bytes)
        ));
        out
    }
}

/// Plans every series.
pub fn plan(series: &[Series], policy: &Policy, now: DateTime<Utc>, tz: Tz) -> Plan {
    Plan { series: series.iter().map(|s| plan_series(s, policy, now, tz)).collect() }
}

/// Adds `reason(period)` to the newest complete backup of each of the `n` most recent periods.
fn keep_periods<K: Ord + Clone>(
    newest_first: &[(usize, DateTime<Tz>)],
    n: Option<u32>,
    reasons: &mut [Vec<KeepReason>],
    period: impl Fn(&DateTime<Tz>) -> K,
    reason: impl Fn(&K) -> KeepReason,
) {
    let Some(n) = n else { return };
    let mut seen: BTreeSet<K> = BTreeSet::new();
    for (i, t) in newest_first {
        let k = period(t);
        if seen.contains(&k) {
            continue;
        }
        if seen.len() >= n as usize {
            break;
        }
        reasons[*i].push(reason(&k));
        seen.insert(k);
    }
}

fn plan_series(s: &Series, policy: &Policy, now: DateTime<Utc>, tz: Tz) -> SeriesPlan {
    let b = &s.backups;
    let mut order: Vec<usize> = (0..b.len()).collect();
    order.sort_by(|&x, &y| b[x].run.cmp(&b[y].run));
    // Complete backups, newest first, with their start in the calendar's time zone.
    let newest_first: Vec<(usize, DateTime<Tz>)> =
        order.iter().rev().filter(|&&i| b[i].complete).map(|&i| (i, b[i].run.started.with_timezone(&tz))).collect();
    let mut reasons: Vec<Vec<KeepReason>> = vec![Vec::new(); b.len()];

    if let Some(&i) = order.iter().rev().find(|&&i| b[i].complete && !b[i].suspicious) {
        reasons[i].push(KeepReason::NewestGood);
    }
    if let Some(&i) = order.iter().rev().find(|&&i| b[i].verified()) {
        reasons[i].push(KeepReason::NewestVerified);
    }
    let floor = chrono::Duration::days(i64::from(policy.retention_days));
    for &(i, _) in &newest_first {
        if now - b[i].run.started < floor {
            reasons[i].push(KeepReason::Retention { days: policy.retention_days });
        }
    }
    if let Some(n) = policy.keep_last {
        for (rank, &(i, _)) in (1..).zip(newest_first.iter().take(n as usize)) {
            reasons[i].push(KeepReason::Last { rank, of: n });
        }
    }
    keep_periods(&newest_first, policy.keep_daily, &mut reasons, DateTime::date_naive, |&day| KeepReason::Daily {
        day,
    });
    keep_periods(
        &newest_first,
        policy.keep_weekly,
        &mut reasons,
        |t| (t.iso_week().year(), t.iso_week().week()),
        |&(year, week)| KeepReason::Weekly { year, week },
    );
    keep_periods(
        &newest_first,
        policy.keep_monthly,
        &mut reasons,
        |t| (t.year(), t.month()),
        |&(year, month)| KeepReason::Monthly { year, month },
    );

    let orphan_age = crate::core::units::to_chrono(policy.orphan_age());
    let mut decisions: Vec<Decision> = order
        .iter()
        .map(|&i| {
            let backup = &b[i];
            let mut why = std::mem::take(&mut reasons[i]);
            why.sort();
            let action = if !backup.complete {
                if now - backup.last_write > orphan_age {
                    Action::Delete(DeleteReason::Orphan)
                } else {
                    Action::Keep(vec![KeepReason::InProgress])
                }
            } else if why.is_empty() {
                Action::Delete(DeleteReason::Expired)
            } else {
                Action::Keep(why)
            };
            Decision {
                run: backup.run.clone(),
                complete: backup.complete,
                suspicious: backup.suspicious,
                verified: backup.verified(),
                bytes: backup.bytes,
                last_write: backup.last_write,
                keys: backup.keys.clone(),
                action,
            }
        })
        .collect();

    let run_grace = crate::core::units::to_chrono(RUN_GRACE);
    let newest_run = order.last().map(|&i| &b[i]);
    let newest_complete = order.iter().rev().map(|&i| &b[i]).find(|x| x.complete);
    let mut hold = match (newest_run, newest_complete) {
        (Some(r), _) if !r.complete && now - r.last_write > run_grace => {
            Some(Hold::NewestFailed { backup_id: r.run.to_string() })
        }
        (_, Some(c)) if c.suspicious => Some(Hold::NewestSuspicious { backup_id: c.run.to_string() }),
        _ => None,
    };
    let hold_all = hold.is_some();
    if !hold_all && !policy.force {
        let deletes = decisions.iter().filter(|d| d.action == Action::Delete(DeleteReason::Expired)).count();
        let backups = newest_first.len();
        if deletes > 0 && deletes as f64 > policy.max_delete_fraction * backups as f64 {
            hold = Some(Hold::TooManyDeletes { deletes, backups, max_fraction: policy.max_delete_fraction });
        }
    }
    if hold.is_some() {
        for d in &mut decisions {
            let held = match d.action {
                Action::Delete(DeleteReason::Expired) => true,
                Action::Delete(DeleteReason::Orphan) => hold_all,
                Action::Keep(_) => false,
            };
            if held {
                d.action = Action::Keep(vec![KeepReason::Held]);
            }
        }
    }
    SeriesPlan { kind: s.kind, source: s.source.clone(), name: s.name.clone(), hold, decisions }
}

/// Blobs no kept snapshot references and older than the grace period (never less than
/// [`RUN_GRACE`]): what may be deleted from `storage/<bucket>/blobs/`.
pub fn unreferenced_blobs<'a>(
    blobs: &'a [ObjectMeta],
    referenced: &HashSet<String>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Vec<&'a ObjectMeta> {
    let grace = crate::core::units::to_chrono(grace.max(RUN_GRACE));
    blobs.iter().filter(|b| !referenced.contains(&b.key) && now - b.updated > grace).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::series::{Backup, DrillOutcome};
    use proptest::prelude::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).expect("time").to_utc()
    }

    fn backup(started: DateTime<Utc>, complete: bool) -> Backup {
        Backup {
            run: RunId { started, suffix: format!("{:08x}", started.timestamp() as u32) },
            complete,
            suspicious: false,
            encrypted: false,
            bytes: 100,
            last_write: started + chrono::Duration::minutes(5),
            keys: vec![format!("db/main/app/{}/dump.pgc.zst", started.timestamp())],
            drills: Vec::new(),
        }
    }

    fn series(backups: Vec<Backup>) -> Series {
        Series { kind: Kind::Database, source: "main".into(), name: "app".into(), backups }
    }

    fn policy() -> Policy {
        Policy { force: true, ..Policy::new(1) }
    }

    /// Start times (UTC) of the backups a plan keeps.
    fn kept(p: &SeriesPlan) -> Vec<DateTime<Utc>> {
        p.kept().filter(|d| d.complete).map(|d| d.run.started).collect()
    }

    fn plan_one(backups: Vec<Backup>, policy: &Policy, now: DateTime<Utc>, tz: Tz) -> SeriesPlan {
        plan(&[series(backups)], policy, now, tz).series.remove(0)
    }

    const LATER: &str = "2027-06-01T00:00:00Z";

    #[test]
    fn daily_boundaries_follow_the_time_zone_across_paris_dst() {
        // 2026-03-29: Paris moves from UTC+1 to UTC+2 at 01:00 UTC.
        let a = at("2026-03-28T22:30:00Z"); // Paris 2026-03-28 23:30 CET
        let b = at("2026-03-29T21:30:00Z"); // Paris 2026-03-29 23:30 CEST
        let c = at("2026-03-29T22:30:00Z"); // Paris 2026-03-30 00:30 CEST
        let p = Policy { keep_daily: Some(3), ..policy() };
        let backups = || vec![backup(a, true), backup(b, true), backup(c, true)];
        assert_eq!(kept(&plan_one(backups(), &p, at(LATER), chrono_tz::Europe::Paris)), [a, b, c]);
        // In UTC, b and c share 2026-03-29: only the newer one is kept.
        assert_eq!(kept(&plan_one(backups(), &p, at(LATER), chrono_tz::UTC)), [a, c]);
        // Autumn: 2026-10-25, back to UTC+1 at 01:00 UTC; 23:30 UTC is already the next day in Paris.
        let d = at("2026-10-24T21:59:00Z"); // Paris 23:59 CEST, 24th
        let e = at("2026-10-24T22:00:00Z"); // Paris 00:00 CEST, 25th
        let f = at("2026-10-25T22:59:00Z"); // Paris 23:59 CET, 25th
        let p = Policy { keep_daily: Some(2), ..policy() };
        let plan =
            plan_one(vec![backup(d, true), backup(e, true), backup(f, true)], &p, at(LATER), chrono_tz::Europe::Paris);
        assert_eq!(kept(&plan), [d, f]);
        let reasons: Vec<_> = plan.decisions.iter().map(|d| d.action.clone()).collect();
        assert_eq!(reasons[1], Action::Delete(DeleteReason::Expired));
        assert_eq!(
            reasons[0],
            Action::Keep(vec![KeepReason::Daily { day: NaiveDate::from_ymd_opt(2026, 10, 24).expect("date") }])
        );
    }

    #[test]
    fn late_evening_utc_is_the_next_day_in_tokyo() {
        let early = at("2026-11-25T10:00:00Z"); // Tokyo 19:00, 25th
        let late = at("2026-11-25T23:30:00Z"); // Tokyo 08:30, 26th
        let next = at("2026-11-26T01:00:00Z"); // Tokyo 10:00, 26th
        let p = Policy { keep_daily: Some(2), ..policy() };
        let backups = || vec![backup(early, true), backup(late, true), backup(next, true)];
        assert_eq!(kept(&plan_one(backups(), &p, at(LATER), chrono_tz::Asia::Tokyo)), [early, next]);
        assert_eq!(kept(&plan_one(backups(), &p, at(LATER), chrono_tz::UTC)), [late, next]);
    }

    #[test]
    fn daily_midnight_boundary_in_utc() {
        let before = at("2026-11-25T23:59:59Z");
        let after = at("2026-11-26T00:00:00Z");
        let older = at("2026-11-25T02:00:00Z");
        let p = Policy { keep_daily: Some(2), ..policy() };
        let plan = plan_one(
            vec![backup(older, true), backup(before, true), backup(after, true)],
            &p,
            at(LATER),
            chrono_tz::UTC,
        );
        assert_eq!(kept(&plan), [before, after]);
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_end() {
        // 2026-12-28 (Mon) … 2027-01-03 (Sun) is ISO week 2026-W53.
        let sunday_before = at("2026-12-27T12:00:00Z"); // 2026-W52
        let thursday = at("2026-12-31T12:00:00Z"); // 2026-W53
        let saturday = at("2027-01-02T12:00:00Z"); // 2026-W53
        let monday = at("2027-01-04T00:00:00Z"); // 2027-W01
        let backups =
            || vec![backup(sunday_before, true), backup(thursday, true), backup(saturday, true), backup(monday, true)];
        let p = Policy { keep_weekly: Some(3), ..policy() };
        let plan = plan_one(backups(), &p, at(LATER), chrono_tz::UTC);
        assert_eq!(kept(&plan), [sunday_before, saturday, monday]);
        assert!(plan.decisions[2].action == Action::Keep(vec![KeepReason::Weekly { year: 2026, week: 53 }]));
        // Monthly: December and January differ, although the ISO week is the same.
        let p = Policy { keep_monthly: Some(2), ..policy() };
        assert_eq!(kept(&plan_one(backups(), &p, at(LATER), chrono_tz::UTC)), [thursday, monday]);
        // Sunday 23:30 UTC is Monday in Tokyo: a week boundary moves with the zone.
        let sun_late = at("2026-12-27T23:30:00Z");
        let p = Policy { keep_weekly: Some(1), ..policy() };
        let tokyo =
            plan_one(vec![backup(sunday_before, true), backup(sun_late, true)], &p, at(LATER), chrono_tz::Asia::Tokyo);
        assert_eq!(kept(&tokyo), [sun_late]);
        let p = Policy { keep_weekly: Some(2), ..policy() };
        let tokyo =
            plan_one(vec![backup(sunday_before, true), backup(sun_late, true)], &p, at(LATER), chrono_tz::Asia::Tokyo);
        assert_eq!(kept(&tokyo), [sunday_before, sun_late]);
        let utc = plan_one(vec![backup(sunday_before, true), backup(sun_late, true)], &p, at(LATER), chrono_tz::UTC);
        assert_eq!(utc.decisions[0].action, Action::Delete(DeleteReason::Expired), "same ISO week in UTC");
    }

    #[test]
    fn monthly_boundary_in_tokyo() {
        let nov = at("2026-11-30T14:00:00Z"); // Tokyo 23:00, Nov 30
        let dec = at("2026-11-30T15:00:00Z"); // Tokyo 00:00, Dec 1
        let p = Policy { keep_monthly: Some(2), ..policy() };
        assert_eq!(
            kept(&plan_one(vec![backup(nov, true), backup(dec, true)], &p, at(LATER), chrono_tz::Asia::Tokyo)),
            [nov, dec]
        );
        let utc = plan_one(vec![backup(nov, true), backup(dec, true)], &p, at(LATER), chrono_tz::UTC);
        assert_eq!(kept(&utc), [dec]);
    }

    #[test]
    fn periods_count_only_periods_that_have_backups() {
        // Backups stopped months ago: keep-daily 2 still keeps two, never zero.
        let a = at("2026-01-01T02:00:00Z");
        let b = at("2026-01-02T02:00:00Z");
        let c = at("2026-01-03T02:00:00Z");
        let p = Policy { keep_daily: Some(2), ..policy() };
        assert_eq!(
            kept(&plan_one(vec![backup(a, true), backup(b, true), backup(c, true)], &p, at(LATER), chrono_tz::UTC)),
            [b, c]
        );
    }

    #[test]
    fn retention_floor_and_keep_last() {
        let now = at("2026-11-26T12:00:00Z");
        let days = |d: i64| now - chrono::Duration::days(d) - chrono::Duration::hours(1);
        let backups: Vec<Backup> = (0..10).rev().map(|d| backup(days(d), true)).collect();
        let p = Policy { retention_days: 3, keep_last: Some(5), ..policy() };
        let plan = plan_one(backups, &p, now, chrono_tz::UTC);
        assert_eq!(kept(&plan), (0..5).rev().map(days).collect::<Vec<_>>());
        let newest = plan.decisions.last().expect("newest");
        assert_eq!(
            newest.action,
            Action::Keep(vec![
                KeepReason::NewestGood,
                KeepReason::Retention { days: 3 },
                KeepReason::Last { rank: 1, of: 5 }
            ])
        );
        assert_eq!(plan.decisions[6].action, Action::Keep(vec![KeepReason::Last { rank: 4, of: 5 }]));
        assert_eq!(plan.decisions[4].action, Action::Delete(DeleteReason::Expired));
    }

    fn with_drill(b: Backup, outcome: Option<DrillOutcome>) -> Backup {
        let key = format!("db/main/app/{}/drills/{}.json", b.run, b.run.started.format(crate::core::naming::TS_FORMAT));
        let drill = crate::core::series::DrillRef { key: key.clone(), drilled_at: Some(b.run.started), outcome };
        let mut keys = b.keys.clone();
        keys.push(key);
        Backup { drills: vec![drill], keys, ..b }
    }

    #[test]
    fn the_newest_verified_backup_and_its_records_survive_any_policy() {
        let now = at("2026-11-26T12:00:00Z");
        let days = |d: i64| now - chrono::Duration::days(d);
        // Ten daily backups; the one of 6 days ago is the newest a drill passed on, the newer ones
        // were drilled and failed or never drilled.
        let mut b: Vec<Backup> = (0..10).rev().map(|d| backup(days(d), true)).collect();
        b[3] = with_drill(b[3].clone(), Some(DrillOutcome::Passed));
        b[1] = with_drill(b[1].clone(), Some(DrillOutcome::Passed));
        b[6] = with_drill(b[6].clone(), Some(DrillOutcome::Failed));
        let p = Policy { keep_last: Some(2), ..policy() };
        let plan = plan_one(b.clone(), &p, now, chrono_tz::UTC);
        assert_eq!(plan.decisions[3].action, Action::Keep(vec![KeepReason::NewestVerified]));
        assert!(plan.decisions[1].is_delete(), "an older verified backup has no protection");
        assert_eq!(plan.decisions[1].keys.len(), 2, "deleted with its drill record");
        assert!(plan.decisions[6].is_delete(), "a failed drill protects nothing");
        let deleted: Vec<&str> = plan.deletions().flat_map(|d| plan.deletion_order(d)).collect();
        assert!(!deleted.iter().any(|k| b[3].keys.iter().any(|kk| kk == k)), "its records stay");
        assert_eq!(plan.deletion_order(&plan.decisions[1])[0], b[1].keys[0], "the dump goes with the record");
        // An unknown outcome verifies nothing.
        let mut b: Vec<Backup> = (0..10).rev().map(|d| backup(days(d), true)).collect();
        b[3] = with_drill(b[3].clone(), None);
        let unknown = plan_one(b, &p, now, chrono_tz::UTC);
        assert!(unknown.decisions[3].is_delete());
        let mut b: Vec<Backup> = (0..3).rev().map(|d| backup(days(d), true)).collect();
        b[0] = with_drill(b[0].clone(), Some(DrillOutcome::Passed));
        let t = super::plan(&[series(b)], &p, now, chrono_tz::UTC).table(chrono_tz::UTC);
        assert!(t.contains(" verified ") && t.contains("keep   newest verified"), "{t}");
    }

    #[test]
    fn newest_good_survives_any_policy() {
        let now = at(LATER);
        let old = at("2026-01-01T02:00:00Z");
        let plan = plan_one(vec![backup(old, true)], &policy(), now, chrono_tz::UTC);
        assert_eq!(plan.decisions[0].action, Action::Keep(vec![KeepReason::NewestGood]));
    }

    #[test]
    fn failed_or_suspicious_newest_run_holds_the_series() {
        let now = at("2026-11-26T12:00:00Z");
        let h = |n: i64| now - chrono::Duration::hours(n);
        let good = || (2..6).map(|d| backup(h(24 * d), true)).collect::<Vec<_>>();
        let old_orphan = backup(h(24 * 10), false);

        // Newest run has no manifest and stopped writing 7 h ago (past RUN_GRACE): failed.
        let mut b = good();
        b.insert(0, old_orphan.clone());
        b.push(backup(h(7), false));
        let plan = plan_one(b, &policy(), now, chrono_tz::UTC);
        assert!(matches!(plan.hold, Some(Hold::NewestFailed { .. })), "{:?}", plan.hold);
        assert_eq!(plan.deletions().count(), 0, "not even the orphan");

        // A run in progress (wrote 1 h ago) does not hold anything.
        let mut b = good();
        b.insert(0, old_orphan.clone());
        b.push(backup(h(1), false));
        let plan = plan_one(b, &policy(), now, chrono_tz::UTC);
        assert_eq!(plan.hold, None);
        assert_eq!(plan.decisions.last().map(|d| d.action.clone()), Some(Action::Keep(vec![KeepReason::InProgress])));
        assert_eq!(plan.decisions[0].action, Action::Delete(DeleteReason::Orphan));
        assert_eq!(plan.deletions().count(), 4, "3 expired + 1 orphan");

        // Newest complete backup suspicious: held; the newest good one is the one before.
        let mut b = good();
        b.push(Backup { suspicious: true, ..backup(h(2), true) });
        let plan = plan_one(b, &policy(), now, chrono_tz::UTC);
        assert!(matches!(plan.hold, Some(Hold::NewestSuspicious { .. })));
        assert_eq!(plan.deletions().count(), 0);
        assert_eq!(plan.decisions[3].action, Action::Keep(vec![KeepReason::NewestGood]));
    }

    #[test]
    fn delete_share_is_capped_unless_forced() {
        let now = at("2026-11-26T12:00:00Z");
        let mut b: Vec<Backup> = (1..=4).rev().map(|d| backup(now - chrono::Duration::days(40 + d), true)).collect();
        b.insert(0, backup(now - chrono::Duration::days(90), false));
        let capped = Policy { max_delete_fraction: 0.5, force: false, ..Policy::new(30) };
        let plan = plan_one(b.clone(), &capped, now, chrono_tz::UTC);
        assert_eq!(plan.hold, Some(Hold::TooManyDeletes { deletes: 3, backups: 4, max_fraction: 0.5 }));
        let deleted: Vec<_> = plan.deletions().map(|d| d.action.clone()).collect();
        assert_eq!(deleted, [Action::Delete(DeleteReason::Orphan)], "orphans are still collected");
        let forced = Policy { force: true, ..capped.clone() };
        assert_eq!(plan_one(b.clone(), &forced, now, chrono_tz::UTC).deletions().count(), 4);
        let lenient = Policy { max_delete_fraction: 0.75, ..capped };
        assert_eq!(plan_one(b, &lenient, now, chrono_tz::UTC).deletions().count(), 4);
    }

    #[test]
    fn orphans_wait_for_the_grace_and_never_less_than_the_run_grace() {
        let now = at("2026-11-26T12:00:00Z");
        let good = backup(now - chrono::Duration::hours(1), true);
        let young = backup(now - chrono::Duration::hours(47), false);
        let old = backup(now - chrono::Duration::hours(49), false);
        let plan = plan_one(vec![young.clone(), old.clone(), good.clone()], &Policy::new(30), now, chrono_tz::UTC);
        // Sorted by run: old, young, good.
        let actions: Vec<_> = plan.decisions.iter().map(|d| d.action.clone()).collect();
        assert_eq!(
            actions,
            [
                Action::Delete(DeleteReason::Orphan),
                Action::Keep(vec![KeepReason::InProgress]),
                Action::Keep(vec![KeepReason::NewestGood, KeepReason::Retention { days: 30 }])
            ]
        );
        let tiny = Policy { grace: Duration::from_secs(60), ..Policy::new(30) };
        assert_eq!(tiny.orphan_age(), RUN_GRACE);
        let recent = backup(now - chrono::Duration::hours(3), false);
        let plan = plan_one(vec![good, recent], &tiny, now, chrono_tz::UTC);
        assert_eq!(plan.deletions().count(), 0, "a run 3 h old may still be running");
    }

    #[test]
    fn deletion_order_puts_the_completion_object_first() {
        let now = at("2026-11-26T12:00:00Z");
        let mut b = backup(now - chrono::Duration::days(100), true);
        b.keys = vec!["db/main/app/x/dump.pgc.zst".into(), "db/main/app/x/manifest.json".into()];
        let plan = plan_one(vec![b, backup(now, true)], &policy(), now, chrono_tz::UTC);
        let d = plan.deletions().next().expect("one deletion");
        assert_eq!(plan.deletion_order(d), ["db/main/app/x/manifest.json", "db/main/app/x/dump.pgc.zst"]);
        let snap = SeriesPlan { kind: Kind::Bucket, ..plan.clone() };
        let mut d = d.clone();
        d.keys = vec![
            "storage/b/snapshots/x/part-00000-of-00001.jsonl.zst".into(),
            "storage/b/snapshots/x/header.json".into(),
        ];
        assert_eq!(snap.deletion_order(&d)[0], "storage/b/snapshots/x/header.json");
    }

    #[test]
    fn table_is_readable() {
        let now = at("2026-11-26T12:00:00Z");
        let plan = plan(
            &[series(vec![
                backup(now - chrono::Duration::days(60), true),
                backup(now - chrono::Duration::hours(3), true),
            ])],
            &policy(),
            now,
            chrono_tz::Europe::Paris,
        );
        let t = plan.table(chrono_tz::Europe::Paris);
        assert!(t.starts_with("SERIES"), "{t}");
        assert!(t.contains("STARTED (Europe/Paris)"), "{t}");
        assert!(t.contains("DELETE no rule keeps it"), "{t}");
        assert!(t.contains("keep   newest good"), "{t}");
        assert!(t.contains("2026-11-26 10:00"), "local time shown: {t}");
        assert!(t.ends_with("delete 1 backups and 0 orphans (1 objects, 100 B)\n"), "{t}");
    }

    #[test]
    fn unreferenced_blobs_respect_references_and_grace() {
        let now = at("2026-11-26T12:00:00Z");
        let blob = |key: &str, hours: i64| ObjectMeta {
            key: key.into(),
            updated: now - chrono::Duration::hours(hours),
            ..ObjectMeta::default()
        };
        let blobs = [blob("b/old-used", 100), blob("b/old-unused", 100), blob("b/new-unused", 2)];
        let referenced = HashSet::from(["b/old-used".to_owned()]);
        let garbage = unreferenced_blobs(&blobs, &referenced, now, Duration::from_secs(48 * 3600));
        assert_eq!(garbage.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(), ["b/old-unused"]);
    }

    // --- properties --------------------------------------------------------------------------

    fn arb_backups() -> impl Strategy<Value = Vec<Backup>> {
        // Up to 40 runs over ~120 days; minutes resolution; mostly complete.
        prop::collection::vec((0i64..120 * 24 * 60, 0u8..100, 0u8..100, 0i64..600, 0u8..6), 0..40).prop_map(|raw| {
            let base = at("2026-01-01T00:00:00Z");
            let mut seen = HashSet::new();
            raw.into_iter()
                .filter(|(m, ..)| seen.insert(*m))
                .map(|(minutes, c, s, write, d)| {
                    let started = base + chrono::Duration::minutes(minutes);
                    // Drill records: none (most), passed, failed, or of unknown outcome.
                    let outcome = match d {
                        3 => Some(Some(DrillOutcome::Passed)),
                        4 => Some(Some(DrillOutcome::Failed)),
                        5 => Some(None),
                        _ => None,
                    };
                    let b = Backup {
                        complete: c < 85,
                        suspicious: c < 85 && s < 5,
                        last_write: started + chrono::Duration::minutes(write),
                        ..backup(started, true)
                    };
                    match outcome {
                        Some(o) => with_drill(b, o),
                        None => b,
                    }
                })
                .collect::<Vec<_>>()
        })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            1u32..60,
            prop::option::of(1u32..10),
            prop::option::of(1u32..15),
            prop::option::of(1u32..8),
            prop::option::of(1u32..6),
            1u64..96,
            0.1f64..=1.0,
            any::<bool>(),
        )
            .prop_map(|(days, last, daily, weekly, monthly, grace_h, fraction, force)| Policy {
                retention_days: days,
                keep_last: last,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                grace: Duration::from_secs(grace_h * 3600),
                max_delete_fraction: fraction,
                force,
            })
    }

    fn arb_tz() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![
            chrono_tz::UTC,
            chrono_tz::Europe::Paris,
            chrono_tz::Asia::Tokyo,
            chrono_tz::America::Los_Angeles,
            chrono_tz::Australia::Lord_Howe,
        ])
    }

    fn apply(s: &Series, p: &SeriesPlan) -> Series {
        let deleted: HashSet<&RunId> = p.deletions().map(|d| &d.run).collect();
        Series { backups: s.backups.iter().filter(|b| !deleted.contains(&b.run)).cloned().collect(), ..s.clone() }
    }

    type PeriodKey = fn(&DateTime<Tz>) -> (i32, u32, u32);

    fn distinct<K: Ord>(it: impl Iterator<Item = K>) -> usize {
        it.collect::<BTreeSet<_>>().len()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn newest_good_backup_always_survives(
            backups in arb_backups(), p in arb_policy(), tz in arb_tz(), after_h in 0i64..24 * 200
        ) {
            let s = series(backups);
            let now = at("2026-05-01T00:00:00Z") + chrono::Duration::hours(after_h);
            let plan = plan(std::slice::from_ref(&s), &p, now, tz);
            let sp = &plan.series[0];
            if let Some(good) = s.backups.iter().filter(|b| b.complete && !b.suspicious).max_by(|x, y| x.run.cmp(&y.run)) {
                let d = sp.decisions.iter().find(|d| d.run == good.run).expect("decided");
                prop_assert!(!d.is_delete(), "newest good deleted: {:?}", d);
            }
            // Nor is the newest verified one, and no kept backup loses an object (drill records
            // included): every key deleted belongs to a deleted backup.
            if let Some(v) = s.backups.iter().filter(|b| b.verified()).max_by(|x, y| x.run.cmp(&y.run)) {
                let d = sp.decisions.iter().find(|d| d.run == v.run).expect("decided");
                prop_assert!(!d.is_delete(), "newest verified deleted: {:?}", d);
            }
            let deleted: HashSet<&str> = sp.deletions().flat_map(|d| sp.deletion_order(d)).collect();
            for kept in s.backups.iter().filter(|b| sp.kept().any(|d| d.run == b.run)) {
                prop_assert!(kept.keys.iter().all(|k| !deleted.contains(k.as_str())), "a kept backup's object is deleted");
            }
            // The newest run of any kind is never deleted either.
            if let Some(newest) = s.backups.iter().max_by(|x, y| x.run.cmp(&y.run)) {
                prop_assert!(sp.deletions().all(|d| d.run != newest.run));
            }
            // Held series (failed/suspicious newest) lose nothing at all.
            if matches!(sp.hold, Some(Hold::NewestFailed { .. } | Hold::NewestSuspicious { .. })) {
                prop_assert_eq!(sp.deletions().count(), 0);
            }
            // The share of complete backups deleted stays within the cap unless forced.
            if !p.force {
                let complete = s.backups.iter().filter(|b| b.complete).count();
                let expired = sp.deletions().filter(|d| d.complete).count();
                prop_assert!(expired as f64 <= p.max_delete_fraction * complete as f64);
            }
            // Every run gets exactly one decision and every kept one has a reason.
            prop_assert_eq!(sp.decisions.len(), s.backups.len());
            prop_assert!(sp.decisions.iter().all(|d| !matches!(&d.action, Action::Keep(r) if r.is_empty())));
        }

        #[test]
        fn plan_is_idempotent(backups in arb_backups(), p in arb_policy(), tz in arb_tz(), after_h in 0i64..24 * 200) {
            let s = series(backups);
            let now = at("2026-05-01T00:00:00Z") + chrono::Duration::hours(after_h);
            let first = plan(std::slice::from_ref(&s), &p, now, tz);
            let after = apply(&s, &first.series[0]);
            let second = plan(std::slice::from_ref(&after), &p, now, tz);
            prop_assert_eq!(second.series[0].deletions().count(), 0, "re-plan deletes more: {}", second.table(tz));
        }

        #[test]
        fn keep_rules_never_keep_fewer_than_asked(
            backups in arb_backups(), p in arb_policy(), tz in arb_tz(), after_h in 0i64..24 * 200
        ) {
            let s = series(backups);
            let now = at("2026-05-01T00:00:00Z") + chrono::Duration::hours(after_h);
            let sp = plan(std::slice::from_ref(&s), &p, now, tz).series.remove(0);
            let complete: Vec<_> = s.backups.iter().filter(|b| b.complete).collect();
            let kept: Vec<DateTime<Tz>> =
                sp.kept().filter(|d| d.complete).map(|d| d.run.started.with_timezone(&tz)).collect();
            let all: Vec<DateTime<Tz>> = complete.iter().map(|b| b.run.started.with_timezone(&tz)).collect();
            if let Some(n) = p.keep_last {
                prop_assert!(kept.len() >= complete.len().min(n as usize));
            }
            let rules: [(Option<u32>, PeriodKey); 3] = [
                (p.keep_daily, |t| (t.year(), t.ordinal(), 0)),
                (p.keep_weekly, |t| (t.iso_week().year(), t.iso_week().week(), 1)),
                (p.keep_monthly, |t| (t.year(), t.month(), 2)),
            ];
            for (n, key) in rules {
                if let Some(n) = n {
                    let asked = distinct(all.iter().map(key)).min(n as usize);
                    prop_assert!(distinct(kept.iter().map(key)) >= asked);
                }
            }
            let floor = chrono::Duration::days(i64::from(p.retention_days));
            for b in &complete {
                if now - b.run.started < floor {
                    prop_assert!(sp.kept().any(|d| d.run == b.run), "young backup deleted");
                }
            }
        }
    }
}
