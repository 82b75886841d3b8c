//! One database backup: `pg_dump` → compression → (encryption) → hashes → create-only upload →
//! manifest.
//!
//! ```text
//!  pg_dump stdout ──read 1 MiB──▶ [blocking thread: header check, zstd/gzip, age when
//!        recipients are set, SHA-256, CRC32C] ──bounded channel (4 × 1 MiB)──▶
//!        [async: ObjectWriter::write] ──▶ store
//! ```
//!
//! Completion is decided, not assumed: the stream must start with the custom-format header, the
//! tool must exit 0, the store must confirm size and CRC32C; only then is the manifest written,
//! create-only, last. Any failure or cancellation kills `pg_dump`, abandons the upload, deletes
//! what this run committed (never what another run wrote) and writes no manifest.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::DbError;
use super::codec::{CHUNK, ChunkSink, CompressSpec, Encoder, Sealed, StreamHash};
use super::encryption::Recipients;
use crate::core::db_manifest::{DB_FORMAT, DbManifest, DumpObject};
use crate::core::naming::{DbBackupPath, RunId};
use crate::core::progress::Unit;
use crate::core::units;
use crate::postgres::process::{self, Exit, ToolProcess};
use crate::postgres::sql::{self, DatabaseInfo, ServerVersion};
use crate::postgres::tools::ToolVersion;
use crate::postgres::{Connection, PgError};
use crate::runtime::progress::{Counter, Progress};
use crate::store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, ObjectWriter, PutOptions, StoreError};

/// The first bytes of every custom-format archive.
pub const ARCHIVE_MAGIC: &[u8; 5] = b"PGDMP";
/// Chunks in flight between the compressing thread and the uploader.
const CHANNEL_CHUNKS: usize = 4;
/// Custom metadata on the dump object: what a restore needs to recreate the database alike.
pub const META_ENCODING: &str = "lifeboat-encoding";
/// See [`META_ENCODING`].
pub const META_COLLATE: &str = "lifeboat-lc-collate";
/// See [`META_ENCODING`].
pub const META_CTYPE: &str = "lifeboat-lc-ctype";

/// What a finished stream produced.
#[derive(Debug, Clone)]
pub struct StreamStats {
    /// Bytes the tool wrote.
    pub raw_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// CRC32C of the stored bytes, base64 big-endian.
    pub crc32c: String,
    /// The committed object.
    pub object: ObjectMeta,
}

enum CompressFail {
    Empty,
    Header(Vec<u8>),
    Read(std::io::Error),
    Compress(std::io::Error),
}

/// Reads the tool's stdout, checks the header, compresses (and encrypts to `recipients`) into
/// the channel.
fn compress_stream(
    mut input: std::fs::File,
    spec: CompressSpec,
    recipients: Option<Recipients>,
    tx: mpsc::Sender<Bytes>,
    progress: &Counter,
) -> Result<(u64, StreamHash), CompressFail> {
    let sealed = Sealed::new(recipients.as_ref(), ChunkSink::new(tx)).map_err(CompressFail::Compress)?;
    let mut encoder = Encoder::new(spec, sealed).map_err(CompressFail::Compress)?;
    let mut buf = vec![0u8; CHUNK];
    let mut head: Vec<u8> = Vec::with_capacity(ARCHIVE_MAGIC.len());
    let mut raw = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CompressFail::Read(e)),
        };
        if head.len() < ARCHIVE_MAGIC.len() {
            let take = (ARCHIVE_MAGIC.len() - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
            if !ARCHIVE_MAGIC.starts_with(&head) {
                return Err(CompressFail::Header(head));
            }
        }
        raw += n as u64;
        progress.add(n as u64);
        std::io::Write::write_all(&mut encoder, &buf[..n]).map_err(CompressFail::Compress)?;
    }
    if raw == 0 {
        return Err(CompressFail::Empty);
    }
    if head.as_slice() != ARCHIVE_MAGIC {
        return Err(CompressFail::Header(head));
    }
    let sealed = encoder.finish().map_err(CompressFail::Compress)?;
    let sink = sealed.finish().map_err(CompressFail::Compress)?;
    let hash = sink.finish().map_err(CompressFail::Compress)?;
    Ok((raw, hash))
}

async fn pump(
    rx: &mut mpsc::Receiver<Bytes>,
    writer: &mut dyn ObjectWriter,
    cancel: &CancellationToken,
) -> Result<(), DbError> {
    loop {
        let Some(next) = cancel.run_until_cancelled(rx.recv()).await else {
            return Err(DbError::Cancelled);
        };
        let Some(chunk) = next else { return Ok(()) };
        cancel.run_until_cancelled(writer.write(chunk)).await.ok_or(DbError::Cancelled)??;
    }
}

/// Runs `cmd` (a `pg_dump --format=custom` invocation) and streams its stdout, compressed,
/// encrypted to `recipients` when given, and hashed, into `key` of `store`, create-only. `Ok`
/// means: the tool exited 0, its output was a non-empty custom-format archive, and the store
/// committed exactly the bytes hashed. `Err` means nothing is left under `key` by this call.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
pub async fn stream_to_store(
    cmd: tokio::process::Command,
    spec: CompressSpec,
    recipients: Option<Recipients>,
    store: &dyn ObjectStore,
    key: &str,
    options: PutOptions,
    cancel: &CancellationToken,
    redact: &(dyn Fn(&str) -> String + Sync),
) -> Result<StreamStats, DbError> {
    stream_to_store_counted(cmd, spec, recipients, store, key, options, cancel, redact, &Counter::default()).await
}

/// [`stream_to_store`], adding the bytes the tool writes to `progress` as they are read.
#[allow(clippy::too_many_arguments)]
pub async fn stream_to_store_counted(
    mut cmd: tokio::process::Command,
    spec: CompressSpec,
    recipients: Option<Recipients>,
    store: &dyn ObjectStore,
    key: &str,
    options: PutOptions,
    cancel: &CancellationToken,
    redact: &(dyn Fn(&str) -> String + Sync),
    progress: &Counter,
) -> Result<StreamStats, DbError> {
    let tool = "pg_dump";
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut process = ToolProcess::spawn(tool, cmd)?;
    let stdout = match process.stdout() {
        Ok(out) => out,
        Err(e) => {
            process.stop().await;
            return Err(e.into());
        }
    };
    let mut writer = match store.create(key, options).await {
        Ok(w) => w,
        Err(e) => {
            process.stop().await;
            return Err(e.into());
        }
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let counter = progress.clone();
    let compress = tokio::task::spawn_blocking(move || compress_stream(stdout, spec, recipients, tx, &counter));

    let pumped = pump(&mut rx, writer.as_mut(), cancel).await;
    drop(rx); // unblocks the compressing thread if it still sends

    if let Err(e) = pumped {
        process.stop().await;
        // The thread ends at its next read (the pipe closed) or send (the channel closed); a
        // grandchild still holding the pipe must not hang the cleanup, hence the bound.
        let _ = tokio::time::timeout(Duration::from_secs(5), compress).await;
        let _ = writer.abort().await;
        return Err(e);
    }
    let compressed = compress.await.map_err(|e| DbError::Io(format!("the compressing thread failed: {e}")));
    let early = matches!(
        &compressed,
        Ok(Err(CompressFail::Header(_) | CompressFail::Read(_) | CompressFail::Compress(_))) | Err(_)
    );
    if early {
        // The stream is unusable whatever the tool does next: stop it.
        process.kill();
    }
    let Exit { status, stderr, .. } = match process.wait(cancel, redact).await {
        Some(Ok(exit)) => exit,
        Some(Err(e)) => {
            let _ = writer.abort().await;
            return Err(e.into());
        }
        None => {
            let _ = writer.abort().await;
            return Err(DbError::Cancelled);
        }
    };
    let outcome = match compressed {
        Err(e) => Err(e),
        Ok(Err(CompressFail::Header(head))) => Err(DbError::BadArchive(format!(
            "it starts with {:?}, not the custom-format header PGDMP{}",
            String::from_utf8_lossy(&head),
            if stderr.is_empty() { String::new() } else { format!(" (stderr: {stderr})") }
        ))),
        Ok(Err(CompressFail::Read(e))) => Err(DbError::Io(format!("reading the dump failed: {e}"))),
        Ok(Err(CompressFail::Compress(e))) => Err(DbError::Io(format!("compression failed: {e}"))),
        Ok(Err(CompressFail::Empty)) if status.success() => {
            Err(DbError::BadArchive("pg_dump exited 0 but wrote nothing".into()))
        }
        Ok(_) if !status.success() => Err(PgError::ToolFailed { tool, status, stderr: stderr.clone() }.into()),
        Ok(Err(CompressFail::Empty)) => Err(DbError::BadArchive("pg_dump wrote nothing".into())),
        Ok(Ok(v)) => Ok(v),
    };
    let (raw_bytes, hash) = match outcome {
        Ok(v) => v,
        Err(e) => {
            let _ = writer.abort().await;
            return Err(e);
        }
    };
    if !stderr.is_empty() {
        tracing::warn!(key, stderr, "{tool} succeeded with messages on stderr");
    }
    let object = writer.finish().await?;
    let (stored_bytes, sha256, crc32c) = hash.finish();
    if object.size != stored_bytes || object.crc32c.as_ref().is_some_and(|c| *c != crc32c) {
        let _ = store.delete(key).await;
        return Err(DbError::Verification(format!(
            "the store holds {} bytes with CRC32C {:?} for {key}, but {stored_bytes} bytes with CRC32C {crc32c} were sent",
            object.size, object.crc32c
        )));
    }
    Ok(StreamStats { raw_bytes, stored_bytes, sha256, crc32c, object })
}

/// What every database backup of a run shares.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Logical source (`db/<source>/…`).
    pub source: String,
    /// Connection.
    pub conn: Connection,
    /// The `pg_dump` to run.
    pub pg_dump: PathBuf,
    /// Its version.
    pub pg_dump_version: ToolVersion,
    /// The server's version.
    pub server: ServerVersion,
    /// Compression.
    pub spec: CompressSpec,
    /// Encrypt the compressed dump to these public keys (age); `None`: stored as compressed.
    pub encryption: Option<Recipients>,
    /// Count rows per table in the dump's snapshot.
    pub row_counts: bool,
    /// Checksum each table's content in the dump's snapshot (`BACKUP_TABLE_CHECKSUMS`); the same
    /// scan gives the row counts.
    pub table_checksums: bool,
    /// How often the dump logs a progress line.
    pub progress_interval: Duration,
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupDone {
    /// Where it is.
    pub path: DbBackupPath,
    /// Its manifest (as written).
    pub manifest: DbManifest,
    /// Wall time of the whole backup.
    pub elapsed: Duration,
}

impl BackupDone {
    /// The figures of the result event.
    pub fn figures(&self) -> BTreeMap<String, serde_json::Value> {
        let d = &self.manifest.dump;
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        let mut f = BTreeMap::new();
        f.insert("uncompressed_bytes".into(), d.uncompressed_bytes.into());
        f.insert("stored_bytes".into(), d.stored_bytes.into());
        f.insert("duration_ms".into(), u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX).into());
        f.insert("throughput_mib_s".into(), round2(d.uncompressed_bytes as f64 / 1_048_576.0 / secs).into());
        f.insert("compression_ratio".into(), round2(d.uncompressed_bytes as f64 / d.stored_bytes.max(1) as f64).into());
        f.insert("compression".into(), d.compression.extension().into());
        f.insert("encrypted".into(), d.encryption.is_some().into());
        if let Some(counts) = &self.manifest.row_counts {
            f.insert("tables".into(), counts.len().into());
            f.insert("rows".into(), counts.values().sum::<i64>().into());
        }
        f
    }

    /// One line for logs and summaries.
    pub fn describe(&self) -> String {
        let d = &self.manifest.dump;
        format!(
            "{} → {} in {:.1} s",
            units::bytes(d.uncompressed_bytes),
            units::bytes(d.stored_bytes),
            self.elapsed.as_secs_f64()
        )
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The open transaction whose exported snapshot the dump uses, and the tables to count in it.
struct SnapshotSession {
    client: tokio_postgres::Client,
    snapshot: String,
    tables: Vec<(String, String)>,
}

async fn open_snapshot(conn: &Connection, database: &str) -> Result<SnapshotSession, DbError> {
    let client = conn.connect(database).await?;
    let q = |e: tokio_postgres::Error| DbError::from(conn.query_error(database, &e));
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.map_err(q)?;
    let snapshot: String = client.query_one("SELECT pg_export_snapshot()", &[]).await.map_err(q)?.get(0);
    let tables = sql::user_tables(&client, conn, database).await?;
    Ok(SnapshotSession { client, snapshot, tables })
}

/// Backs up one database as run `run`. On `Err`, no manifest exists and whatever this call
/// committed has been deleted.
pub async fn backup_database(
    settings: &BackupSettings,
    store: &dyn ObjectStore,
    database: &DatabaseInfo,
    run: RunId,
    cancel: &CancellationToken,
) -> Result<BackupDone, DbError> {
    let clock = Instant::now();
    let started_at: DateTime<Utc> = Utc::now();
    let name = database.name.as_str();
    let conn = &settings.conn;
    let path = DbBackupPath { source: settings.source.clone(), database: name.to_owned(), run };
    let extension = match &settings.encryption {
        Some(r) => format!("{}.{}", settings.spec.compression.extension(), r.describe().format.extension()),
        None => settings.spec.compression.extension().to_owned(),
    };
    let key = path.dump_key(&extension);

    let session = if settings.row_counts || settings.table_checksums {
        match cancel.run_until_cancelled(open_snapshot(conn, name)).await {
            Some(s) => Some(s?),
            None => return Err(DbError::Cancelled),
        }
    } else {
        None
    };

    let mut cmd = process::command(&settings.pg_dump, conn, name);
    cmd.args(["--format=custom", "--compress=0", "--no-password"]);
    if let Some(s) = &session {
        cmd.arg(format!("--snapshot={}", s.snapshot));
    }

    let options = PutOptions {
        content_type: Some(
            match (&settings.encryption, settings.spec.compression) {
                (Some(_), _) => "application/octet-stream",
                (None, crate::core::db_manifest::Compression::Zstd) => "application/zstd",
                (None, crate::core::db_manifest::Compression::Gzip) => "application/gzip",
            }
            .into(),
        ),
        metadata: BTreeMap::from([
            (META_ENCODING.to_owned(), database.encoding.clone()),
            (META_COLLATE.to_owned(), database.collate.clone()),
            (META_CTYPE.to_owned(), database.ctype.clone()),
        ]),
        ..PutOptions::default()
    };
    tracing::info!(
        database = name,
        key,
        snapshot = session.as_ref().map(|s| s.snapshot.as_str()),
        encrypted_to = settings.encryption.as_ref().map(|r| r.keys().join(",")),
        "dump started"
    );

    // The estimate of the dump's size: the previous backup's, else the database's on disk.
    let estimate = match previous_dump_bytes(store, &path).await {
        Some(bytes) => Some(bytes),
        None => match &session {
            Some(s) => sql::database_size(&s.client).await,
            None => None,
        },
    };
    let progress = Progress::start(format!("dump of {name}"), Unit::Bytes, estimate, settings.progress_interval);
    let dump_cancel = cancel.child_token();
    let count_cancel = CancellationToken::new();
    let redact = |s: &str| conn.redact(s);
    let dump = async {
        let recipients = settings.encryption.clone();
        let r = stream_to_store_counted(
            cmd,
            settings.spec,
            recipients,
            store,
            &key,
            options,
            &dump_cancel,
            &redact,
            progress.counter(),
        )
        .await;
        if r.is_err() {
            count_cancel.cancel();
        }
        r
    };
    let counts = async {
        let Some(s) = &session else { return Ok((None, None)) };
        let scan = async {
            if settings.table_checksums {
                let sums = sql::table_checksums(&s.client, conn, name, &s.tables).await?;
                let counts = settings.row_counts.then(|| sums.iter().map(|(k, (n, _))| (k.clone(), *n)).collect());
                Ok::<_, PgError>((counts, Some(sums.into_iter().map(|(k, (_, sum))| (k, sum)).collect())))
            } else {
                Ok((Some(sql::count_rows(&s.client, conn, name, &s.tables).await?), None))
            }
        };
        let r = match count_cancel.run_until_cancelled(scan).await {
            Some(r) => r.map_err(DbError::from),
            None => {
                let _ = s.client.cancel_token().cancel_query(NoTls).await;
                Err(DbError::Cancelled)
            }
        };
        if r.is_err() {
            dump_cancel.cancel();
        }
        r
    };
    let (dumped, counted) = tokio::join!(dump, counts);
    progress.finish();
    if let Some(s) = session {
        // The snapshot was only read; end the transaction and the session.
        let _ = s.client.batch_execute("ROLLBACK").await;
    }
    let stats = match (dumped, counted) {
        (Ok(stats), Ok(counts)) => (stats, counts),
        (Ok(stats), Err(e)) => {
            delete_quietly(store, &stats.object.key).await;
            return Err(if cancel.is_cancelled() { DbError::Cancelled } else { e });
        }
        (Err(_), _) if cancel.is_cancelled() => return Err(DbError::Cancelled),
        (Err(DbError::Cancelled), Err(e)) => return Err(e),
        (Err(e), _) => return Err(e),
    };
    let (stats, (row_counts, table_checksums)) = stats;
    if cancel.is_cancelled() {
        delete_quietly(store, &key).await;
        return Err(DbError::Cancelled);
    }

    let dump = DumpObject {
        name: key.rsplit('/').next().unwrap_or(&key).to_owned(),
        compression: settings.spec.compression,
        level: settings.spec.level,
        uncompressed_bytes: stats.raw_bytes,
        stored_bytes: stats.stored_bytes,
        sha256: stats.sha256.clone(),
        crc32c: stats.crc32c.clone(),
        encryption: settings.encryption.as_ref().map(Recipients::describe),
    };
    let manifest = DbManifest {
        format: DB_FORMAT.into(),
        format_version: dump.format_version(),
        backup_id: path.run.to_string(),
        source: settings.source.clone(),
        database: name.to_owned(),
        server_version: settings.server.text.clone(),
        pg_dump_version: settings.pg_dump_version.text.clone(),
        lifeboat_version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        finished_at: Utc::now(),
        dump,
        row_counts,
        table_checksums,
    };
    let manifest_options = PutOptions { content_type: Some("application/json".into()), ..PutOptions::default() };
    match store.put(&path.manifest_key(), Bytes::from(manifest.to_json()), manifest_options).await {
        Ok(_) => {}
        Err(e @ StoreError::AlreadyExists { .. }) => {
            // Another run owns this name: its objects are not ours to delete.
            return Err(e.into());
        }
        Err(e) => {
            // A manifest that failed may still have been stored (lost reply): remove both.
            delete_quietly(store, &path.manifest_key()).await;
            delete_quietly(store, &key).await;
            return Err(e.into());
        }
    }
    let done = BackupDone { path, manifest, elapsed: clock.elapsed() };
    tracing::info!(database = name, backup_id = done.manifest.backup_id, "backup complete: {}", done.describe());
    Ok(done)
}

/// Bytes `pg_dump` wrote for the newest complete backup of the same database, from its
/// manifest; `None` for a first backup or an unreadable manifest (only an estimate).
async fn previous_dump_bytes(store: &dyn ObjectStore, path: &DbBackupPath) -> Option<u64> {
    use futures::TryStreamExt as _;
    let prefix = DbBackupPath::series_prefix(&path.source, &path.database);
    let listing: Vec<ObjectMeta> = store.list_all(&prefix).try_collect().await.ok()?;
    let newest = listing.iter().filter(|o| o.key.ends_with("/manifest.json")).map(|o| &o.key).max()?;
    let bytes = store.read_all(newest, crate::core::db_manifest::MAX_MANIFEST_BYTES).await.ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    manifest.pointer("/dump/uncompressed_bytes")?.as_u64()
}

async fn delete_quietly(store: &dyn ObjectStore, key: &str) {
    if let Err(e) = store.delete(key).await {
        tracing::warn!(key, error = %e, "could not delete an object of a failed backup; prune collects it later");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::db_manifest::Compression;
    use crate::store::Location;
    use crate::store::local::LocalStore;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStore::open(Location::Local { root: dir.path().to_path_buf() }).expect("open");
        (dir, s)
    }

    fn sh(script: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    const SPEC: CompressSpec = CompressSpec { compression: Compression::Zstd, level: 3, threads: 2, job_mib: 2 };

    async fn run(script: &str) -> (tempfile::TempDir, LocalStore, Result<StreamStats, DbError>) {
        let (d, s) = store();
        let r = stream_to_store(
            sh(script),
            SPEC,
            None,
            &s,
            "db/x/y/dump.pgc.zst",
            PutOptions::default(),
            &CancellationToken::new(),
            &|t: &str| t.replace("hunter2", "[redacted]"),
        )
        .await;
        (d, s, r)
    }

    async fn nothing_stored(s: &LocalStore) {
        assert!(s.list_page("", None, 10).await.expect("list").objects.is_empty());
    }

    #[tokio::test]
    async fn a_good_stream_is_stored_with_its_hashes() {
        let (_d, s, r) = run("printf PGDMP; head -c 3000000 /dev/zero").await;
        let stats = r.expect("stored");
        assert_eq!(stats.raw_bytes, 3_000_005);
        let stored = s.read_all("db/x/y/dump.pgc.zst", 1 << 30).await.expect("read");
        assert_eq!(stored.len() as u64, stats.stored_bytes);
        let mut h = StreamHash::default();
        h.update(&stored);
        assert_eq!(h.finish().1, stats.sha256);
        let raw = zstd::decode_all(&stored[..]).expect("decodes");
        assert_eq!(&raw[..5], b"PGDMP");
        assert_eq!(raw.len(), 3_000_005);
    }

    #[tokio::test]
    async fn non_zero_exit_fails_with_redacted_stderr() {
        let (_d, s, r) =
            run("printf PGDMP; head -c 3000000 /dev/zero; echo 'FATAL: password hunter2 is wrong' >&2; exit 1").await;
        let e = r.expect_err("exit 1").to_string();
        assert!(e.contains("exit code 1") && e.contains("FATAL: password [redacted] is wrong"), "{e}");
        assert!(!e.contains("hunter2"));
        nothing_stored(&s).await;
    }

    #[tokio::test]
    async fn death_by_signal_fails() {
        let (_d, s, r) = run("printf PGDMP; head -c 2000000 /dev/zero; kill -9 $$").await;
        let e = r.expect_err("killed").to_string();
        assert!(e.contains("killed by signal 9"), "{e}");
        nothing_stored(&s).await;
    }

    #[tokio::test]
    async fn empty_and_foreign_output_fail() {
        let (_d, s, r) = run("true").await;
        assert!(r.expect_err("empty").to_string().contains("wrote nothing"));
        nothing_stored(&s).await;
        let (_d, s, r) = run("echo '-- PostgreSQL database dump'; head -c 5000000 /dev/zero").await;
        let e = r.expect_err("plain").to_string();
        assert!(e.contains("not the custom-format header"), "{e}");
        nothing_stored(&s).await;
        let (_d, s, r) = run("printf PGD").await;
        assert!(r.expect_err("short").to_string().contains("not the custom-format header"));
        nothing_stored(&s).await;
    }

    #[tokio::test]
    async fn a_missing_tool_fails_clearly() {
        let (_d, s) = store();
        let cmd = tokio::process::Command::new("/nonexistent/pg_dump");
        let e =
            stream_to_store(cmd, SPEC, None, &s, "k", PutOptions::default(), &CancellationToken::new(), &|t: &str| {
                t.to_owned()
            })
            .await
            .expect_err("missing");
        assert!(e.to_string().contains("cannot start /nonexistent/pg_dump"), "{e}");
    }

    #[tokio::test]
    async fn cancellation_kills_the_tool_and_stores_nothing() {
        let (_d, s) = store();
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c2.cancel();
        });
        let t = Instant::now();
        let r = stream_to_store(
            sh("printf PGDMP; exec cat /dev/zero"),
            SPEC,
            None,
            &s,
            "k",
            PutOptions::default(),
            &cancel,
            &|t: &str| t.to_owned(),
        )
        .await;
        assert!(matches!(r, Err(DbError::Cancelled)), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
        nothing_stored(&s).await;
    }

    #[tokio::test]
    async fn a_taken_name_is_not_overwritten() {
        let (_d, s) = store();
        s.put("k", Bytes::from_static(b"first"), PutOptions::default()).await.expect("put");
        let r = stream_to_store(
            sh("printf PGDMP"),
            SPEC,
            None,
            &s,
            "k",
            PutOptions::default(),
            &CancellationToken::new(),
            &|t: &str| t.to_owned(),
        )
        .await;
        assert!(matches!(r, Err(DbError::Store(StoreError::AlreadyExists { .. }))), "{r:?}");
        assert_eq!(s.read_all("k", 100).await.expect("read"), Bytes::from_static(b"first"));
    }
}
