//! Database restores: choose a backup, then download → verify → decompress → `pg_restore`,
//! always into a side database of lifeboat's own, swapped in only when verified.
//!
//! ```text
//!  store ──read──▶ [async: size, SHA-256, CRC32C] ──bounded channel──▶
//!        [blocking thread: age, zstd/gzip decoder] ──pipe──▶ pg_restore --dbname=SIDE
//!  verified (checksums, decompression, pg_restore exit 0, row counts) ──▶ one transaction:
//!        ALTER DATABASE TARGET RENAME TO TARGET_before_TS  (--clean, when it exists)
//!        ALTER DATABASE SIDE RENAME TO TARGET
//! ```
//!
//! A restore never harms what exists:
//!
//! - The bytes go into a fresh side database `lifeboat_restore_<UTC ts>_<id>` (created from
//!   `template0`), never into the target. Only when the download verified (size, SHA-256,
//!   CRC32C), the decompression ended cleanly at the recorded size, `pg_restore` exited 0 and
//!   every table has the row count the manifest records is it renamed to the target. Any
//!   failure (corruption, a `pg_restore` error, a row count, a termination signal) drops the side
//!   database and leaves the target exactly as it was. So nothing half-restored is ever under
//!   the target's name, and nothing restored is ever mixed with what a target held.
//! - An existing target is refused unless `clean`; with it, the target is renamed aside to
//!   `<target>_before_<ts>` in the same transaction as the swap, and dropped afterwards only when
//!   `drop_replaced` says so. Sessions on it make the swap fail (nothing changes) unless
//!   `terminate_sessions`.
//! - `template0`, `template1`, the maintenance database, the database the backup was taken of
//!   and the other `protected` names are refused as targets unless `replace_live_database`.
//!
//! The decompressing thread sees the end of its input only after the download verified, so a
//! truncated or corrupted object never looks like a clean end of the archive to `pg_restore`.
//! The pre-flight check (size and CRC32C from the store's metadata) means the same on both
//! stores: GCS reports the CRC32C it computed of the stored bytes, the `file://` store computes
//! it by reading the file.
//!
//! With `jobs`, the verified archive is first written (decompressed) to a temp file in the
//! scratch directory, then `pg_restore -j N` reads it.

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
use super::archive::OffsetIndex;
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
use crate::store::ObjectMeta;
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

/// Where to restore to, and what the restore may do to what exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTarget {
    /// Database name.
    pub name: String,
    /// An existing target is replaced (renamed aside to `<target>_before_<ts>` when the restore
    /// verified); without it an existing target is refused.
    pub clean: bool,
    /// Drop the replaced database once the swap committed (only with `clean`).
    pub drop_replaced: bool,
    /// End the sessions connected to the replaced target just before the swap (only with
    /// `clean`); without it a connected target makes the restore fail, target untouched.
    pub terminate_sessions: bool,
    /// Allow the protected targets (templates, the maintenance database, the backed-up database,
    /// `protected`): the operator means to replace a live database.
    pub replace_live_database: bool,
    /// Further names refused without `replace_live_database` (the databases being backed up,
    /// `BACKUP_DATABASES`).
    pub protected: Vec<String>,
}

impl RestoreTarget {
    /// A new database `name`: an existing one is refused; nothing is replaced.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            clean: false,
            drop_replaced: false,
            terminate_sessions: false,
            replace_live_database: false,
            protected: Vec::new(),
        }
    }
}

/// What became of the database a restore replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// The target did not exist: nothing was replaced.
    Nothing,
    /// Renamed aside and kept under this name.
    KeptAs(String),
    /// Renamed aside, then dropped (`drop_replaced`).
    Dropped(String),
    /// Renamed aside; dropping it failed, so it is still there.
    DropFailed {
        /// Its name.
        name: String,
        /// Why it could not be dropped.
        error: String,
    },
}

impl Replaced {
    /// One word for the result event: `none`, `kept`, `dropped`, `drop_failed`.
    pub fn fate(&self) -> &'static str {
        match self {
            Self::Nothing => "none",
            Self::KeptAs(_) => "kept",
            Self::Dropped(_) => "dropped",
            Self::DropFailed { .. } => "drop_failed",
        }
    }

    /// The replaced database's name, if there was one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Nothing => None,
            Self::KeptAs(n) | Self::Dropped(n) | Self::DropFailed { name: n, .. } => Some(n),
        }
    }
}

/// A finished, verified restore.
#[derive(Debug, Clone)]
pub struct RestoreDone {
    /// The database restored into (the name it has now).
    pub target: String,
    /// The side database the restore went into before it was renamed to `target`.
    pub side_database: String,
    /// What became of the database that had the target's name.
    pub replaced: Replaced,
    /// Bytes downloaded and verified (the stored dump).
    pub stored_bytes: u64,
    /// Bytes of the decompressed archive `pg_restore` read.
    pub uncompressed_bytes: u64,
    /// Tables whose row counts matched the manifest.
    pub tables_verified: usize,
    /// Rows in those tables.
    pub rows_verified: u64,
    /// Wall time, until the restored database was usable under its name.
    pub elapsed: Duration,
    /// Of which the verification of row counts.
    pub verify_elapsed: Duration,
}

impl RestoreDone {
    /// The figures of the result event.
    pub fn figures(&self) -> BTreeMap<String, serde_json::Value> {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        BTreeMap::from([
            ("target".to_owned(), self.target.clone().into()),
            ("side_database".to_owned(), self.side_database.clone().into()),
            ("replaced".to_owned(), self.replaced.name().map(str::to_owned).into()),
            ("replaced_fate".to_owned(), self.replaced.fate().into()),
            ("stored_bytes".to_owned(), self.stored_bytes.into()),
            ("uncompressed_bytes".to_owned(), self.uncompressed_bytes.into()),
            ("duration_ms".to_owned(), u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX).into()),
            (
                "throughput_mib_s".to_owned(),
                ((self.uncompressed_bytes as f64 / 1_048_576.0 / secs * 100.0).round() / 100.0).into(),
            ),
            ("tables_verified".to_owned(), self.tables_verified.into()),
            ("rows_verified".to_owned(), self.rows_verified.into()),
            ("verify_ms".to_owned(), u64::try_from(self.verify_elapsed.as_millis()).unwrap_or(u64::MAX).into()),
        ])
    }
}

/// The side database of a restore started at `now`: `lifeboat_restore_<YYYYMMDD_HHMMSS>_<8 hex>`
/// (lower case, so it needs no quoting in psql).
pub fn side_name(now: DateTime<Utc>) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{SIDE_PREFIX}{}_{}", now.format("%Y%m%d_%H%M%S"), &id[..8])
}

/// The prefix of every side database.
pub const SIDE_PREFIX: &str = "lifeboat_restore_";

/// The name a replaced target is renamed to: `<target>_before_<YYYYMMDD_HHMMSS>`, the target
/// shortened to PostgreSQL's name limit.
pub fn aside_name(target: &str, now: DateTime<Utc>) -> String {
    let suffix = format!("_before_{}", now.format("%Y%m%d_%H%M%S"));
    let mut base = target.to_owned();
    while base.len() + suffix.len() > MAX_DB_NAME {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// Refuses a target that is a live database (templates, the maintenance database, the backed-up
/// database, `target.protected`) unless `target.replace_live_database`. Changes nothing.
pub fn check_target_allowed(target: &RestoreTarget, maintenance_db: &str, backed_up: &str) -> Result<(), DbError> {
    let name = target.name.as_str();
    let why = if name == "template0" || name == "template1" {
        Some("a template database (every database created afterwards would be made from it)".to_owned())
    } else if name == maintenance_db {
        Some("the maintenance database lifeboat connects to (PGDATABASE, default postgres)".to_owned())
    } else if name == backed_up {
        Some("the database this backup was taken of".to_owned())
    } else if target.protected.iter().any(|p| p == name) {
        Some("a database being backed up (BACKUP_DATABASES)".to_owned())
    } else if name.starts_with(SIDE_PREFIX) {
        Some("named like a restore's side database".to_owned())
    } else {
        None
    };
    match why {
        Some(why) if !target.replace_live_database => Err(DbError::Refused(format!(
            "refusing to restore into {name:?}: it is {why}. Nothing was changed. Restore into another --target \
             (by default a new NAME_restored_TIMESTAMP database), or, if you mean to replace this live database, \
             pass --replace-live-database (with --clean when it exists)"
        ))),
        _ => Ok(()),
    }
}

/// The database to connect to for creating, renaming and dropping: the maintenance database,
/// unless that is the target (a database cannot be renamed by a session connected to it).
fn admin_database(maintenance_db: &str, target: &str) -> String {
    match (maintenance_db == target, target) {
        (false, _) => maintenance_db.to_owned(),
        (true, "template1") => "postgres".to_owned(),
        (true, _) => "template1".to_owned(),
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
) -> Result<u64, DbError> {
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
    let bytes = match sunk {
        Err(SinkFail::Decode(e)) => return Err(decode_error(key, &e)),
        Err(SinkFail::Write(e)) => {
            restored?;
            return Err(DbError::Io(format!("writing to pg_restore failed: {e}")));
        }
        Ok(n) => n,
    };
    restored?;
    check_uncompressed(key, bytes, dump)?;
    Ok(bytes)
}

fn check_uncompressed(key: &str, bytes: u64, dump: &DumpObject) -> Result<(), DbError> {
    if bytes == dump.uncompressed_bytes {
        return Ok(());
    }
    Err(DbError::Verification(format!(
        "{key} decompresses to {bytes} bytes, not the {} the manifest records",
        dump.uncompressed_bytes
    )))
}

/// Passes bytes to a writer while an [`OffsetIndex`] notes where the archive's data blocks start.
struct Indexing<W> {
    inner: W,
    index: OffsetIndex,
}

impl<W: Write> Write for Indexing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.index.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Downloads, verifies and decompresses into a scratch file, records the data offsets the
/// archive lacks (see [`super::archive`]), then runs `pg_restore -j N` on it. `pg_restore` starts
/// only after the download verified and the decompression ended at the recorded size.
async fn restore_parallel(
    settings: &RestoreSettings,
    store: &dyn ObjectStore,
    key: &str,
    dump: &DumpObject,
    target: &str,
    cancel: &CancellationToken,
    progress: &Counter,
) -> Result<u64, DbError> {
    let path = settings.temp_dir.join(format!("lifeboat-restore-{}.pgc", uuid::Uuid::new_v4().simple()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| DbError::Io(format!("cannot create the scratch file {}: {e}", path.display())))?;
    let _guard = RemoveOnDrop(path.clone());
    let (tx, rx) = mpsc::channel::<Feed>(4);
    let decode = DecodeSpec::new(dump, settings.identities.as_ref());
    // No fsync: the file is read back at once, and a crash fails the restore anyway.
    let sink = tokio::task::spawn_blocking(move || {
        let out = Indexing { inner: std::io::BufWriter::with_capacity(CHUNK, file), index: OffsetIndex::default() };
        decompress_into(decode, rx, out).and_then(|(n, w)| {
            let file = w.inner.into_inner().map_err(|e| SinkFail::Write(e.into_error()))?;
            Ok((n, file, w.index))
        })
    });
    let downloaded = download_verified(store, key, dump, tx, cancel, progress).await;
    let sunk = sink.await.map_err(|e| DbError::Io(format!("the decompressing thread failed: {e}")))?;
    downloaded?;
    let (bytes, file, index) = match sunk {
        Err(SinkFail::Decode(e)) => return Err(decode_error(key, &e)),
        Err(SinkFail::Write(e)) => return Err(DbError::Io(format!("writing {} failed: {e}", path.display()))),
        Ok(v) => v,
    };
    check_uncompressed(key, bytes, dump)?;
    let patches = index.patches();
    {
        use std::os::unix::fs::FileExt as _;
        for (at, data) in &patches {
            file.write_all_at(data, *at).map_err(|e| DbError::Io(format!("writing {} failed: {e}", path.display())))?;
        }
    }
    drop(file);
    tracing::info!(
        path = %path.display(),
        bytes,
        data_offsets = patches.len(),
        "archive verified on disk; running pg_restore in parallel"
    );
    let mut cmd = pg_restore_command(settings, target, Some(&path));
    cmd.stdin(Stdio::null());
    finish_tool(ToolProcess::spawn("pg_restore", cmd)?, &settings.conn, cancel).await?;
    Ok(bytes)
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
) -> Result<(usize, u64), DbError> {
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
        let rows = expected.values().map(|n| u64::try_from(*n).unwrap_or(0)).sum();
        return Ok((total, rows));
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

/// Restores `manifest`'s dump (at `path`) into a NEW database `name` (an existing one is
/// refused, so are the protected names), with every verification of [`restore_database`];
/// returns the figures (bytes, tables, rows, time). For drills and other callers that want a
/// scratch copy of a backup: drop the database when done.
pub async fn restore_into_new_database(
    settings: &RestoreSettings,
    store: &dyn ObjectStore,
    path: &DbBackupPath,
    manifest: &DbManifest,
    name: &str,
    cancel: &CancellationToken,
) -> Result<RestoreDone, DbError> {
    restore_database(settings, store, path, manifest, &RestoreTarget::new(name), cancel).await
}

/// Size and CRC32C of the stored dump against the manifest, before any database is touched.
async fn preflight(store: &dyn ObjectStore, key: &str, dump: &DumpObject) -> Result<ObjectMeta, DbError> {
    let meta = store.stat(key).await?;
    if meta.size != dump.stored_bytes || meta.crc32c.as_ref().is_some_and(|c| *c != dump.crc32c) {
        return Err(DbError::Verification(format!(
            "{key} is {} bytes with CRC32C {}, but the manifest records {} bytes with CRC32C {}: \
             the stored object is corrupted; restore refused",
            meta.size,
            meta.crc32c.as_deref().unwrap_or("(not reported)"),
            dump.stored_bytes,
            dump.crc32c
        )));
    }
    Ok(meta)
}

/// Restores `manifest`'s dump (at `path`) into a side database, verifies it, then swaps it in
/// under `target.name` (see the module's documentation). On `Err` the target is exactly as it
/// was, and the side database has been dropped ([`DbError::RestoreFailed`] says so, or that it
/// could not be).
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
    let conn = &settings.conn;
    check_target_allowed(target, &conn.maintenance_db, &manifest.database)?;
    crate::postgres::tools::check_restore_version(&settings.pg_restore_version, &manifest.pg_dump_version)?;

    let admin_db = admin_database(&conn.maintenance_db, &target.name);
    let mut admin = conn.connect(&admin_db).await?;
    let server = sql::server_version(&admin, conn, &admin_db).await?;
    if sql::database_info(&admin, conn, &admin_db, &target.name).await?.is_some() {
        if !target.clean {
            return Err(DbError::Refused(format!(
                "database {:?} exists; nothing was changed. Restore into another --target, or pass --clean to \
                 restore beside it and swap the verified restore in (the existing database is kept as {:?}; \
                 --drop-replaced drops it)",
                target.name,
                aside_name(&target.name, Utc::now())
            )));
        }
        let sessions = sql::session_count(&admin, conn, &admin_db, &target.name).await?;
        if sessions > 0 && !target.terminate_sessions {
            tracing::warn!(
                target = target.name,
                sessions,
                "the target has open sessions: the swap at the end fails unless they are closed by then \
                 (or --terminate-sessions ends them)"
            );
        }
    }

    let key = format!("{}{}", path.prefix(), dump.name);
    let meta = preflight(store, &key, dump).await?;
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

    let side = side_name(Utc::now());
    sql::create_database(&admin, conn, &admin_db, &side, like.as_ref()).await?;
    tracing::info!(
        database = manifest.database,
        backup_id = manifest.backup_id,
        target = target.name,
        side_database = side,
        size = units::bytes(dump.stored_bytes),
        jobs = settings.jobs,
        "restore started into a side database; the target is not touched until the restore is verified"
    );
    let staged = async {
        sql::comment_on_database(
            &admin,
            conn,
            &admin_db,
            &side,
            Some(&format!(
                "lifeboat restore in progress: backup {} of {} for {}; dropped if it fails, renamed when verified",
                manifest.backup_id, manifest.database, target.name
            )),
        )
        .await?;
        let what = format!("restore of {} into {}", manifest.database, target.name);
        let progress = Progress::with_bar(what, Unit::Bytes, Some(dump.stored_bytes), settings.progress_interval);
        let counter = progress.counter();
        let uncompressed = match settings.jobs {
            Some(_) => restore_parallel(settings, store, &key, dump, &side, cancel, counter).await?,
            None => restore_streaming(settings, store, &key, dump, &side, cancel, counter).await?,
        };
        progress.finish();
        let verifying = Instant::now();
        let (tables, rows) = match &manifest.row_counts {
            Some(expected) => verify_row_counts(conn, &side, expected).await?,
            None => (0, 0),
        };
        let verify_elapsed = verifying.elapsed();
        if cancel.is_cancelled() {
            return Err(DbError::Cancelled);
        }
        let replaced = swap(&mut admin, conn, &admin_db, &side, target).await?;
        Ok::<_, DbError>((uncompressed, tables, rows, verify_elapsed, replaced))
    }
    .await;
    let (uncompressed_bytes, tables_verified, rows_verified, verify_elapsed, aside) = match staged {
        Ok(v) => v,
        Err(error) => {
            let dropped = match conn.connect(&admin_db).await {
                Ok(fresh) => sql::drop_database(&fresh, conn, &admin_db, &side, server.num).await,
                Err(e) => Err(e),
            };
            match &dropped {
                Ok(()) => tracing::warn!(
                    target = target.name,
                    side_database = side,
                    error = %error,
                    "restore failed: the side database was dropped; the target was not touched"
                ),
                Err(d) => tracing::error!(
                    target = target.name,
                    side_database = side,
                    error = %error,
                    drop_error = %d,
                    "restore failed and the side database could NOT be dropped: drop it by hand; the target was not touched"
                ),
            }
            return Err(DbError::RestoreFailed {
                error: Box::new(error),
                target: target.name.clone(),
                side,
                drop_error: dropped.err().map(Box::new),
            });
        }
    };
    let replaced = match aside {
        None => Replaced::Nothing,
        Some(aside) if target.drop_replaced => {
            match sql::drop_database(&admin, conn, &admin_db, &aside, server.num).await {
                Ok(()) => Replaced::Dropped(aside),
                Err(e) => Replaced::DropFailed { name: aside, error: e.to_string() },
            }
        }
        Some(aside) => Replaced::KeptAs(aside),
    };
    let done = RestoreDone {
        target: target.name.clone(),
        side_database: side,
        replaced,
        stored_bytes: dump.stored_bytes,
        uncompressed_bytes,
        tables_verified,
        rows_verified,
        elapsed: clock.elapsed(),
        verify_elapsed,
    };
    match &done.replaced {
        Replaced::Nothing => tracing::info!(
            target = done.target,
            side_database = done.side_database,
            tables_verified,
            "restore complete and verified; the side database was renamed to the target (a new database)"
        ),
        Replaced::KeptAs(aside) => tracing::info!(
            target = done.target,
            side_database = done.side_database,
            replaced = aside,
            tables_verified,
            "restore complete and verified; the side database was renamed to the target, the database it replaced \
             was renamed aside and kept"
        ),
        Replaced::Dropped(aside) => tracing::info!(
            target = done.target,
            side_database = done.side_database,
            replaced = aside,
            tables_verified,
            "restore complete and verified; the side database was renamed to the target, the database it replaced \
             was renamed aside, then dropped (--drop-replaced)"
        ),
        Replaced::DropFailed { name, error } => tracing::warn!(
            target = done.target,
            side_database = done.side_database,
            replaced = name,
            error,
            "restore complete and verified; the side database was renamed to the target, but the database it \
             replaced could not be dropped and is still there"
        ),
    }
    Ok(done)
}

/// Swaps the verified side database in under the target's name (renaming an existing target
/// aside when `clean`), in one transaction; returns the aside name when something was replaced.
async fn swap(
    admin: &mut tokio_postgres::Client,
    conn: &Connection,
    admin_db: &str,
    side: &str,
    target: &RestoreTarget,
) -> Result<Option<String>, DbError> {
    // Looked at again now: the target may have appeared or gone while the restore ran.
    let exists = sql::database_info(admin, conn, admin_db, &target.name).await?.is_some();
    let aside = aside_name(&target.name, Utc::now());
    let replace = match (exists, target.clean) {
        (false, _) => None,
        (true, false) => {
            return Err(DbError::Refused(format!(
                "database {:?} appeared while the restore ran; it was not touched (pass --clean to replace it)",
                target.name
            )));
        }
        (true, true) => {
            let sessions = sql::session_count(admin, conn, admin_db, &target.name).await?;
            if sessions > 0 && !target.terminate_sessions {
                return Err(DbError::Refused(format!(
                    "database {:?} has {sessions} open session(s), so it cannot be renamed aside: close them and \
                     restore again, or pass --terminate-sessions to end them at the swap",
                    target.name
                )));
            }
            Some(sql::Replace { aside: &aside, terminate_sessions: target.terminate_sessions })
        }
    };
    match sql::swap_in(admin, conn, admin_db, side, &target.name, replace).await {
        Ok(()) => Ok(replace.map(|r| r.aside.to_owned())),
        Err(e) => {
            // A connection lost during COMMIT leaves the outcome unknown: look at the catalog.
            let fresh = conn.connect(admin_db).await;
            if let Ok(c) = &fresh
                && matches!(sql::database_info(c, conn, admin_db, side).await, Ok(None))
                && matches!(sql::database_info(c, conn, admin_db, &target.name).await, Ok(Some(_)))
            {
                tracing::warn!(error = %e, "the swap's commit reported an error, but it took effect");
                return Ok(replace.map(|r| r.aside.to_owned()));
            }
            Err(e.into())
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
    fn side_and_aside_names_fit_postgres_names() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").expect("t").to_utc();
        let side = side_name(now);
        assert!(side.starts_with("lifeboat_restore_20261126_020000_") && side.len() == 41, "{side}");
        assert_eq!(side, side.to_lowercase());
        assert_ne!(side_name(now), side, "two restores in one second get two side databases");
        assert_eq!(aside_name("app", now), "app_before_20261126_020000");
        let long = aside_name(&"ü".repeat(40), now);
        assert!(long.len() <= 63 && long.ends_with("_before_20261126_020000"), "{long}");
    }

    #[test]
    fn live_databases_need_the_explicit_flag() {
        let mut t = RestoreTarget::new("x");
        t.protected = vec!["orders".into()];
        for name in ["template0", "template1", "postgres", "app", "orders", "lifeboat_restore_20261126_020000_1a2b3c4d"]
        {
            t.name = name.into();
            let e = check_target_allowed(&t, "postgres", "app").expect_err(name).to_string();
            assert!(e.contains("--replace-live-database") && e.contains("Nothing was changed"), "{e}");
            let mut allowed = t.clone();
            allowed.replace_live_database = true;
            assert!(check_target_allowed(&allowed, "postgres", "app").is_ok(), "{name}");
        }
        t.name = "app_restored_20261126T020000Z".into();
        assert!(check_target_allowed(&t, "postgres", "app").is_ok());
        assert!(check_target_allowed(&RestoreTarget::new("postgres"), "maint", "app").is_ok());
        assert!(check_target_allowed(&RestoreTarget::new("maint"), "maint", "app").is_err());
    }

    #[test]
    fn the_admin_connection_is_never_on_the_target() {
        assert_eq!(admin_database("postgres", "app"), "postgres");
        assert_eq!(admin_database("postgres", "postgres"), "template1");
        assert_eq!(admin_database("template1", "template1"), "postgres");
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
