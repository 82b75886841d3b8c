//! `drill`: scheduled restore drills. Each expected database's newest complete backup is restored
//! into a scratch database on the drill server, verified like a restore, timed (RTO) and
//! dropped ([`crate::db::drill`]); each bucket source's newest complete snapshot is checked blob
//! by blob, a sample byte for byte ([`crate::bucket::drill`]). Every drill writes its record
//! create-only next to the backup it drilled ([`crate::core::drill`]), passed or failed.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use futures::TryStreamExt as _;

use crate::bucket::drill::{BucketDrillSettings, Sample, drill_snapshot};
use crate::config::{Reader, vars};
use crate::core::drill::{DrillRecord, RecordKey, SCRATCH_PREFIX, db_record_key, snapshot_record_key};
use crate::core::events::{ItemResult, Outcome, RunResult};
use crate::core::naming::DbBackupPath;
use crate::core::source::SourceSpec;
use crate::core::units;
use crate::db::DbError;
use crate::db::drill::{DbDrillSettings, drill_database, drop_stale_scratch};
use crate::db::encryption::{self, Identities};
use crate::db::restore::RestoreSettings;
use crate::postgres::Connection;
use crate::postgres::connection::ServerOverride;
use crate::postgres::tools::PgTools;
use crate::runtime::{self, Program, ProgramSpec, RunContext, Services, StartError};
use crate::store::{ObjectStore, ObjectStoreExt as _, PutOptions, StoreError};

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec { name: "drill", vars: &[vars::POSTGRES, vars::DB_RESTORE, vars::DRILL] };

/// Restore drills: proves that the newest backups restore, and records it next to them.
///
/// Databases (BACKUP_DATABASES, else every database with backups of BACKUP_SOURCE in the store):
/// the newest complete backup is restored into a scratch database lifeboat_drill_DB_TS on the
/// drill server (DRILL_PG*, default the PG* server) with every check of `restore db` (size,
/// CRC32C, SHA-256, decryption with BACKUP_ENCRYPTION_IDENTITY, decompression, pg_restore exit
/// 0, row counts), without owners and privileges (the drill server need not have the roles); the
/// time from the start of the restore to a usable, verified database is the RTO. The scratch
/// database is dropped on every path; the drill creates and drops no database whose name does
/// not start with lifeboat_drill_ (and drops leftovers of killed drills after a day).
///
/// Buckets (SOURCE_BUCKETS): every object of the newest complete snapshot is checked by its
/// blob's metadata (exists, size, MD5/CRC32C; no download), and DRILL_SAMPLE_OBJECTS objects,
/// drawn at random, are read back in full and compared byte for byte.
///
/// Each drill writes drills/TS.json (create-only) into the drilled backup's or snapshot's
/// folder, passed or failed; one result event carries every drill's figures. Exit 1 when any
/// drill failed, so monitor alerts.
#[derive(Debug, Clone, Default, Parser)]
pub struct Cli {
    /// The runtime's flags (`--once`), read by the runtime.
    #[command(flatten)]
    pub runtime: runtime::Args,
}

/// Settings of `drill`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The drill server (the PG* server unless DRILL_PGHOST and friends say otherwise).
    pub server: Connection,
    /// The PostgreSQL client tools.
    pub tools: PgTools,
    /// Secret keys for encrypted dumps.
    pub identities: Option<Identities>,
    /// Databases to drill; empty = every database with backups of this source in the store.
    pub databases: Vec<String>,
    /// Bucket sources to drill.
    pub sources: Vec<SourceSpec>,
    /// How a bucket snapshot is checked.
    pub bucket: BucketDrillSettings,
}

/// Reads the settings.
pub fn read(r: &mut Reader<'_>, _cli: Option<Cli>) -> Option<Config> {
    let pg = Connection::read(r);
    let tools = PgTools::read(r);
    let identities = encryption::read_identities(r);
    let databases = r.names(&vars::DATABASES);
    let sources = r.sources();
    let host = r.text(&vars::DRILL_PGHOST).filter(|h| !h.is_empty());
    if host.as_deref().is_some_and(|h| h.contains(',')) {
        r.problem(vars::DRILL_PGHOST.name, "the drill connects to one host; several (a,b) are not supported");
    }
    let port = if r.text(&vars::DRILL_PGPORT).is_some() {
        r.number_in(&vars::DRILL_PGPORT, 1, 65_535).and_then(|p| u16::try_from(p).ok()).map(Some)
    } else {
        Some(None)
    };
    let user = r.text(&vars::DRILL_PGUSER).filter(|u| !u.is_empty());
    let password = r.secret(&vars::DRILL_PGPASSWORD);
    let maintenance_db = r.text(&vars::DRILL_PGDATABASE).filter(|d| !d.is_empty());
    if maintenance_db.as_deref().is_some_and(|d| d.starts_with(SCRATCH_PREFIX)) {
        r.problem(vars::DRILL_PGDATABASE.name, format!("must not be a scratch database ({SCRATCH_PREFIX}…)"));
    }
    let sample = match r.text(&vars::DRILL_SAMPLE_OBJECTS).map(|s| s.parse::<Sample>()) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            r.problem(vars::DRILL_SAMPLE_OBJECTS.name, e);
            None
        }
        None => Some(Sample::Count(20)),
    };
    let concurrency = r.number_in(&vars::DRILL_CONCURRENCY, 1, 1024);
    let server = pg?.overridden(ServerOverride { host, port: port?, user, password, maintenance_db });
    if server.maintenance_db.starts_with(SCRATCH_PREFIX) {
        r.problem(vars::PGDATABASE.name, format!("the drill cannot use a scratch database ({SCRATCH_PREFIX}…)"));
        return None;
    }
    Some(Config {
        server,
        tools: tools?,
        identities: identities?,
        databases,
        sources,
        bucket: BucketDrillSettings { sample: sample?, concurrency: usize::try_from(concurrency?).ok()? },
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

/// The databases with backups of `source` in the store, by name.
async fn databases_in_store(store: &dyn ObjectStore, source: &str) -> Result<Vec<String>, StoreError> {
    let prefix = format!("db/{}/", crate::core::naming::encode_segment(source));
    let mut names: Vec<String> = Vec::new();
    let mut listing = store.list_all(&prefix);
    while let Some(o) = listing.try_next().await? {
        if let Some((path, _)) = DbBackupPath::parse_key(&o.key)
            && path.source == source
            && names.last() != Some(&path.database)
        {
            names.push(path.database);
        }
    }
    names.dedup();
    Ok(names)
}

/// Writes a drill record create-only (`ifGenerationMatch=0`), its outcome also in the custom
/// metadata [`crate::core::naming::DRILL_OUTCOME_METADATA`], and returns its key: a record of
/// another drill of the same backup in the same second takes the name, and this one goes to the
/// next free second (a few tries).
async fn write_record(store: &dyn ObjectStore, key: &str, record: &DrillRecord) -> Result<String, StoreError> {
    let mut options = PutOptions { content_type: Some("application/json".into()), ..PutOptions::default() };
    // The outcome in the metadata too: readers learn it from the listing, no read per record.
    options.metadata.insert(crate::core::naming::DRILL_OUTCOME_METADATA.into(), record.outcome.as_str().into());
    let mut key = key.to_owned();
    for _ in 0..3 {
        match store.put(&key, Bytes::from(record.to_json()), options.clone()).await {
            Ok(_) => return Ok(key),
            Err(StoreError::AlreadyExists { .. }) => {
                let second = chrono::Duration::seconds(1);
                key = match RecordKey::parse(&key) {
                    Some(RecordKey::Db { backup, drilled_at }) => db_record_key(&backup, drilled_at + second),
                    Some(RecordKey::Bucket { snapshot, drilled_at }) => {
                        snapshot_record_key(&snapshot, drilled_at + second)
                    }
                    None => break,
                };
            }
            Err(e) => return Err(e),
        }
    }
    store.put(&key, Bytes::from(record.to_json()), options).await.map(|_| key)
}

/// The result item of a drill, with the record's figures.
fn item_of(kind: &str, record: &DrillRecord, key: &str, extra: &[(&str, serde_json::Value)]) -> ItemResult {
    let mut figures: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut put = |name: &str, value: Option<serde_json::Value>| {
        if let Some(v) = value {
            figures.insert(name.to_owned(), v);
        }
    };
    put("rto_seconds", record.rto_seconds.map(Into::into));
    put("bytes", Some(record.bytes.into()));
    put("tables", record.tables.map(Into::into));
    put("rows", record.rows.map(Into::into));
    put("objects_checked", record.objects_checked.map(Into::into));
    put("objects_sampled", record.objects_sampled.map(Into::into));
    put("duration_ms", Some(((record.finished_at - record.started_at).num_milliseconds().max(0)).into()));
    put("record", Some(key.into()));
    for (name, value) in extra {
        figures.insert((*name).to_owned(), value.clone());
    }
    ItemResult {
        kind: kind.to_owned(),
        name: record.name.clone(),
        outcome: if record.passed() { Outcome::Success } else { Outcome::Failure },
        error: record.error.clone(),
        backup_id: Some(record.backup_id.to_string()),
        figures,
    }
}

fn failure_item(kind: &str, name: &str, error: String) -> ItemResult {
    ItemResult {
        kind: kind.to_owned(),
        name: name.to_owned(),
        outcome: Outcome::Failure,
        error: Some(error),
        backup_id: None,
        figures: BTreeMap::new(),
    }
}

impl App {
    /// Records `record` at `key`; a record that cannot be written fails the item (the drill's
    /// proof would be lost).
    async fn record(
        &self,
        kind: &str,
        key: &str,
        record: &DrillRecord,
        extra: &[(&str, serde_json::Value)],
    ) -> ItemResult {
        let mut item = item_of(kind, record, key, extra);
        match write_record(&*self.services.store, key, record).await {
            Ok(written) => {
                tracing::info!(key = written, outcome = record.outcome.as_str(), "drill record written");
                item.figures.insert("record".into(), written.into());
            }
            Err(e) => {
                tracing::error!(key, error = %e, "the drill record could not be written");
                item.outcome = Outcome::Failure;
                let why = format!("the drill record {key} could not be written: {e}");
                item.error = Some(match item.error.take() {
                    Some(first) => format!("{first}; {why}"),
                    None => why,
                });
            }
        }
        item
    }

    async fn drill_databases(&self, ctx: &RunContext, items: &mut Vec<ItemResult>) {
        let store = &*self.services.store;
        let source = &self.services.common.source;
        let databases = if self.config.databases.is_empty() {
            match databases_in_store(store, source).await {
                Ok(names) => names,
                Err(e) => {
                    items.push(failure_item("database", "*", format!("cannot list the database backups: {e}")));
                    return;
                }
            }
        } else {
            self.config.databases.clone()
        };
        if databases.is_empty() {
            return;
        }
        let conn = &self.config.server;
        match drop_stale_scratch(conn, Utc::now()).await {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::warn!(?dropped, "scratch databases of killed drills dropped")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot look for scratch databases of killed drills"),
        }
        let tools = &self.config.tools;
        let pg_restore_version = match tools.version("pg_restore").await {
            Ok(v) => v,
            Err(e) => {
                for db in &databases {
                    items.push(failure_item("database", db, format!("cannot run pg_restore: {e}")));
                }
                return;
            }
        };
        let settings = DbDrillSettings {
            source: source.clone(),
            restore: RestoreSettings {
                conn: conn.clone(),
                pg_restore: tools.path("pg_restore"),
                pg_restore_version,
                jobs: None,
                no_owner: true,
                no_privileges: true,
                temp_dir: std::env::temp_dir(),
                identities: self.config.identities.clone(),
                progress_interval: self.services.common.progress_interval,
            },
        };
        tracing::info!(databases = databases.len(), server = conn.describe_target(), "drilling databases");
        for db in &databases {
            if ctx.cancel.is_cancelled() {
                items.push(failure_item("database", db, DbError::Cancelled.to_string()));
                continue;
            }
            match drill_database(&settings, store, db, Utc::now(), &ctx.cancel).await {
                Ok(drilled) => items.push(self.record("database", &drilled.key, &drilled.record, &[]).await),
                Err(e) => {
                    tracing::error!(database = db, error = %e, "nothing to drill");
                    items.push(failure_item("database", db, e.to_string()));
                }
            }
        }
    }

    async fn drill_buckets(&self, ctx: &RunContext, items: &mut Vec<ItemResult>) {
        let store = &*self.services.store;
        for spec in &self.config.sources {
            match drill_snapshot(store, spec, self.config.bucket, Utc::now(), &ctx.cancel).await {
                Ok(drilled) => {
                    let extra = [("bytes_checked", drilled.bytes_checked.into())];
                    let mut item = self.record("bucket", &drilled.key, &drilled.record, &extra).await;
                    item.name = spec.bucket.clone();
                    items.push(item);
                }
                Err(e) => {
                    tracing::error!(bucket = spec.bucket, error = %e, "nothing to drill");
                    items.push(failure_item("bucket", &spec.bucket, e.to_string()));
                }
            }
        }
    }
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let mut result = self.services.result(SPEC.name, ctx.started);
        let mut items = Vec::new();
        self.drill_databases(&ctx, &mut items).await;
        self.drill_buckets(&ctx, &mut items).await;
        result.finished_at = Utc::now();
        let failed: Vec<String> = items
            .iter()
            .filter(|i| i.outcome == Outcome::Failure)
            .map(|i| format!("{} {} ({})", i.kind, i.name, i.error.as_deref().unwrap_or("failed")))
            .collect();
        let count = |kind: &str| items.iter().filter(|i| i.kind == kind).count();
        let (databases, buckets) = (count("database"), count("bucket"));
        result.figures.insert("databases".into(), databases.into());
        result.figures.insert("buckets".into(), buckets.into());
        result.figures.insert("failed".into(), failed.len().into());
        let rto = items
            .iter()
            .filter_map(|i| i.figures.get("rto_seconds").and_then(serde_json::Value::as_f64))
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        if let Some(rto) = rto {
            result.figures.insert("max_rto_seconds".into(), rto.into());
        }
        let secs = (result.finished_at - result.started_at).num_milliseconds() as f64 / 1000.0;
        if items.is_empty() {
            result.outcome = Outcome::Failure;
            result.summary = "nothing to drill: no database backups of this source and no SOURCE_BUCKETS".into();
        } else if failed.is_empty() {
            let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            result.summary = format!(
                "drilled {} and {}: every backup restored and verified{} in {secs:.1} s",
                plural(databases, "database"),
                plural(buckets, "bucket"),
                rto.map(|r| format!(" (slowest RTO {})", units::duration(std::time::Duration::from_secs_f64(r))))
                    .unwrap_or_default()
            );
        } else {
            result.outcome = Outcome::Failure;
            result.summary = format!("{} of {} drills failed: {}", failed.len(), items.len(), failed.join("; "));
        }
        result.items = items;
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
    fn the_drill_server_defaults_to_the_backed_up_one() {
        let c = read_env(&[("PGHOST", "db.internal"), ("PGUSER", "backup"), ("PGPASSWORD", "pw-source-1234")])
            .expect("valid");
        assert_eq!((c.server.host.as_str(), c.server.port, c.server.user.as_str()), ("db.internal", 5432, "backup"));
        assert_eq!(c.server.maintenance_db, "postgres");
        assert_eq!(c.server.password.as_ref().map(|p| p.expose().to_owned()).as_deref(), Some("pw-source-1234"));
        assert_eq!(c.bucket, BucketDrillSettings { sample: Sample::Count(20), concurrency: 16 });
        assert!(c.databases.is_empty() && c.sources.is_empty());
    }

    #[test]
    fn another_drill_server_never_gets_the_source_password() {
        let c = read_env(&[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGPASSWORD", "pw-source-1234"),
            ("PGDATABASE", "app"),
            ("DRILL_PGHOST", "drill.internal"),
            ("DRILL_PGUSER", "drill"),
            ("DRILL_SAMPLE_OBJECTS", "1%"),
        ])
        .expect("valid");
        assert_eq!((c.server.host.as_str(), c.server.port, c.server.user.as_str()), ("drill.internal", 5432, "drill"));
        assert_eq!(c.server.maintenance_db, "postgres");
        assert!(c.server.password.is_none(), "the source's password must not go to the drill server");
        assert_eq!(c.bucket.sample, Sample::Percent(1.0));
        let c = read_env(&[
            ("PGPASSWORD", "pw-source-1234"),
            ("DRILL_PGUSER", "drill"),
            ("DRILL_PGPASSWORD", "pw-drill-5678"),
        ])
        .expect("valid");
        assert_eq!(c.server.password.as_ref().map(|p| p.expose().to_owned()).as_deref(), Some("pw-drill-5678"));
        let c =
            read_env(&[("PGPORT", "6543"), ("DRILL_PGPORT", "7000"), ("DRILL_PGDATABASE", "admin")]).expect("valid");
        assert_eq!((c.server.port, c.server.maintenance_db.as_str()), (7000, "admin"));
    }

    #[test]
    fn bad_drill_settings_name_every_variable() {
        let e = read_env(&[
            ("DRILL_PGPORT", "0"),
            ("DRILL_SAMPLE_OBJECTS", "lots"),
            ("DRILL_CONCURRENCY", "0"),
            ("DRILL_PGDATABASE", "lifeboat_drill_x"),
            ("DRILL_PGHOST", "a,b"),
        ])
        .expect_err("bad");
        let names: Vec<&str> = e.problems.iter().map(|p| p.name.as_str()).collect();
        for name in ["DRILL_PGPORT", "DRILL_SAMPLE_OBJECTS", "DRILL_CONCURRENCY", "DRILL_PGDATABASE", "DRILL_PGHOST"] {
            assert!(names.contains(&name), "{name} not in {e}");
        }
    }
}
