//! Database backups and restores, standing on the PostgreSQL edge ([`crate::postgres`]) and the
//! object store.
//!
//! - [`codec`]: compression (multi-threaded zstd, gzip), decompression and the streaming hashes.
//! - [`encryption`]: optional age encryption of the compressed dump (public recipients in
//!   backups, secret identities only in restore and drill).
//! - [`backup`]: `pg_dump` stdout → compression → SHA-256/CRC32C → create-only upload, then the
//!   manifest, written last.
//! - [`restore`]: choosing a backup, download → verification → decompression → `pg_restore`.
//! - [`drill`]: the newest backup restored into a scratch database, verified, timed, dropped.
//!
//! Memory stays bounded: the dump flows through fixed-size buffers and a bounded channel; no
//! step holds a whole dump.

pub mod backup;
pub mod codec;
pub mod drill;
pub mod encryption;
pub mod restore;

use crate::error::{Classify, ErrorKind};
use crate::store::StoreError;

/// What went wrong with a database backup or restore. Messages never contain a secret: texts
/// that come from the server or a tool are redacted before they are put in here.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Talking to PostgreSQL failed (settings, connection, query, a tool missing or failing).
    #[error(transparent)]
    Pg(#[from] crate::postgres::PgError),
    /// `pg_dump` produced something that is not a custom-format archive.
    #[error("pg_dump output is not a usable custom-format archive: {0}")]
    BadArchive(String),
    /// Compression, decompression or a local file failed.
    #[error("{0}")]
    Io(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A backup's manifest cannot be read.
    #[error("{key}: {source}")]
    Manifest {
        /// The manifest's key.
        key: String,
        /// Why.
        source: crate::core::db_manifest::ManifestError,
    },
    /// What was read does not match what the manifest promises.
    #[error("{0}")]
    Verification(String),
    /// No backup matches the request.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked without harming what exists (a non-empty target).
    #[error("{0}")]
    Refused(String),
    /// A restore failed and the database it created could not be dropped again.
    #[error(
        "{error}; the half-restored database {target:?} could NOT be dropped ({drop_error}): drop it by hand, do not use it"
    )]
    NotDropped {
        /// Why the restore failed.
        error: Box<DbError>,
        /// The half-restored database.
        target: String,
        /// Why it could not be dropped.
        drop_error: crate::postgres::PgError,
    },
    /// A restore into a database that existed before failed; it was left as it is.
    #[error("{error}; the target database {target:?} existed before and was left half-restored: do not use it")]
    LeftHalfRestored {
        /// Why the restore failed.
        error: Box<DbError>,
        /// The half-restored database.
        target: String,
    },
    /// An encrypted dump cannot be opened with the configured identities.
    #[error(transparent)]
    Encryption(#[from] encryption::EncryptionError),
    /// The run was cancelled (termination signal).
    #[error("cancelled by a termination signal")]
    Cancelled,
}

impl Classify for DbError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Pg(e) => e.kind(),
            Self::Manifest { source, .. } => source.kind(),
            Self::Store(e) => e.kind(),
            Self::Encryption(e) => e.kind(),
            Self::BadArchive(_) | Self::Verification(_) => ErrorKind::Integrity,
            Self::Io(_) => ErrorKind::Internal,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Refused(_) => ErrorKind::Conflict,
            Self::NotDropped { error, .. } | Self::LeftHalfRestored { error, .. } => error.kind(),
            Self::Cancelled => ErrorKind::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_restored_database_keeps_the_cause_and_its_kind() {
        let cause = DbError::Verification("row counts differ".into());
        let e = DbError::LeftHalfRestored { error: Box::new(cause), target: "app".into() };
        assert_eq!(
            e.to_string(),
            "row counts differ; the target database \"app\" existed before and was left half-restored: do not use it"
        );
        assert_eq!(e.kind(), ErrorKind::Integrity);
        let e = DbError::NotDropped {
            error: Box::new(DbError::Cancelled),
            target: "app_restored".into(),
            drop_error: crate::postgres::PgError::Query {
                database: "postgres".into(),
                message: "gone".into(),
                kind: ErrorKind::Transient,
            },
        };
        assert!(e.to_string().contains("could NOT be dropped (query on database \"postgres\" failed: gone)"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Cancelled);
    }
}
