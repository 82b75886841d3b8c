//! Database backups and restores, standing on the PostgreSQL edge ([`crate::postgres`]) and the
//! object store.
//!
//! - [`codec`]: compression (multi-threaded zstd, gzip), decompression and the streaming hashes.
//! - [`encryption`]: optional age encryption of the compressed dump (public recipients in
//!   backups, secret identities only in restore and drill).
//! - [`backup`]: `pg_dump` stdout → compression → SHA-256/CRC32C → create-only upload, then the
//!   manifest, written last.
//! - [`archive`]: the data offsets a custom-format archive written to a pipe lacks, for
//!   `pg_restore -j`.
//! - [`restore`]: choosing a backup, download → verification → decompression → `pg_restore`.
//! - [`drill`]: the newest backup restored into a scratch database, verified, timed, dropped.
//!
//! Memory stays bounded: the dump flows through fixed-size buffers and a bounded channel; no
//! step holds a whole dump.

pub mod archive;
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
    /// The request cannot be carried out as asked without harming what exists (an existing or
    /// protected target).
    #[error("{0}")]
    Refused(String),
    /// A restore failed after creating its side database; the target was not touched, and the
    /// side database was dropped (`drop_error: None`) or could not be.
    #[error("{error}; {}", failure_fate(.target, .side, .drop_error.as_deref()))]
    RestoreFailed {
        /// Why the restore failed.
        error: Box<DbError>,
        /// The target, left exactly as it was (or still absent).
        target: String,
        /// The side database the restore went into.
        side: String,
        /// Why the side database could not be dropped, when it could not.
        drop_error: Option<Box<crate::postgres::PgError>>,
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
            Self::RestoreFailed { error, .. } => error.kind(),
            Self::Cancelled => ErrorKind::Cancelled,
        }
    }
}

/// What a failed restore did to its databases, in words.
fn failure_fate(target: &str, side: &str, drop_error: Option<&crate::postgres::PgError>) -> String {
    match drop_error {
        None => format!("the side database {side:?} was dropped; {target:?} was not touched"),
        Some(d) => format!(
            "the side database {side:?} could NOT be dropped ({d}): drop it by hand, do not use it; \
             {target:?} was not touched"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_restore_says_what_became_of_its_databases_and_keeps_the_kind() {
        let cause = DbError::Verification("row counts differ".into());
        let e = DbError::RestoreFailed {
            error: Box::new(cause),
            target: "app".into(),
            side: "lifeboat_restore_20261126_020000_1a2b3c4d".into(),
            drop_error: None,
        };
        assert_eq!(
            e.to_string(),
            "row counts differ; the side database \"lifeboat_restore_20261126_020000_1a2b3c4d\" was dropped; \
             \"app\" was not touched"
        );
        assert_eq!(e.kind(), ErrorKind::Integrity);
        let e = DbError::RestoreFailed {
            error: Box::new(DbError::Cancelled),
            target: "app".into(),
            side: "lifeboat_restore_x".into(),
            drop_error: Some(Box::new(crate::postgres::PgError::Query {
                database: "postgres".into(),
                message: "gone".into(),
                kind: ErrorKind::Transient,
            })),
        };
        assert!(e.to_string().contains("could NOT be dropped (query on database \"postgres\" failed: gone)"), "{e}");
        assert!(e.to_string().ends_with("\"app\" was not touched"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Cancelled);
    }
}
