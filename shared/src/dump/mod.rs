//! Database backups and restores: the PostgreSQL edge of lifeboat.
//!
//! - [`conn`]: one resolved set of connection settings ([`conn::ConnParams`]) from `DATABASE_URL`
//!   and the `PG*` variables, handed to `pg_dump`/`pg_restore` through their environment (never
//!   their command line) and to `tokio-postgres` for catalog queries.
//! - [`tools`]: finding `pg_dump`/`pg_restore` and comparing their major version with the server's.
//! - [`sql`]: catalog queries (databases, tables, exact row counts) and identifier quoting.
//! - [`codec`]: compression (multi-threaded zstd, gzip), decompression and the streaming hashes.
//! - [`backup`]: `pg_dump` stdout → compression → SHA-256/CRC32C → create-only upload, then the
//!   manifest, written last.
//! - [`restore`]: choosing a backup, download → verification → decompression → `pg_restore`.
//!
//! Memory stays bounded: the dump flows through fixed-size buffers and a bounded channel; no
//! step holds a whole dump.

pub mod backup;
pub mod codec;
pub mod conn;
pub mod restore;
pub mod sql;
pub mod tools;

use crate::store::StoreError;

/// What went wrong with a database backup or restore. Messages never contain a secret: texts
/// that come from the server or a tool are redacted before they are put in here.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The connection settings cannot be used.
    #[error("{0}")]
    Settings(String),
    /// The server could not be reached or refused us.
    #[error("cannot connect to database {database:?}: {message}")]
    Connect {
        /// Database.
        database: String,
        /// Redacted reason.
        message: String,
    },
    /// A catalog query failed.
    #[error("query on database {database:?} failed: {message}")]
    Query {
        /// Database.
        database: String,
        /// Redacted reason.
        message: String,
    },
    /// A PostgreSQL tool is missing or unusable.
    #[error("{tool}: {message}")]
    Tool {
        /// `pg_dump`, `pg_restore`…
        tool: String,
        /// What is wrong.
        message: String,
    },
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

/// Bytes as a human-readable size (`1.5 GiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn tool_failures_show_stderr_only_when_present() {
        let e = DbError::ToolFailed { tool: "pg_dump", status: "exit code 1".into(), stderr: "  \n".into() };
        assert_eq!(e.to_string(), "pg_dump failed (exit code 1)");
        let e = DbError::ToolFailed { tool: "pg_dump", status: "exit code 1".into(), stderr: "no such db\n".into() };
        assert_eq!(e.to_string(), "pg_dump failed (exit code 1): no such db");
    }
}
