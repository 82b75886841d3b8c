//! Taking a snapshot: one task's part, then the header once every part exists.
//!
//! A run of `tasks` tasks (Cloud Run job tasks, or one) shares one snapshot id ([`resolve_run`]).
//! Task `task` snapshots the objects whose name hashes to it ([`super::blob::shard_of`]):
//!
//! 1. If its part summary exists, an earlier attempt of this task finished its part: go to 4.
//! 2. Stream the source listing (split into key ranges at every 1,000th name of the previous
//!    snapshot, several ranges listed at once, pages fetched ahead), merge-joined by name
//!    with the previous complete snapshot's entries of the same shard. An object whose name and
//!    content (blob name) are unchanged is known to be stored: no request. Any other object is
//!    copied server-side, only at its listed generation, create-only into its blob; "already
//!    exists" means the content is stored already (a rename, a duplicate, a revert).
//! 3. Entries go, in name order, through the part encoder into a streaming create-only writer;
//!    then the part summary (totals) is written, create-only. Any error or a cancellation aborts
//!    the writer: no part, no summary, no header.
//! 4. The header, create-only: a single task writes it at once. Of several tasks, each lists the
//!    snapshot's objects after writing its own summary, and the one that finds every summary sums
//!    them and writes it. Of tasks finishing together, the last to list sees every summary (each
//!    wrote its own before listing); if two write, one gets "already exists", which is fine. The
//!    guards (no object, or fewer than a fraction of the previous snapshot's) make it suspicious:
//!    a `suspicious` reason in the header and the custom metadata [`SUSPICIOUS_METADATA`] on it.
//!
//! The snapshot id of a sharded run is shared through a create-only claim object keyed by the
//! Cloud Run execution ([`RunNaming::Execution`]): whichever task starts first names the snapshot,
//! the others (and retries of any task) read the name. `SNAPSHOT_ID` pins it instead.
//!
//! Objects that change or vanish while the run goes: a copy of a generation that no longer exists
//! answers "not found"; the object is read again and copied at its new generation (counted as
//! changed) or left out (counted as vanished). Any other copy error fails the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, Either, FutureExt as _, Ready};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::blob::{Expected, blob_key, entry_of, shard_of, verify_content};
use super::join::{Joined, merge_join, ordered_or_end, strictly_ordered};
use super::read::{BlobOfName, EntryStream, read_header, shard_entries};
use super::source::SourceSpec;
use super::{PartSummary, SnapshotError, part_summary_key, read_small};
use crate::core::naming::{RunId, SUSPICIOUS_METADATA, SnapshotPath, encode_segment};
use crate::core::progress::Unit;
use crate::core::series::series_from_listing;
use crate::core::snapshot_manifest::{
    PartEncoder, SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_VERSION, SnapshotEntry, SnapshotHeader, SnapshotTotals, part_key,
};
use crate::core::units;
use crate::runtime::progress::{Counter, Progress};
use crate::store::{
    DynStore, KeyRange, ObjectMeta, ObjectStore, ObjectStoreExt as _, ObjectWriter, PutOptions, StoreError,
};

/// Objects per listing page.
const PAGE_SIZE: u32 = 1000;
/// Listing pages fetched ahead of the copies, per range.
const PAGES_AHEAD: usize = 2;
/// Ranges of the listing fetched at once (see [`ranged_listing`]).
const RANGES_AHEAD: usize = 8;
/// Entries of the previous snapshot per listing range.
const RANGE_OBJECTS: usize = PAGE_SIZE as usize;
/// Listed objects in flight between the listing and the part, in name order: copies waiting
/// for a permit, and entries waiting for a copy before them to finish. Large enough that the
/// listing goes on while the copies of a cluster of changed objects run (a few MB of entries).
const WINDOW: usize = 8 * PAGE_SIZE as usize;
/// Compressed part bytes gathered before a write to the store.
const WRITE_BATCH: usize = 256 * 1024;
/// Attempts at an object that keeps changing before it is left out.
const CHANGE_ATTEMPTS: u32 = 5;
/// Largest part summary or claim accepted.
const SMALL_OBJECT_LIMIT: usize = 64 * 1024;

/// A source bucket, opened.
#[derive(Debug, Clone)]
pub struct Source {
    /// What was configured.
    pub spec: SourceSpec,
    /// The store on the bucket's root.
    pub store: DynStore,
}

/// How one task takes its part.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotSettings {
    /// Copies (and store lookups) in flight at once.
    pub concurrency: usize,
    /// Fewer objects than this fraction of the previous snapshot's makes the snapshot suspicious.
    pub suspicious_fraction: f64,
    /// This task's index.
    pub task: u32,
    /// Number of tasks.
    pub tasks: u32,
    /// How often the task logs a progress line (objects done, rate, time left against the
    /// previous snapshot's share of objects); zero: never.
    pub progress_interval: Duration,
    /// Entries of the previous snapshot per range of the listing (ranges are listed side by
    /// side); zero: one sequential listing.
    pub range_objects: usize,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            suspicious_fraction: 0.5,
            task: 0,
            tasks: 1,
            progress_interval: Duration::ZERO,
            range_objects: RANGE_OBJECTS,
        }
    }
}

/// Watches a snapshot's work (tests use it to change the source at a precise moment).
#[async_trait]
pub trait SnapshotObserver: Send + Sync {
    /// Called before each server-side copy attempt, once the object was listed; the copy starts
    /// when this returns.
    async fn before_copy(&self, _object: &ObjectMeta) {}
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl SnapshotObserver for NoObserver {}

/// Where a run's snapshot id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunNaming {
    /// A new id from the run's start time (one task).
    Fresh(DateTime<Utc>),
    /// Exactly this id (`SNAPSHOT_ID`).
    Pinned(RunId),
    /// Shared by the tasks of this Cloud Run execution through a create-only claim object in the
    /// state store (`state/storage-backup/executions/<bucket>/<execution>.json`): the first task to
    /// start writes a fresh id into it, the others read it.
    Execution {
        /// `CLOUD_RUN_EXECUTION`.
        name: String,
        /// This task's start.
        now: DateTime<Utc>,
    },
}

/// The claim of an execution's snapshot id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionClaim {
    /// The snapshot id every task of the execution uses.
    pub snapshot_id: String,
    /// The execution.
    pub execution: String,
    /// Tasks of the execution.
    pub tasks: u32,
    /// The task that claimed.
    pub claimed_by_task: u32,
    /// When.
    pub claimed_at: DateTime<Utc>,
}

/// Where claims live in the state store (`LIFEBOAT_STATE_DESTINATION`): a claim is only needed
/// while its execution runs, so it does not belong among the backups, which a retention policy
/// keeps for the whole period.
pub const CLAIMS_PREFIX: &str = "state/storage-backup/executions/";

/// The key of an execution's claim, in the state store.
pub fn claim_key(bucket: &str, execution: &str) -> String {
    format!("{CLAIMS_PREFIX}{}/{}.json", encode_segment(bucket), encode_segment(execution))
}

/// The snapshot id of this run for `bucket`; claims are read and written in `state`.
pub async fn resolve_run(
    state: &dyn ObjectStore,
    bucket: &str,
    naming: &RunNaming,
    settings: &SnapshotSettings,
) -> Result<RunId, SnapshotError> {
    let (execution, now) = match naming {
        RunNaming::Fresh(now) => return Ok(RunId::new(*now)),
        RunNaming::Pinned(id) => return Ok(id.clone()),
        RunNaming::Execution { name, now } => (name, now),
    };
    let key = claim_key(bucket, execution);
    let claim = ExecutionClaim {
        snapshot_id: RunId::new(*now).to_string(),
        execution: execution.clone(),
        tasks: settings.tasks,
        claimed_by_task: settings.task,
        claimed_at: *now,
    };
    let body = serde_json::to_vec_pretty(&claim).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    let claim = match state.put(&key, Bytes::from(body), PutOptions::default()).await {
        Ok(_) => claim,
        Err(StoreError::AlreadyExists { .. }) => {
            let bytes = read_small(state, &key, SMALL_OBJECT_LIMIT).await?;
            serde_json::from_slice::<ExecutionClaim>(&bytes)
                .map_err(|e| SnapshotError::Inconsistent(format!("claim {key:?} is not readable: {e}")))?
        }
        Err(e) => return Err(e.into()),
    };
    if claim.tasks != settings.tasks {
        return Err(SnapshotError::Invalid(format!(
            "execution {execution:?} was claimed with {} tasks, this task counts {}",
            claim.tasks, settings.tasks
        )));
    }
    claim.snapshot_id.parse().map_err(|e: crate::core::naming::BadRunId| SnapshotError::Inconsistent(e.to_string()))
}

/// The header's state after a task's part.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderState {
    /// This task wrote it: the snapshot is complete.
    Written(Box<SnapshotHeader>),
    /// Another task wrote it (the snapshot is complete).
    WrittenByAnother,
    /// Parts are still missing; the last task to finish writes it.
    Waiting {
        /// Parts complete.
        present: u32,
        /// Parts needed.
        total: u32,
    },
}

/// What one task did.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// The snapshot.
    pub path: SnapshotPath,
    /// This task's part.
    pub part: PartSummary,
    /// The header.
    pub header: HeaderState,
    /// The part was written by an earlier attempt of this task.
    pub resumed: bool,
    /// The snapshot used as the index of stored content.
    pub previous: Option<String>,
    /// Objects known to be stored from the previous snapshot (no request).
    pub known: u64,
    /// Copy attempts (a request each; "already exists" counts).
    pub copy_attempts: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl TaskOutcome {
    /// Figures for the result event.
    pub fn figures(&self) -> BTreeMap<String, serde_json::Value> {
        let t = &self.part.totals;
        let mut f = BTreeMap::new();
        f.insert("objects".into(), t.objects.into());
        f.insert("bytes".into(), t.bytes.into());
        f.insert("new_objects".into(), t.new_objects.into());
        f.insert("new_bytes".into(), t.new_bytes.into());
        f.insert("changed_during_run".into(), t.changed_during_run.into());
        f.insert("vanished_during_run".into(), t.vanished_during_run.into());
        f.insert("known_from_previous".into(), self.known.into());
        f.insert("copy_attempts".into(), self.copy_attempts.into());
        f.insert("part_bytes".into(), self.part.part_bytes.into());
        f.insert("task".into(), self.part.task.into());
        f.insert("tasks".into(), self.part.tasks.into());
        f.insert("duration_ms".into(), u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX).into());
        if let Some(p) = &self.previous {
            f.insert("previous_snapshot".into(), p.clone().into());
        }
        if let HeaderState::Written(h) = &self.header {
            f.insert("snapshot_objects".into(), h.totals.objects.into());
            f.insert("snapshot_bytes".into(), h.totals.bytes.into());
        }
        f
    }
}

/// Why a snapshot deserves a human look, if it does: no object at all, or fewer than `fraction`
/// of the previous snapshot's.
pub fn suspicion(objects: u64, previous: Option<(&str, u64)>, fraction: f64) -> Option<String> {
    if objects == 0 {
        return Some("the source listed no object".into());
    }
    let (id, before) = previous?;
    // (u64 → f64 is exact below 2^53 objects)
    if before > 0 && (objects as f64) < fraction * before as f64 {
        return Some(format!(
            "the source listed {objects} objects, fewer than {fraction} of the {before} of snapshot {id}"
        ));
    }
    None
}

/// Takes task `settings.task`'s part of snapshot `run` of `source`, then writes the header if
/// every part is there.
///
/// Requests besides the listing and the copies, for one task: a listing of the bucket's
/// snapshots, the previous header, the previous part (streamed alongside the listing), the part,
/// its summary and the header. Several tasks add a listing and a read per summary for the task
/// that writes the header.
pub async fn take_snapshot(
    backup: &DynStore,
    source: &Source,
    run: &RunId,
    settings: &SnapshotSettings,
    observer: &dyn SnapshotObserver,
    cancel: &CancellationToken,
) -> Result<TaskOutcome, SnapshotError> {
    if settings.tasks == 0 || settings.task >= settings.tasks || settings.concurrency == 0 {
        return Err(SnapshotError::Invalid(format!(
            "task {} of {} with concurrency {} cannot run",
            settings.task, settings.tasks, settings.concurrency
        )));
    }
    let started = Instant::now();
    let path = SnapshotPath { bucket: source.spec.bucket.clone(), run: run.clone() };
    let summary_key = part_summary_key(&path, settings.task, settings.tasks);
    let part_key = part_key(&path, settings.task, settings.tasks);
    let series = list_series(&**backup, &path.bucket).await?;
    let previous = previous_snapshot(&**backup, &path, &series).await?;
    let resumed = if series.iter().any(|o| o.key == summary_key) {
        tracing::info!(snapshot = %run, task = settings.task, "this task's part was written by an earlier attempt");
        Some(read_summary(&**backup, &summary_key).await?)
    } else {
        None
    };
    let (part, known, copy_attempts) = match resumed.clone() {
        Some(summary) => (summary, 0, 0),
        None => {
            if series.iter().any(|o| o.key == part_key) {
                // A part without a summary is what a failed attempt of this very task left: only
                // this task writes this key, so it is safe to start it over.
                backup.delete(&part_key).await?;
                tracing::warn!(key = part_key, "removed the part of an earlier, failed attempt of this task");
            }
            // The estimate: this task's share of the previous snapshot's objects.
            let estimate = previous.as_ref().map(|(_, h)| h.totals.objects / u64::from(settings.tasks));
            let what = format!("snapshot of {} (task {} of {})", source.spec, settings.task + 1, settings.tasks);
            let progress = Progress::start(what, Unit::Objects, estimate, settings.progress_interval);
            let writer = PartWriter { backup, source, settings, observer, cancel, progress: progress.counter() };
            let done = writer.write(previous.as_ref(), &part_key).await;
            progress.finish();
            let done = done?;
            let body = serde_json::to_vec_pretty(&done.summary).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
            backup.put(&summary_key, Bytes::from(body), PutOptions::default()).await?;
            (done.summary, done.known, done.copy_attempts)
        }
    };
    let compare_with = previous.as_ref().map(|(p, h)| (p.run.to_string(), h.totals.objects));
    let header = write_header_if_complete(&**backup, &source.spec, &path, settings, &part, compare_with).await?;
    let outcome = TaskOutcome {
        path,
        part,
        header,
        resumed: resumed.is_some(),
        previous: previous.map(|(p, _)| p.run.to_string()),
        known,
        copy_attempts,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        bucket = source.spec.bucket,
        snapshot = %outcome.path.run,
        task = settings.task,
        objects = outcome.part.totals.objects,
        new_objects = outcome.part.totals.new_objects,
        new_bytes = %units::bytes(outcome.part.totals.new_bytes),
        known = outcome.known,
        seconds = outcome.elapsed.as_secs_f64(),
        "part written"
    );
    Ok(outcome)
}

/// Every object of the bucket's snapshot series.
async fn list_series(backup: &dyn ObjectStore, bucket: &str) -> Result<Vec<ObjectMeta>, SnapshotError> {
    backup
        .list_all(&SnapshotPath::series_prefix(bucket))
        .try_collect()
        .await
        .map_err(|e| super::read::missing_bucket(backup, e))
}

async fn read_summary(backup: &dyn ObjectStore, key: &str) -> Result<PartSummary, SnapshotError> {
    let bytes = read_small(backup, key, SMALL_OBJECT_LIMIT).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| SnapshotError::Inconsistent(format!("part summary {key:?} is not readable: {e}")))
}

/// The newest complete snapshot older than `path`'s, with its header. An unreadable header is
/// logged and ignored (the run then copies, or finds stored, every object).
async fn previous_snapshot(
    backup: &dyn ObjectStore,
    path: &SnapshotPath,
    series: &[ObjectMeta],
) -> Result<Option<(SnapshotPath, SnapshotHeader)>, SnapshotError> {
    let snapshots = series_from_listing(series.iter().cloned());
    let newest = snapshots
        .iter()
        .flat_map(|s| s.backups.iter())
        .filter(|b| b.complete && b.run < path.run)
        .max_by(|a, b| a.run.cmp(&b.run));
    let Some(prev) = newest else { return Ok(None) };
    let prev_path = SnapshotPath { bucket: path.bucket.clone(), run: prev.run.clone() };
    match read_header(backup, &prev_path).await {
        Ok(h) => Ok(Some((prev_path, h))),
        Err(SnapshotError::Format(e)) => {
            tracing::warn!(snapshot = %prev.run, error = %e, "previous snapshot unreadable: not used");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Writes the header when every part summary exists. One task knows that without looking; of
/// several, each lists the snapshot after writing its own summary, so the last to list sees all.
async fn write_header_if_complete(
    backup: &dyn ObjectStore,
    spec: &SourceSpec,
    path: &SnapshotPath,
    settings: &SnapshotSettings,
    own: &PartSummary,
    previous: Option<(String, u64)>,
) -> Result<HeaderState, SnapshotError> {
    let totals = if settings.tasks == 1 {
        own.totals.clone()
    } else {
        let series = list_series(backup, &path.bucket).await?;
        if series.iter().any(|o| o.key == path.header_key()) {
            return Ok(HeaderState::WrittenByAnother);
        }
        let wanted: Vec<String> = (0..settings.tasks).map(|t| part_summary_key(path, t, settings.tasks)).collect();
        let present = wanted.iter().filter(|k| series.iter().any(|o| &o.key == *k)).count();
        let present = u32::try_from(present).unwrap_or(0);
        if present < settings.tasks {
            return Ok(HeaderState::Waiting { present, total: settings.tasks });
        }
        let mut totals = SnapshotTotals::default();
        for key in &wanted {
            let s = read_summary(backup, key).await?;
            if s.tasks != settings.tasks {
                return Err(SnapshotError::Inconsistent(format!(
                    "{key:?} counts {} tasks, not {}",
                    s.tasks, settings.tasks
                )));
            }
            totals.objects += s.totals.objects;
            totals.bytes += s.totals.bytes;
            totals.new_objects += s.totals.new_objects;
            totals.new_bytes += s.totals.new_bytes;
            totals.changed_during_run += s.totals.changed_during_run;
            totals.vanished_during_run += s.totals.vanished_during_run;
        }
        totals
    };
    let suspicious =
        suspicion(totals.objects, previous.as_ref().map(|(id, n)| (id.as_str(), *n)), settings.suspicious_fraction);
    let header = SnapshotHeader {
        format: SNAPSHOT_FORMAT.into(),
        format_version: SNAPSHOT_FORMAT_VERSION,
        snapshot_id: path.run.to_string(),
        bucket: path.bucket.clone(),
        prefix: spec.prefix.clone(),
        started_at: path.run.started,
        finished_at: Utc::now(),
        parts: settings.tasks,
        totals,
        suspicious: suspicious.clone(),
        lifeboat_version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut options = PutOptions::default();
    if suspicious.is_some() {
        options.metadata.insert(SUSPICIOUS_METADATA.into(), "true".into());
    }
    let body = serde_json::to_vec_pretty(&header).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    match backup.put(&path.header_key(), Bytes::from(body), options).await {
        Ok(_) => {
            if let Some(why) = &suspicious {
                tracing::warn!(snapshot = %path.run, bucket = path.bucket, reason = why, "snapshot complete but suspicious");
            }
            Ok(HeaderState::Written(Box::new(header)))
        }
        Err(StoreError::AlreadyExists { .. }) => Ok(HeaderState::WrittenByAnother),
        Err(e) => Err(e.into()),
    }
}

/// Resolving one object: ready at once, or a boxed copy.
type ResolveFuture<'s> = Either<Ready<Result<Resolved, SnapshotError>>, BoxFuture<'s, Result<Resolved, SnapshotError>>>;

/// What resolving one listed object gave.
struct Resolved {
    /// Its entry; `None` when it disappeared (or kept changing) and is left out.
    entry: Option<SnapshotEntry>,
    /// Its content was copied by this run.
    copied: bool,
    /// It changed after it was listed.
    changed: bool,
    /// The previous snapshot told its content is stored.
    known: bool,
    /// Copy attempts made.
    attempts: u32,
}

impl Resolved {
    fn entry(entry: SnapshotEntry, copied: bool, changed: bool, attempts: u32) -> Self {
        Self { entry: Some(entry), copied, changed, known: false, attempts }
    }

    fn vanished(attempts: u32) -> Self {
        Self { entry: None, copied: false, changed: false, known: false, attempts }
    }
}

struct PartDone {
    summary: PartSummary,
    known: u64,
    copy_attempts: u64,
}

struct PartWriter<'a> {
    backup: &'a DynStore,
    source: &'a Source,
    settings: &'a SnapshotSettings,
    observer: &'a dyn SnapshotObserver,
    cancel: &'a CancellationToken,
    progress: &'a Counter,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The listing of `range` under `prefix`, fetched by a background task up to [`PAGES_AHEAD`]
/// pages ahead; the task ends when the stream is dropped.
fn prefetched_listing(
    store: DynStore,
    prefix: String,
    range: KeyRange,
) -> BoxStream<'static, Result<ObjectMeta, SnapshotError>> {
    let (tx, rx) = mpsc::channel::<Result<Vec<ObjectMeta>, StoreError>>(PAGES_AHEAD);
    let task = tokio::spawn(async move {
        let mut token = None;
        loop {
            match store.list_range_page(&prefix, &range, token, PAGE_SIZE).await {
                Ok(page) => {
                    let next = page.next_page_token;
                    if tx.send(Ok(page.objects)).await.is_err() {
                        return;
                    }
                    match next {
                        Some(t) => token = Some(t),
                        None => return,
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let guard = AbortOnDrop(task);
    let pages = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|page| (page, (rx, guard)))
    });
    pages
        .map_err(SnapshotError::from)
        .map_ok(|objects| futures::stream::iter(objects.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
}

/// The listing of `prefix` in key order, split at `bounds` (keys in increasing order) into
/// ranges of which up to [`RANGES_AHEAD`] are listed at once, each by its own task. Without
/// bounds it is one sequential listing. The bounds come from the previous snapshot (a key every
/// [`SnapshotSettings::range_objects`] entries), so each range is about one page. A listing page
/// of GCS takes a round trip, so ranges listed side by side divide the time a snapshot of a
/// mostly unchanged bucket spends listing by up to the ranges in flight (on fake-gcs-server,
/// where each page costs a scan of the bucket, by about the cores it has). Whatever the bounds, the ranges cover every key once: `[None, b1)`, `[b1, b2)`, …,
/// `[bn, None)`.
fn ranged_listing<'a>(
    store: DynStore,
    prefix: String,
    bounds: BoxStream<'a, String>,
) -> BoxStream<'a, Result<ObjectMeta, SnapshotError>> {
    let ends = bounds.map(Some).chain(futures::stream::once(futures::future::ready(None)));
    ends.scan(None::<String>, |start, end| {
        let range = KeyRange { start: start.take(), end: end.clone() };
        *start = end;
        futures::future::ready(Some(range))
    })
    .map(move |range| futures::future::ready(prefetched_listing(store.clone(), prefix.clone(), range)))
    .buffered(RANGES_AHEAD)
    .flatten()
    .boxed()
}

/// Every `every`th name of `entries`, strictly increasing: where to split the listing
/// (see [`ranged_listing`]). A broken or unordered index ends the bounds early; the last range
/// then covers the rest, so the listing stays complete.
fn range_bounds<'a>(entries: EntryStream<'a, BlobOfName>, every: usize) -> BoxStream<'a, String> {
    entries
        .take_while(|e| {
            if let Err(error) = e {
                tracing::debug!(%error, "previous snapshot unreadable for the listing's ranges; listing the rest in one");
            }
            futures::future::ready(e.is_ok())
        })
        .filter_map(|e| futures::future::ready(e.ok()))
        .enumerate()
        .filter_map(move |(i, e)| futures::future::ready(((i + 1) % every == 0).then_some(e.name)))
        .scan(None::<String>, |last, name| {
            let increasing = last.as_ref().is_none_or(|l| name > *l);
            if increasing {
                *last = Some(name.clone());
            }
            futures::future::ready(Some(increasing.then_some(name)))
        })
        .take_while(|b| futures::future::ready(b.is_some()))
        .filter_map(futures::future::ready)
        .boxed()
}

impl PartWriter<'_> {
    async fn write(
        &self,
        previous: Option<&(SnapshotPath, SnapshotHeader)>,
        part_key: &str,
    ) -> Result<PartDone, SnapshotError> {
        let (task, tasks) = (self.settings.task, self.settings.tasks);
        let bounds = match previous {
            Some((p, h)) if self.settings.range_objects > 0 => {
                range_bounds(shard_entries(&**self.backup, p, h, task, tasks), self.settings.range_objects)
            }
            _ => futures::stream::empty().boxed(),
        };
        let listing = ranged_listing(self.source.store.clone(), self.source.spec.prefix.clone(), bounds);
        let listing = strictly_ordered(listing, format!("the listing of {}", self.source.spec))
            .try_filter(move |o| futures::future::ready(shard_of(&o.key, tasks) == task));
        let known: BoxStream<'_, Result<BlobOfName, SnapshotError>> = match previous {
            Some((p, h)) => {
                ordered_or_end(shard_entries(&**self.backup, p, h, task, tasks), format!("snapshot {}", p.run))
            }
            None => futures::stream::empty().boxed(),
        };
        let semaphore = Semaphore::new(self.settings.concurrency);
        let window = self.settings.concurrency.saturating_mul(8).max(WINDOW);
        let resolved = merge_join(listing, known)
            .try_filter_map(|j| {
                futures::future::ready(Ok(match j {
                    Joined::Left(o) => Some((o, None)),
                    Joined::Both(o, e) => Some((o, Some(e))),
                    Joined::Right(_) => None,
                }))
            })
            .map_ok(|(object, previous)| self.resolve(object, previous, &semaphore))
            .try_buffered(window);

        let mut writer = self.backup.create(part_key, PutOptions::default()).await?;
        match self.encode(resolved, &mut *writer).await {
            Ok(mut done) => {
                let meta = writer.finish().await?;
                done.summary.part_bytes = meta.size;
                done.summary.part_crc32c = meta.crc32c;
                Ok(done)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, "could not abandon the part upload");
                }
                Err(e)
            }
        }
    }

    async fn encode(
        &self,
        resolved: impl futures::Stream<Item = Result<Resolved, SnapshotError>>,
        writer: &mut dyn ObjectWriter,
    ) -> Result<PartDone, SnapshotError> {
        let mut resolved = std::pin::pin!(resolved);
        let mut encoder = PartEncoder::new()?;
        let mut out: Vec<u8> = Vec::with_capacity(WRITE_BATCH * 2);
        let mut totals = SnapshotTotals::default();
        let (mut known, mut copy_attempts) = (0u64, 0u64);
        loop {
            let next = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(SnapshotError::Cancelled),
                next = resolved.next() => next,
            };
            let Some(item) = next else { break };
            let resolved = item?;
            copy_attempts += u64::from(resolved.attempts);
            let Some(entry) = resolved.entry else {
                totals.vanished_during_run += 1;
                continue;
            };
            totals.objects += 1;
            self.progress.add(1);
            totals.bytes += entry.size;
            if resolved.copied {
                totals.new_objects += 1;
                totals.new_bytes += entry.size;
            }
            totals.changed_during_run += u64::from(resolved.changed);
            known += u64::from(resolved.known);
            encoder.push(&entry)?;
            out.extend(encoder.take_output());
            if out.len() >= WRITE_BATCH {
                writer.write(Bytes::from(std::mem::take(&mut out))).await?;
            }
        }
        let entries = encoder.entries();
        out.extend(encoder.finish()?);
        writer.write(Bytes::from(out)).await?;
        let summary = PartSummary {
            task: self.settings.task,
            tasks: self.settings.tasks,
            entries,
            part_bytes: 0,
            part_crc32c: None,
            totals,
        };
        Ok(PartDone { summary, known, copy_attempts })
    }

    /// An object's entry: at once when the previous snapshot says its content is stored
    /// (most objects, kept small on purpose: the window holds many of these), otherwise after
    /// copying it (boxed, and limited by the semaphore).
    fn resolve<'s>(
        &'s self,
        object: ObjectMeta,
        previous: Option<BlobOfName>,
        semaphore: &'s Semaphore,
    ) -> ResolveFuture<'s> {
        let blob = blob_key(&self.source.spec.bucket, &object);
        if previous.is_some_and(|p| p.blob == blob && p.size == object.size) {
            let entry = entry_of(object, blob);
            let known = Resolved { entry: Some(entry), copied: false, changed: false, known: true, attempts: 0 };
            return Either::Left(futures::future::ready(Ok(known)));
        }
        Either::Right(
            async move {
                let _permit = semaphore
                    .acquire()
                    .await
                    .map_err(|_| SnapshotError::Inconsistent("copy semaphore closed".into()))?;
                // Boxed on its own: a copy waiting for its permit in the window holds the object
                // and a pointer, not the whole copy's state.
                self.store_content(object).boxed().await
            }
            .boxed(),
        )
    }

    /// Copies `object`'s content into its blob unless it is there; follows changes of the object.
    async fn store_content(&self, mut object: ObjectMeta) -> Result<Resolved, SnapshotError> {
        let bucket = &self.source.spec.bucket;
        let mut changed = false;
        for attempt in 1..=CHANGE_ATTEMPTS {
            let blob = blob_key(bucket, &object);
            self.observer.before_copy(&object).await;
            let mut from = self.source.store.object_ref(&object.key);
            from.generation = Some(object.generation);
            // One create-only request; the blob keeps the source's metadata (a restore sets each
            // object's own). The generation keeps other bytes than the listed ones out of this
            // content address (see `store::gcs::create_only_copy`); the check below catches a
            // store that ignores it.
            let copy = self.backup.copy_create_only(&from, &blob).await;
            let copied_wrong = match copy {
                Ok(copied) => match verify_content(Expected::of_object(&object), &copied) {
                    Ok(()) => {
                        let entry = entry_of(object, blob);
                        return Ok(Resolved::entry(entry, true, changed, attempt));
                    }
                    Err(detail) => {
                        // Not the listed bytes: never leave them under a content address.
                        tracing::warn!(
                            name = object.key,
                            blob,
                            detail,
                            "copied bytes differ from the listing; removing the blob"
                        );
                        self.backup.delete(&blob).await?;
                        Some(detail)
                    }
                },
                Err(StoreError::AlreadyExists { .. }) => {
                    let entry = entry_of(object, blob);
                    return Ok(Resolved::entry(entry, false, changed, attempt));
                }
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            match self.source.store.stat(&object.key).await {
                Ok(fresh) if fresh.generation == object.generation => {
                    return Err(SnapshotError::Inconsistent(match copied_wrong {
                        Some(detail) => format!(
                            "copying {:?} at generation {} gave other bytes than listed ({detail})",
                            object.key, object.generation
                        ),
                        None => format!(
                            "copying {:?} at generation {} answered \"not found\" although the object is there; \
                             does the backup bucket exist?",
                            object.key, object.generation
                        ),
                    }));
                }
                Ok(fresh) => {
                    tracing::info!(
                        name = fresh.key,
                        generation = fresh.generation,
                        "object changed during the snapshot; copying its new generation"
                    );
                    object = fresh;
                    changed = true;
                }
                Err(e) if e.is_not_found() => {
                    tracing::info!(name = object.key, "object vanished during the snapshot; left out");
                    return Ok(Resolved::vanished(attempt));
                }
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(
            name = object.key,
            attempts = CHANGE_ATTEMPTS,
            "object kept changing during the snapshot; left out"
        );
        Ok(Resolved::vanished(CHANGE_ATTEMPTS))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Location;
    use crate::store::local::LocalStore;

    /// A directory store holding `keys` (one byte each).
    async fn store_of(keys: &[String]) -> (tempfile::TempDir, DynStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(Location::Local { root: dir.path().to_path_buf() }).expect("open");
        for k in keys {
            store.put(k, Bytes::from_static(b"x"), PutOptions::default()).await.expect("put");
        }
        (dir, Arc::new(store))
    }

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("a/{i:04}")).collect()
    }

    #[tokio::test]
    async fn ranged_listing_lists_every_key_once_in_order_whatever_the_bounds() {
        let mut keys = names(0..250);
        keys.extend(["b/outside".to_owned(), "a-sibling".to_owned()]);
        let (_dir, store) = store_of(&keys).await;
        let expected = names(0..250);
        let many: Vec<String> = (0..250).step_by(7).skip(1).map(|i| format!("a/{i:04}")).collect();
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("no bounds", vec![]),
            ("one bound", vec!["a/0100".into()]),
            ("bounds between keys", vec!["a/0010x".into(), "a/0199x".into()]),
            ("bounds outside the prefix", vec!["0".into(), "a/".into(), "zzz".into()]),
            ("more ranges than are listed at once", many),
        ];
        for (case, bounds) in cases {
            let listed: Vec<String> = ranged_listing(store.clone(), "a/".into(), futures::stream::iter(bounds).boxed())
                .map_ok(|o| o.key)
                .try_collect()
                .await
                .expect(case);
            assert_eq!(listed, expected, "{case}");
        }
    }

    fn blob_of(name: &str) -> Result<BlobOfName, SnapshotError> {
        Ok(BlobOfName { name: name.into(), size: 1, blob: format!("blobs/{name}") })
    }

    async fn bounds_of(entries: Vec<Result<BlobOfName, SnapshotError>>, every: usize) -> Vec<String> {
        range_bounds(futures::stream::iter(entries).boxed(), every).collect().await
    }

    #[tokio::test]
    async fn range_bounds_take_every_nth_name_while_the_index_is_sound() {
        let sound: Vec<_> = (0..10).map(|i| blob_of(&format!("k{i}"))).collect();
        assert_eq!(bounds_of(sound, 3).await, ["k2", "k5", "k8"]);
        assert!(bounds_of(vec![blob_of("a"), blob_of("b")], 3).await.is_empty(), "fewer entries than a range");
        let broken = vec![blob_of("a"), blob_of("b"), Err(SnapshotError::Inconsistent("cut".into())), blob_of("c")];
        assert_eq!(bounds_of(broken, 1).await, ["a", "b"], "an unreadable index ends the bounds");
        let unordered = vec![blob_of("a"), blob_of("c"), blob_of("b"), blob_of("d")];
        assert_eq!(bounds_of(unordered, 1).await, ["a", "c"], "an unordered index ends the bounds");
    }

    #[test]
    fn key_ranges_hold_their_start_and_not_their_end() {
        let r = KeyRange { start: Some("b".into()), end: Some("d".into()) };
        assert!(!r.contains("a") && r.contains("b") && r.contains("c") && !r.contains("d"));
        assert!(KeyRange::ALL.contains("") && KeyRange::ALL.contains("zzz"));
        assert!(KeyRange { start: None, end: Some("b".into()) }.contains("a"));
        assert!(!KeyRange { start: Some("b".into()), end: None }.contains("a"));
    }

    #[test]
    fn guards() {
        assert_eq!(suspicion(0, None, 0.5).as_deref(), Some("the source listed no object"));
        assert_eq!(suspicion(0, Some(("s", 10)), 0.5).as_deref(), Some("the source listed no object"));
        assert_eq!(suspicion(5, None, 0.5), None, "nothing to compare the first snapshot with");
        assert_eq!(suspicion(5, Some(("s", 10)), 0.5), None, "exactly half is not fewer than half");
        assert_eq!(
            suspicion(4, Some(("20261126T030000Z-00000001", 10)), 0.5).as_deref(),
            Some("the source listed 4 objects, fewer than 0.5 of the 10 of snapshot 20261126T030000Z-00000001")
        );
        assert_eq!(suspicion(4, Some(("s", 10)), 0.0), None, "a fraction of 0 turns the comparison off");
        assert_eq!(suspicion(4, Some(("s", 0)), 0.5), None);
    }

    #[test]
    fn claim_keys_live_with_the_bucket() {
        assert_eq!(
            claim_key("media", "storage-backup-x7k2p"),
            "state/storage-backup/executions/media/storage-backup-x7k2p.json"
        );
        assert_eq!(claim_key("media", "odd name"), "state/storage-backup/executions/media/odd%20name.json");
    }

    #[test]
    fn figures_name_the_totals() {
        let outcome = TaskOutcome {
            path: SnapshotPath { bucket: "b".into(), run: "20261126T030000Z-00000001".parse().expect("id") },
            part: PartSummary {
                task: 0,
                tasks: 1,
                entries: 3,
                part_bytes: 99,
                part_crc32c: None,
                totals: SnapshotTotals { objects: 3, bytes: 30, new_objects: 1, new_bytes: 10, ..Default::default() },
            },
            header: HeaderState::Waiting { present: 0, total: 1 },
            resumed: false,
            previous: Some("20261125T030000Z-00000001".into()),
            known: 2,
            copy_attempts: 1,
            elapsed: Duration::from_millis(1500),
        };
        let f = outcome.figures();
        assert_eq!(f["objects"], 3);
        assert_eq!(f["new_objects"], 1);
        assert_eq!(f["known_from_previous"], 2);
        assert_eq!(f["duration_ms"], 1500);
        assert_eq!(f["previous_snapshot"], "20261125T030000Z-00000001");
    }
}
