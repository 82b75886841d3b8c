//! Database restores: choose a backup, then download → verify → decompress → `pg_restore`.
//!
//! ```text
//!  store ──read──▶ [async: size, SHA-256, CRC32C] ──bounded channel──▶
//!        [blocking thread: zstd/gzip decoder] ──pipe──▶ pg_restore --dbname=TARGET
//! ```
//!
//! The checksum is known only at the end of the download, so the restore goes into a database
//! this restore creates, and succeeds only if the download verified (size, SHA-256, CRC32C), the
//! decompression ended cleanly, `pg_restore` exited 0 and every table has the row count the
//! manifest records; otherwise the database is dropped. The decompressing thread sees the end of
//! its input only after the download verified, so a truncated or corrupted object never looks
//! like a clean end of the archive to `pg_restore`.
//!
//! With `--jobs N` the verified archive is first written (decompressed) to a local temp file,
//! then `pg_restore -j N` reads it: faster for big databases, for users with disk.

use std::collections::BTreeMap;
use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::DbError;
use super::backup::{META_COLLATE, META_CTYPE, META_ENCODING};
use super::codec::{CHUNK, DecodeSpec, Feed, FeedReader, StreamHash, open_dump};
use super::encryption::{self, Identities};
use crate::core::db_manifest::{DbManifest, DumpObject, MAX_MANIFEST_BYTES};
use crate::core::naming::{DRILL_OUTCOME_METADATA, DbBackupPath, RunId};
use crate::core::progress::Unit;
use crate::core::series::DrillOutcome;
use crate::core::units;
use crate::postgres::Connection;
use crate::postgres::process::{self, ToolProcess};
use crate::postgres::sql::{self, DatabaseInfo};
use crate::postgres::tools::ToolVersion;
use crate::runtime::progress::{Counter, Progress};
use crate::store::{ObjectStore, ObjectStoreExt as _};

/// Longest database name PostgreSQL keeps (NAMEDATALEN - 1 bytes).
const MAX_DB_NAME: usize = 63;

/// One backup of a database, as a listing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    /// Where it is.
    pub path: DbBackupPath,
    /// True when its manifest exists (the backup finished).
    pub complete: bool,
    /// Size of the stored dump object(s).
    pub stored_bytes: u64,
    /// The newest drill outcome its records' metadata states (`passed` = verified), if any.
    pub drill: Option<DrillOutcome>,
}

/// Every backup (complete or not) of `database` from `source`, oldest first.
pub async fn list_backups(store: &dyn ObjectStore, source: &str, database: &str) -> Result<Vec<BackupEntry>, DbError> {
    let prefix = DbBackupPath::series_prefix(source, database);
    let mut by_run: BTreeMap<RunId, BackupEntry> = BTreeMap::new();
    let mut listing = store.list_all(&prefix);
    while let Some(object) = listing.next().await {
        let object = object?;
        let Some((path, file)) = DbBackupPath::parse_key(&object.key) else { continue };
        if path.source != source || path.database != database {
            continue;
        }
        let entry = by_run.entry(path.run.clone()).or_insert_with(|| BackupEntry {
            path,
            complete: false,
            stored_bytes: 0,
            drill: None,
        });
        if crate::core::drill::is_drill_file(file) {
            // Records are listed in name (time) order: the last one with an outcome wins, but a
            // passed drill is never hidden by a later failed one (the backup was restored once).
            let outcome =
                object.metadata.get(DRILL_OUTCOME_METADATA).and_then(|v| crate::core::series::parse_outcome(v));
            if entry.drill != Some(DrillOutcome::Passed) && outcome.is_some() {
                entry.drill = outcome;
            }
        } else if file == "manifest.json" {
            entry.complete = true;
        } else if file.starts_with("dump.") {
            entry.stored_bytes += object.size;
        }
    }
    Ok(by_run.into_values().collect())
}

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The newest complete backup.
    Latest,
    /// Exactly this one.
    Id(RunId),
    /// The newest complete backup started at or before this time.
    Before(DateTime<Utc>),
}

/// Picks a complete backup and reads its manifest.
pub async fn choose(
    store: &dyn ObjectStore,
    source: &str,
    database: &str,
    selector: &Selector,
) -> Result<(DbBackupPath, DbManifest), DbError> {
    let entries = list_backups(store, source, database).await?;
    let hint = format!("`restore list --database {database}` shows the backups there are");
    let mut complete = entries.iter().filter(|e| e.complete);
    let chosen = match selector {
        Selector::Latest => complete.next_back().ok_or_else(|| {
            DbError::NotFound(format!(
                "no complete backup of database {database:?} (source {source:?}) in {}",
                store.location()
            ))
        })?,
        Selector::Id(id) => match entries.iter().find(|e| &e.path.run == id) {
            Some(e) if e.complete => e,
            Some(_) => {
                return Err(DbError::NotFound(format!(
                    "backup {id} of database {database:?} is incomplete (it has no manifest: the run failed or is still running); {hint}"
                )));
            }
            None => return Err(DbError::NotFound(format!("database {database:?} has no backup {id}; {hint}"))),
        },
        Selector::Before(t) => complete.rfind(|e| e.path.run.started <= *t).ok_or_else(|| {
            DbError::NotFound(format!(
                "database {database:?} has no complete backup from {} or earlier; {hint}",
                t.to_rfc3339()
            ))
        })?,
    };
    let path = chosen.path.clone();
    let bytes = store.read_all(&path.manifest_key(), MAX_MANIFEST_BYTES).await?;
    let manifest =
        DbManifest::from_json(&bytes).map_err(|source| DbError::Manifest { key: path.manifest_key(), source })?;
    if manifest.database != database || manifest.backup_id != path.run.to_string() {
        return Err(DbError::Verification(format!(
            "{} describes backup {} of database {:?}, not the one it is stored under",
            path.manifest_key(),
            manifest.backup_id,
            manifest.database
        )));
    }
    Ok((path, manifest))
}

/// `ID  STARTED  SIZE  AGE  STATUS`, newest first, for people.
pub fn format_list(entries: &[BackupEntry], now: DateTime<Utc>) -> String {
    let mut out = format!("{:<25}  {:<19}  {:>10}  {:>8}  {}\n", "ID", "STARTED (UTC)", "SIZE", "AGE", "STATUS");
    for e in entries.iter().rev() {
        out.push_str(&format!(
            "{:<25}  {:<19}  {:>10}  {:>8}  {}\n",
            e.path.run.to_string(),
            e.path.run.started.format("%Y-%m-%d %H:%M:%S").to_string(),
            units::bytes(e.stored_bytes),
            units::age((now - e.path.run.started).num_seconds()),
            match (e.complete, e.drill) {
                (true, Some(DrillOutcome::Passed)) => "complete, verified by a drill",
                (true, Some(DrillOutcome::Failed)) => "complete, drill FAILED",
                (true, None) => "complete",
                (false, _) => "incomplete",
            }
        ));
    }
    out
}

/// The default target: `<db>_restored_<ts>`, shortened to PostgreSQL's name limit.
pub fn default_target(database: &str, now: DateTime<Utc>) -> String {
    let suffix = format!("_restored_{}", now.format(crate::core::naming::TS_FORMAT));
    let mut base = database.to_owned();
    while base.len() + suffix.len() > MAX_DB_NAME {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// What a restore needs besides the backup.
#[derive(Debug, Clone)]
pub struct RestoreSettings {
    /// Connection.
    pub conn: Connection,
    /// The `pg_restore` to run.
    pub pg_restore: PathBuf,
    /// Its version.
    pub pg_restore_version: ToolVersion,
    /// `Some(n)`: download to a temp file, then `pg_restore -j n`.
    pub jobs: Option<u32>,
    /// `--no-owner`: objects belong to the restoring user.
    pub no_owner: bool,
    /// `--no-privileges`: skip GRANT/REVOKE.
    pub no_privileges: bool,
    /// Where `--jobs` keeps its temp file.
    pub temp_dir: PathBuf,
    /// Secret keys for encrypted dumps (`BACKUP_ENCRYPTION_IDENTITY`); `None`: only unencrypted
    /// backups can be restored.
    pub identities: Option<Identities>,
    /// How often the download logs a progress line (a bar instead in a terminal).
    pub progress_interval: Duration,
}

/// Where to restore to.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    /// Database name.
    pub name: String,
    /// Drop and recreate it when it exists.
    pub clean: bool,
}

/// A finished restore.
#[derive(Debug, Clone)]
pub struct RestoreDone {
    /// The database restored into.
    pub target: String,
    /// Tables whose row counts matched the manifest.
    pub tables_verified: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Of which the verification of row counts.
    pub verify_elapsed: Duration,
}

impl RestoreDone {
    /// The figures of the result event.
    pub fn figures(&self, dump: &DumpObject) -> BTreeMap<String, serde_json::Value> {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        BTreeMap::from([
            ("target".to_owned(), self.target.clone().into()),
            ("stored_bytes".to_owned(), dump.stored_bytes.into()),
            ("uncompressed_bytes".to_owned(), dump.uncompressed_bytes.into()),
            ("duration_ms".to_owned(), u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX).into()),
            (
                "throughput_mib_s".to_owned(),
                ((dump.uncompressed_bytes as f64 / 1_048_576.0 / secs * 100.0).round() / 100.0).into(),
            ),
            ("tables_verified".to_owned(), self.tables_verified.into()),
            ("verify_ms".to_owned(), u64::try_from(self.verify_elapsed.as_millis()).unwrap_or(u64::MAX).into()),
        ])
    }
}

enum SinkFail {
    Decode(std::io::Error),
    Write(std::io::Error),
}

/// Decrypts and decompresses what arrives on `rx` into `out`; returns the bytes written and `out`.
fn decompress_into<W: Write>(decode: DecodeSpec, rx: mpsc::Receiver<Feed>, mut out: W) -> Result<(u64, W), SinkFail> {
    let mut input = open_dump(&decode, FeedReader::new(rx)).map_err(SinkFail::Decode)?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SinkFail::Decode(e)),
        };
        out.write_all(&buf[..n]).map_err(SinkFail::Write)?;
        total += n as u64;
    }
    out.flush().map_err(SinkFail::Write)?;
    Ok((total, out))
}

/// Downloads `key`, hashing it, into the channel; sends [`Feed::Verified`] only when size,
/// SHA-256 and CRC32C match `dump`. `Ok(false)` = the receiver stopped early (its own error
/// explains why).
async fn download_verified(
    store: &dyn ObjectStore,
    key: &str,
    dump: &DumpObject,
    tx: mpsc::Sender<Feed>,
    cancel: &CancellationToken,
    progress: &Counter,
) -> Result<bool, DbError> {
    let mut stream = cancel.run_until_cancelled(store.read(key)).await.ok_or(DbError::Cancelled)??;
    let mut hash = StreamHash::default();
    loop {
        let Some(next) = cancel.run_until_cancelled(stream.next()).await else { return Err(DbError::Cancelled) };
        let Some(chunk) = next else { break };
        let chunk = chunk?;
        hash.update(&chunk);
        progress.add(chunk.len() as u64);
        if hash.len() > dump.stored_bytes {
            return Err(DbError::Verification(format!(
                "{key} is longer than the {} bytes the manifest records: the stored object is not the one backed up",
                dump.stored_bytes
            )));
        }
        match cancel.run_until_cancelled(tx.send(Feed::Data(chunk))).await {
            None => return Err(DbError::Cancelled),
            Some(Err(_)) => return Ok(false),
            Some(Ok(())) => {}
        }
    }
    let (len, sha256, crc32c) = hash.finish();
    if len != dump.stored_bytes || sha256 != dump.sha256 || crc32c != dump.crc32c {
        return Err(DbError::Verification(format!(
            "{key} does not match its manifest (size {len} vs {}, SHA-256 {sha256} vs {}, CRC32C {crc32c} vs {}): \
             the stored object is corrupted; restore refused",
            dump.stored_bytes, dump.sha256, dump.crc32c
        )));
    }
    Ok(tx.send(Feed::Verified).await.is_ok())
}

fn decode_error(key: &str, e: &std::io::Error) -> DbError {
    DbError::Verification(format!("{key} does not decompress ({e}): the stored object is corrupted; restore refused"))
}

/// `pg_restore` with the settings' options, connecting to `target`; stdout closed.
fn pg_restore_command(settings: &RestoreSettings, target: &str, file: Option<&Path>) -> tokio::process::Command {
    let mut cmd = process::command(&settings.pg_restore, &settings.conn, target);
    cmd.args(["--format=custom", "--exit-on-error", "--no-password"]);
    if settings.no_owner {
        cmd.arg("--no-owner");
    }
    if settings.no_privileges {
        cmd.arg("--no-privileges");
    }
    // A conninfo string with only the database name: the name can be anything (even look like
    // a URI), and nothing secret is on the command line; the rest comes from the environment.
    let escaped = target.replace('\\', "\\\\").replace('\'', "\\'");
    cmd.arg(format!("--dbname=dbname='{escaped}'"));
    if let (Some(jobs), Some(file)) = (settings.jobs, file) {
        cmd.arg(format!("--jobs={jobs}"));
        cmd.arg(file);
    }
    cmd.stdout(Stdio::null());
    cmd
}

/// Waits for `pg_restore` to end: `Ok` when it exited 0.
async fn finish_tool(process: ToolProcess, conn: &Connection, cancel: &CancellationToken) -> Result<(), DbError> {
    let exit = process.wait(cancel, &|s| conn.redact(s)).await.ok_or(DbError::Cancelled)??;
    Ok(exit.check()?)
}

/// Streams the dump straight into `pg_restore`'s stdin.
async fn restore_streaming(
    settings: &RestoreSettings,
    store: &dyn ObjectStore,
    key: &str,
    dump: &DumpObject,
    target: &str,
    cancel: &CancellationToken,
    progress: &Counter,
) -> Result<(), DbError> {
    let mut cmd = pg_restore_command(settings, target, None);
    cmd.stdin(Stdio::piped());
    let mut process = ToolProcess::spawn("pg_restore", cmd)?;
    let stdin = process.stdin()?;
    let (tx, rx) = mpsc::channel::<Feed>(4);
    let decode = DecodeSpec::new(dump, settings.identities.as_ref());
    let sink = tokio::task::spawn_blocking(move || {
        decompress_into(decode, rx, stdin).map(|(n, stdin)| {
            drop(stdin); // end of input for pg_restore
            n
        })
    });
    let downloaded = download_verified(store, key, dump, tx, cancel, progress).await;
    if downloaded.is_err() {
        // Stop pg_restore before it can see a clean end of an unverified archive.
        process.kill();
    }
    let sunk = sink.await.map_err(|e| DbError::Io(format!("the decompressing thread failed: {e}")))?;
    let restored = finish_tool(process, &settings.conn, cancel).await;
    downloaded?;
    match sunk {
        Err(SinkFail::Decode(e)) => return Err(decode_error(key, &e)),
        Err(SinkFail::Write(e)) => {
            restored?;
            return Err(DbError::Io(format!("writing to pg_restore failed: {e}")));
        }
        Ok(_) => {}
    }
    restored
}

/// Downloads and verifies into a temp file, then runs `pg_restore -j N` on it.
async fn restore_parallel(
    settings: &RestoreSettings,
    store: &dyn ObjectStore,
    key: &str,
    dump: &DumpObject,
    target: &str,
    cancel: &CancellationToken,
    progress: &Counter,
) -> Result<(), DbError> {
    let path = settings.temp_dir.join(format!("lifeboat-restore-{}.pgc", uuid::Uuid::new_v4().simple()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| DbError::Io(format!("cannot create the temp file {}: {e}", path.display())))?;
    let _guard = RemoveOnDrop(path.clone());
    let (tx, rx) = mpsc::channel::<Feed>(4);
    let decode = DecodeSpec::new(dump, settings.identities.as_ref());
    let sink = tokio::task::spawn_blocking(move || {
        decompress_into(decode, rx, std::io::BufWriter::with_capacity(CHUNK, file)).and_then(|(n, w)| {
            let file = w.into_inner().map_err(|e| SinkFail::Write(e.into_error()))?;
            file.sync_all().map_err(SinkFail::Write)?;
            Ok(n)
        })
    });
    let downloaded = download_verified(store, key, dump, tx, cancel, progress).await;
    let sunk = sink.await.map_err(|e| DbError::Io(format!("the decompressing thread failed: {e}")))?;
    downloaded?;
    let bytes = match sunk {
        Err(SinkFail::Decode(e)) => return Err(decode_error(key, &e)),
        Err(SinkFail::Write(e)) => return Err(DbError::Io(format!("writing {} failed: {e}", path.display()))),
        Ok(n) => n,
    };
    if bytes != dump.uncompressed_bytes {
        return Err(DbError::Verification(format!(
            "{key} decompresses to {bytes} bytes, not the {} the manifest records",
            dump.uncompressed_bytes
        )));
    }
    tracing::info!(path = %path.display(), bytes, "archive verified on disk; running pg_restore in parallel");
    let mut cmd = pg_restore_command(settings, target, Some(&path));
    cmd.stdin(Stdio::null());
    finish_tool(ToolProcess::spawn("pg_restore", cmd)?, &settings.conn, cancel).await
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Compares exact row counts in `target` with the manifest's. Tables are counted biggest first
/// over a few connections at once (the counting backends run in parallel on the server).
async fn verify_row_counts(
    conn: &Connection,
    target: &str,
    expected: &BTreeMap<String, i64>,
) -> Result<usize, DbError> {
    let mut tables = Vec::with_capacity(expected.len());
    for (key, want) in expected {
        let (schema, table) = sql::parse_qualified(key).ok_or_else(|| {
            DbError::Verification(format!("the manifest's row counts name {key:?}, which is not a table name"))
        })?;
        tables.push((key.clone(), schema, table, *want));
    }
    tables.sort_by_key(|t| std::cmp::Reverse(t.3));
    let total = tables.len();
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(tables));
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).clamp(1, 4).min(total.max(1));
    let worker = || async {
        let client = conn.connect(target).await?;
        let mut mismatches = Vec::new();
        loop {
            let next = queue.lock().map_err(|_| DbError::Io("row-count queue poisoned".into()))?.pop_front();
            let Some((key, schema, table, want)) = next else { break };
            let q = format!("SELECT count(*) FROM ONLY {}.{}", sql::quote_ident(&schema), sql::quote_ident(&table));
            match client.query_one(&q, &[]).await {
                Ok(row) => {
                    let got: i64 = row.get(0);
                    if got != want {
                        mismatches.push(format!("{key}: {got} rows, backup had {want}"));
                    }
                }
                Err(e) => mismatches.push(format!("{key}: {}", conn.describe(&e))),
            }
        }
        Ok::<_, DbError>(mismatches)
    };
    let results = futures::future::join_all((0..workers).map(|_| worker())).await;
    let mut mismatches = Vec::new();
    for r in results {
        mismatches.extend(r?);
    }
    if mismatches.is_empty() {
        return Ok(total);
    }
    mismatches.sort();
    let n = mismatches.len();
    mismatches.truncate(10);
    Err(DbError::Verification(format!(
        "row counts differ from the backup's in {n} table(s): {}{}",
        mismatches.join("; "),
        if n > 10 { "; …" } else { "" }
    )))
}

/// Restores `manifest`'s dump (at `path`) into `target`. On `Err`, a target this call created
/// has been dropped.
pub async fn restore_database(
    settings: &RestoreSettings,
    store: &dyn ObjectStore,
    path: &DbBackupPath,
    manifest: &DbManifest,
    target: &RestoreTarget,
    cancel: &CancellationToken,
) -> Result<RestoreDone, DbError> {
    let clock = Instant::now();
    let dump = &manifest.dump;
    if dump.name.is_empty() || dump.name.contains('/') {
        return Err(DbError::Verification(format!("the manifest names an odd dump object {:?}", dump.name)));
    }
    crate::postgres::tools::check_restore_version(&settings.pg_restore_version, &manifest.pg_dump_version)?;
    let key = format!("{}{}", path.prefix(), dump.name);
    let meta = store.stat(&key).await?;
    if meta.size != dump.stored_bytes || meta.crc32c.as_ref().is_some_and(|c| *c != dump.crc32c) {
        return Err(DbError::Verification(format!(
            "{key} is {} bytes with CRC32C {:?}, but the manifest records {} bytes with CRC32C {}: restore refused",
            meta.size, meta.crc32c, dump.stored_bytes, dump.crc32c
        )));
    }
    // An encrypted dump: the identity must open it before any database is touched.
    encryption::check_key(store, &key, dump, settings.identities.as_ref()).await?;
    let like = match (meta.metadata.get(META_ENCODING), meta.metadata.get(META_COLLATE), meta.metadata.get(META_CTYPE))
    {
        (Some(e), Some(c), Some(t)) => Some(DatabaseInfo {
            name: manifest.database.clone(),
            encoding: e.clone(),
            collate: c.clone(),
            ctype: t.clone(),
        }),
        _ => None,
    };

    let conn = &settings.conn;
    let maintenance =
        if conn.maintenance_db == target.name { "template1".to_owned() } else { conn.maintenance_db.clone() };
    let admin = conn.connect(&maintenance).await?;
    let server = sql::server_version(&admin, conn, &maintenance).await?;
    let existing = sql::database_info(&admin, conn, &maintenance, &target.name).await?;
    let created = match existing {
        Some(_) if target.clean => {
            tracing::warn!(target = target.name, "--clean: dropping the existing target database");
            sql::drop_database(&admin, conn, &maintenance, &target.name, server.num).await?;
            sql::create_database(&admin, conn, &maintenance, &target.name, like.as_ref()).await?;
            true
        }
        Some(_) => {
            let client = conn.connect(&target.name).await?;
            let objects = sql::user_object_count(&client, conn, &target.name).await?;
            drop(client);
            if objects > 0 {
                return Err(DbError::Refused(format!(
                    "database {:?} exists and is not empty ({objects} objects); restore into another --target, \
                     or pass --clean to drop and recreate it",
                    target.name
                )));
            }
            false
        }
        None => {
            sql::create_database(&admin, conn, &maintenance, &target.name, like.as_ref()).await?;
            true
        }
    };
    tracing::info!(
        database = manifest.database,
        backup_id = manifest.backup_id,
        target = target.name,
        size = units::bytes(dump.stored_bytes),
        jobs = settings.jobs,
        "restore started"
    );
    let what = format!("restore of {} into {}", manifest.database, target.name);
    let progress = Progress::with_bar(what, Unit::Bytes, Some(dump.stored_bytes), settings.progress_interval);
    let restored = async {
        let counter = progress.counter();
        match settings.jobs {
            Some(_) => restore_parallel(settings, store, &key, dump, &target.name, cancel, counter).await?,
            None => restore_streaming(settings, store, &key, dump, &target.name, cancel, counter).await?,
        }
        progress.finish();
        let verifying = Instant::now();
        let tables = match &manifest.row_counts {
            Some(expected) => verify_row_counts(conn, &target.name, expected).await?,
            None => 0,
        };
        Ok::<_, DbError>((tables, verifying.elapsed()))
    }
    .await;
    match restored {
        Ok((tables_verified, verify_elapsed)) => {
            let done =
                RestoreDone { target: target.name.clone(), tables_verified, elapsed: clock.elapsed(), verify_elapsed };
            tracing::info!(target = target.name, tables_verified, "restore complete and verified");
            Ok(done)
        }
        Err(e) => {
            if created {
                match sql::drop_database(&admin, conn, &maintenance, &target.name, server.num).await {
                    Ok(()) => {
                        tracing::warn!(target = target.name, "restore failed: the half-restored database was dropped")
                    }
                    Err(d) => {
                        return Err(DbError::NotDropped {
                            error: Box::new(e),
                            target: target.name.clone(),
                            drop_error: d,
                        });
                    }
                }
                Err(e)
            } else {
                Err(DbError::LeftHalfRestored { error: Box::new(e), target: target.name.clone() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_targets_fit_postgres_names() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").expect("t").to_utc();
        assert_eq!(default_target("app", now), "app_restored_20261126T020000Z");
        let long = "x".repeat(80);
        let t = default_target(&long, now);
        assert_eq!(t.len(), 63);
        assert!(t.ends_with("_restored_20261126T020000Z"));
        let uni = default_target(&"ü".repeat(40), now);
        assert!(uni.len() <= 63 && uni.ends_with("Z"));
    }

    #[test]
    fn listing() {
        let run: RunId = "20261126T020000Z-1a2b3c4d".parse().expect("id");
        let entries = vec![BackupEntry {
            path: DbBackupPath { source: "main".into(), database: "app".into(), run },
            complete: true,
            stored_bytes: 3 * 1024 * 1024,
            drill: None,
        }];
        let now = DateTime::parse_from_rfc3339("2026-11-26T07:30:00Z").expect("t").to_utc();
        let text = format_list(&entries, now);
        let line = text.lines().nth(1).expect("a line");
        assert!(line.starts_with("20261126T020000Z-1a2b3c4d  2026-11-26 02:00:00"), "{text}");
        assert!(line.contains("3.0 MiB") && line.contains("5h30m") && line.ends_with("complete"), "{text}");
        let verified = BackupEntry { drill: Some(DrillOutcome::Passed), ..entries[0].clone() };
        assert!(format_list(&[verified], now).trim_end().ends_with("complete, verified by a drill"));
    }
}
