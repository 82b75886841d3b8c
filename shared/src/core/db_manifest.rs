//! Manifests: the small JSON object written last that makes a backup complete.
//! Each carries a format name and version; readers refuse what they do not understand.
//!
//! `format_version` is the oldest reader version that understands the manifest, like zip's
//! "version needed to extract": an unencrypted backup is still written as version 1, so an older
//! lifeboat restores it; an encrypted one is version 2, so an older lifeboat refuses it ("upgrade
//! lifeboat") instead of feeding ciphertext to the decompressor. This version reads both.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Format name of a database backup manifest.
pub const DB_FORMAT: &str = "lifeboat.db-backup";
/// The newest version of the database backup manifest format (what this code reads up to).
pub const DB_FORMAT_VERSION: u32 = 2;
/// The version of a manifest without encryption (readable by every lifeboat).
pub const DB_FORMAT_VERSION_PLAIN: u32 = 1;
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

/// How a dump is encrypted (after compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionFormat {
    /// The age file format (age-encryption.org/v1), X25519 recipients; `.age`.
    Age,
}

impl EncryptionFormat {
    /// File extension appended to the compressed dump's name.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Age => "age",
        }
    }
}

/// The encryption of a dump: which format, and to whom. Only public keys: a restore uses them to
/// say which identity it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// Format.
    pub format: EncryptionFormat,
    /// The recipients' public keys (`age1…`), in the order configured.
    pub recipients: Vec<String>,
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
    /// Set when the compressed dump is encrypted; sizes and hashes above are of the stored
    /// (encrypted) bytes, so integrity checks need no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

impl DumpObject {
    /// The version a manifest holding this dump is written as (see the module's doc).
    pub fn format_version(&self) -> u32 {
        if self.encryption.is_some() { DB_FORMAT_VERSION } else { DB_FORMAT_VERSION_PLAIN }
    }
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
    /// Content checksum per table (`schema.table` as in `row_counts`), computed in the dump's
    /// snapshot by `postgres::sql::table_checksum_query` (`BACKUP_TABLE_CHECKSUMS`); absent
    /// when off, and then not written at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_checksums: Option<BTreeMap<String, String>>,
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
    /// A version-1 manifest that claims encryption (version 1 predates it): not written by us.
    #[error("a version-1 manifest cannot describe an encrypted dump: it was not written by lifeboat")]
    Inconsistent,
}

impl crate::error::Classify for ManifestError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Self::Malformed(_) | Self::Inconsistent => crate::error::ErrorKind::Integrity,
            // Written by a newer lifeboat: the deployment, not the data, needs fixing.
            Self::Unsupported { .. } => crate::error::ErrorKind::Config,
        }
    }
}

impl DbManifest {
    /// Parses and checks format and version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Self = serde_json::from_slice(bytes)?;
        if m.format != DB_FORMAT || !(DB_FORMAT_VERSION_PLAIN..=DB_FORMAT_VERSION).contains(&m.format_version) {
            return Err(ManifestError::Unsupported { format: m.format, version: m.format_version });
        }
        if m.format_version == DB_FORMAT_VERSION_PLAIN && m.dump.encryption.is_some() {
            return Err(ManifestError::Inconsistent);
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
            format_version: DB_FORMAT_VERSION_PLAIN,
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
                encryption: None,
            },
            row_counts: Some(BTreeMap::from([("public.t".into(), 3)])),
            table_checksums: None,
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
        m.format_version = 3;
        assert!(matches!(DbManifest::from_json(&m.to_json()), Err(ManifestError::Unsupported { version: 3, .. })));
        m.format_version = 0;
        assert!(matches!(DbManifest::from_json(&m.to_json()), Err(ManifestError::Unsupported { version: 0, .. })));
        assert!(matches!(DbManifest::from_json(b"{}"), Err(ManifestError::Malformed(_))));
    }

    /// A manifest as lifeboat 0.1 wrote it (version 1, no `encryption` field): still read.
    const VERSION_1: &str = r#"{
  "format": "lifeboat.db-backup", "format_version": 1, "backup_id": "20261126T020000Z-1a2b3c4d",
  "source": "main", "database": "app", "server_version": "15.20",
  "pg_dump_version": "pg_dump (PostgreSQL) 15.20", "lifeboat_version": "0.1.0",
  "started_at": "2026-11-26T02:00:00Z", "finished_at": "2026-11-26T02:00:12Z",
  "dump": { "name": "dump.pgc.zst", "compression": "zstd", "level": 3, "uncompressed_bytes": 1000,
            "stored_bytes": 300, "sha256": "abababababababababababababababababababababababababababababababab",
            "crc32c": "AAAAAA==" },
  "row_counts": { "public.t": 3 }
}"#;

    #[test]
    fn version_1_manifests_are_still_read_and_written_alike() {
        let m = DbManifest::from_json(VERSION_1.as_bytes()).expect("version 1");
        assert_eq!(m, sample());
        let written = String::from_utf8(m.to_json()).expect("utf-8");
        assert!(!written.contains("encryption"), "an unencrypted manifest stays version 1 in shape: {written}");
        assert_eq!(m.dump.format_version(), DB_FORMAT_VERSION_PLAIN);
    }

    #[test]
    fn encrypted_dumps_are_version_2_and_name_their_recipients() {
        let mut m = sample();
        m.dump.encryption = Some(Encryption {
            format: EncryptionFormat::Age,
            recipients: vec!["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into()],
        });
        m.format_version = m.dump.format_version();
        assert_eq!(m.format_version, 2);
        let json = String::from_utf8(m.to_json()).expect("utf-8");
        assert!(json.contains(r#""format": "age""#) && json.contains("age1ql3z7"), "{json}");
        assert_eq!(DbManifest::from_json(json.as_bytes()).expect("parse"), m);
        // Version 1 predates encryption: such a manifest was not written by lifeboat.
        m.format_version = 1;
        assert!(matches!(DbManifest::from_json(&m.to_json()), Err(ManifestError::Inconsistent)));
    }

    #[test]
    fn table_checksums_round_trip_and_are_absent_when_off() {
        let m = sample();
        let json = String::from_utf8(m.to_json()).expect("utf-8");
        assert!(!json.contains("table_checksums"), "off: the field is not written: {json}");
        let mut with = sample();
        with.table_checksums = Some(BTreeMap::from([("public.t".into(), "-1234567890123".into())]));
        let json = String::from_utf8(with.to_json()).expect("utf-8");
        assert!(json.contains(r#""table_checksums""#) && json.contains("-1234567890123"), "{json}");
        let back = DbManifest::from_json(json.as_bytes()).expect("parse");
        assert_eq!(back, with);
        assert_ne!(back, m);
    }
}
