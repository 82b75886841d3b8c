//! Database drills: the newest complete backup of a database is restored into a scratch
//! database (`lifeboat_drill_<db>_<ts>`, see [`crate::core::drill`]) on the drill server, with
//! every check of a restore (size, CRC32C, SHA-256, decryption, decompression, `pg_restore`
//! exit 0, row counts), timed, and the scratch database dropped on every path.
//!
//! A drill never touches a database whose name does not start with `lifeboat_drill_`: the name
//! is checked before each `CREATE` and `DROP`, and a scratch name that already exists is
//! refused (another drill owns it), never dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::DbError;
use super::restore::{self, RestoreDone, RestoreSettings, Selector};
use crate::core::drill::{
    DrillKind, DrillOutcome, DrillRecord, SCRATCH_PREFIX, check_scratch_name, db_record_key, scratch_database_name,
    scratch_started,
};
use crate::core::naming::DbBackupPath;
use crate::postgres::sql;
use crate::postgres::{Connection, PgError};
use crate::store::ObjectStore;

/// A scratch database older than this is taken for the leftover of a killed drill and dropped
/// by the next drill (no drill runs this long: the Cloud Run job's timeout is shorter).
pub const STALE_SCRATCH: Duration = Duration::from_secs(24 * 3600);

/// What a database drill needs.
#[derive(Debug, Clone)]
pub struct DbDrillSettings {
    /// The backups' `BACKUP_SOURCE`.
    pub source: String,
    /// How to restore: the drill server's connection, `pg_restore`, identities.
    pub restore: RestoreSettings,
}

/// One drilled backup: where its record goes, and the record.
#[derive(Debug, Clone)]
pub struct Drilled {
    /// The record's key (`…/drills/<ts>.json` inside the backup's folder).
    pub key: String,
    /// The record.
    pub record: DrillRecord,
}

/// Drills the newest complete backup of `database`. `Err` only when there is no backup to drill
/// (none complete, or the listing failed): then no record can be written beside one. Every
/// failure after a backup was chosen is a failed record.
pub async fn drill_database(
    settings: &DbDrillSettings,
    store: &dyn ObjectStore,
    database: &str,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<Drilled, DbError> {
    let path = newest_complete(store, &settings.source, database).await?;
    let key = db_record_key(&path, now);
    let mut record =
        DrillRecord::started(DrillKind::Db, settings.source.clone(), database.to_owned(), path.run.clone(), now);
    let scratch = scratch_database_name(database, now);
    tracing::info!(database, backup_id = %path.run, scratch, "drill: restoring into a scratch database");
    match scratch_is_free(&settings.restore.conn, &scratch).await {
        Err(e) => {
            // Nothing was created: nothing to drop (an existing one belongs to another drill).
            tracing::error!(database, error = %e, "drill failed");
            record.error = Some(e.to_string());
        }
        Ok(()) => {
            let restored = restore_scratch(settings, store, &path, database, &scratch, cancel).await;
            // Whatever happened, the scratch database goes (the restore drops its side database
            // on a failure; this drops the verified copy, and retries a drop that failed there).
            let dropped = drop_scratch(&settings.restore.conn, &scratch).await;
            match (restored, dropped) {
                (Ok(done), Ok(())) => {
                    record.outcome = DrillOutcome::Passed;
                    record.rto_seconds = Some(round_ms(done.elapsed));
                    record.bytes = done.stored_bytes;
                    record.tables = Some(u64::try_from(done.tables_verified).unwrap_or(u64::MAX));
                    record.rows = Some(done.rows_verified);
                    tracing::info!(
                        database,
                        scratch,
                        rto_s = done.elapsed.as_secs_f64(),
                        "drill passed; scratch database dropped"
                    );
                }
                (Ok(done), Err(e)) => {
                    record.bytes = done.stored_bytes;
                    record.error = Some(format!(
                        "the backup restored and verified, but the scratch database {scratch:?} could NOT be dropped: {e}"
                    ));
                }
                (Err(e), dropped) => {
                    let mut text = e.to_string();
                    if let Err(d) = dropped {
                        text.push_str(&format!("; the scratch database {scratch:?} could NOT be dropped: {d}"));
                    }
                    tracing::error!(database, error = text, "drill failed");
                    record.error = Some(text);
                }
            }
        }
    }
    record.finished_at = Utc::now();
    Ok(Drilled { key, record })
}

/// The newest complete backup of `database` (the manifest is read again by the restore).
async fn newest_complete(store: &dyn ObjectStore, source: &str, database: &str) -> Result<DbBackupPath, DbError> {
    let entries = restore::list_backups(store, source, database).await?;
    entries.into_iter().rev().find(|e| e.complete).map(|e| e.path).ok_or_else(|| {
        DbError::NotFound(format!(
            "no complete backup of database {database:?} (source {source:?}) in {} to drill",
            store.location()
        ))
    })
}

/// Refuses a scratch name that is not a drill's, or that exists already (another drill's).
async fn scratch_is_free(conn: &Connection, scratch: &str) -> Result<(), DbError> {
    check_scratch_name(scratch).map_err(|e| DbError::Refused(e.to_string()))?;
    let admin = conn.connect(&conn.maintenance_db).await?;
    if sql::database_info(&admin, conn, &conn.maintenance_db, scratch).await?.is_some() {
        return Err(DbError::Refused(format!(
            "the scratch database {scratch:?} already exists (another drill is using it); left alone"
        )));
    }
    Ok(())
}

async fn restore_scratch(
    settings: &DbDrillSettings,
    store: &dyn ObjectStore,
    path: &DbBackupPath,
    database: &str,
    scratch: &str,
    cancel: &CancellationToken,
) -> Result<RestoreDone, DbError> {
    let (chosen, manifest) =
        restore::choose(store, &settings.source, database, &Selector::Id(path.run.clone())).await?;
    let done =
        restore::restore_into_new_database(&settings.restore, store, &chosen, &manifest, scratch, cancel).await?;
    if let Some(expected) = &manifest.table_checksums {
        let checked = verify_table_checksums(&settings.restore.conn, scratch, expected).await?;
        tracing::info!(database, scratch, tables = checked, "drill: table checksums match the backup's");
    }
    Ok(done)
}

/// Compares the content checksum of every table the manifest checksummed (at backup time, in
/// the dump's snapshot) with the same query on the restored copy `scratch`; returns how many
/// matched, or a verification error naming every table that differs or cannot be read.
pub async fn verify_table_checksums(
    conn: &Connection,
    scratch: &str,
    expected: &BTreeMap<String, String>,
) -> Result<usize, DbError> {
    let client = conn.connect(scratch).await?;
    client.batch_execute(sql::CHECKSUM_SESSION).await.map_err(|e| conn.query_error(scratch, &e))?;
    let mut mismatches = Vec::new();
    for (key, want) in expected {
        let Some((schema, table)) = sql::parse_qualified(key) else {
            mismatches.push(format!("{key}: not a table name"));
            continue;
        };
        match client.query_one(&sql::table_checksum_query(&schema, &table), &[]).await {
            Ok(row) => {
                let got: String = row.get(1);
                if &got != want {
                    mismatches.push(format!("{key}: content checksum {got}, backup had {want}"));
                }
            }
            Err(e) => mismatches.push(format!("{key}: {}", conn.describe(&e))),
        }
    }
    if mismatches.is_empty() {
        return Ok(expected.len());
    }
    Err(DbError::Verification(format!(
        "table content differs from the backup's snapshot in {} of {} tables: {}",
        mismatches.len(),
        expected.len(),
        mismatches.join("; ")
    )))
}

/// Drops the scratch database `name` (refusing any other name); no error when it is gone.
pub async fn drop_scratch(conn: &Connection, name: &str) -> Result<(), DbError> {
    check_scratch_name(name).map_err(|e| DbError::Refused(e.to_string()))?;
    let maintenance = &conn.maintenance_db;
    let admin = conn.connect(maintenance).await?;
    let server = sql::server_version(&admin, conn, maintenance).await?;
    sql::drop_database(&admin, conn, maintenance, name, server.num).await?;
    Ok(())
}

/// Drops the scratch databases that killed drills left on the drill server (started more than
/// [`STALE_SCRATCH`] before `now`); returns their names. Younger ones may be in use and are
/// left alone.
pub async fn drop_stale_scratch(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<String>, PgError> {
    let maintenance = &conn.maintenance_db;
    let admin = conn.connect(maintenance).await?;
    let pattern = format!("{}%", SCRATCH_PREFIX.replace('_', "\\_"));
    let rows = admin
        .query("SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1", &[&pattern])
        .await
        .map_err(|e| conn.query_error(maintenance, &e))?;
    let stale: Vec<String> = rows
        .into_iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|name| {
            scratch_started(name)
                .is_some_and(|t| now - t > chrono::Duration::from_std(STALE_SCRATCH).unwrap_or_default())
        })
        .collect();
    if stale.is_empty() {
        return Ok(stale);
    }
    let server = sql::server_version(&admin, conn, maintenance).await?;
    for name in &stale {
        tracing::warn!(database = name, "dropping a scratch database a killed drill left behind");
        sql::drop_database(&admin, conn, maintenance, name, server.num).await?;
    }
    Ok(stale)
}

/// Seconds, to the millisecond.
fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
