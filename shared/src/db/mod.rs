//! Database backups and restores, standing on the PostgreSQL edge ([`crate::postgres`]) and the
//! object store.
//!
//! - [`codec`]: compression (multi-threaded zstd, gzip), decompression and the streaming hashes.
//! - [`backup`]: `pg_dump` stdout → compression → SHA-256/CRC32C → create-only upload, then the
//!   manifest, written last.
//! - [`restore`]: choosing a backup, download → verification → decompression → `pg_restore`.
//!
//! Memory stays bounded: the dump flows through fixed-size buffers and a bounded channel; no
//! step holds a whole dump.

pub mod backup;
pub mod codec;
pub mod restore;

use crate::store::StoreError;

/// What went wrong with a database backup or restore. Messages never contain a secret: texts
/// that come from the server or a tool are redacted before they are put in here.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Talking to PostgreSQL failed (settings, connection, query, tool discovery).
    #[error(transparent)]
    Pg(#[from] crate::postgres::PgError),
    /// A tool exited badly.
    #[error("{tool} failed ({status}){}", stderr_suffix(.stderr))]
    ToolFailed {
        /// `pg_dump` or `pg_restore`.
        tool: &'static str,
        /// `exit code 1`, `killed by signal 9`…
        status: String,
        /// The end of its stderr, redacted.
        stderr: String,
    },
    /// `pg_dump` produced something that is not a custom-format archive.
    #[error("pg_dump output is not a usable custom-format archive: {0}")]
    BadArchive(String),
    /// Compression, decompression or a local file failed.
    #[error("{0}")]
    Io(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What was read does not match what the manifest promises.
    #[error("{0}")]
    Verification(String),
    /// No backup matches the request.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked (e.g. a non-empty target).
    #[error("{0}")]
    Refused(String),
    /// The run was cancelled (termination signal).
    #[error("cancelled by a termination signal")]
    Cancelled,
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() { String::new() } else { format!(": {s}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_failures_show_stderr_only_when_present() {
        let e = DbError::ToolFailed { tool: "pg_dump", status: "exit code 1".into(), stderr: "  \n".into() };
        assert_eq!(e.to_string(), "pg_dump failed (exit code 1)");
        let e = DbError::ToolFailed { tool: "pg_dump", status: "exit code 1".into(), stderr: "no such db\n".into() };
        assert_eq!(e.to_string(), "pg_dump failed (exit code 1): no such db");
    }
}
