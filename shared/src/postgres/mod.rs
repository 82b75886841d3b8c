//! The PostgreSQL edge: everything that talks to a server or starts one of its tools.
//!
//! - [`settings`]: what the environment says (`DATABASE_URL`, `PG*`, `LIFEBOAT_PG_BIN_DIR`).
//! - [`conn`]: one resolved set of connection settings ([`conn::ConnParams`]), handed to
//!   `pg_dump`/`pg_restore` through their environment (never their command line) and to
//!   `tokio-postgres` for catalog queries.
//! - [`sql`]: catalog queries (databases, tables, exact row counts) and identifier quoting.
//! - [`tools`]: finding `pg_dump`/`pg_restore` and comparing their major version with the server's.

pub mod conn;
pub mod settings;
pub mod sql;
pub mod tools;

/// What went wrong talking to PostgreSQL. Messages never contain a secret: texts that come from
/// the server are redacted before they are put in here.
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
}
