//! Bucket snapshots: incremental, content-addressed, server-side; and their restore.
//!
//! ```text
//! source listing ──page by page──▶ shard filter ──▶ merge-join by name with the previous
//!   snapshot's entries (streamed) ──▶ known content? ──yes──▶ entry
//!                                        └─no──▶ copy_create_only(source@generation → blob): one request
//!   ──▶ ordered window (copies in flight ≤ concurrency) ──▶ PartEncoder ──▶ streaming writer
//! ```
//!
//! - [`blob`]: pure naming: blob keys (`<md5hex>-<size>`, or `<crc32chex>-<size>-g<generation>` for
//!   objects without MD5) and the stable shard of a name.
//! - [`join`]: a merge-join of two name-ordered streams and an order check; it is what keeps memory
//!   flat: neither the listing nor a snapshot is ever held, only the heads of two streams.
//! - [`read`]: the snapshots of a bucket, choosing one, and streaming its entries (parts decoded
//!   as they download, merged in name order).
//! - [`backup`]: taking a snapshot (one task's part; the header once every part exists).
//! - [`restore`]: restoring a snapshot into a target bucket/prefix.
//! - [`drill`]: checking the newest snapshot (every blob by metadata, a sample byte for byte).
//! - [`source`]: what `SOURCE_BUCKETS` names.
//!
//! Why the previous snapshot is the index of known content: both it and the source listing are
//! in name order, so one streaming pass over both tells, for every object whose name and content
//! are unchanged, that its blob exists, with no request and no map. Only new or changed names cost
//! a request (the create-only copy itself, which answers "already exists" for content seen under
//! another name). A listing of the blobs prefix would be as many requests as the source listing
//! and would need a set of every blob in memory; a stat per object would be one request per object.

pub mod backup;
pub mod blob;
pub mod drill;
pub mod join;
pub mod read;
pub mod restore;
pub mod source;

use serde::{Deserialize, Serialize};

use crate::core::naming::SnapshotPath;
use crate::core::snapshot_manifest::{SnapshotFormatError, SnapshotTotals};
use futures::TryStreamExt as _;

use crate::error::{Classify, ErrorKind};
use crate::store::{ObjectStore, StoreError};

/// What went wrong with a snapshot or a restore.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Snapshot data cannot be read.
    #[error(transparent)]
    Format(#[from] SnapshotFormatError),
    /// A stream that must be in strict name order is not.
    #[error("{what} is not in name order: {next:?} came after {previous:?}")]
    OutOfOrder {
        /// Which stream.
        what: String,
        /// The earlier name.
        previous: String,
        /// The name that should have come before it.
        next: String,
    },
    /// No snapshot matches the request.
    #[error("no complete snapshot of bucket {bucket:?} {matching} in {location}")]
    NoSnapshot {
        /// Source bucket.
        bucket: String,
        /// What was asked (`at all`, `with id …`, `started at or before …`).
        matching: String,
        /// The backup store.
        location: String,
    },
    /// A part named by a header is missing.
    #[error("snapshot {snapshot} is damaged: part {key:?} is missing")]
    MissingPart {
        /// Snapshot id.
        snapshot: String,
        /// The part's key.
        key: String,
    },
    /// A restored object does not have the bytes the snapshot recorded.
    #[error("restored object {name:?} does not match the snapshot ({detail}): blob {blob:?} is corrupt")]
    Corrupt {
        /// Object name.
        name: String,
        /// The blob it was copied from.
        blob: String,
        /// What differs.
        detail: String,
    },
    /// The store answered something that cannot be (e.g. a copy "not found" of an object that exists).
    #[error("{0}")]
    Inconsistent(String),
    /// A run's parameters cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The run was cancelled (termination signal).
    #[error("cancelled by a termination signal")]
    Cancelled,
}

impl Classify for SnapshotError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Store(e) => e.kind(),
            Self::Format(e) => e.kind(),
            Self::OutOfOrder { .. } | Self::MissingPart { .. } | Self::Corrupt { .. } | Self::Inconsistent(_) => {
                ErrorKind::Integrity
            }
            Self::NoSnapshot { .. } => ErrorKind::NotFound,
            Self::Invalid(_) => ErrorKind::Config,
            Self::Cancelled => ErrorKind::Cancelled,
        }
    }
}

/// What one task of a snapshot run wrote next to its part, after it: the part is complete when
/// this exists. The task that writes the header sums these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSummary {
    /// Index of the task.
    pub task: u32,
    /// Number of tasks.
    pub tasks: u32,
    /// Entries in the part.
    pub entries: u64,
    /// Compressed size of the part.
    pub part_bytes: u64,
    /// CRC32C of the part as stored (base64, big-endian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_crc32c: Option<String>,
    /// This task's totals.
    pub totals: SnapshotTotals,
}

/// `part-<task>-of-<count>.summary.json`, next to the part it describes.
pub fn part_summary_key(path: &SnapshotPath, task: u32, count: u32) -> String {
    format!("{}part-{task:05}-of-{count:05}.summary.json", path.prefix())
}

/// Reads a small object in one request (no stat first), refusing more than `limit` bytes.
pub async fn read_small(store: &dyn ObjectStore, key: &str, limit: usize) -> Result<Vec<u8>, SnapshotError> {
    let mut stream = store.read(key).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(SnapshotError::Inconsistent(format!(
                "{key:?} in {} is larger than the {limit} bytes expected",
                store.location()
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keys_sit_next_to_their_parts() {
        let p = SnapshotPath { bucket: "media".into(), run: "20261126T030000Z-0000abcd".parse().expect("id") };
        assert_eq!(
            part_summary_key(&p, 1, 2),
            "storage/media/snapshots/20261126T030000Z-0000abcd/part-00001-of-00002.summary.json"
        );
        assert_eq!(
            crate::core::snapshot_manifest::part_key(&p, 1, 2),
            "storage/media/snapshots/20261126T030000Z-0000abcd/part-00001-of-00002.jsonl.zst"
        );
    }
}
