//! Restoring a bucket snapshot into a target bucket/prefix (`restore bucket`; the command line is
//! in [`crate::programs::restore`]).
//!
//! The snapshot's entries (parts merged by name) and the target's listing are merge-joined by
//! name, so each name gets one action without either side being held in memory:
//!
//! | snapshot | target                                | action                                      |
//! |----------|---------------------------------------|---------------------------------------------|
//! | entry    | —                                     | copy the blob server-side, with the entry's metadata |
//! | entry    | same bytes and metadata               | nothing (already restored: a restore can be resumed) |
//! | entry    | something else                        | conflict: reported, never overwritten        |
//! | —        | object                                | kept; deleted only with `--delete-extra`    |
//!
//! Every copied object is checked against the entry (size, MD5, CRC32C as the store computed
//! them for the new object, and its metadata); an object that does not match is removed again
//! and reported: its blob is corrupt. `--dry-run` prints the actions and changes nothing.

use std::time::{Duration, Instant};

use futures::stream::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::SnapshotError;
use super::blob::{Expected, metadata_differences, verify_content};
use super::join::{Joined, merge_join, strictly_ordered};
use super::read::{Selector, entries, find};
use crate::core::snapshot_manifest::SnapshotEntry;
use crate::core::units;
use crate::store::{CopyOptions, Location, ObjectMeta, ObjectStore, ObjectStoreExt as _, PutOptions, StoreError};

/// Problems kept word for word in a report (the rest are counted).
const PROBLEMS_KEPT: usize = 50;

/// What to restore and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    /// The backed-up bucket.
    pub bucket: String,
    /// Which snapshot.
    pub selector: Selector,
    /// Only names starting with this (`""` = all).
    pub only_prefix: String,
    /// Change nothing.
    pub dry_run: bool,
    /// Delete target objects that are not in the snapshot.
    pub delete_extra: bool,
    /// Copies in flight.
    pub concurrency: usize,
}

/// What to do with one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copy the entry's blob to the target.
    Copy(SnapshotEntry),
    /// The target already has it (same bytes, same metadata).
    Present(SnapshotEntry),
    /// The target has something else under the entry's name; it is not overwritten.
    Conflict {
        /// What the snapshot has.
        entry: SnapshotEntry,
        /// What differs.
        why: String,
    },
    /// A target object that is not in the snapshot, to delete (`--delete-extra`).
    Delete(ObjectMeta),
    /// A target object that is not in the snapshot, kept.
    KeepExtra(ObjectMeta),
}

impl Action {
    /// One line for people; names are quoted so spaces and odd characters stay visible.
    pub fn describe(&self, dry_run: bool) -> String {
        let would = if dry_run { "would " } else { "" };
        match self {
            Self::Copy(e) => format!("{would}copy {:?} ({})", e.name, units::bytes(e.size)),
            Self::Present(e) => format!("skip {:?} (already restored)", e.name),
            Self::Conflict { entry, why } => format!("conflict {:?}: {why}; not overwritten", entry.name),
            Self::Delete(o) => format!("{would}delete {:?} (not in the snapshot)", o.key),
            Self::KeepExtra(o) => format!("keep {:?} (not in the snapshot)", o.key),
        }
    }
}

/// The action for one step of the join of snapshot entries with the target listing.
pub fn plan_step(step: Joined<SnapshotEntry, ObjectMeta>, delete_extra: bool) -> Action {
    match step {
        Joined::Left(entry) => Action::Copy(entry),
        Joined::Right(object) if delete_extra => Action::Delete(object),
        Joined::Right(object) => Action::KeepExtra(object),
        Joined::Both(entry, existing) => match verify_content(Expected::of_entry(&entry), &existing) {
            Ok(()) => match metadata_differences(&entry, &existing) {
                differences if differences.is_empty() => Action::Present(entry),
                differences => Action::Conflict {
                    entry,
                    why: format!("the target object has other metadata ({})", differences.join("; ")),
                },
            },
            Err(detail) => Action::Conflict { entry, why: format!("the target object differs: {detail}") },
        },
    }
}

/// What a restore did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Objects copied (or to copy).
    pub copied: u64,
    /// Their bytes.
    pub copied_bytes: u64,
    /// Objects already in place.
    pub present: u64,
    /// Names held by another object in the target (not overwritten).
    pub conflicts: u64,
    /// Restored objects that did not match the snapshot (removed again).
    pub corrupt: u64,
    /// Target objects not in the snapshot, kept.
    pub extra_kept: u64,
    /// Target objects not in the snapshot, deleted (or to delete).
    pub deleted: u64,
    /// The first problems, word for word.
    pub problems: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl RestoreReport {
    /// True when every snapshot object is (or would be) in place.
    pub fn is_success(&self) -> bool {
        self.conflicts == 0 && self.corrupt == 0
    }

    fn problem(&mut self, text: String) {
        tracing::error!(problem = text, "restore problem");
        if self.problems.len() < PROBLEMS_KEPT {
            self.problems.push(text);
        }
    }
}

/// What executing one action gave.
enum Done {
    Copied(u64),
    Present,
    Conflict(String),
    Corrupt(String),
    Deleted,
    Kept,
}

/// Restores the snapshot `request` names from `backup` into `target` (a store on the target
/// bucket and prefix). `on_action` sees every planned action before it runs.
pub async fn restore_bucket(
    backup: &dyn ObjectStore,
    target: &dyn ObjectStore,
    request: &RestoreRequest,
    on_action: &(dyn Fn(&Action) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<RestoreReport, SnapshotError> {
    let started = Instant::now();
    let same_backend = matches!(
        (backup.location(), target.location()),
        (Location::Gcs { .. }, Location::Gcs { .. }) | (Location::Local { .. }, Location::Local { .. })
    );
    if !same_backend {
        return Err(SnapshotError::Invalid(format!(
            "cannot copy server-side from {} to {}: restore into a target of the backup store's kind",
            backup.location(),
            target.location()
        )));
    }
    let (path, header) = find(backup, &request.bucket, &request.selector).await?;
    tracing::info!(snapshot = header.snapshot_id, objects = header.totals.objects, target = %target.location(), dry_run = request.dry_run, "restoring");
    let only = request.only_prefix.clone();
    let wanted = entries(backup, &path, &header)
        .try_skip_while({
            let only = only.clone();
            move |e| futures::future::ready(Ok(e.name.as_str() < only.as_str()))
        })
        .try_take_while({
            let only = only.clone();
            move |e| futures::future::ready(Ok(e.name.starts_with(&only)))
        });
    let existing = strictly_ordered(
        target.list_all(&only).map_err(SnapshotError::from),
        format!("the listing of {}", target.location()),
    );
    let actions = merge_join(wanted, existing).map_ok(|step| {
        let action = plan_step(step, request.delete_extra);
        on_action(&action);
        action
    });
    let mut report =
        RestoreReport { snapshot: header.snapshot_id.clone(), dry_run: request.dry_run, ..RestoreReport::default() };
    let results = actions
        .map_ok(|action| execute(backup, target, action, request.dry_run))
        .try_buffer_unordered(request.concurrency);
    let mut results = std::pin::pin!(results);
    loop {
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(SnapshotError::Cancelled),
            next = results.next() => next,
        };
        let Some(done) = next else { break };
        match done? {
            Done::Copied(bytes) => {
                report.copied += 1;
                report.copied_bytes += bytes;
            }
            Done::Present => report.present += 1,
            Done::Conflict(text) => {
                report.conflicts += 1;
                report.problem(text);
            }
            Done::Corrupt(text) => {
                report.corrupt += 1;
                report.problem(text);
            }
            Done::Deleted => report.deleted += 1,
            Done::Kept => report.extra_kept += 1,
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn execute(
    backup: &dyn ObjectStore,
    target: &dyn ObjectStore,
    action: Action,
    dry_run: bool,
) -> Result<Done, SnapshotError> {
    match action {
        Action::Present(_) => Ok(Done::Present),
        Action::KeepExtra(_) => Ok(Done::Kept),
        Action::Conflict { entry, why } => Ok(Done::Conflict(format!("{:?}: {why}; not overwritten", entry.name))),
        Action::Delete(_) if dry_run => Ok(Done::Deleted),
        Action::Delete(object) => {
            target.delete(&object.key).await?;
            tracing::info!(name = object.key, "deleted: not in the snapshot");
            Ok(Done::Deleted)
        }
        Action::Copy(entry) if dry_run => Ok(Done::Copied(entry.size)),
        Action::Copy(entry) => copy_entry(backup, target, entry).await,
    }
}

async fn copy_entry(
    backup: &dyn ObjectStore,
    target: &dyn ObjectStore,
    entry: SnapshotEntry,
) -> Result<Done, SnapshotError> {
    // Every field, absent ones too: the blob is shared by every object with these bytes, and
    // a field left out of the copy may keep the blob's value (another object's).
    let metadata = PutOptions {
        content_type: entry.content_type.clone(),
        content_encoding: entry.content_encoding.clone(),
        cache_control: entry.cache_control.clone(),
        content_disposition: entry.content_disposition.clone(),
        content_language: entry.content_language.clone(),
        metadata: entry.metadata.clone(),
        ..PutOptions::default()
    };
    let blob = backup.object_ref(&entry.blob);
    match target.copy_from(&blob, &entry.name, CopyOptions { metadata: Some(metadata) }).await {
        Ok(restored) => {
            let problem = match verify_content(Expected::of_entry(&entry), &restored) {
                Err(detail) => {
                    Some(SnapshotError::Corrupt { name: entry.name.clone(), blob: entry.blob.clone(), detail })
                }
                Ok(()) => match metadata_differences(&entry, &restored) {
                    differences if differences.is_empty() => None,
                    differences => Some(SnapshotError::Inconsistent(format!(
                        "restored object {:?} did not get the snapshot's metadata: {}",
                        entry.name,
                        differences.join("; ")
                    ))),
                },
            };
            match problem {
                None => Ok(Done::Copied(entry.size)),
                Some(problem) => {
                    // Nothing that does not match the snapshot is left looking restored.
                    target.delete(&entry.name).await?;
                    Ok(Done::Corrupt(problem.to_string()))
                }
            }
        }
        Err(StoreError::AlreadyExists { .. }) => {
            Ok(Done::Conflict(format!("{:?}: created in the target during the restore; not overwritten", entry.name)))
        }
        Err(e) if e.is_not_found() => Ok(Done::Corrupt(
            SnapshotError::Corrupt {
                name: entry.name.clone(),
                blob: entry.blob.clone(),
                detail: "the blob is missing".into(),
            }
            .to_string(),
        )),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bucket::blob::entry_of;

    fn object(name: &str, body: &[u8], content_type: Option<&str>) -> ObjectMeta {
        use md5::Digest as _;
        ObjectMeta {
            key: name.into(),
            size: body.len() as u64,
            generation: 1,
            md5: Some(crate::store::md5_base64(&md5::Md5::digest(body))),
            crc32c: Some(crate::store::crc32c_base64(crc32c::crc32c(body))),
            content_type: content_type.map(str::to_owned),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn plan_of_each_case() {
        let e = entry_of(object("a", b"hello", Some("text/plain")), "storage/b/blobs/x".into());
        assert_eq!(plan_step(Joined::Left(e.clone()), false), Action::Copy(e.clone()));
        assert_eq!(
            plan_step(Joined::Both(e.clone(), object("a", b"hello", Some("text/plain"))), true),
            Action::Present(e.clone())
        );
        let Action::Conflict { why, .. } =
            plan_step(Joined::Both(e.clone(), object("a", b"hellO", Some("text/plain"))), true)
        else {
            panic!("other bytes are a conflict")
        };
        assert!(why.contains("MD5"), "{why}");
        let Action::Conflict { why, .. } = plan_step(Joined::Both(e.clone(), object("a", b"hello", None)), true) else {
            panic!("other metadata is a conflict")
        };
        assert!(why.contains("metadata"), "{why}");
        let extra = object("zzz", b"", None);
        assert_eq!(plan_step(Joined::Right(extra.clone()), false), Action::KeepExtra(extra.clone()));
        assert_eq!(plan_step(Joined::Right(extra.clone()), true), Action::Delete(extra.clone()));
        assert_eq!(Action::Copy(e.clone()).describe(true), "would copy \"a\" (5 B)");
        assert_eq!(Action::Delete(extra.clone()).describe(false), "delete \"zzz\" (not in the snapshot)");
        assert_eq!(Action::KeepExtra(extra).describe(true), "keep \"zzz\" (not in the snapshot)");
        assert_eq!(Action::Present(e).describe(false), "skip \"a\" (already restored)");
    }
}
