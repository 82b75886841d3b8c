//! `db-backup`: streams `pg_dump` of one or more databases into the backup store.

use async_trait::async_trait;

use crate::config::{Reader, vars};
use crate::events::RunResult;
use crate::manifest::Compression;
use crate::pg::PgConfig;
use crate::runtime::{Program, ProgramSpec, RunContext, Services, StartError};

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec {
    name: "db-backup",
    about: "Streams pg_dump (custom format) of each database through multi-threaded compression and checksums into the backup store; a manifest written last marks each backup complete.",
    usage: "",
    vars: &[vars::POSTGRES, vars::DB_BACKUP],
};

/// Settings of `db-backup`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connection.
    pub pg: PgConfig,
    /// Databases to back up; empty = all non-template databases.
    pub databases: Vec<String>,
    /// Compression.
    pub compression: Compression,
    /// Compression level.
    pub level: i32,
    /// Compression threads (zstd).
    pub threads: u32,
    /// Count rows per table in the dump's snapshot.
    pub row_counts: bool,
    /// Databases at once.
    pub concurrency: usize,
}

/// Reads the settings.
pub fn read(r: &mut Reader<'_>, _args: &[String]) -> Option<Config> {
    let pg = PgConfig::read(r);
    let databases = r.list(&vars::DATABASES);
    let compression = match r.text(&vars::COMPRESSION).as_deref() {
        Some("zstd") => Some(Compression::Zstd),
        Some("gzip") => Some(Compression::Gzip),
        other => {
            r.problem(
                vars::COMPRESSION.name,
                format!("{:?} is not zstd or gzip", other.unwrap_or_default()),
            );
            None
        }
    };
    let (min, max, default) = match compression {
        Some(Compression::Gzip) => (1, 9, 6),
        _ => (1, 19, 3),
    };
    let level = if r.text(&vars::COMPRESSION_LEVEL).is_some() {
        r.number_in(&vars::COMPRESSION_LEVEL, min, max)
    } else {
        Some(default)
    };
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u64;
    let threads = if r.text(&vars::COMPRESSION_THREADS).is_some() {
        r.number_in(&vars::COMPRESSION_THREADS, 1, 256)
    } else {
        Some(cpus)
    };
    let row_counts = r.boolean(&vars::ROW_COUNTS);
    let concurrency = r.number_in(&vars::DB_CONCURRENCY, 1, 16);
    Some(Config {
        pg: pg?,
        databases,
        compression: compression?,
        level: i32::try_from(level?).ok()?,
        threads: u32::try_from(threads?).ok()?,
        row_counts: row_counts?,
        concurrency: usize::try_from(concurrency?).ok()?,
    })
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
    #[allow(dead_code)]
    config: Config,
}

/// Builds the program.
pub async fn start(services: Services, config: Config) -> Result<App, StartError> {
    Ok(App { services, config })
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        super::not_yet(&self.services, SPEC.name, ctx.started)
    }
}
