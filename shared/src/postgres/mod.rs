//! The PostgreSQL edge: everything that talks to a server or starts one of its tools.
//!
//! - [`connection`]: `DATABASE_URL` and the `PG*` variables, read and resolved into one
//!   [`Connection`], handed to `pg_dump`/`pg_restore` through their environment (never their
//!   command line) and to `tokio-postgres` for catalog queries.
//! - [`sql`]: catalog queries (databases, tables, exact row counts) and identifier quoting.
//! - [`tools`]: finding `pg_dump`/`pg_restore` and comparing their major version with the server's.
//! - [`process`]: running one of them: its libpq environment, the tail of its stderr, its exit
//!   status, killing it on cancellation.

pub mod connection;
pub mod process;
pub mod sql;
pub mod tools;

use std::process::ExitStatus;

pub use connection::Connection;

use crate::error::{Classify, ErrorKind};

/// What went wrong talking to PostgreSQL. Messages never contain a secret: texts that come from
/// the server or a tool are redacted before they are put in here.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection settings cannot be used; `var` names the setting at fault.
    #[error("{var}: {message}")]
    Settings {
        /// The variable (or URI parameter) at fault, e.g. `DATABASE_URL`.
        var: &'static str,
        /// What is wrong (never the value of a secret).
        message: String,
    },
    /// The server could not be reached or refused us.
    #[error("cannot connect to database {database:?}: {message}")]
    Connect {
        /// Database.
        database: String,
        /// Redacted reason.
        message: String,
        /// What the server's answer (or its absence) says about trying again.
        kind: ErrorKind,
    },
    /// A catalog query failed.
    #[error("query on database {database:?} failed: {message}")]
    Query {
        /// Database.
        database: String,
        /// Redacted reason.
        message: String,
        /// What the server's answer (or its absence) says about trying again.
        kind: ErrorKind,
    },
    /// A PostgreSQL tool is missing or unusable (not installed, too old for the server).
    #[error("{tool}: {message}")]
    Tool {
        /// `pg_dump`, `pg_restore`…
        tool: String,
        /// What is wrong.
        message: String,
    },
    /// A tool ran and failed: a non-zero exit, or death by a signal.
    #[error("{tool} failed ({}){}", process::describe_status(*.status), process::stderr_suffix(.stderr))]
    ToolFailed {
        /// `pg_dump` or `pg_restore`.
        tool: &'static str,
        /// How it ended.
        status: ExitStatus,
        /// The end of its stderr, redacted.
        stderr: String,
    },
    /// Talking to a running tool failed locally (its pipes, waiting for it).
    #[error("{tool}: {message}")]
    Process {
        /// `pg_dump` or `pg_restore`.
        tool: &'static str,
        /// What failed.
        message: String,
    },
}

impl Classify for PgError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Settings { .. } | Self::Tool { .. } => ErrorKind::Config,
            Self::Connect { kind, .. } | Self::Query { kind, .. } => *kind,
            // The tool said why on its stderr (permissions, a lost connection, a bad archive…);
            // nothing here can tell, so it is not retried blindly. A signal is the host's doing.
            Self::ToolFailed { status, .. } if status.code().is_some() => ErrorKind::Refused,
            Self::ToolFailed { .. } | Self::Process { .. } => ErrorKind::Internal,
        }
    }
}
