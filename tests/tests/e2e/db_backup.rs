//! `db-backup` against the real PostgreSQL server, the `file://` store and fake-gcs-server: round
//! trips that must restore identical databases, every failure that must leave no manifest
//! (nothing `health` or `restore` would take for a good backup), and the binary in job mode.
//! What `restore` refuses or chooses is tested in `restore`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_core::config::Env;
use lifeboat_core::core::db_manifest::DbManifest;
use lifeboat_core::core::events::Outcome;
use lifeboat_core::core::naming::{DbBackupPath, RunId};
use lifeboat_core::db::DbError;
use lifeboat_core::store::{DynStore, ObjectStore as _, ObjectStoreExt as _};
use tokio_util::sync::CancellationToken;

use crate::support::db::*;
use crate::support::gcs::{Backend, PrivateGcs, gcs_store_with};
use crate::support::postgres::*;
use crate::support::stack::local_store;
use crate::support::{closed_port, require_env, unique};

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
    let level = lifeboat_core::db::codec::DEFAULT_ZSTD_LEVEL;
    assert_eq!((m.dump.name.as_str(), m.dump.level, m.database.as_str()), ("dump.pgc.zst", level, db.name.as_str()));
    assert_eq!((m.format_version, m.dump.encryption.as_ref()), (1, None), "unencrypted: readable by older lifeboats");
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

/// Backs up `db` encrypted to two recipients into `store`, checks what is stored (an age file,
/// not a compressed stream; hashes of the stored bytes; the recipients in a version-2 manifest),
/// then restores it once with each identity, streaming and with `--jobs 2`.
async fn encrypted_round_trip(db: &TestDb, store: DynStore, env: Env, compression: &str) {
    use lifeboat_core::db::encryption::Identities;
    let (a, b) = (Identities::generate(), Identities::generate());
    let (a_public, b_public) = (a.recipients()[0].clone(), b.recipients()[0].clone());
    let t = chrono::Utc::now();
    let identity = |k: &Identities| k.to_secret_text(t).expose().to_owned();
    let env = env
        .with("BACKUP_DATABASES", &db.name)
        .with("BACKUP_COMPRESSION", compression)
        .with("BACKUP_ENCRYPTION_RECIPIENTS", &format!("{a_public},{b_public}"));
    let result = run_backup(&env, store.clone()).await;
    let id = expect_success(&result);
    assert_eq!(result.items[0].figures.get("encrypted"), Some(&serde_json::Value::Bool(true)));
    let m = manifest(&store, "main", &db.name, &id).await;
    let extension = if compression == "gzip" { "gz" } else { "zst" };
    assert_eq!(m.dump.name, format!("dump.pgc.{extension}.age"));
    assert_eq!(m.format_version, 2, "older lifeboats refuse it instead of misreading it");
    let encryption = m.dump.encryption.clone().expect("encryption recorded");
    assert_eq!(encryption.recipients, [a_public.clone(), b_public.clone()]);
    let key = format!("{}{id}/{}", DbBackupPath::series_prefix("main", &db.name), m.dump.name);
    let stored = store.read_all(&key, 1 << 30).await.expect("dump");
    assert!(stored.starts_with(b"age-encryption.org/v1\n"), "an age file");
    assert!(!stored.windows(5).any(|w| w == b"PGDMP"), "no archive header in the clear");
    let mut plain = Vec::new();
    let as_zstd = lifeboat_core::db::codec::decoder(lifeboat_core::core::db_manifest::Compression::Zstd, &stored[..])
        .and_then(|mut d| std::io::Read::read_to_end(&mut d, &mut plain));
    assert!(as_zstd.is_err(), "not a readable zstd stream");
    let as_gzip = std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&stored[..]), &mut plain);
    assert!(as_gzip.is_err(), "not a readable gzip stream");
    // The manifest's hashes are of the stored (encrypted) bytes: checkable without any key.
    assert_eq!(stored.len() as u64, m.dump.stored_bytes);
    let mut h = lifeboat_core::db::codec::StreamHash::default();
    h.update(&stored);
    let (_, sha256, crc32c) = h.finish();
    assert_eq!((sha256, crc32c), (m.dump.sha256.clone(), m.dump.crc32c.clone()));
    if let Some(crc) = store.stat(&key).await.expect("stat").crc32c {
        assert_eq!(crc, m.dump.crc32c, "the store's CRC32C is the manifest's");
    }

    for (who, jobs) in [(&a, None), (&b, Some("2"))] {
        let target = unique("lb-age-restored");
        db.drop_later(&target);
        let mut args = vec!["db", "--database", db.name.as_str(), "--target", target.as_str()];
        if let Some(j) = jobs {
            args.extend(["--jobs", j]);
        }
        let restore_env = env.clone().with("BACKUP_ENCRYPTION_IDENTITY", &identity(who));
        let restored = run_restore(&restore_env, store.clone(), &args).await;
        assert_eq!(restored.outcome, Outcome::Success, "{restored:?}");
        db.server.assert_identical(&db.name, &target);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_round_trip_through_the_file_store_each_recipient_decrypts() {
    let db = TestDb::create("lb-age-file");
    db.sql(RICH_SCHEMA);
    let (dir, store) = local_store();
    let env = run_env(&db.server, &file_url(&dir));
    encrypted_round_trip(&db, store, env, "zstd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_round_trip_through_fake_gcs_each_recipient_decrypts() {
    let db = TestDb::create("lb-age-gcs");
    db.sql(RICH_SCHEMA);
    let store = gcs_store_with(256 * 1024, "backups").await;
    let env = run_env(&db.server, &store.location().to_string())
        .with("STORAGE_EMULATOR_HOST", &require_env("STORAGE_EMULATOR_HOST"));
    encrypted_round_trip(&db, Arc::new(store), env, "gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_fake_gcs_with_gzip_small_chunks_and_an_odd_database_name() {
    let name = format!("Odd \"Name\" ünï.{}", unique("x"));
    let db = TestDb::create_named(&name);
    let server = db.server.clone();
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

/// A `pg_dump` that writes a valid header and some data, then hangs (to be cancelled or killed).
const HANGING_PG_DUMP: &str = "case \"$1\" in --version) exec \"$REAL\" --version;; esac\nprintf PGDMP\nhead -c 300000 /dev/urandom\nexec sleep 120";

/// A `file://` store and the environment of a backup of `db` that runs the tools in `tools`.
fn backup_with_tools(db: &TestDb, tools: &tempfile::TempDir) -> (tempfile::TempDir, DynStore, Env) {
    let (dir, store) = local_store();
    let env = run_env(&db.server, &file_url(&dir))
        .with("BACKUP_DATABASES", &db.name)
        .with("LIFEBOAT_PG_BIN_DIR", &tools.path().to_string_lossy());
    (dir, store, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_killed_mid_stream_leaves_no_manifest() {
    let db = TestDb::create("lb-killed");
    db.sql(&small_fixture(60_000));
    let tools = fake_bin_dir(
        "case \"$1\" in --version) exec \"$REAL\" --version;; esac\n\"$REAL\" \"$@\" | head -c 300000\nkill -KILL $$",
    );
    let (_dir, store, env) = backup_with_tools(&db, &tools);
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
    let (_dir, store, env) = backup_with_tools(&db, &tools);
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
    let (_dir, store, env) = backup_with_tools(&db, &tools);
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
    let server = cluster.server();
    let (dir, store) = local_store();
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let env = run_env(&server, &file_url(&dir)).with("BACKUP_DATABASES", "postgres").with("PGPASSWORD", &wrong);
    let result = run_backup(&env, store.clone()).await;
    expect_failure(&result, "postgres", &["password authentication failed"]);
    let json = serde_json::to_string(&result).expect("json");
    assert!(!json.contains(&wrong), "the password leaked into the result: {json}");
    assert_nothing_stored(&store).await;

    // The same through DATABASE_URL (the password inside the URL must not leak either).
    let url =
        format!("postgresql://postgres:{wrong}@/postgres?host={}&port={}", cluster.socket_dir(), PasswordCluster::PORT);
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

/// `,,` used to mean "every database" (empty items were dropped) and `app,app` failed at run
/// time; both are configuration problems now, reported before any connection is tried (the
/// server here is a closed port: reaching it would be a run-time failure, exit 1).
#[test]
fn empty_or_repeated_database_names_exit_2_before_any_work() {
    let (_reserved, port) = closed_port();
    let (dir, store) = local_store();
    for (value, why) in [(",,", "is empty"), ("app,,billing", "item 2"), ("app, app", "\"app\" is listed twice")] {
        let out = crate::support::binaries::job("db-backup", dir.path(), &file_url(&dir))
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", port.to_string())
            .env("BACKUP_DATABASES", value)
            .output()
            .expect("run db-backup");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value:?}: {err}");
        assert!(err.contains("BACKUP_DATABASES: ") && err.contains(why), "{value:?}: {err}");
        assert!(!err.contains("cannot connect"), "no work started: {err}");
    }
    drop(store);
}

/// The words of `text` (maximal runs of letters and digits, and each other character alone).
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            out.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
            out.push(c.to_string());
        }
    }
    out.extend((!word.is_empty()).then_some(word));
    out
}

/// Secrets of any length are redacted: a one- or three-character password used to be printed
/// whenever the server's message held it (here the user is named like the password, as in the
/// common `postgres`/`postgres`), because redaction skipped secrets under four characters. The
/// message stays readable: `password authentication failed` is not cut into pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_password_never_appears_and_the_message_stays_readable() {
    let cluster = tokio::task::spawn_blocking(PasswordCluster::start).await.expect("cluster");
    let server = cluster.server();
    let (dir, store) = local_store();
    for secret in ["q", "ab7"] {
        let env = run_env(&server, &file_url(&dir))
            .with("BACKUP_DATABASES", "postgres")
            .with("PGUSER", secret)
            .with("PGPASSWORD", secret);
        let result = run_backup(&env, store.clone()).await;
        let e = expect_failure(&result, "postgres", &["password authentication failed for user"]);
        let json = serde_json::to_string(&result).expect("json");
        assert!(!tokens(&json).iter().any(|t| t == secret), "{secret:?} leaked: {json}");
        assert!(e.contains("[redacted]"), "{e}");
        assert_nothing_stored(&store).await;
    }
}

/// With `SENTRY_DSN` set, a failed run is reported to Sentry (the real client, to a real HTTP
/// server taking envelopes): one event grouped by program and source, with the run's log lines
/// as breadcrumbs, and no secret in it — not the password, not the URL holding it, not the DSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_reported_to_sentry_without_secrets() {
    let cluster = tokio::task::spawn_blocking(PasswordCluster::start).await.expect("cluster");
    let sentry = crate::support::sentry::Project::new().await;
    let (dir, _store) = local_store();
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let url =
        format!("postgresql://postgres:{wrong}@/postgres?host={}&port={}", cluster.socket_dir(), PasswordCluster::PORT);
    let out = crate::support::binaries::job("db-backup", dir.path(), &file_url(&dir))
        .env("DATABASE_URL", &url)
        .env("BACKUP_DATABASES", "postgres")
        .env("SENTRY_DSN", sentry.dsn())
        .output()
        .expect("run db-backup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let events = sentry.events().await;
    assert_eq!(events.len(), 1, "one report for one failed run: {events:?}");
    let event = &events[0];
    let message = event["message"].as_str().or_else(|| event["logentry"]["message"].as_str()).unwrap_or_default();
    assert!(message.starts_with("db-backup failed: no database backed up"), "{event}");
    assert!(message.contains("password authentication failed"), "{event}");
    // (`error` is Sentry's default level, left out of the payload.)
    assert_eq!(event["level"].as_str().unwrap_or("error"), "error", "{event}");
    assert_eq!(event["tags"]["program"], "db-backup", "{event}");
    assert_eq!(event["fingerprint"], serde_json::json!(["lifeboat-run", "db-backup", "main"]));
    let crumbs = event["breadcrumbs"]["values"].as_array().cloned().unwrap_or_default();
    assert!(crumbs.iter().any(|c| c["message"] == "job started"), "the run's log lines: {event}");
    assert!(
        crumbs.iter().any(|c| c["message"] == "cannot start the backups" && c["level"] == "error"),
        "an error inside the run is a breadcrumb of its report, not a second event: {event}"
    );
    let requests = sentry.requests().await;
    let headers = requests[0]["headers"].as_object().expect("headers");
    let auth = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-sentry-auth")).and_then(|(_, v)| v.as_str());
    let auth = auth.unwrap_or_default();
    assert!(auth.contains(&sentry.key), "the key authenticates the request: {auth}");
    for r in &requests {
        let body = r["body"].as_str().expect("body");
        for secret in [wrong.as_str(), url.as_str(), sentry.key.as_str()] {
            assert!(!body.contains(secret), "{secret:?} reached Sentry: {body}");
        }
    }
    assert!(!stderr.contains(&sentry.key) && !stderr.contains(&wrong), "nor the log");
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
    let (_reserved, port) = closed_port();
    let server = Server { host: "127.0.0.1".into(), port: port.to_string(), ..Server::from_env() };
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
    let storage = PrivateGcs::start(Backend::Memory).await;
    let bucket = unique("lb-down");
    let store: DynStore = Arc::new(storage.store(&bucket, "", 1024 * 1024).await);
    let location = store.location().clone();
    let proxy_url = storage.url();
    storage.proxy().die_after(3 * 1024 * 1024);
    let env = run_env(&db.server, &location.to_string())
        .with("STORAGE_EMULATOR_HOST", &proxy_url)
        .with("BACKUP_DATABASES", &db.name)
        .with("LIFEBOAT_UPLOAD_CHUNK_MIB", "1");
    let t = Instant::now();
    let result = run_backup(&env, store).await;
    let e = expect_failure(&result, &db.name, &[]);
    assert!(storage.proxy().forwarded() > 3 * 1024 * 1024, "the endpoint died mid-upload");
    assert!(t.elapsed() < Duration::from_secs(120), "gave up in time");
    assert!(e.contains(&bucket), "the error names the store: {e}");
    let direct: DynStore = Arc::new(storage.direct_store(&bucket, "", 256 * 1024).await);
    assert_nothing_stored(&direct).await;
}

/// Two backups of one database racing for the same run id in `store`: one wins, the other fails
/// on the create-only write, and the winner's backup restores intact.
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
async fn a_second_run_racing_for_the_same_name_fails_and_spares_the_first_fake_gcs_resumable() {
    let store = gcs_store_with(256 * 1024, "").await;
    let destination = store.location().to_string();
    race(Arc::new(store), &destination).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_mid_dump_kills_pg_dump_and_leaves_nothing() {
    let db = TestDb::create("lb-cancel");
    let tools = fake_bin_dir(HANGING_PG_DUMP);
    let (_dir, store, env) = backup_with_tools(&db, &tools);
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

#[test]
fn db_backup_binary_runs_once() {
    let db = TestDb::create("lb-bin");
    db.sql(&small_fixture(500));
    let home = tempfile::tempdir().expect("home");
    let backups = tempfile::tempdir().expect("backups");
    let destination = file_url(&backups);

    let out = db_job("db-backup", home.path(), &db.server, &destination)
        .env("BACKUP_DATABASES", &db.name)
        .output()
        .expect("run db-backup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "db-backup failed: {stderr}");
    let found = manifests(backups.path(), &db.name);
    assert_eq!(found.len(), 1, "one manifest: {found:?}");
    let id = found[0].backup_id.clone();
    assert_eq!(found[0].row_counts.as_ref().and_then(|c| c.get("public.t")), Some(&500));
    assert!(stderr.contains("result event") && stderr.contains(&id), "the result event is logged: {stderr}");

    let missing = unique("lb-bin-missing");
    let out = db_job("db-backup", home.path(), &db.server, &destination)
        .env("BACKUP_DATABASES", &missing)
        .output()
        .expect("run db-backup");
    assert_eq!(out.status.code(), Some(1), "a failed backup exits 1: {}", String::from_utf8_lossy(&out.stderr));
    assert!(manifests(backups.path(), &missing).is_empty());
}

#[test]
fn sigterm_mid_backup_fails_the_job_cleanly() {
    let db = TestDb::create("lb-bin-term");
    let home = tempfile::tempdir().expect("home");
    let backups = tempfile::tempdir().expect("backups");
    let tools = fake_bin_dir(HANGING_PG_DUMP);
    let mut c = db_job("db-backup", home.path(), &db.server, &file_url(&backups));
    c.env("LIFEBOAT_PG_BIN_DIR", tools.path())
        .env("BACKUP_DATABASES", &db.name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("spawn db-backup");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "stops within Cloud Run's 10 s grace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cancelled by a termination signal"), "{stderr}");
    assert!(manifests(backups.path(), &db.name).is_empty());
    let leftovers: Vec<_> = walk(&backups.path().join("db"));
    assert!(leftovers.is_empty(), "objects left behind: {leftovers:?}");
}

/// The manifests of `database` in a `file://` store at `root`.
fn manifests(root: &Path, database: &str) -> Vec<DbManifest> {
    let series = root.join("db/main").join(database);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&series).into_iter().flatten().flatten() {
        let m = entry.path().join("manifest.json");
        if m.is_file() {
            out.push(DbManifest::from_json(&std::fs::read(m).expect("read")).expect("manifest"));
        }
    }
    out
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A `pg_dump` that stalls 2.5 s after its first 2 KiB (read byte by byte, so nothing is lost).
const SLOW_PG_DUMP: &str = "case \"$1\" in --version) exec \"$REAL\" --version;; esac\n\
     \"$REAL\" \"$@\" | { dd bs=1 count=2048 2>/dev/null; sleep 2.5; cat; }";

/// The `progress:` lines of a log.
fn progress_lines(log: &str) -> Vec<&str> {
    log.lines().filter_map(|l| l.split_once("progress: ").map(|(_, p)| p)).collect()
}

#[test]
fn a_long_dump_logs_progress_at_the_interval_against_an_estimate() {
    let db = TestDb::create("lb-progress");
    db.sql(&small_fixture(5_000));
    let home = tempfile::tempdir().expect("home");
    let backups = tempfile::tempdir().expect("backups");
    let tools = fake_bin_dir(SLOW_PG_DUMP);
    let run = || {
        let out = db_job("db-backup", home.path(), &db.server, &file_url(&backups))
            .env("LIFEBOAT_PG_BIN_DIR", tools.path())
            .env("BACKUP_DATABASES", &db.name)
            .env("LIFEBOAT_PROGRESS_INTERVAL", "1s")
            .output()
            .expect("run db-backup");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        stderr
    };
    // First backup: no previous one, so the estimate is pg_database_size.
    let first = run();
    let lines = progress_lines(&first);
    let prefix = format!("dump of {}: ", db.name);
    let ticks: Vec<&&str> = lines.iter().filter(|l| !l.ends_with("(done)")).collect();
    assert!(ticks.len() >= 2, "a line every second of a 2.5 s stall: {lines:?}");
    for line in &lines {
        assert!(line.starts_with(&prefix) && line.contains("/s, ") && line.contains(" elapsed"), "{line}");
    }
    assert!(ticks[0].contains("2.0 KiB of ~"), "2 KiB done while stalled, against an estimate: {}", ticks[0]);
    assert!(ticks[0].contains("left"), "time left while under the estimate: {}", ticks[0]);
    assert!(lines.last().is_some_and(|l| l.ends_with("(done)")), "{lines:?}");

    // Second backup: the estimate is what the first one's pg_dump wrote.
    let previous = manifests(backups.path(), &db.name)[0].dump.uncompressed_bytes;
    let second = run();
    let estimate = format!(" of ~{} ", lifeboat_core::core::units::bytes(previous));
    let lines = progress_lines(&second);
    assert!(lines.iter().any(|l| l.contains(&estimate)), "the previous dump's size {estimate:?} in {lines:?}");
}
