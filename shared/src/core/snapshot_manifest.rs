//! The bucket snapshot format: manifest parts (JSON lines, zstd) and the header written last.
//!
//! ```text
//! storage/<bucket>/snapshots/<ts>-<id>/part-<task>-of-<count>.jsonl.zst   one per task
//! storage/<bucket>/snapshots/<ts>-<id>/header.json                        written last
//! storage/<bucket>/blobs/<blob>                                           shared, content-addressed
//! ```
//!
//! Every line of a part is one [`SnapshotEntry`]. The snapshot is complete only when the
//! header exists and every part it names is present.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::naming::SnapshotPath;

/// Format name of a snapshot header.
pub const SNAPSHOT_FORMAT: &str = "lifeboat.bucket-snapshot";
/// Version of the snapshot format (header and entries).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// One source object at snapshot time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// Object name in the source bucket.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Source generation copied.
    pub generation: i64,
    /// MD5, base64 (absent for composite objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// CRC32C, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// Content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Content encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// Cache control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// Content disposition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// Content language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// Custom metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Key of the blob holding the bytes, relative to the backup store (`storage/<bucket>/blobs/…`).
    pub blob: String,
}

/// Totals of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTotals {
    /// Objects listed.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects whose content was copied this time.
    pub new_objects: u64,
    /// Bytes copied this time.
    pub new_bytes: u64,
    /// Objects that changed while the snapshot ran (recorded at the generation copied).
    pub changed_during_run: u64,
    /// Objects that vanished while the snapshot ran (left out).
    pub vanished_during_run: u64,
}

/// The completion object of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// [`SNAPSHOT_FORMAT_VERSION`].
    pub format_version: u32,
    /// `<ts>-<id>`.
    pub snapshot_id: String,
    /// Source bucket.
    pub bucket: String,
    /// Source prefix (`""` for the whole bucket).
    pub prefix: String,
    /// When the snapshot started.
    pub started_at: DateTime<Utc>,
    /// When it was complete.
    pub finished_at: DateTime<Utc>,
    /// Parts, named by [`part_name`]`(task, parts)` for every task in `0..parts`.
    pub parts: u32,
    /// Totals.
    pub totals: SnapshotTotals,
    /// Why the snapshot deserves a human look, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspicious: Option<String>,
    /// lifeboat's version.
    pub lifeboat_version: String,
}

/// `part-<task>-of-<count>.jsonl.zst`.
pub fn part_name(task: u32, count: u32) -> String {
    format!("part-{task:05}-of-{count:05}.jsonl.zst")
}

/// The key of a part of a snapshot.
pub fn part_key(path: &SnapshotPath, task: u32, count: u32) -> String {
    format!("{}{}", path.prefix(), part_name(task, count))
}

/// Why snapshot data cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFormatError {
    /// Decompression or I/O failed.
    #[error("corrupt snapshot part: {0}")]
    Io(#[from] std::io::Error),
    /// A line or the header is not what we wrote.
    #[error("corrupt snapshot data: {0}")]
    Json(#[from] serde_json::Error),
    /// Another format or a newer version.
    #[error("unsupported snapshot format {format} version {version}; upgrade lifeboat to read it")]
    Unsupported {
        /// Format name found.
        format: String,
        /// Version found.
        version: u32,
    },
}

impl crate::error::Classify for SnapshotFormatError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Self::Io(_) | Self::Json(_) => crate::error::ErrorKind::Integrity,
            // Written by a newer lifeboat: the deployment, not the data, needs fixing.
            Self::Unsupported { .. } => crate::error::ErrorKind::Config,
        }
    }
}

impl SnapshotHeader {
    /// Parses and checks format and version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SnapshotFormatError> {
        let h: Self = serde_json::from_slice(bytes)?;
        if h.format != SNAPSHOT_FORMAT || h.format_version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotFormatError::Unsupported { format: h.format, version: h.format_version });
        }
        Ok(h)
    }
}

/// Streams entries into a zstd-compressed JSON-lines part, in memory bounded by the caller's flushes.
pub struct PartEncoder {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    entries: u64,
    /// One serialized line, handed to the compressor in one write: serde_json writes piecemeal,
    /// and every write to the compressor is a compression call (one write per line: a fifth less CPU).
    line: Vec<u8>,
}

impl std::fmt::Debug for PartEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartEncoder").field("entries", &self.entries).finish_non_exhaustive()
    }
}

impl PartEncoder {
    /// A new part.
    pub fn new() -> Result<Self, SnapshotFormatError> {
        Ok(Self {
            encoder: zstd::stream::write::Encoder::new(Vec::new(), 3)?,
            entries: 0,
            line: Vec::with_capacity(1024),
        })
    }

    /// Adds one entry.
    pub fn push(&mut self, entry: &SnapshotEntry) -> Result<(), SnapshotFormatError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, entry)?;
        self.line.push(b'\n');
        self.encoder.write_all(&self.line)?;
        self.entries += 1;
        Ok(())
    }

    /// Compressed bytes produced so far (take them to stream the part out).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(self.encoder.get_mut())
    }

    /// Entries pushed.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Ends the frame and returns the remaining compressed bytes.
    pub fn finish(self) -> Result<Vec<u8>, SnapshotFormatError> {
        Ok(self.encoder.finish()?)
    }
}

/// Decodes a whole part (compressed bytes) into its entries, calling `each` for every one.
pub fn decode_part(
    compressed: &[u8],
    mut each: impl FnMut(SnapshotEntry) -> Result<(), SnapshotFormatError>,
) -> Result<(), SnapshotFormatError> {
    let reader = std::io::BufReader::new(zstd::stream::read::Decoder::new(compressed)?);
    for line in reader.lines() {
        let line = line?;
        if !line.is_empty() {
            each(serde_json::from_str(&line)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> SnapshotEntry {
        SnapshotEntry {
            name: name.into(),
            size: 3,
            generation: 7,
            md5: Some("rL0Y20zC+Fzt72VPzMSk2A==".into()),
            crc32c: Some("AAAAAA==".into()),
            content_type: Some("text/plain".into()),
            content_encoding: None,
            cache_control: None,
            content_disposition: None,
            content_language: None,
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            blob: "storage/b/blobs/x".into(),
        }
    }

    #[test]
    fn parts_round_trip_across_takes() {
        let mut enc = PartEncoder::new().expect("encoder");
        let mut out = Vec::new();
        let names = ["a", "dir/b c", "ünï#?%", ""];
        for n in names {
            enc.push(&entry(n)).expect("push");
            out.extend(enc.take_output());
        }
        assert_eq!(enc.entries(), 4);
        out.extend(enc.finish().expect("finish"));
        let mut back = Vec::new();
        decode_part(&out, |e| {
            back.push(e);
            Ok(())
        })
        .expect("decode");
        assert_eq!(back, names.map(entry));
    }

    #[test]
    fn corrupt_parts_are_refused() {
        let mut enc = PartEncoder::new().expect("encoder");
        enc.push(&entry("a")).expect("push");
        let mut out = enc.finish().expect("finish");
        let mid = out.len() / 2;
        out[mid] ^= 0xff;
        assert!(decode_part(&out, |_| Ok(())).is_err());
        assert!(matches!(
            SnapshotHeader::from_json(br#"{"format":"x","format_version":9}"#),
            Err(SnapshotFormatError::Json(_) | SnapshotFormatError::Unsupported { .. })
        ));
        assert_eq!(part_name(1, 2), "part-00001-of-00002.jsonl.zst");
    }
}
