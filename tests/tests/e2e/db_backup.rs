//! `db-backup` and `restore db` against the real PostgreSQL server, the `file://` store and
//! fake-gcs-server: round trips that must restore identical databases, and every failure that
//! must leave no manifest (nothing `health` or `restore` would take for a good backup).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_core::core::events::Outcome;
use lifeboat_core::core::naming::{DbBackupPath, RunId};
use lifeboat_core::db::DbError;
use lifeboat_core::db::restore::{BackupEntry, list_backups};
use lifeboat_core::store::gcs::GcsStore;
use lifeboat_core::store::{DynStore, Location, ObjectStore as _, ObjectStoreExt as _};
use tokio_util::sync::CancellationToken;

use crate::support::postgres::*;
use crate::support::{free_port, gcs_store_with, local_store, require_env, unique};

/// A table of `rows` rows with text, for small fixtures.
fn small_fixture(rows: u32) -> String {
    format!(
        "CREATE TABLE t (id int PRIMARY KEY, s text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;"
    )
}

fn file_url(dir: &tempfile::TempDir) -> String {
    format!("file://{}", dir.path().display())
}

fn target_of(result: &lifeboat_core::core::events::RunResult) -> String {
    result.items[0].figures.get("target").and_then(|v| v.as_str()).expect("target figure").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_the_file_store_restores_an_identical_database() {
    let db = TestDb::create("lb-rich");
    db.sql(RICH_SCHEMA);
    let (dir, store) = local_store();
    let env = run_env(&db.server, &file_url(&dir)).with("BACKUP_DATABASES", &db.name);

    let result = run_backup(&env, store.clone()).await;
    let id = expect_success(&result);
    let figures = &result.items[0].figures;
    for f in
        ["uncompressed_bytes", "stored_bytes", "duration_ms", "throughput_mib_s", "compression_ratio", "tables", "rows"]
    {
        assert!(figures.contains_key(f), "figure {f} missing: {figures:?}");
    }
    let m = manifest(&store, "main", &db.name, &id).await;
    assert_eq!((m.dump.name.as_str(), m.dump.level, m.database.as_str()), ("dump.pgc.zst", 3, db.name.as_str()));
    assert!(m.server_version.starts_with("15") || !m.server_version.is_empty());
    assert!(m.pg_dump_version.starts_with("pg_dump (PostgreSQL)"), "{}", m.pg_dump_version);
    let dump_key = format!("{}{id}/dump.pgc.zst", DbBackupPath::series_prefix("main", &db.name));
    let stored = store.read_all(&dump_key, 1 << 30).await.expect("dump");
    assert_eq!(stored.len() as u64, m.dump.stored_bytes);
    assert!(m.dump.uncompressed_bytes > m.dump.stored_bytes);
    let raw = zstd_decode(&stored);
    assert_eq!(&raw[..5], b"PGDMP", "custom-format archive");
    assert_eq!(raw.len() as u64, m.dump.uncompressed_bytes);
    let counts = m.row_counts.clone().expect("row counts");
    assert_eq!(counts.get("public.plain"), Some(&5002));
    assert_eq!(counts.get("\"Sales \"\"EU\"\"\".\"Orders.2026\""), Some(&3000));
    assert_eq!(counts.get("\"ünïcödé\".\"täble \"\"quoted\"\"\""), Some(&500));
    assert_eq!(counts.get("public.\"MixedCase\""), Some(&2));
    assert_eq!(counts.get("public.empty"), Some(&0));
    assert_eq!(
        counts.get("inventory.events_2025").zip(counts.get("inventory.events_2026")).map(|(a, b)| a + b),
        Some(400)
    );
    assert!(!counts.contains_key("inventory.events"), "partitioned parents are counted through their partitions");
    assert!(!counts.contains_key("inventory.big_orders") && !counts.contains_key("inventory.by_status"));

    // Streaming restore into the default target.
    let restored = run_restore(&env, store.clone(), &["db", "--database", &db.name]).await;
    let target = target_of(&restored);
    db.drop_later(&target);
    assert_eq!(restored.outcome, Outcome::Success, "{restored:?}");
    assert_eq!(restored.items[0].backup_id.as_deref(), Some(id.as_str()));
    assert!(target.starts_with(&format!("{}_restored_", db.name)), "{target}");
    assert_eq!(
        restored.items[0].figures.get("tables_verified").and_then(serde_json::Value::as_u64),
        Some(counts.len() as u64)
    );
    db.server.assert_identical(&db.name, &target);

    // Parallel restore (download, verify, pg_restore -j 2) into a named target.
    let parallel = unique("lb-rich-j");
    db.drop_later(&parallel);
    let restored =
        run_restore(&env, store.clone(), &["db", "--database", &db.name, "--target", &parallel, "--jobs", "2"]).await;
    assert_eq!(restored.outcome, Outcome::Success, "{restored:?}");
    db.server.assert_identical(&db.name, &parallel);
}

fn zstd_decode(data: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let mut d =
        lifeboat_core::db::codec::decoder(lifeboat_core::core::db_manifest::Compression::Zstd, data).expect("decoder");
    d.read_to_end(&mut out).expect("decodes");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_fake_gcs_with_gzip_small_chunks_and_an_odd_database_name() {
    let server = Server::from_env();
    let name = format!("Odd \"Name\" ünï.{}", unique("x"));
    server.psql("postgres", &format!("CREATE DATABASE {}", ident(&name)));
    let db = TestDb { name: name.clone(), server: server.clone(), also_drop: Default::default() };
    db.sql(RICH_SCHEMA);
    let store = gcs_store_with(256 * 1024, "backups").await;
    let destination = store.location().to_string();
    let store: DynStore = Arc::new(store);
    let env = run_env(&server, &destination)
        .with("STORAGE_EMULATOR_HOST", &require_env("STORAGE_EMULATOR_HOST"))
        .with("BACKUP_DATABASES", &name)
        .with("BACKUP_COMPRESSION", "gzip")
        .with("BACKUP_COMPRESSION_LEVEL", "1");
    let result = run_backup(&env, store.clone()).await;
    let id = expect_success(&result);
    let m = manifest(&store, "main", &name, &id).await;
    assert_eq!((m.dump.name.as_str(), m.dump.level), ("dump.pgc.gz", 1));
    assert!(m.dump.stored_bytes > 4 * 256 * 1024, "the upload spans several resumable chunks: {}", m.dump.stored_bytes);
    let dump_key = format!("{}{id}/dump.pgc.gz", DbBackupPath::series_prefix("main", &name));
    assert!(dump_key.contains("Odd%20%22Name%22%20%C3%BCn%C3%AF%2Ex-"), "{dump_key}");
    let meta = store.stat(&dump_key).await.expect("dump object");
    assert_eq!(meta.size, m.dump.stored_bytes);
    assert_eq!(meta.crc32c.as_deref(), Some(m.dump.crc32c.as_str()), "GCS's CRC32C is the manifest's");

    let target = unique("lb-gcs-restored");
    db.drop_later(&target);
    let restored = run_restore(&env, store.clone(), &["db", "--database", &name, "--target", &target]).await;
    assert_eq!(restored.outcome, Outcome::Success, "{restored:?}");
    server.assert_identical(&name, &target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_database_does_not_stop_the_others() {
    let a = TestDb::create("lb-a");
    a.sql(&small_fixture(100));
    let b = TestDb::create("lb-b");
    b.sql(&small_fixture(200));
    let missing = unique("lb-missing");
    let (dir, store) = local_store();
    let env = run_env(&a.server, &file_url(&dir))
        .with("BACKUP_DATABASES", &format!("{},{missing},{}", a.name, b.name))
        .with("BACKUP_CONCURRENCY", "2");
    let result = run_backup(&env, store.clone()).await;
    expect_failure(&result, &missing, &["does not exist"]);
    assert_eq!(result.items.len(), 3);
    assert_eq!(
        result.items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        [a.name.as_str(), missing.as_str(), b.name.as_str()]
    );
    for (db, rows) in [(&a, 100), (&b, 200)] {
        let item = result.items.iter().find(|i| i.name == db.name).expect("item");
        assert_eq!(item.outcome, Outcome::Success, "{item:?}");
        let m = manifest(&store, "main", &db.name, item.backup_id.as_deref().expect("id")).await;
        assert_eq!(m.row_counts.and_then(|c| c.get("public.t").copied()), Some(rows));
    }
    assert!(db_keys(&store).await.iter().all(|k| !k.contains(&missing)));
    assert_eq!(result.figures.get("failed").and_then(serde_json::Value::as_u64), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_killed_mid_stream_leaves_no_manifest() {
    let db = TestDb::create("lb-killed");
    db.sql(&small_fixture(60_000));
    let tools = fake_bin_dir(
        "case \"$1\" in --version) exec \"$REAL\" --version;; esac\n\"$REAL\" \"$@\" | head -c 300000\nkill -KILL $$",
    );
    let (dir, store) = local_store();
    let env = run_env(&db.server, &file_url(&dir))
        .with("BACKUP_DATABASES", &db.name)
        .with("LIFEBOAT_PG_BIN_DIR", &tools.path().to_string_lossy());
    let result = run_backup(&env, store.clone()).await;
    expect_failure(&result, &db.name, &["pg_dump failed (killed by signal 9"]);
    assert_nothing_stored(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_failing_after_a_valid_header_leaves_no_manifest() {
    let db = TestDb::create("lb-exit1");
    let tools = fake_bin_dir(
        "case \"$1\" in --version) exec \"$REAL\" --version;; esac\nprintf PGDMP\nhead -c 500000 /dev/urandom\n\
         echo 'pg_dump: error: simulated failure' >&2\nexit 1",
    );
    let (dir, store) = local_store();
    let env = run_env(&db.server, &file_url(&dir))
        .with("BACKUP_DATABASES", &db.name)
        .with("LIFEBOAT_PG_BIN_DIR", &tools.path().to_string_lossy());
    let result = run_backup(&env, store.clone()).await;
    expect_failure(&result, &db.name, &["exit code 1", "simulated failure"]);
    assert_nothing_stored(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_older_than_the_server_is_refused_up_front() {
    let db = TestDb::create("lb-old");
    let tools = fake_bin_dir(
        "case \"$1\" in --version) echo 'pg_dump (PostgreSQL) 9.6.24'; exit 0;; esac\ntouch \"$(dirname \"$0\")/ran\"\nexit 1",
    );
    let (dir, store) = local_store();
    let env = run_env(&db.server, &file_url(&dir))
        .with("BACKUP_DATABASES", &db.name)
        .with("LIFEBOAT_PG_BIN_DIR", &tools.path().to_string_lossy());
    let result = run_backup(&env, store.clone()).await;
    let e = expect_failure(
        &result,
        &db.name,
        &["pg_dump (PostgreSQL) 9.6.24 cannot dump this server", "must be version 15 or newer"],
    );
    assert!(e.contains("LIFEBOAT_PG_BIN_DIR"), "{e}");
    assert!(!tools.path().join("ran").exists(), "the old pg_dump must not even be started");
    assert_nothing_stored(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_without_leaking_it_and_the_right_one_works() {
    let cluster = tokio::task::spawn_blocking(PasswordCluster::start).await.expect("cluster");
    let server = Server { host: "127.0.0.1".into(), port: cluster.port.to_string(), user: "postgres".into() };
    let (dir, store) = local_store();
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let env = run_env(&server, &file_url(&dir)).with("BACKUP_DATABASES", "postgres").with("PGPASSWORD", &wrong);
    let result = run_backup(&env, store.clone()).await;
    expect_failure(&result, "postgres", &["password authentication failed"]);
    let json = serde_json::to_string(&result).expect("json");
    assert!(!json.contains(&wrong), "the password leaked into the result: {json}");
    assert_nothing_stored(&store).await;

    // The same through DATABASE_URL (the password inside the URL must not leak either).
    let url = format!("postgresql://postgres:{wrong}@127.0.0.1:{}/postgres", cluster.port);
    let env = run_env(&server, &file_url(&dir))
        .with("PGHOST", "")
        .with("PGPORT", "")
        .with("BACKUP_DATABASES", "postgres")
        .with("DATABASE_URL", &url);
    let result = run_backup(&env, store.clone()).await;
    expect_failure(&result, "postgres", &["password authentication failed"]);
    assert!(!serde_json::to_string(&result).expect("json").contains(&wrong));

    // The right password reaches pg_dump through its environment.
    let env =
        run_env(&server, &file_url(&dir)).with("BACKUP_DATABASES", "postgres").with("PGPASSWORD", &cluster.password);
    let result = run_backup(&env, store.clone()).await;
    let id = expect_success(&result);
    let m = manifest(&store, "main", "postgres", &id).await;
    assert!(m.dump.stored_bytes > 0);
    assert!(!serde_json::to_string(&result).expect("json").contains(&cluster.password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_database_fails() {
    let server = Server::from_env();
    let missing = unique("lb-nope");
    let (dir, store) = local_store();
    let env = run_env(&server, &file_url(&dir)).with("BACKUP_DATABASES", &missing);
    let result = run_backup(&env, store.clone()).await;
    expect_failure(&result, &missing, &["does not exist"]);
    assert_nothing_stored(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_fails() {
    let server = Server { port: free_port().to_string(), ..Server::from_env() };
    let (dir, store) = local_store();
    let env = run_env(&server, &file_url(&dir)).with("BACKUP_DATABASES", "app");
    let t = Instant::now();
    let result = run_backup(&env, store.clone()).await;
    expect_failure(&result, "app", &["cannot connect to database"]);
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_nothing_stored(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_endpoint_down_mid_upload_leaves_no_manifest() {
    let db = TestDb::create("lb-storage-down");
    db.sql("CREATE EXTENSION pgcrypto; CREATE TABLE r AS SELECT g, gen_random_bytes(1024) AS b FROM generate_series(1, 8000) g;");
    let storage = DyingStorage::start(3 * 1024 * 1024).await;
    let bucket = unique("lb-down");
    let location: Location = format!("gs://{bucket}").parse().expect("location");
    let direct =
        GcsStore::connect(location.clone(), Some(&format!("http://127.0.0.1:{}", storage.direct_port)), 256 * 1024)
            .await
            .expect("connect");
    direct.create_bucket("lifeboat-local").await.expect("bucket");
    let proxy_url = format!("http://127.0.0.1:{}", storage.port);
    let store: DynStore =
        Arc::new(GcsStore::connect(location.clone(), Some(&proxy_url), 1024 * 1024).await.expect("connect"));
    let env = run_env(&db.server, &location.to_string())
        .with("STORAGE_EMULATOR_HOST", &proxy_url)
        .with("BACKUP_DATABASES", &db.name)
        .with("LIFEBOAT_UPLOAD_CHUNK_MIB", "1");
    let t = Instant::now();
    let result = run_backup(&env, store).await;
    let e = expect_failure(&result, &db.name, &[]);
    assert!(
        storage.forwarded.load(std::sync::atomic::Ordering::SeqCst) > 3 * 1024 * 1024,
        "the endpoint died mid-upload"
    );
    assert!(t.elapsed() < Duration::from_secs(120), "gave up in time");
    assert!(e.contains(&bucket), "the error names the store: {e}");
    let direct: DynStore = Arc::new(direct);
    assert_nothing_stored(&direct).await;
}

async fn race(store: DynStore, destination: &str) {
    let db = TestDb::create("lb-race");
    db.sql(&small_fixture(20_000));
    let env = run_env(&db.server, destination).with("BACKUP_DATABASES", &db.name);
    let app = backup_app(&env, store.clone()).await;
    let run = RunId::new(chrono::Utc::now());
    let cancel = CancellationToken::new();
    let (first, second) =
        tokio::join!(app.backup_one(&db.name, run.clone(), &cancel), app.backup_one(&db.name, run.clone(), &cancel));
    let (won, lost) = match (first, second) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        (a, b) => panic!("exactly one run must win the name: {a:?} / {b:?}"),
    };
    assert!(matches!(lost, DbError::Store(lifeboat_core::store::StoreError::AlreadyExists { .. })), "{lost}");
    assert_eq!(won.manifest.backup_id, run.to_string());
    // The winner's backup is intact: it restores and verifies.
    let target = unique("lb-race-restored");
    db.drop_later(&target);
    let restored = run_restore(
        &env,
        store.clone(),
        &["db", "--database", &db.name, "--backup-id", &run.to_string(), "--target", &target],
    )
    .await;
    assert_eq!(restored.outcome, Outcome::Success, "{restored:?}");
    db.server.assert_identical(&db.name, &target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_racing_for_the_same_name_fails_and_spares_the_first_file_store() {
    let (dir, store) = local_store();
    race(store, &file_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_racing_for_the_same_name_fails_and_spares_the_first_fake_gcs() {
    let store = gcs_store_with(8 * 1024 * 1024, "").await;
    let destination = store.location().to_string();
    race(Arc::new(store), &destination).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_mid_dump_kills_pg_dump_and_leaves_nothing() {
    let db = TestDb::create("lb-cancel");
    let tools = fake_bin_dir(
        "case \"$1\" in --version) exec \"$REAL\" --version;; esac\nprintf PGDMP\nhead -c 300000 /dev/urandom\nexec sleep 120",
    );
    let (dir, store) = local_store();
    let env = run_env(&db.server, &file_url(&dir))
        .with("BACKUP_DATABASES", &db.name)
        .with("LIFEBOAT_PG_BIN_DIR", &tools.path().to_string_lossy());
    let app = backup_app(&env, store.clone()).await;
    let ctx = lifeboat_core::runtime::RunContext::new(lifeboat_core::runtime::Trigger::Job);
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cancel.cancel();
    });
    let t = Instant::now();
    let result = lifeboat_core::runtime::Program::run(&app, ctx).await;
    assert!(t.elapsed() < Duration::from_secs(10), "a cancelled run stops within Cloud Run's grace period");
    expect_failure(&result, &db.name, &["cancelled"]);
    assert_nothing_stored(&store).await;
}

/// Backs up `db` into `store` and returns the backup id.
async fn backup(db: &TestDb, store: &DynStore, dir: &tempfile::TempDir) -> String {
    let env = run_env(&db.server, &file_url(dir)).with("BACKUP_DATABASES", &db.name);
    expect_success(&run_backup(&env, store.clone()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_object_is_refused_and_the_half_restored_database_dropped() {
    let db = TestDb::create("lb-corrupt");
    db.sql("CREATE EXTENSION pgcrypto; CREATE TABLE r AS SELECT g, gen_random_bytes(512) AS b, md5(g::text) AS s FROM generate_series(1, 4000) g;");
    let (dir, store) = local_store();
    let id = backup(&db, &store, &dir).await;
    let env = run_env(&db.server, &file_url(&dir));
    let path = dir.path().join(format!("{}{id}/dump.pgc.zst", DbBackupPath::series_prefix("main", &db.name)));
    let mut bytes = std::fs::read(&path).expect("dump file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01; // one bit of one byte
    std::fs::write(&path, &bytes).expect("write");
    for jobs in [None, Some("2")] {
        let target = unique("lb-corrupt-restored");
        db.drop_later(&target);
        let mut args = vec!["db", "--database", db.name.as_str(), "--target", target.as_str()];
        if let Some(j) = jobs {
            args.extend(["--jobs", j]);
        }
        let result = run_restore(&env, store.clone(), &args).await;
        assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
        let e = result.items[0].error.clone().expect("error");
        assert!(e.contains("corrupted") && e.contains("restore refused"), "{e}");
        assert!(!db.server.exists(&target), "the half-restored database {target} was not dropped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_counts_that_differ_from_the_manifest_fail_the_restore() {
    let db = TestDb::create("lb-counts");
    db.sql(&small_fixture(1000));
    let (dir, store) = local_store();
    let id = backup(&db, &store, &dir).await;
    let path = dir.path().join(format!("{}{id}/manifest.json", DbBackupPath::series_prefix("main", &db.name)));
    let text = std::fs::read_to_string(&path).expect("manifest");
    assert!(text.contains("\"public.t\": 1000"), "{text}");
    std::fs::write(&path, text.replace("\"public.t\": 1000", "\"public.t\": 1001")).expect("write");
    let target = unique("lb-counts-restored");
    db.drop_later(&target);
    let env = run_env(&db.server, &file_url(&dir));
    let result = run_restore(&env, store.clone(), &["db", "--database", &db.name, "--target", &target]).await;
    assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
    let e = result.items[0].error.clone().expect("error");
    assert!(e.contains("row counts differ") && e.contains("public.t: 1000 rows, backup had 1001"), "{e}");
    assert!(!db.server.exists(&target), "the failed restore's database was not dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_empty_target_is_refused_unless_clean() {
    let db = TestDb::create("lb-target");
    db.sql(&small_fixture(300));
    let (dir, store) = local_store();
    backup(&db, &store, &dir).await;
    let target = TestDb::create("lb-occupied");
    target.sql("CREATE TABLE precious (x int); INSERT INTO precious VALUES (42);");
    let env = run_env(&db.server, &file_url(&dir));
    let result = run_restore(&env, store.clone(), &["db", "--database", &db.name, "--target", &target.name]).await;
    assert_eq!(result.outcome, Outcome::Failure);
    let e = result.items[0].error.clone().expect("error");
    assert!(e.contains("exists and is not empty") && e.contains("--clean"), "{e}");
    assert_eq!(target.sql("SELECT x FROM precious"), "42", "a refused restore does not touch the target");

    let result =
        run_restore(&env, store.clone(), &["db", "--database", &db.name, "--target", &target.name, "--clean"]).await;
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");
    db.server.assert_identical(&db.name, &target.name);

    // An existing but empty database is a fine target without --clean.
    let empty = TestDb::create("lb-empty-target");
    let result = run_restore(&env, store.clone(), &["db", "--database", &db.name, "--target", &empty.name]).await;
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");
    db.server.assert_identical(&db.name, &empty.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_chooses_latest_by_id_or_before_a_time_and_lists_backups() {
    let db = TestDb::create("lb-select");
    db.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
    let (dir, store) = local_store();
    let first = backup(&db, &store, &dir).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    db.sql("INSERT INTO t VALUES (2);");
    let second = backup(&db, &store, &dir).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    db.sql("INSERT INTO t VALUES (3);");
    let third = backup(&db, &store, &dir).await;
    // The third loses its manifest: an incomplete backup (as a crashed run would leave).
    store
        .delete(&format!("{}{third}/manifest.json", DbBackupPath::series_prefix("main", &db.name)))
        .await
        .expect("delete manifest");

    let entries: Vec<BackupEntry> = list_backups(&*store, "main", &db.name).await.expect("list");
    let listed: Vec<(String, bool)> = entries.iter().map(|e| (e.path.run.to_string(), e.complete)).collect();
    assert_eq!(listed, [(first.clone(), true), (second.clone(), true), (third.clone(), false)]);
    assert!(entries.iter().all(|e| e.stored_bytes > 0));

    let env = run_env(&db.server, &file_url(&dir));
    let restore_rows = |args: Vec<String>| {
        let (env, store, db) = (env.clone(), store.clone(), &db);
        async move {
            let target = unique("lb-select-restored");
            db.drop_later(&target);
            let mut all: Vec<&str> = vec!["db", "--database", &db.name, "--target", &target];
            all.extend(args.iter().map(String::as_str));
            let result = run_restore(&env, store, &all).await;
            match result.outcome {
                Outcome::Success => Ok(db.server.psql(&target, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t")),
                _ => Err(result.items[0].error.clone().unwrap_or_default()),
            }
        }
    };
    assert_eq!(restore_rows(vec![]).await.as_deref(), Ok("1,2"), "latest complete");
    assert_eq!(restore_rows(vec!["--backup-id".into(), first.clone()]).await.as_deref(), Ok("1"));
    let second_time = second.parse::<RunId>().expect("id").started;
    assert_eq!(restore_rows(vec!["--before".into(), second_time.to_rfc3339()]).await.as_deref(), Ok("1,2"));
    let between = (second_time - chrono::TimeDelta::milliseconds(500)).to_rfc3339();
    assert_eq!(restore_rows(vec!["--before".into(), between]).await.as_deref(), Ok("1"));
    let e = restore_rows(vec!["--backup-id".into(), third.clone()]).await.expect_err("incomplete");
    assert!(e.contains("incomplete"), "{e}");
    let e = restore_rows(vec!["--before".into(), "2000-01-01T00:00:00Z".into()]).await.expect_err("too early");
    assert!(e.contains("no complete backup"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_racing_for_the_same_name_fails_and_spares_the_first_fake_gcs_resumable() {
    let store = gcs_store_with(256 * 1024, "").await;
    let destination = store.location().to_string();
    race(Arc::new(store), &destination).await;
}
