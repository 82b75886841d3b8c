//! Manifests: the small JSON object written last that makes a backup complete.
//! Each carries a format name and version; readers refuse what they do not understand.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Format name of a database backup manifest.
pub const DB_FORMAT: &str = "lifeboat.db-backup";
/// Version of the database backup manifest format.
pub const DB_FORMAT_VERSION: u32 = 1;
/// Manifests larger than this are refused (a manifest is a few KiB; row counts add ~100 B/table).
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// How a dump is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (multi-threaded), `.zst`.
    Zstd,
    /// gzip (flate2), `.gz`.
    Gzip,
}

impl Compression {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Zstd => "zst",
            Self::Gzip => "gz",
        }
    }
}

/// The stored dump object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpObject {
    /// Object name relative to the backup's prefix (`dump.pgc.zst`).
    pub name: String,
    /// Compression.
    pub compression: Compression,
    /// Compression level.
    pub level: i32,
    /// Bytes `pg_dump` wrote.
    pub uncompressed_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// CRC32C of the stored bytes, base64 big-endian (as GCS reports it).
    pub crc32c: String,
}

/// A complete database backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbManifest {
    /// [`DB_FORMAT`].
    pub format: String,
    /// [`DB_FORMAT_VERSION`].
    pub format_version: u32,
    /// `<ts>-<id>`.
    pub backup_id: String,
    /// Logical source.
    pub source: String,
    /// Database name.
    pub database: String,
    /// `server_version` of the dumped server.
    pub server_version: String,
    /// `pg_dump --version`.
    pub pg_dump_version: String,
    /// lifeboat's version.
    pub lifeboat_version: String,
    /// When the dump started.
    pub started_at: DateTime<Utc>,
    /// When the dump was verified complete.
    pub finished_at: DateTime<Utc>,
    /// The dump.
    pub dump: DumpObject,
    /// Exact rows per table (`schema.table`), counted in the dump's snapshot; `None` when off.
    #[serde(default)]
    pub row_counts: Option<BTreeMap<String, i64>>,
}

/// Why bytes are not a manifest we can use.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("unreadable manifest: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Another format or a newer version.
    #[error("unsupported manifest {format} version {version}; upgrade lifeboat to read it")]
    Unsupported {
        /// Format name found.
        format: String,
        /// Version found.
        version: u32,
    },
}

impl crate::error::Classify for ManifestError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Self::Malformed(_) => crate::error::ErrorKind::Integrity,
            // Written by a newer lifeboat: the deployment, not the data, needs fixing.
            Self::Unsupported { .. } => crate::error::ErrorKind::Config,
        }
    }
}

impl DbManifest {
    /// Parses and checks format and version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Self = serde_json::from_slice(bytes)?;
        if m.format != DB_FORMAT || m.format_version != DB_FORMAT_VERSION {
            return Err(ManifestError::Unsupported { format: m.format, version: m.format_version });
        }
        Ok(m)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DbManifest {
        let t = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").expect("t").to_utc();
        DbManifest {
            format: DB_FORMAT.into(),
            format_version: DB_FORMAT_VERSION,
            backup_id: "20261126T020000Z-1a2b3c4d".into(),
            source: "main".into(),
            database: "app".into(),
            server_version: "15.20".into(),
            pg_dump_version: "pg_dump (PostgreSQL) 15.20".into(),
            lifeboat_version: "0.1.0".into(),
            started_at: t,
            finished_at: t + chrono::Duration::seconds(12),
            dump: DumpObject {
                name: "dump.pgc.zst".into(),
                compression: Compression::Zstd,
                level: 3,
                uncompressed_bytes: 1000,
                stored_bytes: 300,
                sha256: "ab".repeat(32),
                crc32c: "AAAAAA==".into(),
            },
            row_counts: Some(BTreeMap::from([("public.t".into(), 3)])),
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(DbManifest::from_json(&m.to_json()).expect("parse"), m);
    }

    #[test]
    fn refuses_other_versions() {
        let mut m = sample();
        m.format_version = 2;
        assert!(matches!(DbManifest::from_json(&m.to_json()), Err(ManifestError::Unsupported { version: 2, .. })));
        assert!(matches!(DbManifest::from_json(b"{}"), Err(ManifestError::Malformed(_))));
    }
}
