//! `restore bucket`: the command line and the wiring around [`crate::bucket::restore`].

use chrono::{DateTime, Utc};

use crate::bucket::SnapshotError;
use crate::bucket::read::Selector;
use crate::bucket::restore::{Action, RestoreRequest, restore_bucket};
use crate::core::events::{ItemResult, Outcome, RunResult};
use crate::core::naming::RunId;
use crate::core::progress::Unit;
use crate::core::units;
use crate::runtime::progress::Progress;
use crate::runtime::{RunContext, Services};
use crate::store::Location;

/// `restore bucket`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct BucketArgs {
    /// The backed-up bucket (its name in the backup store's storage/<bucket>/).
    #[arg(long, value_name = "B")]
    pub source_bucket: String,
    /// Exactly this snapshot (e.g. 20261126T030000Z-1a2b3c4d); default: the newest complete one.
    #[arg(long, value_name = "ID", conflicts_with = "before")]
    pub snapshot: Option<RunId>,
    /// The newest snapshot started at or before TIME (RFC 3339, e.g. 2026-11-26T03:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = units::parse_time)]
    pub before: Option<DateTime<Utc>>,
    /// The bucket to restore into: a name, gs://NAME, or file:///DIR with a file:// backup store.
    #[arg(long, value_name = "T")]
    pub target_bucket: String,
    /// Put the objects under this folder of the target: object NAME is restored as P/NAME.
    #[arg(long, value_name = "P")]
    pub target_prefix: Option<String>,
    /// Restore only the objects whose name starts with P.
    #[arg(long, value_name = "P")]
    pub only_prefix: Option<String>,
    /// Print what would be copied (and deleted) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete target objects (under the target prefix and the only-prefix) that are not in the
    /// snapshot; each is printed and counted.
    #[arg(long)]
    pub delete_extra: bool,
    /// Copies in flight at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
}

impl BucketArgs {
    /// Which snapshot.
    pub fn selector(&self) -> Selector {
        match (&self.snapshot, self.before) {
            (Some(id), _) => Selector::Id(id.clone()),
            (None, Some(t)) => Selector::Before(t),
            (None, None) => Selector::Latest,
        }
    }

    /// Where the objects go: the target bucket, joined with the target prefix.
    pub fn target_location(&self) -> Result<Location, String> {
        let t = self.target_bucket.trim();
        let base: Location = if t.contains("://") { t.parse() } else { format!("gs://{t}").parse() }
            .map_err(|e: crate::store::LocationError| format!("--target-bucket: {e}"))?;
        match self.target_prefix.as_deref().map(|p| p.trim_matches('/')) {
            Some(p) if p.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") => {
                Err(format!("--target-prefix {p:?} must be a folder path like restored/2026-11-26"))
            }
            Some(p) => Ok(base.join(p)),
            None => Ok(base),
        }
    }

    /// The request for [`restore_bucket`].
    pub fn request(&self) -> RestoreRequest {
        RestoreRequest {
            bucket: self.source_bucket.clone(),
            selector: self.selector(),
            only_prefix: self.only_prefix.clone().unwrap_or_default(),
            dry_run: self.dry_run,
            delete_extra: self.delete_extra,
            concurrency: usize::try_from(self.concurrency).unwrap_or(16).max(1),
        }
    }
}

/// Runs `restore bucket` for the `restore` program: opens the target, restores, prints the
/// actions (every one with `--dry-run`; deletions and problems otherwise) and the summary.
pub async fn run(services: &Services, args: &BucketArgs, ctx: &RunContext, mut result: RunResult) -> RunResult {
    let mut item = ItemResult {
        kind: "bucket".into(),
        name: args.source_bucket.clone(),
        outcome: Outcome::Success,
        error: None,
        backup_id: None,
        figures: Default::default(),
    };
    let outcome = async {
        let location = args.target_location().map_err(SnapshotError::Invalid)?;
        item.figures.insert("target".into(), location.to_string().into());
        let target =
            crate::store::open(&location, &services.env, services.common.upload_chunk_bytes, &services.common.net)
                .await?;
        let dry_run = args.dry_run;
        // Objects planned so far (each is copied, found present, or reported right after).
        let what = format!("restore of bucket {} into {location}", args.source_bucket);
        let progress = Progress::with_bar(what, Unit::Objects, None, services.common.progress_interval);
        let counter = progress.counter().clone();
        let print = move |a: &Action| {
            counter.add(1);
            if dry_run || matches!(a, Action::Delete(_) | Action::Conflict { .. }) {
                println!("{}", a.describe(dry_run));
            }
        };
        let restored = restore_bucket(&*services.store, &*target, &args.request(), &print, &ctx.cancel).await;
        progress.finish();
        restored.map(|r| (r, location))
    }
    .await;
    match outcome {
        Ok((report, location)) => {
            item.backup_id = Some(report.snapshot.clone());
            for (k, v) in [
                ("copied", report.copied),
                ("copied_bytes", report.copied_bytes),
                ("present", report.present),
                ("conflicts", report.conflicts),
                ("corrupt", report.corrupt),
                ("extra_kept", report.extra_kept),
                ("deleted", report.deleted),
            ] {
                item.figures.insert(k.into(), v.into());
            }
            item.figures.insert("dry_run".into(), report.dry_run.into());
            item.figures.insert("duration_ms".into(), u64::try_from(report.elapsed.as_millis()).unwrap_or(0).into());
            let verb = if report.dry_run { "would restore" } else { "restored" };
            let delete_verb = if report.dry_run { "would delete" } else { "deleted" };
            result.summary = format!(
                "{verb} {} objects ({}) of snapshot {} of {:?} into {location}; {} already there, {} conflicts, {} corrupt, {delete_verb} {}, kept {} others",
                report.copied,
                units::bytes(report.copied_bytes),
                report.snapshot,
                args.source_bucket,
                report.present,
                report.conflicts,
                report.corrupt,
                report.deleted,
                report.extra_kept,
            );
            if !report.is_success() {
                item.outcome = Outcome::Failure;
                item.error = Some(report.problems.join("; "));
                result.outcome = Outcome::Failure;
                for p in &report.problems {
                    println!("problem: {p}");
                }
            }
            println!("{}", result.summary);
        }
        Err(e) => {
            item.outcome = Outcome::Failure;
            item.error = Some(e.to_string());
            result.outcome = Outcome::Failure;
            result.summary = format!("restore of bucket {:?} failed: {e}", args.source_bucket);
            println!("{}", result.summary);
        }
    }
    result.items.push(item);
    result.finished_at = Utc::now();
    result
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    #[command(no_binary_name = true)]
    struct Cli {
        #[command(flatten)]
        args: BucketArgs,
    }

    fn parse(args: &[&str]) -> Result<BucketArgs, String> {
        Cli::try_parse_from(args).map(|c| c.args).map_err(|e| e.to_string())
    }

    #[test]
    fn arguments() {
        let a = parse(&["--source-bucket", "media", "--target-bucket", "restore-1"]).expect("minimal");
        assert_eq!(a.selector(), Selector::Latest);
        assert_eq!(a.target_location().expect("loc").to_string(), "gs://restore-1");
        assert_eq!(a.request().concurrency, 16);
        assert_eq!(a.request().only_prefix, "");
        let a = parse(&[
            "--source-bucket",
            "media",
            "--snapshot",
            "20261126T030000Z-1a2b3c4d",
            "--target-bucket",
            "gs://restore-1",
            "--target-prefix",
            "/back/2026/",
            "--only-prefix",
            "photos/",
            "--dry-run",
            "--delete-extra",
            "--concurrency",
            "4",
        ])
        .expect("full");
        assert_eq!(a.selector(), Selector::Id("20261126T030000Z-1a2b3c4d".parse().expect("id")));
        assert_eq!(a.target_location().expect("loc").to_string(), "gs://restore-1/back/2026");
        let r = a.request();
        assert!(r.dry_run && r.delete_extra);
        assert_eq!((r.only_prefix.as_str(), r.concurrency), ("photos/", 4));
        let a = parse(&["--source-bucket", "m", "--before", "2026-11-26T04:00:00+01:00", "--target-bucket", "t-1"])
            .expect("before");
        assert_eq!(
            a.selector(),
            Selector::Before(DateTime::parse_from_rfc3339("2026-11-26T03:00:00Z").expect("t").to_utc())
        );
        let a = parse(&["--source-bucket", "m", "--target-bucket", "file:///tmp/restore"]).expect("file");
        assert_eq!(a.target_location().expect("loc").to_string(), "file:///tmp/restore");
        let bad_prefix =
            parse(&["--source-bucket", "m", "--target-bucket", "t-1", "--target-prefix", "a//b"]).expect("parses");
        assert!(bad_prefix.target_location().is_err());
        assert!(
            parse(&["--source-bucket", "m", "--target-bucket", "NOPE"]).expect("parses").target_location().is_err()
        );
        for (args, needle) in [
            (&["--target-bucket", "t-1"][..], "--source-bucket"),
            (&["--source-bucket", "m"][..], "--target-bucket"),
            (&["--source-bucket", "m", "--target-bucket", "t-1", "--snapshot", "latest"][..], "latest"),
            (&["--source-bucket", "m", "--target-bucket", "t-1", "--before", "yesterday"][..], "RFC 3339"),
            (
                &[
                    "--source-bucket",
                    "m",
                    "--target-bucket",
                    "t-1",
                    "--snapshot",
                    "20261126T030000Z-1a2b3c4d",
                    "--before",
                    "2026-11-26T03:00:00Z",
                ][..],
                "cannot be used with",
            ),
            (&["--source-bucket", "m", "--target-bucket", "t-1", "--concurrency", "0"][..], "0"),
        ] {
            let e = parse(args).expect_err("bad");
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
