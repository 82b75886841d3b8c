//! `db-backup`: streams `pg_dump` of one or more databases into the backup store.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use clap::Parser;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Reader, vars};
use crate::core::db_manifest::Compression;
use crate::core::events::{ItemResult, Outcome, RunResult};
use crate::core::naming::RunId;
use crate::core::units;
use crate::db::DbError;
use crate::db::backup::{BackupDone, BackupSettings, backup_database};
use crate::db::codec::{CompressSpec, DEFAULT_ZSTD_LEVEL};
use crate::db::encryption::{self, Recipients};
use crate::postgres::Connection;
use crate::postgres::sql::{self, DatabaseInfo};
use crate::postgres::tools::{self, PgTools};
use crate::runtime::{self, Program, ProgramSpec, RunContext, Services, StartError};

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec { name: "db-backup", vars: &[vars::POSTGRES, vars::DB_BACKUP] };

/// Streams pg_dump (custom format) of each database through multi-threaded compression and
/// checksums into the backup store; a manifest written last marks each backup complete.
#[derive(Debug, Clone, Default, Parser)]
pub struct Cli {
    /// The runtime's flags (`--once`), read by the runtime.
    #[command(flatten)]
    pub runtime: runtime::Args,
}

/// Settings of `db-backup`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connection.
    pub pg: Connection,
    /// The PostgreSQL client tools.
    pub tools: PgTools,
    /// Databases to back up; empty = all non-template databases.
    pub databases: Vec<String>,
    /// Compression.
    pub compression: Compression,
    /// Compression level.
    pub level: i32,
    /// Compression threads (zstd).
    pub threads: u32,
    /// zstd job size in MiB.
    pub job_mib: u32,
    /// Encrypt dumps to these public keys (age); `None`: not encrypted.
    pub encryption: Option<Recipients>,
    /// Count rows per table in the dump's snapshot.
    pub row_counts: bool,
    /// `BACKUP_TABLE_CHECKSUMS`.
    pub table_checksums: bool,
    /// Databases at once.
    pub concurrency: usize,
}

/// Reads the settings.
pub fn read(r: &mut Reader<'_>, _cli: Option<Cli>) -> Option<Config> {
    let pg = Connection::read(r);
    let tools = PgTools::read(r);
    let databases = r.names(&vars::DATABASES);
    let compression = match r.text(&vars::COMPRESSION).as_deref() {
        Some("zstd") => Some(Compression::Zstd),
        Some("gzip") => Some(Compression::Gzip),
        other => {
            r.problem(vars::COMPRESSION.name, format!("{:?} is not zstd or gzip", other.unwrap_or_default()));
            None
        }
    };
    let (min, max, default) = match compression {
        Some(Compression::Gzip) => (1, 9, 6),
        _ => (1, 19, DEFAULT_ZSTD_LEVEL as u64),
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
    let job_mib = r.number_in(&vars::COMPRESSION_JOB_MIB, 1, 64);
    let row_counts = r.boolean(&vars::ROW_COUNTS);
    let table_checksums = r.boolean(&vars::TABLE_CHECKSUMS);
    let concurrency = r.number_in(&vars::DB_CONCURRENCY, 1, 16);
    let encryption = encryption::read_recipients(r);
    Some(Config {
        pg: pg?,
        tools: tools?,
        databases,
        compression: compression?,
        level: i32::try_from(level?).ok()?,
        threads: u32::try_from(threads?).ok()?,
        job_mib: u32::try_from(job_mib?).ok()?,
        encryption: encryption?,
        row_counts: row_counts?,
        table_checksums: table_checksums?,
        concurrency: usize::try_from(concurrency?).ok()?,
    })
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
    config: Config,
}

/// Builds the program.
pub async fn start(services: Services, config: Config) -> Result<App, StartError> {
    Ok(App { services, config })
}

/// What a run backs up: the databases found, or why one cannot be.
type Targets = Vec<Result<DatabaseInfo, (String, DbError)>>;

impl App {
    /// Checks the tools against the server and finds the databases to back up.
    async fn prepare(&self) -> Result<(BackupSettings, Targets), DbError> {
        let tools = &self.config.tools;
        let pg_dump_version = tools.version("pg_dump").await?;
        let conn = &self.config.pg;
        let admin_db = conn.maintenance_db.as_str();
        let admin = conn.connect(admin_db).await?;
        let server = sql::server_version(&admin, conn, admin_db).await?;
        tools::check_dump_version(&pg_dump_version, &server.text, tools::server_major(server.num))?;
        let all = sql::list_databases(&admin, conn, admin_db).await?;
        drop(admin);
        let targets: Targets = if self.config.databases.is_empty() {
            if all.is_empty() {
                return Err(DbError::NotFound(format!(
                    "{} has no database to back up (none that is not a template and that we may connect to)",
                    conn.describe_target()
                )));
            }
            all.into_iter().map(Ok).collect()
        } else {
            self.config
                .databases
                .iter()
                .map(|name| match all.iter().find(|d| &d.name == name) {
                    Some(info) => Ok(info.clone()),
                    None => Err((
                        name.clone(),
                        DbError::NotFound(format!(
                            "database {name:?} does not exist on {} (or it is a template, or {} may not connect to it)",
                            conn.describe_target(),
                            conn.user
                        )),
                    )),
                })
                .collect()
        };
        let settings = BackupSettings {
            source: self.services.common.source.clone(),
            conn: conn.clone(),
            pg_dump: tools.path("pg_dump"),
            pg_dump_version,
            server,
            spec: CompressSpec {
                compression: self.config.compression,
                level: self.config.level,
                threads: self.config.threads,
                job_mib: self.config.job_mib,
            },
            encryption: self.config.encryption.clone(),
            row_counts: self.config.row_counts,
            table_checksums: self.config.table_checksums,
            progress_interval: self.services.common.progress_interval,
        };
        Ok((settings, targets))
    }

    /// Backs up one database as run `run` (the unit of work of [`Program::run`]; public so
    /// tests can race two runs for one name).
    pub async fn backup_one(
        &self,
        database: &str,
        run: RunId,
        cancel: &CancellationToken,
    ) -> Result<BackupDone, DbError> {
        let (settings, _) = self.prepare().await?;
        let conn = &self.config.pg;
        let admin = conn.connect(&conn.maintenance_db).await?;
        let info = sql::database_info(&admin, conn, &conn.maintenance_db, database).await?.ok_or_else(|| {
            DbError::NotFound(format!("database {database:?} does not exist on {}", conn.describe_target()))
        })?;
        drop(admin);
        backup_database(&settings, &*self.services.store, &info, run, cancel).await
    }
}

fn failure_item(name: &str, kind: &str, error: &DbError) -> ItemResult {
    ItemResult {
        kind: kind.to_owned(),
        name: name.to_owned(),
        outcome: Outcome::Failure,
        error: Some(error.to_string()),
        backup_id: None,
        figures: BTreeMap::new(),
    }
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let mut result = self.services.result(SPEC.name, ctx.started);
        let (settings, targets) = match self.prepare().await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the backups");
                result.outcome = Outcome::Failure;
                result.summary = if self.config.databases.is_empty() {
                    format!("no database backed up: {e}")
                } else {
                    format!("no database backed up ({}): {e}", self.config.databases.join(", "))
                };
                result.items = if self.config.databases.is_empty() {
                    vec![failure_item(&self.config.pg.describe_target(), "server", &e)]
                } else {
                    self.config.databases.iter().map(|d| failure_item(d, "database", &e)).collect()
                };
                result.finished_at = Utc::now();
                return result;
            }
        };
        let run = RunId::new(ctx.started);
        tracing::info!(run = %run, databases = targets.len(), server = settings.server.text, "backing up");
        let settings = &settings;
        let cancel = &ctx.cancel;
        let store = &*self.services.store;
        let outcomes: Vec<(String, Result<BackupDone, DbError>)> = futures::stream::iter(targets)
            .map(|target| {
                let run = run.clone();
                async move {
                    match target {
                        Ok(info) => {
                            let r = backup_database(settings, store, &info, run, cancel).await;
                            if let Err(e) = &r {
                                tracing::error!(database = info.name, error = %e, "backup failed");
                            }
                            (info.name, r)
                        }
                        Err((name, e)) => {
                            tracing::error!(database = name, error = %e, "backup failed");
                            (name, Err(e))
                        }
                    }
                }
            })
            .buffered(self.config.concurrency)
            .collect()
            .await;

        let (mut raw, mut stored, mut failed) = (0u64, 0u64, Vec::new());
        for (name, outcome) in outcomes {
            match outcome {
                Ok(done) => {
                    raw += done.manifest.dump.uncompressed_bytes;
                    stored += done.manifest.dump.stored_bytes;
                    result.items.push(ItemResult {
                        kind: "database".into(),
                        name,
                        outcome: Outcome::Success,
                        error: None,
                        backup_id: Some(done.manifest.backup_id.clone()),
                        figures: done.figures(),
                    });
                }
                Err(e) => {
                    failed.push(format!("{name} ({e})"));
                    result.items.push(failure_item(&name, "database", &e));
                }
            }
        }
        let total = result.items.len();
        result.finished_at = Utc::now();
        let secs = (result.finished_at - result.started_at).num_milliseconds() as f64 / 1000.0;
        result.figures.insert("databases".into(), total.into());
        result.figures.insert("failed".into(), failed.len().into());
        result.figures.insert("uncompressed_bytes".into(), raw.into());
        result.figures.insert("stored_bytes".into(), stored.into());
        if failed.is_empty() {
            result.summary = format!(
                "backed up {total} database{} ({} → {}) in {secs:.1} s",
                if total == 1 { "" } else { "s" },
                units::bytes(raw),
                units::bytes(stored)
            );
        } else {
            result.outcome = Outcome::Failure;
            result.summary = format!("{} of {total} database backups failed: {}", failed.len(), failed.join("; "));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn read_env(pairs: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        let env = Env::from_pairs(pairs.iter().copied());
        let mut r = Reader::new(&env);
        let c = read(&mut r, Some(Cli::default()));
        r.finish()?;
        Ok(c.expect("a config when there is no problem"))
    }

    #[test]
    fn defaults() {
        let c = read_env(&[("PGHOST", "/cloudsql/p:r:i")]).expect("valid");
        assert_eq!((c.compression, c.level, c.row_counts, c.concurrency), (Compression::Zstd, 1, true, 1));
        assert_eq!((c.job_mib, c.encryption), (crate::db::codec::DEFAULT_ZSTD_JOB_MIB, None));
        assert_eq!(c.level, crate::db::codec::DEFAULT_ZSTD_LEVEL);
        assert!(c.threads >= 1);
        assert!(c.databases.is_empty());
        assert!(!c.table_checksums, "table checksums are off by default");
        let c = read_env(&[("BACKUP_TABLE_CHECKSUMS", "true")]).expect("valid");
        assert!(c.table_checksums);
        let e = read_env(&[("BACKUP_TABLE_CHECKSUMS", "sometimes")]).expect_err("not a boolean");
        assert!(e.problems.iter().any(|p| p.name == "BACKUP_TABLE_CHECKSUMS"), "{e}");
        let c = read_env(&[("BACKUP_COMPRESSION", "gzip"), ("BACKUP_DATABASES", "a, b")]).expect("valid");
        assert_eq!((c.compression, c.level, c.databases), (Compression::Gzip, 6, vec!["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn empty_or_repeated_database_names_are_configuration_problems() {
        // `,,` used to mean "every database" (the empty items were dropped), `a,a` failed at run time.
        for (value, why) in [
            (",,", "item 1 of \",,\" is empty"),
            ("a, b,", "item 3"),
            ("a,,b", "item 2"),
            ("app,app", "\"app\" is listed twice"),
        ] {
            let e = read_env(&[("BACKUP_DATABASES", value)]).expect_err(value);
            assert!(e.problems.iter().all(|p| p.name == "BACKUP_DATABASES"), "{value}: {e}");
            assert!(e.to_string().contains(why), "{value}: {e}");
        }
    }

    #[test]
    fn a_bad_database_url_is_a_configuration_problem_that_hides_the_password() {
        let e = read_env(&[("DATABASE_URL", "postgresql://u:hunter2-secret@h/db?frobnicate=1")]).expect_err("bad");
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].name, "DATABASE_URL");
        assert!(e.problems[0].message.contains("frobnicate"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = read_env(&[("PGHOST", "a,b")]).expect_err("two hosts");
        assert_eq!(e.problems[0].name, "PGHOST");
        let e = read_env(&[("DATABASE_URL", "mysql://u:hunter2-secret@h/db")]).expect_err("scheme");
        assert_eq!(e.problems.len(), 1, "reported once: {e}");
        assert!(!e.to_string().contains("hunter2"));
        let e = read_env(&[("BACKUP_COMPRESSION", "lz4"), ("BACKUP_COMPRESSION_LEVEL", "30")]).expect_err("bad");
        assert_eq!(e.problems[0].name, "BACKUP_COMPRESSION");
        let e = read_env(&[("BACKUP_COMPRESSION_JOB_MIB", "0")]).expect_err("bad");
        assert_eq!(e.problems[0].name, "BACKUP_COMPRESSION_JOB_MIB");
    }

    #[test]
    fn recipients_are_read_and_a_malformed_one_is_a_problem_naming_the_variable() {
        let key = crate::db::encryption::Identities::generate().recipients()[0].clone();
        let c = read_env(&[("BACKUP_ENCRYPTION_RECIPIENTS", &format!(" {key} ,"))]).expect("valid");
        assert_eq!(c.encryption.expect("encrypted").keys(), std::slice::from_ref(&key));
        let secret = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX";
        for bad in [format!("{key},age1xyz"), format!("{key}\n{secret}")] {
            let e = read_env(&[("BACKUP_ENCRYPTION_RECIPIENTS", &bad)]).expect_err("bad");
            assert_eq!(e.problems.len(), 1, "{e}");
            assert_eq!(e.problems[0].name, "BACKUP_ENCRYPTION_RECIPIENTS");
            assert!(e.problems[0].message.starts_with("item 2"), "{e}");
            assert!(!e.to_string().contains("GFPYYSJZ") && !e.to_string().contains("age1xyz"), "{e}");
        }
    }
}
