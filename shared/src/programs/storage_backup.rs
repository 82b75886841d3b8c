//! `storage-backup`: takes an incremental, server-side snapshot of source buckets into the backup
//! store (see [`crate::bucket`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use clap::Parser;

use crate::bucket::SnapshotError;
use crate::bucket::backup::{
    HeaderState, NoObserver, RunNaming, SnapshotSettings, Source, TaskOutcome, resolve_run, take_snapshot,
};
use crate::config::{Reader, vars};
use crate::core::events::{ItemResult, Outcome, RunResult};
use crate::core::naming::RunId;
use crate::core::source::SourceSpec;
use crate::core::units;
use crate::runtime::{self, Program, ProgramSpec, RunContext, Services, StartError};

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec { name: "storage-backup", vars: &[vars::STORAGE_BACKUP] };

/// Takes an incremental, server-side snapshot of source buckets into the backup bucket:
/// unchanged objects cost no request, new content is copied server-side into content-addressed
/// blobs, and a header written last marks the snapshot complete.
///
/// Scale-out: as a Cloud Run job with several tasks, each task snapshots the objects whose name
/// hashes to its CLOUD_RUN_TASK_INDEX and writes its part; the tasks of one execution share a
/// snapshot id (claimed through state/storage-backup/executions/BUCKET/CLOUD_RUN_EXECUTION.json
/// in LIFEBOAT_STATE_DESTINATION, or
/// pinned with SNAPSHOT_ID), and the task that finds every part present writes the header. A
/// retried task whose part is already written only checks the header.
#[derive(Debug, Clone, Default, Parser)]
pub struct Cli {
    /// The runtime's flags (`--once`), read by the runtime.
    #[command(flatten)]
    pub runtime: runtime::Args,
}

/// Where the snapshot id of a run comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// A fresh id per run (one task, outside a Cloud Run job).
    Fresh,
    /// `SNAPSHOT_ID`.
    Pinned(RunId),
    /// Shared by the tasks (and retries) of this Cloud Run execution.
    Execution(String),
}

/// Settings of `storage-backup`.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to snapshot.
    pub sources: Vec<SourceSpec>,
    /// Concurrency, guard and shard.
    pub settings: SnapshotSettings,
    /// The snapshot id's origin.
    pub naming: Naming,
}

/// Reads the settings.
pub fn read(r: &mut Reader<'_>, _cli: Option<Cli>) -> Option<Config> {
    let required = r.text(&vars::SOURCE_BUCKETS).is_some();
    if !required {
        r.problem(vars::SOURCE_BUCKETS.name, format!("is required: {}", vars::SOURCE_BUCKETS.help));
    }
    let sources = r.sources();
    let concurrency = r.number_in(&vars::SNAPSHOT_CONCURRENCY, 1, 1024);
    let fraction = match r.parse::<f64>(&vars::SUSPICIOUS_FRACTION, "a fraction from 0 to 1") {
        Some(f) if (0.0..=1.0).contains(&f) => Some(f),
        Some(f) => {
            r.problem(vars::SUSPICIOUS_FRACTION.name, format!("{f} is out of range: expected 0 to 1"));
            None
        }
        None => None,
    };
    let tasks = r.number_in(&vars::CLOUD_RUN_TASK_COUNT, 1, 10_000);
    let task = r.number_in(&vars::CLOUD_RUN_TASK_INDEX, 0, 9_999);
    if let (Some(t), Some(n)) = (task, tasks)
        && t >= n
    {
        r.problem(vars::CLOUD_RUN_TASK_INDEX.name, format!("{t} is not below CLOUD_RUN_TASK_COUNT ({n})"));
    }
    let pinned = match r.text(&vars::SNAPSHOT_ID).map(|s| s.parse::<RunId>()) {
        Some(Ok(id)) => Some(Some(id)),
        Some(Err(e)) => {
            r.problem(vars::SNAPSHOT_ID.name, e.to_string());
            None
        }
        None => Some(None),
    };
    let execution = r.text(&vars::CLOUD_RUN_EXECUTION);
    let naming = match (pinned, execution) {
        (Some(Some(id)), _) => Some(Naming::Pinned(id)),
        (Some(None), Some(e)) => Some(Naming::Execution(e)),
        (Some(None), None) if tasks.is_some_and(|n| n > 1) => {
            r.problem(
                vars::CLOUD_RUN_TASK_COUNT.name,
                "several tasks need a shared snapshot id: set CLOUD_RUN_EXECUTION (Cloud Run jobs do) or SNAPSHOT_ID",
            );
            None
        }
        (Some(None), None) => Some(Naming::Fresh),
        (None, _) => None,
    };
    let settings = SnapshotSettings {
        concurrency: usize::try_from(concurrency?).ok()?,
        suspicious_fraction: fraction?,
        task: u32::try_from(task?).ok()?,
        tasks: u32::try_from(tasks?).ok()?,
        // Set from the common settings when the program starts.
        progress_interval: std::time::Duration::ZERO,
        ..SnapshotSettings::default()
    };
    if sources.is_empty() {
        return None;
    }
    Some(Config { sources, settings, naming: naming? })
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
    config: Config,
    sources: Vec<Source>,
}

/// Builds the program: opens every source (that a source and the backup store are of one kind,
/// since copies are server-side, is checked with the configuration: [`Reader::sources`]).
pub async fn start(services: Services, mut config: Config) -> Result<App, StartError> {
    config.settings.progress_interval = services.common.progress_interval;
    let mut sources = Vec::new();
    for spec in &config.sources {
        let store =
            crate::store::open(&spec.location, &services.env, services.common.upload_chunk_bytes, &services.common.net)
                .await?;
        sources.push(Source { spec: spec.clone(), store });
    }
    Ok(App { services, config, sources })
}

impl App {
    async fn snapshot(&self, source: &Source, ctx: &RunContext) -> Result<TaskOutcome, SnapshotError> {
        let naming = match &self.config.naming {
            Naming::Fresh => RunNaming::Fresh(ctx.started),
            Naming::Pinned(id) => RunNaming::Pinned(id.clone()),
            Naming::Execution(name) => RunNaming::Execution { name: name.clone(), now: ctx.started },
        };
        let settings = &self.config.settings;
        let run = resolve_run(&*self.services.state, &source.spec.bucket, &naming, settings).await?;
        take_snapshot(&self.services.store, source, &run, settings, &NoObserver, &ctx.cancel).await
    }
}

/// The item and its one-line summary for one source.
pub fn describe(spec: &SourceSpec, outcome: &Result<TaskOutcome, SnapshotError>) -> (ItemResult, String) {
    let mut item = ItemResult {
        kind: "bucket".into(),
        name: spec.bucket.clone(),
        outcome: Outcome::Success,
        error: None,
        backup_id: None,
        figures: BTreeMap::new(),
    };
    let line = match outcome {
        Err(e) => {
            item.outcome = Outcome::Failure;
            item.error = Some(e.to_string());
            format!("{spec}: snapshot failed: {e}")
        }
        Ok(o) => {
            item.backup_id = Some(o.path.run.to_string());
            item.figures = o.figures();
            let t = &o.part.totals;
            let part = if o.part.tasks > 1 {
                format!(" (part {} of {})", o.part.task + 1, o.part.tasks)
            } else {
                String::new()
            };
            let work = format!(
                "{} objects ({}), {} new ({}), {} changed and {} vanished during the run",
                t.objects,
                units::bytes(t.bytes),
                t.new_objects,
                units::bytes(t.new_bytes),
                t.changed_during_run,
                t.vanished_during_run
            );
            let state = match &o.header {
                HeaderState::Written(h) => match &h.suspicious {
                    Some(why) => {
                        item.outcome = Outcome::Warning;
                        item.figures.insert("suspicious".into(), why.clone().into());
                        format!("complete but SUSPICIOUS: {why}")
                    }
                    None => format!("complete ({} objects, {})", h.totals.objects, units::bytes(h.totals.bytes)),
                },
                HeaderState::WrittenByAnother => "complete (header written by another task)".into(),
                HeaderState::Waiting { present, total } => {
                    format!("{present} of {total} parts written; the last task writes the header")
                }
            };
            format!("{spec}: snapshot {}{part}: {work}; {state}", o.path.run)
        }
    };
    (item, line)
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let mut result = self.services.result(SPEC.name, ctx.started);
        let mut lines = Vec::new();
        for source in &self.sources {
            let outcome = self.snapshot(source, &ctx).await;
            if let Err(e) = &outcome {
                tracing::error!(source = %source.spec, error = %e, "snapshot failed");
            }
            let (item, line) = describe(&source.spec, &outcome);
            lines.push(line);
            result.items.push(item);
        }
        result.outcome = if result.items.iter().any(|i| i.outcome == Outcome::Failure) {
            Outcome::Failure
        } else if result.items.iter().any(|i| i.outcome == Outcome::Warning) {
            Outcome::Warning
        } else {
            Outcome::Success
        };
        result.summary = lines.join(" | ");
        result.finished_at = Utc::now();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    /// Reads `pairs` on top of a gs:// destination (the kind the sources are).
    fn parse(pairs: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        let env =
            Env::from_pairs(std::iter::once(("LIFEBOAT_DESTINATION", "gs://backups-1")).chain(pairs.iter().copied()));
        let mut r = Reader::new(&env);
        let c = read(&mut r, Some(Cli::default()));
        r.finish()?;
        Ok(c.expect("a config when there is no problem"))
    }

    #[test]
    fn reads_sources_shards_and_naming() {
        let c = parse(&[("SOURCE_BUCKETS", "media-prod, uploads/incoming/")]).expect("valid");
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[1].prefix, "incoming/");
        assert_eq!(
            c.settings,
            SnapshotSettings { concurrency: 16, suspicious_fraction: 0.5, task: 0, tasks: 1, ..Default::default() }
        );
        assert_eq!(c.naming, Naming::Fresh);
        let c = parse(&[
            ("SOURCE_BUCKETS", "media-prod"),
            ("CLOUD_RUN_TASK_INDEX", "2"),
            ("CLOUD_RUN_TASK_COUNT", "3"),
            ("CLOUD_RUN_EXECUTION", "storage-backup-x7k2p"),
            ("SNAPSHOT_CONCURRENCY", "4"),
            ("SNAPSHOT_SUSPICIOUS_FRACTION", "0.25"),
        ])
        .expect("sharded");
        assert_eq!((c.settings.task, c.settings.tasks, c.settings.concurrency), (2, 3, 4));
        assert_eq!(c.naming, Naming::Execution("storage-backup-x7k2p".into()));
        let c = parse(&[("SOURCE_BUCKETS", "media-prod"), ("SNAPSHOT_ID", "20261126T030000Z-1a2b3c4d")]).expect("pin");
        assert_eq!(c.naming, Naming::Pinned("20261126T030000Z-1a2b3c4d".parse().expect("id")));
    }

    #[test]
    fn every_problem_at_once() {
        let err = parse(&[
            ("SOURCE_BUCKETS", "UPPER,ok-bucket,ok-bucket/x"),
            ("SNAPSHOT_CONCURRENCY", "0"),
            ("SNAPSHOT_SUSPICIOUS_FRACTION", "2"),
            ("CLOUD_RUN_TASK_INDEX", "3"),
            ("CLOUD_RUN_TASK_COUNT", "3"),
            ("SNAPSHOT_ID", "today"),
        ])
        .expect_err("invalid");
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "SOURCE_BUCKETS",
                "SOURCE_BUCKETS",
                "SNAPSHOT_CONCURRENCY",
                "SNAPSHOT_SUSPICIOUS_FRACTION",
                "CLOUD_RUN_TASK_INDEX",
                "SNAPSHOT_ID"
            ],
            "{err}"
        );
        let err = parse(&[]).expect_err("no sources");
        assert!(err.to_string().contains("SOURCE_BUCKETS: is required"), "{err}");
        let err = parse(&[("SOURCE_BUCKETS", "b-1"), ("CLOUD_RUN_TASK_COUNT", "2")]).expect_err("no shared id");
        assert!(err.to_string().contains("CLOUD_RUN_EXECUTION"), "{err}");
    }

    #[test]
    fn empty_and_repeated_items_and_mixed_kinds_are_configuration_problems() {
        for (value, why) in [
            ("a-1,,b-1", "item 2 of"),
            (",,", "is empty"),
            ("a-1,", "is empty"),
            ("a-1,a-1", "\"a-1\" is listed twice"),
            ("a-1/x,a-1/y", "listed twice; each bucket may appear once"),
            ("file:///srv/uploads", "cannot be snapshotted into gs://backups-1"),
        ] {
            let err = parse(&[("SOURCE_BUCKETS", value)]).expect_err(value);
            assert!(err.problems.iter().all(|p| p.name == "SOURCE_BUCKETS"), "{value}: {err}");
            assert!(err.to_string().contains(why), "{value}: {err}");
        }
        let err = parse(&[("SOURCE_BUCKETS", "media"), ("LIFEBOAT_DESTINATION", "file:///srv/backups")])
            .expect_err("gs source, file destination");
        assert!(err.to_string().contains("both be gs:// (or both file://)"), "{err}");
    }
}
