//! What the environment says about reaching PostgreSQL: `DATABASE_URL`, the `PG*` variables
//! and `LIFEBOAT_PG_BIN_DIR`, read and checked before any work starts.

use std::path::PathBuf;

use crate::config::{Reader, vars};
use crate::core::secret::Secret;

/// How to reach the server. Passed to the tools through libpq environment variables only,
/// so the password never appears on a command line.
#[derive(Debug, Clone, Default)]
pub struct PgConfig {
    /// `DATABASE_URL` (may hold a password, hence secret).
    pub url: Option<Secret>,
    /// Host or unix socket directory.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// User.
    pub user: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Database for catalog queries.
    pub dbname: Option<String>,
    /// Where the tools live (`None` = find them).
    pub bin_dir: Option<PathBuf>,
}

impl PgConfig {
    /// Reads `DATABASE_URL`, the `PG*` variables and `LIFEBOAT_PG_BIN_DIR`.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        let url = r.secret(&vars::DATABASE_URL);
        if let Some(u) = &url
            && !(u.expose().starts_with("postgres://") || u.expose().starts_with("postgresql://"))
        {
            r.problem(
                vars::DATABASE_URL.name,
                "must start with postgresql:// (value not shown: it may hold a password)",
            );
        }
        let port = r.number_in(&vars::PGPORT, 1, 65_535).and_then(|p| u16::try_from(p).ok());
        let bin_dir = r.text(&vars::PG_BIN_DIR).map(PathBuf::from);
        if let Some(d) = &bin_dir
            && !d.join("pg_dump").is_file()
        {
            r.problem(vars::PG_BIN_DIR.name, format!("{} has no pg_dump", d.display()));
        }
        Some(Self {
            url,
            host: r.text(&vars::PGHOST),
            port,
            user: r.text(&vars::PGUSER),
            password: r.secret(&vars::PGPASSWORD),
            dbname: r.text(&vars::PGDATABASE),
            bin_dir,
        })
    }
}
