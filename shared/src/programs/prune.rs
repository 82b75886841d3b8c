//! `prune`: applies the retention policy. First a pure plan ([`crate::core::retention::plan`]), then
//! its application; `--dry-run` prints the plan and changes nothing.
//!
//! Application, per series: each dropped run loses its completion object first (so a
//! half-deleted backup never looks complete), then its other objects. For bucket snapshots, blobs
//! under `storage/<bucket>/blobs/` that no kept snapshot references (read from the parts of every
//! kept or in-progress snapshot) and older than `PRUNE_GRACE` are deleted afterwards. Deletes are
//! idempotent, so a crashed prune and a re-run reach the same end state.
//!
//! A series its guard holds (the newest run failed or is suspicious, or the plan would delete
//! more than `PRUNE_MAX_DELETE_FRACTION`) is a refused prune: the run fails (exit 1, so the
//! "job execution failed" e-mail fires) and its event says why. A dry run only reports it.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::TryStreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Reader, vars};
use crate::core::events::{ItemResult, Outcome, RunResult};
use crate::core::naming::SnapshotPath;
use crate::core::retention::{Action, DeleteReason, Hold, Plan, Policy, SeriesPlan, unreferenced_blobs};
use crate::core::series::Kind;
use crate::core::snapshot_manifest::{SnapshotFormatError, SnapshotHeader, decode_part, part_key};
use crate::core::units;
use crate::runtime::{self, Program, ProgramSpec, RunContext, Services, StartError, Trigger};
use crate::store::{Abandoned, ObjectMeta, ObjectStore, ObjectStoreExt as _, StoreError};

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec { name: "prune", vars: &[vars::PRUNE] };

/// Applies the retention policy: plans what to keep and delete, then deletes (never the newest
/// good backup; nothing while the newest run failed or is suspicious).
#[derive(Debug, Clone, Default, Parser)]
pub struct Cli {
    /// The runtime's flags (`--once`), read by the runtime.
    #[command(flatten)]
    pub runtime: runtime::Args,
    /// Print the plan as a table and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow deleting more than PRUNE_MAX_DELETE_FRACTION of a source's backups.
    #[arg(long)]
    pub force: bool,
}

/// The shortest `PRUNE_GRACE` accepted: a Cloud Run job runs up to 24 h, and blobs a running
/// snapshot copied are referenced only once its manifest part is written.
pub const MIN_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Largest snapshot part read when collecting blob references.
const MAX_PART_BYTES: u64 = 1024 * 1024 * 1024;

/// Settings of `prune`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Keep rules and safety settings (the retention floor comes from `BACKUP_RETENTION_DAYS`).
    pub policy: Policy,
    /// Print the plan, change nothing.
    pub dry_run: bool,
}

/// Reads the settings and the command line (`--dry-run`, `--force`).
pub fn read(r: &mut Reader<'_>, cli: Option<Cli>) -> Option<Config> {
    fn optional(r: &mut Reader<'_>, var: &crate::config::Var) -> Option<Option<u32>> {
        if r.env().get(var.name).is_none() {
            return Some(None);
        }
        r.number_in(var, 1, 100_000).and_then(|n| u32::try_from(n).ok()).map(Some)
    }
    let keep_last = optional(r, &vars::KEEP_LAST);
    let keep_daily = optional(r, &vars::KEEP_DAILY);
    let keep_weekly = optional(r, &vars::KEEP_WEEKLY);
    let keep_monthly = optional(r, &vars::KEEP_MONTHLY);
    let fraction: Option<f64> = r.parse(&vars::PRUNE_MAX_DELETE_FRACTION, "a number between 0 and 1").and_then(|f| {
        if f > 0.0 && f <= 1.0 {
            Some(f)
        } else {
            r.problem(
                vars::PRUNE_MAX_DELETE_FRACTION.name,
                format!("{f} is out of range: expected more than 0, at most 1"),
            );
            None
        }
    });
    let grace = r.duration(&vars::PRUNE_GRACE).and_then(|g| {
        if g >= MIN_GRACE {
            Some(g)
        } else {
            r.problem(
                vars::PRUNE_GRACE.name,
                "must be at least 24h: a running snapshot's blobs are referenced only when its manifest is written",
            );
            None
        }
    });
    Some(Config {
        policy: Policy {
            retention_days: 0, // filled from the common settings at start
            keep_last: keep_last?,
            keep_daily: keep_daily?,
            keep_weekly: keep_weekly?,
            keep_monthly: keep_monthly?,
            grace: grace?,
            max_delete_fraction: fraction?,
            force: cli.as_ref()?.force,
        },
        dry_run: cli?.dry_run,
    })
}

/// Why a prune step failed.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A kept snapshot cannot be read, so its blob references are unknown: no blob is deleted.
    #[error("cannot read snapshot {snapshot}: {source}; no blob of this bucket is deleted")]
    Snapshot {
        /// The snapshot id.
        snapshot: String,
        /// Why.
        source: SnapshotFormatError,
    },
    /// A kept complete snapshot has no header among its keys.
    #[error("snapshot {0} has no header; no blob of this bucket is deleted")]
    NoHeader(String),
    /// The run was cancelled.
    #[error("interrupted by a termination signal")]
    Cancelled,
}

/// What happened to one series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesOutcome {
    /// Complete backups deleted.
    pub backups_deleted: usize,
    /// Orphaned runs deleted.
    pub orphans_deleted: usize,
    /// Objects deleted (backup objects and blobs).
    pub objects_deleted: usize,
    /// Bytes of deleted backups.
    pub bytes_freed: u64,
    /// Blobs deleted (snapshots only).
    pub blobs_deleted: usize,
    /// Bytes of deleted blobs.
    pub blob_bytes_freed: u64,
    /// Runs and blobs whose deletion the bucket's retention policy refused (too young yet; a
    /// later prune deletes them). Not an error: the backup bucket is write-once on purpose.
    pub retained: usize,
    /// The store's words for the first of them (until when).
    pub retained_note: Option<String>,
    /// First error, if any.
    pub error: Option<String>,
}

impl SeriesOutcome {
    fn note_retained(&mut self, series: &str, e: &StoreError) {
        tracing::warn!(series, error = %e, "deletion refused by the retention policy; a later prune deletes it");
        self.retained += 1;
        if self.retained_note.is_none() {
            self.retained_note = Some(e.to_string());
        }
    }
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
    config: Config,
}

/// Builds the program.
pub async fn start(services: Services, mut config: Config) -> Result<App, StartError> {
    config.policy.retention_days = services.common.retention_days;
    Ok(App { services, config })
}

impl App {
    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.config.policy
    }

    /// Lists the store and plans at `now`.
    pub async fn plan(&self, now: DateTime<Utc>) -> Result<Plan, StoreError> {
        let series = crate::inventory::load(&*self.services.store, &self.services.common.source).await?;
        Ok(crate::core::retention::plan(&series, &self.config.policy, now, self.services.common.timezone))
    }

    /// Plans and (unless `dry_run`) applies at `now`. The plan table goes to `report`.
    pub async fn prune(&self, now: DateTime<Utc>, dry_run: bool, cancel: &CancellationToken) -> PruneReport {
        let store = &*self.services.store;
        let plan = match self.plan(now).await {
            Ok(p) => p,
            Err(e) => {
                return PruneReport {
                    plan: None,
                    outcomes: Vec::new(),
                    error: Some(e.to_string()),
                    dry_run,
                    abandoned: Ok(Abandoned::default()),
                };
            }
        };
        let mut outcomes = Vec::with_capacity(plan.series.len());
        for sp in &plan.series {
            let mut out = SeriesOutcome::default();
            if let Err(e) = apply_series(store, sp, &self.config.policy, now, dry_run, cancel, &mut out).await {
                tracing::error!(series = sp.label(), error = %e, "prune failed");
                out.error = Some(e.to_string());
            }
            outcomes.push(out);
        }
        // Temp files of killed runs (a `file://` store), untouched for as long as an orphan run.
        let cutoff = now - crate::core::units::to_chrono(self.config.policy.orphan_age());
        let abandoned = store.collect_abandoned(cutoff, dry_run).await.map_err(|e| {
            tracing::error!(error = %e, "cannot collect abandoned temp files");
            e.to_string()
        });
        PruneReport { plan: Some(plan), outcomes, error: None, dry_run, abandoned }
    }
}

/// A plan and what became of it.
#[derive(Debug)]
pub struct PruneReport {
    /// The plan (absent when the store could not be listed).
    pub plan: Option<Plan>,
    /// One outcome per planned series.
    pub outcomes: Vec<SeriesOutcome>,
    /// Why nothing could be planned.
    pub error: Option<String>,
    /// Nothing was deleted on purpose.
    pub dry_run: bool,
    /// Temp files of killed runs collected (or that would be), or why they could not be.
    pub abandoned: Result<Abandoned, String>,
}

async fn apply_series(
    store: &dyn ObjectStore,
    sp: &SeriesPlan,
    policy: &Policy,
    now: DateTime<Utc>,
    dry_run: bool,
    cancel: &CancellationToken,
    out: &mut SeriesOutcome,
) -> Result<(), PruneError> {
    for d in sp.deletions() {
        if cancel.is_cancelled() {
            return Err(PruneError::Cancelled);
        }
        let expired = match d.action {
            Action::Delete(DeleteReason::Expired) => true,
            Action::Delete(DeleteReason::Orphan) => false,
            Action::Keep(_) => continue,
        };
        let (mut deleted, mut refused) = (0, false);
        if dry_run {
            deleted = d.keys.len();
        } else {
            for key in sp.deletion_order(d) {
                // `?`: when the completion object cannot be deleted, the rest stays (still complete).
                match store.delete(key).await {
                    Ok(gone) => deleted += usize::from(gone),
                    // Too young for the bucket's retention policy: leave the rest of this run (its
                    // completion object goes first, so a refused run stays complete) and go on.
                    Err(e) if e.is_retained() => {
                        out.note_retained(&sp.label(), &e);
                        refused = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if refused && deleted == 0 {
                continue; // nothing of it went: still there, in full
            }
            tracing::info!(series = sp.label(), backup = %d.run, action = ?d.action, "deleted");
        }
        out.objects_deleted += deleted;
        out.bytes_freed += d.bytes;
        if expired {
            out.backups_deleted += 1;
        } else {
            out.orphans_deleted += 1;
        }
    }
    let held_all = matches!(sp.hold, Some(Hold::NewestFailed { .. } | Hold::NewestSuspicious { .. }));
    if sp.kind == Kind::Bucket && !held_all {
        let garbage = blob_garbage(store, sp, policy, now).await?;
        for blob in garbage {
            if cancel.is_cancelled() {
                return Err(PruneError::Cancelled);
            }
            let gone = dry_run
                || match store.delete(&blob.key).await {
                    Ok(gone) => gone,
                    Err(e) if e.is_retained() => {
                        out.note_retained(&sp.label(), &e);
                        false
                    }
                    Err(e) => return Err(e.into()),
                };
            if gone {
                out.blobs_deleted += 1;
                out.objects_deleted += 1;
                out.blob_bytes_freed += blob.size;
            }
        }
    }
    Ok(())
}

/// The blobs of a bucket no kept snapshot references and older than the grace period.
pub async fn blob_garbage(
    store: &dyn ObjectStore,
    sp: &SeriesPlan,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Vec<ObjectMeta>, PruneError> {
    let referenced = referenced_blobs(store, sp).await?;
    let blobs: Vec<ObjectMeta> = store.list_all(&SnapshotPath::blobs_prefix(&sp.source)).try_collect().await?;
    let garbage = unreferenced_blobs(&blobs, &referenced, now, policy.grace);
    Ok(garbage.into_iter().cloned().collect())
}

/// Every blob referenced by a snapshot the plan keeps (complete, in progress, or held).
pub async fn referenced_blobs(store: &dyn ObjectStore, sp: &SeriesPlan) -> Result<HashSet<String>, PruneError> {
    let mut referenced = HashSet::new();
    for d in sp.kept() {
        let snapshot = d.run.to_string();
        let path = SnapshotPath { bucket: sp.source.clone(), run: d.run.clone() };
        let parts: Vec<String> = if d.complete {
            let header_key = path.header_key();
            if !d.keys.contains(&header_key) {
                return Err(PruneError::NoHeader(snapshot));
            }
            let bytes = store.read_all(&header_key, MAX_PART_BYTES).await?;
            let header = SnapshotHeader::from_json(&bytes)
                .map_err(|source| PruneError::Snapshot { snapshot: snapshot.clone(), source })?;
            (0..header.parts).map(|task| part_key(&path, task, header.parts)).collect()
        } else {
            // In progress: whatever parts it has written so far.
            d.keys.iter().filter(|k| k.ends_with(".jsonl.zst")).cloned().collect()
        };
        for key in parts {
            let bytes = match store.read_all(&key, MAX_PART_BYTES).await {
                Ok(b) => b,
                Err(e) if e.is_not_found() && !d.complete => continue,
                Err(e) => return Err(e.into()),
            };
            decode_part(&bytes, |entry| {
                referenced.insert(entry.blob);
                Ok(())
            })
            .map_err(|source| PruneError::Snapshot { snapshot: snapshot.clone(), source })?;
        }
    }
    Ok(referenced)
}

impl PruneReport {
    /// The run's result (items per series, totals as figures).
    pub fn into_result(self, mut result: RunResult) -> RunResult {
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        let Some(plan) = &self.plan else {
            result.outcome = Outcome::Failure;
            result.summary = format!("cannot list the backup store: {}", self.error.unwrap_or_default());
            return result;
        };
        let mut total = SeriesOutcome::default();
        let mut held = 0usize;
        let mut failed = 0usize;
        for (sp, out) in plan.series.iter().zip(&self.outcomes) {
            total.backups_deleted += out.backups_deleted;
            total.orphans_deleted += out.orphans_deleted;
            total.objects_deleted += out.objects_deleted;
            total.bytes_freed += out.bytes_freed;
            total.blobs_deleted += out.blobs_deleted;
            total.blob_bytes_freed += out.blob_bytes_freed;
            total.retained += out.retained;
            if total.retained_note.is_none() {
                total.retained_note.clone_from(&out.retained_note);
            }
            held += usize::from(sp.hold.is_some());
            failed += usize::from(out.error.is_some());
            let outcome = match (&out.error, &sp.hold) {
                (Some(_), _) => Outcome::Failure,
                (None, Some(_)) if self.dry_run => Outcome::Warning,
                (None, Some(_)) => Outcome::Failure,
                (None, None) => Outcome::Success,
            };
            let error = out.error.clone().or_else(|| sp.hold.as_ref().map(ToString::to_string));
            let figures = BTreeMap::from([
                ("kept".into(), serde_json::json!(sp.kept().count())),
                ("backups_deleted".into(), serde_json::json!(out.backups_deleted)),
                ("orphans_deleted".into(), serde_json::json!(out.orphans_deleted)),
                ("blobs_deleted".into(), serde_json::json!(out.blobs_deleted)),
                ("objects_deleted".into(), serde_json::json!(out.objects_deleted)),
                ("bytes_freed".into(), serde_json::json!(out.bytes_freed + out.blob_bytes_freed)),
                ("held".into(), serde_json::json!(sp.hold.is_some())),
                ("retained".into(), serde_json::json!(out.retained)),
            ]);
            result.items.push(ItemResult {
                kind: match sp.kind {
                    Kind::Database => "database".into(),
                    Kind::Bucket => "bucket".into(),
                },
                name: sp.label(),
                outcome,
                error,
                backup_id: None,
                figures,
            });
        }
        let freed = total.bytes_freed + total.blob_bytes_freed;
        result.figures = BTreeMap::from([
            ("dry_run".into(), serde_json::json!(self.dry_run)),
            ("series".into(), serde_json::json!(plan.series.len())),
            ("series_held".into(), serde_json::json!(held)),
            ("series_failed".into(), serde_json::json!(failed)),
            ("backups_kept".into(), serde_json::json!(plan.totals().kept)),
            ("backups_deleted".into(), serde_json::json!(total.backups_deleted)),
            ("orphans_deleted".into(), serde_json::json!(total.orphans_deleted)),
            ("blobs_deleted".into(), serde_json::json!(total.blobs_deleted)),
            ("objects_deleted".into(), serde_json::json!(total.objects_deleted)),
            ("bytes_freed".into(), serde_json::json!(freed)),
            ("retained".into(), serde_json::json!(total.retained)),
        ]);
        let abandoned = self.abandoned.as_ref().copied().unwrap_or_default();
        result.figures.insert("temp_files_deleted".into(), serde_json::json!(abandoned.files));
        result.figures.insert("temp_bytes_freed".into(), serde_json::json!(abandoned.bytes));
        result.outcome = if failed > 0 || self.abandoned.is_err() || (held > 0 && !self.dry_run) {
            Outcome::Failure
        } else if held > 0 {
            Outcome::Warning
        } else {
            Outcome::Success
        };
        let mut summary = format!(
            "{}{verb} {} backups, {} orphans and {} blobs ({} objects, {}); kept {} runs in {} series",
            if self.dry_run { "dry run: " } else { "" },
            total.backups_deleted,
            total.orphans_deleted,
            total.blobs_deleted,
            total.objects_deleted,
            units::bytes(freed),
            plan.totals().kept,
            plan.series.len()
        );
        if held > 0 {
            let reasons: Vec<String> =
                plan.series.iter().filter_map(|sp| sp.hold.as_ref().map(|h| format!("{}: {h}", sp.label()))).collect();
            let verb = if self.dry_run { "would be refused" } else { "refused" };
            summary.push_str(&format!("; {held} series held, prune {verb} ({})", reasons.join("; ")));
        }
        if abandoned.files > 0 {
            summary.push_str(&format!(
                "; {verb} {} temp files of killed runs ({})",
                abandoned.files,
                units::bytes(abandoned.bytes)
            ));
        }
        if let Err(e) = &self.abandoned {
            summary.push_str(&format!("; cannot collect temp files of killed runs: {e}"));
        }
        if total.retained > 0 {
            summary.push_str(&format!(
                "; {} runs or blobs held by the bucket's retention policy, deleted by a later prune ({})",
                total.retained,
                total.retained_note.as_deref().unwrap_or_default()
            ));
        }
        if failed > 0 {
            summary.push_str(&format!("; {failed} series failed"));
        }
        result.summary = summary;
        result
    }

    /// The blob lines printed after the plan table.
    pub fn blob_lines(&self) -> String {
        let Some(plan) = &self.plan else { return String::new() };
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        let mut out = String::new();
        for (sp, o) in plan.series.iter().zip(&self.outcomes) {
            if sp.kind == Kind::Bucket {
                out.push_str(&format!(
                    "blobs: {}: {verb} {} unreferenced blobs ({})\n",
                    sp.label(),
                    o.blobs_deleted,
                    units::bytes(o.blob_bytes_freed)
                ));
            }
            if let Some(e) = &o.error {
                out.push_str(&format!("error: {}: {e}\n", sp.label()));
            }
        }
        out
    }
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let result = self.services.result(SPEC.name, ctx.started);
        let report = self.prune(self.services.clock.now(), self.config.dry_run, &ctx.cancel).await;
        if ctx.trigger == Trigger::Job
            && let Some(plan) = &report.plan
        {
            print!("{}{}", plan.table(self.services.common.timezone), report.blob_lines());
        }
        let mut result = report.into_result(result);
        result.finished_at = Utc::now();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    /// The settings from `pairs` and the command line `--once ARGS`, as the binary reads them.
    fn read_env(pairs: &[(&str, &str)], args: &[&str]) -> Result<Config, crate::config::ConfigError> {
        let env = Env::from_pairs(pairs.iter().copied());
        let args = std::iter::once("--once").chain(args.iter().copied());
        match runtime::configure(&SPEC, args, &env, read)? {
            runtime::Invocation::Run { config, .. } => Ok(config),
            runtime::Invocation::Print(text) => panic!("nothing to print expected: {text}"),
        }
    }

    #[test]
    fn reads_policy_and_flags() {
        let c = read_env(&[("BACKUP_KEEP_LAST", "3"), ("BACKUP_KEEP_MONTHLY", "12")], &["--dry-run"]).expect("valid");
        assert!(c.dry_run && !c.policy.force);
        assert_eq!((c.policy.keep_last, c.policy.keep_daily, c.policy.keep_monthly), (Some(3), None, Some(12)));
        assert_eq!(c.policy.grace, Duration::from_secs(48 * 3600));
        assert!((c.policy.max_delete_fraction - 0.5).abs() < f64::EPSILON);
        assert!(read_env(&[], &["--force"]).expect("valid").policy.force);
    }

    #[test]
    fn reports_every_bad_setting() {
        let err = read_env(
            &[("BACKUP_KEEP_DAILY", "0"), ("PRUNE_MAX_DELETE_FRACTION", "1.5"), ("PRUNE_GRACE", "2h")],
            &["--yes"],
        )
        .expect_err("invalid");
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["arguments", "BACKUP_KEEP_DAILY", "PRUNE_MAX_DELETE_FRACTION", "PRUNE_GRACE"]);
        assert!(err.problems[0].message.contains("'--yes'"), "{err}");
    }

    /// Issue 11: a deletion the bucket's retention policy refuses is reported (count, the
    /// store's words) and does not fail the run.
    #[test]
    fn deletions_held_by_the_retention_policy_are_reported_not_failed() {
        use crate::core::object::ObjectMeta;
        let now: DateTime<Utc> = "2026-12-02T05:00:00Z".parse().expect("time");
        let obj = |key: &str| ObjectMeta { key: key.into(), size: 10, updated: now, ..ObjectMeta::default() };
        let series = crate::core::series::series_from_listing([
            obj("db/main/app/20261201T020000Z-00000001/dump.pgc.zst"),
            obj("db/main/app/20261201T020000Z-00000001/manifest.json"),
        ]);
        let plan = crate::core::retention::plan(&series, &Policy::new(30), now, chrono_tz::UTC);
        let e = StoreError::Retained {
            location: "gs://b".into(),
            key: "storage/media/blobs/x-1".into(),
            message: "cannot be deleted or overwritten until 2026-12-31T02:00:00Z".into(),
        };
        let mut out = SeriesOutcome::default();
        out.note_retained("main/app", &e);
        let report = PruneReport {
            plan: Some(plan),
            outcomes: vec![out],
            error: None,
            dry_run: false,
            abandoned: Ok(Abandoned::default()),
        };
        let started = now - chrono::Duration::seconds(3);
        let result = report.into_result(RunResult::new("prune", "main", "gs://b".to_owned(), started));
        assert_eq!(result.outcome, Outcome::Success, "{}", result.summary);
        assert_eq!(result.figures["retained"], serde_json::json!(1));
        assert_eq!(result.items[0].figures["retained"], serde_json::json!(1));
        assert!(
            result.summary.contains("1 runs or blobs held by the bucket's retention policy")
                && result.summary.contains("until 2026-12-31T02:00:00Z"),
            "{}",
            result.summary
        );
    }

    #[test]
    fn dry_run_and_force_may_come_in_any_order() {
        let c = read_env(&[], &["--force", "--dry-run"]).expect("valid");
        assert!(c.dry_run && c.policy.force);
        let c = read_env(&[], &[]).expect("valid");
        assert!(!c.dry_run && !c.policy.force);
    }
}
