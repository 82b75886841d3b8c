//! `restore`: databases (`restore db`, `restore list`) against the real PostgreSQL server and
//! buckets (`restore bucket`) against fake-gcs-server, in-process and as the binary. What it
//! refuses (corruption, row counts that differ, an existing or live target), that it never harms
//! what exists (side database, swap, kills mid-way), what it chooses (latest, by id, before a
//! time) and how it restores (dry run, prefixes, conflicts, extras).

use std::sync::Arc;
use std::time::Duration;

use lifeboat_core::bucket::read::Selector;
use lifeboat_core::bucket::restore::{RestoreRequest, restore_bucket};
use lifeboat_core::config::Env;
use lifeboat_core::core::events::{Outcome, RunResult};
use lifeboat_core::core::naming::{DbBackupPath, RunId};
use lifeboat_core::db::encryption::Identities;
use lifeboat_core::db::restore::{BackupEntry, list_backups};
use lifeboat_core::store::{DynStore, Location, ObjectStore as _, ObjectStoreExt as _, PutOptions};
use tokio_util::sync::CancellationToken;

use crate::support::binaries::job;
use crate::support::buckets::{
    CHUNK, bucket_of, capture, gcs_bucket, overwrite, put, request, restore, run_id, settings, snap, source_and_backup,
    typed, written,
};
use crate::support::db::*;
use crate::support::gcs::{gcs_store_with, shared};
use crate::support::postgres::*;
use crate::support::stack::local_store;
use crate::support::unique;

/// Asserts a failed restore into `target`, with every `needle` in its error, that left no
/// database under the target's name and no side database (nothing half-restored is left for
/// someone to mistake for the real one).
fn assert_refused(db: &TestDb, result: &RunResult, target: &str, needles: &[&str]) {
    assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
    let e = result.items[0].error.clone().expect("error");
    for needle in needles {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
    assert!(!db.server.exists(target), "a database {target} was left behind");
    assert_no_side(&db.server, target);
    assert_eq!(result.items[0].figures.get("target_touched"), Some(&serde_json::Value::Bool(false)), "{result:?}");
}

/// The side databases (`lifeboat_restore_…`) of restores into `target`, found by their comment.
fn sides_for(server: &Server, target: &str) -> Vec<String> {
    let like = format!("%for {target}; dropped if it fails%").replace('_', "\\_");
    let out = server.psql(
        "postgres",
        &format!(
            "SELECT datname FROM pg_database WHERE datname LIKE 'lifeboat\\_restore\\_%' \
             AND shobj_description(oid, 'pg_database') LIKE {} ORDER BY 1",
            literal(&like)
        ),
    );
    out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

fn assert_no_side(server: &Server, target: &str) {
    let left = sides_for(server, target);
    assert!(left.is_empty(), "side databases of {target} left behind: {left:?}");
}

/// The `<target>_before_<ts>` databases of `target`.
fn asides_of(server: &Server, target: &str) -> Vec<String> {
    let like = format!("{target}_before_%").replace('_', "\\_");
    let out =
        server.psql("postgres", &format!("SELECT datname FROM pg_database WHERE datname LIKE {}", literal(&like)));
    out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Makes the stored dump of backup `id` of `db` hold `bytes`, and its manifest agree (size,
/// SHA-256, CRC32C): a backup that was bad from the start, which only decompression,
/// `pg_restore` or the row counts can catch.
fn tamper_consistently(dir: &std::path::Path, db: &str, id: &str, bytes: &[u8]) {
    let prefix = dir.join(DbBackupPath::series_prefix("main", db)).join(id);
    std::fs::write(prefix.join("dump.pgc.zst"), bytes).expect("write dump");
    let mut hash = lifeboat_core::db::codec::StreamHash::default();
    hash.update(bytes);
    let (len, sha256, crc32c) = hash.finish();
    let path = prefix.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("json");
    manifest["dump"]["stored_bytes"] = len.into();
    manifest["dump"]["sha256"] = sha256.into();
    manifest["dump"]["crc32c"] = crc32c.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write manifest");
    // The sidecar records what lifeboat wrote; the store now reports the bytes present.
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
        assert_refused(&db, &result, &target, &["corrupted", "restore refused"]);
    }
    // Into an existing target with --clean: refused before anything is created; the target's
    // rows are intact.
    let occupied = TestDb::create("lb-corrupt-occupied");
    occupied.sql("CREATE TABLE precious (x int); INSERT INTO precious VALUES (42);");
    for jobs in [None, Some("2")] {
        let mut args = vec!["db", "--database", db.name.as_str(), "--target", occupied.name.as_str(), "--clean"];
        if let Some(j) = jobs {
            args.extend(["--jobs", j]);
        }
        let result = run_restore(&env, store.clone(), &args).await;
        assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
        assert!(result.items[0].error.as_deref().is_some_and(|e| e.contains("corrupted")), "{result:?}");
        assert_eq!(occupied.sql("SELECT x FROM precious"), "42", "the target was touched");
        assert_no_side(&db.server, &occupied.name);
        assert!(asides_of(&db.server, &occupied.name).is_empty());
    }
}

/// A backup whose bytes were bad from the start (checksums computed over the bad bytes, so the
/// download verifies): decompression or pg_restore fails mid-way, inside the side database. With
/// --clean the target keeps its rows, and no side database is left; nor with a row count that
/// differs (the failure after pg_restore), streaming or --jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_archive_or_row_count_with_clean_leaves_the_target_as_it_was() {
    let db = TestDb::create("lb-bad-clean");
    db.sql(&small_fixture(5_000));
    let (dir, store) = local_store();
    let id = backup(&db, &store, &dir).await;
    let env = run_env(&db.server, &file_url(&dir));
    let occupied = TestDb::create("lb-bad-clean-target");
    occupied.sql("CREATE TABLE precious (x int); INSERT INTO precious VALUES (42);");
    let dump = dir.path().join(DbBackupPath::series_prefix("main", &db.name)).join(&id).join("dump.pgc.zst");
    let original = std::fs::read(&dump).expect("dump");
    let manifest_path = dump.with_file_name("manifest.json");
    let original_manifest = std::fs::read(&manifest_path).expect("manifest");
    let decompressed = zstd::decode_all(original.as_slice()).expect("zstd");
    // An archive cut short (a valid zstd frame of the first 60 %): pg_restore fails mid-way.
    let cut = zstd::encode_all(&decompressed[..decompressed.len() * 6 / 10], 1).expect("zstd");
    // A flipped bit inside the compressed payload: decompression fails.
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    for (what, bytes) in [("cut archive", cut), ("flipped bit", flipped)] {
        tamper_consistently(dir.path(), &db.name, &id, &bytes);
        for jobs in [None, Some("2")] {
            let mut args = vec!["db", "--database", db.name.as_str(), "--target", occupied.name.as_str(), "--clean"];
            if let Some(j) = jobs {
                args.extend(["--jobs", j]);
            }
            let result = run_restore(&env, store.clone(), &args).await;
            assert_eq!(result.outcome, Outcome::Failure, "{what} {jobs:?}: {result:?}");
            let e = result.items[0].error.clone().unwrap_or_default();
            assert!(e.contains("was dropped") && e.contains("was not touched"), "{what} {jobs:?}: {e}");
            assert_eq!(result.items[0].figures.get("side_database_dropped"), Some(&true.into()), "{result:?}");
            assert_eq!(occupied.sql("SELECT x FROM precious"), "42", "{what} {jobs:?}: the target was touched");
            assert_no_side(&db.server, &occupied.name);
            assert!(asides_of(&db.server, &occupied.name).is_empty(), "{what}: renamed aside");
        }
    }
    // The right bytes, a manifest whose row count differs.
    std::fs::write(&dump, &original).expect("restore the dump");
    let text = String::from_utf8(original_manifest).expect("utf-8");
    std::fs::write(&manifest_path, text.replace("\"public.t\": 5000", "\"public.t\": 5001")).expect("write");
    let result =
        run_restore(&env, store.clone(), &["db", "--database", &db.name, "--target", &occupied.name, "--clean"]).await;
    let e = result.items[0].error.clone().unwrap_or_default();
    assert!(e.contains("row counts differ") && e.contains("was not touched"), "{e}");
    assert_eq!(occupied.sql("SELECT x FROM precious"), "42");
    assert_no_side(&db.server, &occupied.name);
}

/// An encrypted backup of a small database in `store` (recipient: the returned identity), and
/// the key of its dump.
async fn encrypted_backup(db: &TestDb, store: &DynStore, env: &Env) -> (Identities, String) {
    let key = Identities::generate();
    let env = env.clone().with("BACKUP_DATABASES", &db.name).with("BACKUP_ENCRYPTION_RECIPIENTS", &key.recipients()[0]);
    let id = crate::support::db::expect_success(&run_backup(&env, store.clone()).await);
    let dump = format!("{}{id}/dump.pgc.zst.age", DbBackupPath::series_prefix("main", &db.name));
    assert!(store.stat(&dump).await.is_ok(), "{dump}");
    (key, dump)
}

fn identity_text(key: &Identities) -> String {
    key.to_secret_text(chrono::Utc::now()).expose().to_owned()
}

/// The ways an encrypted backup cannot be restored, each refused with the reason, the secret
/// never in the result, and the existing target (and its data) untouched although `--clean`
/// asked to drop it: the key is checked before any database is touched.
async fn encrypted_refusals(db: &TestDb, store: DynStore, env: Env, local_dir: Option<&std::path::Path>) {
    let (key, dump) = encrypted_backup(db, &store, &env).await;
    let public = key.recipients()[0].clone();
    let occupied = TestDb::create("lb-age-occupied");
    occupied.sql("CREATE TABLE precious (x int); INSERT INTO precious VALUES (42);");
    let fresh = unique("lb-age-none");
    db.drop_later(&fresh);
    let attempt = |identity: Option<String>, target: String| {
        let env = match identity {
            Some(i) => env.clone().with("BACKUP_ENCRYPTION_IDENTITY", &i),
            None => env.clone(),
        };
        let store = store.clone();
        let database = db.name.clone();
        async move {
            let args = ["db", "--database", database.as_str(), "--target", target.as_str(), "--clean"];
            run_restore(&env, store, &args).await
        }
    };
    let refused = |result: &RunResult, needles: &[&str], secrets: &[&str]| {
        assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
        let e = result.items[0].error.clone().expect("error");
        for needle in needles {
            assert!(e.contains(needle), "{needle:?} not in {e}");
        }
        let json = serde_json::to_string(result).expect("json");
        for secret in secrets {
            assert!(!json.contains(secret), "a secret key is in the result: {json}");
        }
        assert_eq!(occupied.sql("SELECT x FROM precious"), "42", "the target was touched");
        assert!(!db.server.exists(&fresh), "a database was created");
    };

    // No identity: says which key is needed.
    for target in [occupied.name.clone(), fresh.clone()] {
        let result = attempt(None, target).await;
        refused(
            &result,
            &["is encrypted (age) to recipient", &public, "BACKUP_ENCRYPTION_IDENTITY", "none is set"],
            &[],
        );
    }
    // A wrong identity (two of them): names what it has and what is needed; never the secrets.
    let (wrong, other) = (Identities::generate(), Identities::generate());
    let wrong_text = format!("{}{}", identity_text(&wrong), identity_text(&other));
    let wrong_secrets: Vec<String> =
        wrong_text.lines().filter(|l| l.starts_with("AGE-SECRET-KEY-")).map(|l| l[15..].to_owned()).collect();
    assert_eq!(wrong_secrets.len(), 2);
    let secrets: Vec<&str> = wrong_secrets.iter().map(String::as_str).collect();
    for target in [occupied.name.clone(), fresh.clone()] {
        let result = attempt(Some(wrong_text.clone()), target).await;
        let needles = ["none of the identities", &wrong.recipients()[0], &other.recipients()[0], &public];
        refused(&result, &needles, &secrets);
    }

    // Damaged ciphertext, the right identity: truncated, a flipped bit in the header, a flipped
    // bit in the payload. Both stores report the CRC32C of what they hold now (the file store
    // computes it), so each is refused before any database is touched.
    let right = identity_text(&key);
    let original = store.read_all(&dump, 1 << 30).await.expect("dump").to_vec();
    // A bit of the header's MAC (a flipped bit in a recipient stanza reads as "not your key").
    let mut header_flip = original.clone();
    let mac = original.windows(5).position(|w| w == b"\n--- ").expect("the header's MAC line") + 6;
    header_flip[mac] ^= 0x01;
    let mut payload_flip = original.clone();
    let middle = payload_flip.len() / 2;
    payload_flip[middle] ^= 0x01;
    let truncated = original[..original.len() - 100].to_vec();
    let cases = [
        ("truncated", truncated, "restore refused"),
        ("header", header_flip, "restore refused"),
        ("payload", payload_flip, "restore refused"),
    ];
    for (what, bytes, needle) in cases {
        replace_object(&*store, local_dir, &dump, &bytes).await;
        for target in [occupied.name.clone(), fresh.clone()] {
            let result = attempt(Some(right.clone()), target).await;
            assert!(result.items[0].error.as_deref().is_some_and(|e| e.contains(needle)), "{what}: {result:?}");
            refused(&result, &[], &[]);
        }
    }

    // Intact again: the right identity restores (no --clean needed for a new database).
    replace_object(&*store, local_dir, &dump, &original).await;
    let target = unique("lb-age-ok");
    db.drop_later(&target);
    let env = env.clone().with("BACKUP_ENCRYPTION_IDENTITY", &right);
    let result = run_restore(&env, store.clone(), &["db", "--database", &db.name, "--target", &target]).await;
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");
    db.server.assert_identical(&db.name, &target);
}

/// Replaces a stored object's bytes (the file itself for the file store, keeping its recorded
/// checksums; a generation-matched rewrite for GCS, which computes new ones).
async fn replace_object(
    store: &dyn lifeboat_core::store::ObjectStore,
    local_dir: Option<&std::path::Path>,
    key: &str,
    bytes: &[u8],
) {
    match local_dir {
        Some(dir) => std::fs::write(dir.join(key), bytes).expect("write"),
        None => overwrite(store, key, bytes, PutOptions::default()).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_need_the_right_intact_key_before_anything_is_touched_file_store() {
    let db = TestDb::create("lb-age-refuse");
    db.sql(&small_fixture(20_000));
    let (dir, store) = local_store();
    let env = run_env(&db.server, &file_url(&dir));
    encrypted_refusals(&db, store, env, Some(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_need_the_right_intact_key_before_anything_is_touched_fake_gcs() {
    let db = TestDb::create("lb-age-refuse-gcs");
    db.sql(&small_fixture(20_000));
    let store = gcs_store_with(CHUNK, "backups").await;
    let env = run_env(&db.server, &store.location().to_string())
        .with("STORAGE_EMULATOR_HOST", &crate::support::require_env("STORAGE_EMULATOR_HOST"));
    encrypted_refusals(&db, Arc::new(store), env, None).await;
}

/// The binary: a malformed identity is a configuration error naming the variable (exit 2);
/// neither it nor a wrong or right identity ever reaches stdout or the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_never_reaches_the_output_of_the_restore_binary() {
    let db = TestDb::create("lb-age-bin");
    db.sql(&small_fixture(300));
    let (dir, store) = local_store();
    let env = run_env(&db.server, &file_url(&dir));
    let (key, _) = encrypted_backup(&db, &store, &env).await;
    let home = tempfile::tempdir().expect("home");
    let restore = |identity: &str, args: &[&str]| {
        db_job("restore", home.path(), &db.server, &file_url(&dir))
            .env("RUST_LOG", "debug")
            .env("BACKUP_ENCRYPTION_IDENTITY", identity)
            .args(args)
            .output()
            .expect("run restore")
    };
    let right = identity_text(&key);
    let right_secret = right.lines().find(|l| l.starts_with("AGE-SECRET-KEY-")).expect("key line")[15..].to_owned();
    let wrong = identity_text(&Identities::generate());
    let wrong_secret = wrong.lines().find(|l| l.starts_with("AGE-SECRET-KEY-")).expect("key line")[15..].to_owned();
    // One character changed: the checksum no longer matches.
    let (body, last) = right.trim_end().split_at(right.trim_end().len() - 1);
    let malformed = format!("{body}{}", if last == "Q" { "P" } else { "Q" });
    let clean = |out: &std::process::Output| {
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        for secret in [&right_secret, &wrong_secret, &right_secret[..20].to_owned()] {
            assert!(!all.contains(secret.as_str()), "a secret key in the output:\n{all}");
        }
        all
    };
    let out = restore(&malformed, &["list", "--database", &db.name]);
    assert_eq!(out.status.code(), Some(2), "{}", clean(&out));
    assert!(clean(&out).contains("BACKUP_ENCRYPTION_IDENTITY: item 1 is not an age X25519 identity"));

    let target = unique("lb-age-bin-restored");
    db.drop_later(&target);
    let out = restore(&wrong, &["db", "--database", &db.name, "--target", &target]);
    assert_eq!(out.status.code(), Some(1), "{}", clean(&out));
    assert!(clean(&out).contains(&key.recipients()[0]));
    assert!(!db.server.exists(&target));
    let out = restore(&right, &["db", "--database", &db.name, "--target", &target]);
    assert_eq!(out.status.code(), Some(0), "{}", clean(&out));
    assert_eq!(db.server.psql(&target, "SELECT count(*) FROM t"), "300");
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
    assert_refused(&db, &result, &target, &["row counts differ", "public.t: 1000 rows, backup had 1001"]);
}

/// An existing target, even an empty one or one holding only types and domains, is refused
/// without --clean; with it the restore is swapped in and the old database renamed aside (kept,
/// or dropped with --drop-replaced), never mixed with the restored objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_target_is_refused_unless_clean_then_kept_apart() {
    let db = TestDb::create("lb-target");
    db.sql(&small_fixture(300));
    let (dir, store) = local_store();
    backup(&db, &store, &dir).await;
    let env = run_env(&db.server, &file_url(&dir));
    let restore = |target: String, extra: &'static [&'static str]| {
        let (env, store, database) = (env.clone(), store.clone(), db.name.clone());
        async move {
            let mut args = vec!["db", "--database", database.as_str(), "--target", target.as_str()];
            args.extend(extra);
            run_restore(&env, store, &args).await
        }
    };

    // Only types and domains (no table, function or schema): still an existing database.
    let typed = TestDb::create("lb-types-only");
    typed.sql(
        "CREATE TYPE mood AS ENUM ('sad', 'happy'); CREATE DOMAIN positive AS int CHECK (VALUE > 0); \
         CREATE TYPE pair AS (a int, b text);",
    );
    let empty = TestDb::create("lb-empty-target");
    for target in [&typed.name, &empty.name] {
        let result = restore(target.clone(), &[]).await;
        assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
        let e = result.items[0].error.clone().expect("error");
        assert!(e.contains("exists; nothing was changed") && e.contains("--clean"), "{e}");
        assert_no_side(&db.server, target);
    }
    assert_eq!(typed.sql("SELECT count(*) FROM pg_type WHERE typname IN ('mood', 'positive', 'pair')"), "3");

    // --clean: the restore is swapped in, the types-only database renamed aside and kept.
    let result = restore(typed.name.clone(), &["--clean"]).await;
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");
    let figures = &result.items[0].figures;
    let aside = figures["replaced"].as_str().expect("replaced").to_owned();
    typed.drop_later(&aside);
    assert_eq!(figures["replaced_fate"], "kept");
    assert_eq!(figures["target"], typed.name.as_str());
    assert!(figures["side_database"].as_str().is_some_and(|s| s.starts_with("lifeboat_restore_")), "{figures:?}");
    assert!(aside.starts_with(&format!("{}_before_", typed.name)), "{aside}");
    assert!(result.summary.contains(&format!("kept as {aside:?}")), "{}", result.summary);
    db.server.assert_identical(&db.name, &typed.name);
    assert_eq!(typed.sql("SELECT count(*) FROM pg_type WHERE typname IN ('mood', 'positive', 'pair')"), "0");
    assert_eq!(
        db.server.psql(&aside, "SELECT count(*) FROM pg_type WHERE typname IN ('mood', 'positive', 'pair')"),
        "3",
        "the replaced database is kept as it was"
    );
    assert_eq!(db.server.psql(&aside, "SELECT count(*) FROM pg_class WHERE relname = 't'"), "0");
    assert_eq!(
        db.server.psql(
            "postgres",
            &format!(
                "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = {}",
                literal(&typed.name)
            )
        ),
        "",
        "the side database's comment goes with the swap"
    );
    assert_no_side(&db.server, &typed.name);

    // --clean --drop-replaced (with --jobs): the replaced database is gone afterwards.
    let result = restore(empty.name.clone(), &["--clean", "--drop-replaced", "--jobs", "2"]).await;
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");
    let figures = &result.items[0].figures;
    assert_eq!(figures["replaced_fate"], "dropped");
    let dropped = figures["replaced"].as_str().expect("replaced");
    assert!(!db.server.exists(dropped), "{dropped}");
    assert!(asides_of(&db.server, &empty.name).is_empty());
    db.server.assert_identical(&db.name, &empty.name);
}

/// template0, template1, the maintenance database, the backed-up database and a database in
/// BACKUP_DATABASES are refused (exit 1, nothing changed) unless --replace-live-database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_databases_are_refused_as_targets_without_the_explicit_flag() {
    let db = TestDb::create("lb-live");
    db.sql(&small_fixture(200));
    let (dir, store) = local_store();
    backup(&db, &store, &dir).await;
    let scratch = TestDb::create("lb-live-scratch");
    scratch.sql("CREATE TABLE mine (x int); INSERT INTO mine VALUES (7);");
    let env = run_env(&db.server, &file_url(&dir)).with("BACKUP_DATABASES", &format!("other,{}", scratch.name));
    let template1_objects = || db.server.psql("template1", "SELECT count(*) FROM pg_class");
    let before = template1_objects();
    // The databases these restores could create, rename or drop: the targets, what a swap
    // would rename them to, and side databases made for this test's backup (their comment names
    // it). Not the whole server: other tests create and drop their own databases meanwhile.
    let names: Vec<String> =
        ["template1", "template0", "postgres", db.name.as_str(), scratch.name.as_str()].map(literal).into();
    let databases_sql = format!(
        "SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database d \
         WHERE datname IN ({list}) OR EXISTS (SELECT 1 FROM unnest(ARRAY[{list}]) t \
         WHERE d.datname LIKE t || '\\_before\\_%') \
         OR coalesce(shobj_description(d.oid, 'pg_database'), '') LIKE {own}",
        list = names.join(", "),
        own = literal(&format!("%{}%", db.name)),
    );
    let databases = || db.server.psql("postgres", &databases_sql);
    let all_before = databases();
    for target in ["template1", "template0", "postgres", db.name.as_str(), scratch.name.as_str()] {
        for clean in [false, true] {
            let mut args = vec!["db", "--database", db.name.as_str(), "--target", target];
            if clean {
                args.push("--clean");
            }
            let result = run_restore(&env, store.clone(), &args).await;
            assert_eq!(result.outcome, Outcome::Failure, "{target}: {result:?}");
            let e = result.items[0].error.clone().expect("error");
            assert!(e.contains("refusing to restore into") && e.contains("--replace-live-database"), "{e}");
            assert!(e.contains("Nothing was changed"), "{e}");
        }
    }
    assert_eq!(template1_objects(), before, "template1 changed");
    assert_eq!(databases(), all_before, "a database was created, renamed or dropped");
    assert_eq!(scratch.sql("SELECT x FROM mine"), "7");

    // The binary: exit 1, the reason on stderr.
    let home = tempfile::tempdir().expect("home");
    let out = db_job("restore", home.path(), &db.server, &file_url(&dir))
        .args(["db", "--database", &db.name, "--target", "template1", "--clean"])
        .output()
        .expect("run restore");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a template database"));
    assert_eq!(template1_objects(), before);

    // With the flag, the database in BACKUP_DATABASES (a scratch one here) is replaced.
    let args = ["db", "--database", &db.name, "--target", &scratch.name, "--clean", "--replace-live-database"];
    let result = run_restore(&env, store.clone(), &args).await;
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");
    let aside = result.items[0].figures["replaced"].as_str().expect("replaced").to_owned();
    scratch.drop_later(&aside);
    db.server.assert_identical(&db.name, &scratch.name);
    assert_eq!(db.server.psql(&aside, "SELECT x FROM mine"), "7");
}

/// A connected target: without --terminate-sessions the swap is refused (the side database
/// dropped, the target and its session untouched); with it the sessions end and the swap happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_the_target_fail_the_swap_unless_terminated() {
    let db = TestDb::create("lb-sessions");
    db.sql(&small_fixture(200));
    let (dir, store) = local_store();
    backup(&db, &store, &dir).await;
    let env = run_env(&db.server, &file_url(&dir));
    let target = TestDb::create("lb-sessions-target");
    target.sql("CREATE TABLE precious (x int); INSERT INTO precious VALUES (42);");
    let session = || {
        let mut c = std::process::Command::new(pg_tool("psql"));
        c.args(["-X", "-q", "-h", &db.server.host, "-p", &db.server.port, "-U", &db.server.user, "-d", &target.name])
            .args(["-c", "SELECT pg_sleep(120)"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = c.spawn().expect("psql");
        let count = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = {}", literal(&target.name));
        for _ in 0..100 {
            if db.server.psql("postgres", &count) != "0" {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let mut first = session();
    let args = ["db", "--database", &db.name, "--target", &target.name, "--clean"];
    let result = run_restore(&env, store.clone(), &args).await;
    assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
    let e = result.items[0].error.clone().expect("error");
    assert!(e.contains("open session") && e.contains("--terminate-sessions") && e.contains("was dropped"), "{e}");
    assert_no_side(&db.server, &target.name);
    assert!(first.try_wait().expect("wait").is_none(), "the session was ended");
    assert_eq!(target.sql("SELECT x FROM precious"), "42");

    let args = ["db", "--database", &db.name, "--target", &target.name, "--clean", "--terminate-sessions"];
    let result = run_restore(&env, store.clone(), &args).await;
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");
    let aside = result.items[0].figures["replaced"].as_str().expect("replaced").to_owned();
    target.drop_later(&aside);
    let status = first.wait().expect("psql ends");
    assert!(!status.success(), "the session was terminated");
    db.server.assert_identical(&db.name, &target.name);
    assert_eq!(db.server.psql(&aside, "SELECT x FROM precious"), "42");
}

/// Killed mid-way (its pg_restore's session ended, or the restore itself terminated by SIGTERM):
/// never anything half-restored under the target's name, the target as it was, no side database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_half_restored_is_left_when_a_restore_is_killed_mid_way() {
    let db = TestDb::create("lb-kill");
    db.sql(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS s FROM generate_series(1, 600000) g; \
         CREATE INDEX ON big (s);",
    );
    let (dir, store) = local_store();
    backup(&db, &store, &dir).await;
    let target = TestDb::create("lb-kill-target");
    target.sql("CREATE TABLE precious (x int); INSERT INTO precious VALUES (42);");
    let home = tempfile::tempdir().expect("home");
    // The side database of this restore once pg_restore is connected to it.
    let wait_for_pg_restore = |child: &mut std::process::Child| -> String {
        for _ in 0..600 {
            if let Some(side) = sides_for(&db.server, &target.name).first() {
                let q = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = {}", literal(side));
                if db.server.psql("postgres", &q) != "0" {
                    return side.clone();
                }
            }
            assert!(child.try_wait().expect("wait").is_none(), "the restore ended before pg_restore was seen");
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pg_restore never connected to a side database");
    };
    for (how, jobs) in [("pg_restore's session ended", None), ("SIGTERM", None), ("SIGTERM", Some("2"))] {
        let mut cmd = db_job("restore", home.path(), &db.server, &file_url(&dir));
        cmd.args(["db", "--database", &db.name, "--target", &target.name, "--clean"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(j) = jobs {
            cmd.args(["--jobs", j]);
        }
        let mut child = cmd.spawn().expect("run restore");
        let side = wait_for_pg_restore(&mut child);
        if how == "SIGTERM" {
            let pid = child.id().to_string();
            assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        } else {
            db.server.psql(
                "postgres",
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} \
                    ",
                    literal(&side)
                ),
            );
        }
        let out = child.wait_with_output().expect("restore ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{how} {jobs:?}: {stderr}");
        assert!(stderr.contains("the side database") && stderr.contains("was dropped"), "{how}: {stderr}");
        assert!(!db.server.exists(&side), "{how}: the side database {side} is left");
        assert_no_side(&db.server, &target.name);
        assert_eq!(target.sql("SELECT x FROM precious"), "42", "{how}: the target was touched");
        assert!(asides_of(&db.server, &target.name).is_empty(), "{how}: the target was renamed aside");
    }
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
async fn restore_binary_lists_and_restores_a_database() {
    let db = TestDb::create("lb-bin");
    db.sql(&small_fixture(500));
    let (dir, store) = local_store();
    let id = backup(&db, &store, &dir).await;
    let home = tempfile::tempdir().expect("home");
    let restore = |args: &[&str]| {
        db_job("restore", home.path(), &db.server, &file_url(&dir)).args(args).output().expect("run restore")
    };

    let out = restore(&["list", "--database", &db.name]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(listing.starts_with("ID ") && listing.contains(&id) && listing.contains("complete"), "{listing}");

    let target = unique("lb-bin-restored");
    db.drop_later(&target);
    let out = restore(&["db", "--database", &db.name, "--target", &target]);
    assert_eq!(out.status.code(), Some(0), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("into database \"{target}\"")));
    assert_eq!(db.server.psql(&target, "SELECT count(*) FROM t"), "500");

    let out = restore(&[]);
    assert_eq!(out.status.code(), Some(2), "no command is a configuration error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("a command is required"));
}

/// A blob overwritten with other bytes is caught when restoring (checksums of the new object).
#[tokio::test]
async fn corrupt_blob_is_detected_at_restore_on_gcs() {
    let (src, backup, source) = source_and_backup().await;
    put(&*src, "good", b"good bytes", PutOptions::default()).await;
    put(&*src, "victim", b"bytes that will rot", PutOptions::default()).await;
    snap(&backup, &source, &run_id(1), &settings(4)).await;
    let victim = src.stat("victim").await.expect("stat");
    let blob = lifeboat_core::bucket::blob::blob_key(&source.spec.bucket, &victim);
    overwrite(&*backup, &blob, b"bytes that DID rot!", PutOptions::default()).await;

    let target = gcs_bucket().await;
    let (report, _) = restore(&backup, &*target, &request(&source.spec.bucket, Selector::Latest)).await;
    assert!(!report.is_success());
    assert_eq!((report.copied, report.corrupt), (1, 1));
    assert!(report.problems[0].contains("\"victim\"") && report.problems[0].contains("corrupt"), "{report:?}");
    let left = capture(&*target, "").await;
    assert_eq!(left.keys().collect::<Vec<_>>(), ["good"], "the corrupt copy is not left behind");
}

/// Dry run, only-prefix, target prefix, objects already there, conflicts, extras kept or deleted.
#[tokio::test]
async fn restore_modes() {
    let (src, backup, source) = source_and_backup().await;
    let bucket = source.spec.bucket.clone();
    for k in ["photos/a.jpg", "photos/b.jpg", "photos2/c.jpg", "docs/d.txt"] {
        put(&*src, k, k.as_bytes(), typed("application/octet-stream")).await;
    }
    snap(&backup, &source, &run_id(1), &settings(4)).await;

    // Dry run: says what it would copy, writes nothing.
    let target = gcs_bucket().await;
    let req = RestoreRequest { dry_run: true, ..request(&bucket, Selector::Latest) };
    let (report, actions) = restore(&backup, &*target, &req).await;
    assert_eq!((report.copied, report.dry_run), (4, true));
    let lines: Vec<String> = actions.iter().map(|a| a.describe(true)).collect();
    assert_eq!(lines[0], "would copy \"docs/d.txt\" (10 B)");
    assert_eq!(lines.len(), 4);
    assert!(capture(&*target, "").await.is_empty(), "a dry run writes nothing");

    // Only a prefix (a plain string prefix: photos/ is not photos2/).
    let req = RestoreRequest { only_prefix: "photos/".into(), ..request(&bucket, Selector::Latest) };
    let (report, _) = restore(&backup, &*target, &req).await;
    assert_eq!(report.copied, 2);
    assert_eq!(capture(&*target, "").await.keys().collect::<Vec<_>>(), ["photos/a.jpg", "photos/b.jpg"]);

    // Into a target with extra objects, one restored object already there, one conflicting.
    put(&*target, "extra/keep-me", b"not in the snapshot", PutOptions::default()).await;
    put(&*target, "docs/d.txt", b"something else entirely", PutOptions::default()).await;
    let (report, _) = restore(&backup, &*target, &request(&bucket, Selector::Latest)).await;
    assert_eq!((report.copied, report.present, report.conflicts, report.extra_kept, report.deleted), (1, 2, 1, 1, 0));
    assert!(!report.is_success(), "a conflict is a failure");
    assert_eq!(target.read_all("docs/d.txt", 100).await.expect("read").as_ref(), b"something else entirely");

    // --delete-extra: the extra goes, printed and counted; the conflict is still not overwritten.
    let req = RestoreRequest { delete_extra: true, ..request(&bucket, Selector::Latest) };
    let (report, actions) = restore(&backup, &*target, &req).await;
    assert_eq!((report.deleted, report.conflicts, report.present), (1, 1, 3));
    assert!(actions.iter().any(|a| a.describe(false) == "delete \"extra/keep-me\" (not in the snapshot)"));
    assert!(target.stat("extra/keep-me").await.expect_err("deleted").is_not_found());

    // Target prefix: objects land under it; delete-extra stays inside it.
    let prefixed = gcs_store_with(CHUNK, "restored/run-1").await;
    let outside = prefixed.location().clone();
    let Location::Gcs { bucket: tb, .. } = &outside else { panic!("gcs") };
    let root: DynStore = std::sync::Arc::new(shared(&format!("gs://{tb}"), CHUNK).await);
    put(&*root, "outside-the-prefix", b"untouched", PutOptions::default()).await;
    let req = RestoreRequest { delete_extra: true, ..request(&bucket, Selector::Latest) };
    let (report, _) = restore(&backup, &prefixed, &req).await;
    assert_eq!((report.copied, report.deleted), (4, 0));
    let all = capture(&*root, "").await;
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "outside-the-prefix",
            "restored/run-1/docs/d.txt",
            "restored/run-1/photos/a.jpg",
            "restored/run-1/photos/b.jpg",
            "restored/run-1/photos2/c.jpg"
        ]
    );

    // Asking for what does not exist.
    let err = restore_bucket(
        &*backup,
        &*target,
        &request(&bucket, Selector::Id(run_id(9))),
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .expect_err("no such snapshot");
    assert!(err.to_string().contains("no complete snapshot"), "{err}");
}

/// The `restore` binary: a dry run prints its plan; a real run with a target prefix restores.
#[tokio::test]
async fn restore_binary_dry_run_and_restore() {
    let (src, backup, source) = source_and_backup().await;
    put(&*src, "x/1 one", b"one", typed("text/plain")).await;
    put(&*src, "x/2 two", b"two!", typed("text/plain")).await;
    snap(&backup, &source, &run_id(1), &settings(2)).await;
    let target = gcs_bucket().await;
    let tb = bucket_of(&*target);
    let run = |extra: &[&str]| {
        job("restore", &std::env::temp_dir(), &backup.location().to_string())
            .env("RUST_LOG", "warn")
            .args(["bucket", "--source-bucket", &source.spec.bucket, "--target-bucket", &tb])
            .args(extra)
            .output()
            .expect("run restore")
    };
    let out = run(&["--dry-run", "--target-prefix", "back"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("would copy \"x/1 one\" (3 B)\nwould copy \"x/2 two\" (4 B)\n"), "{stdout}");
    assert!(stdout.contains("would restore 2 objects"), "{stdout}");
    assert!(capture(&*target, "").await.is_empty());
    let out = run(&["--target-prefix", "back", "--snapshot", &run_id(1).to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = capture(&*target, "").await;
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), ["back/x/1 one", "back/x/2 two"]);
    assert_eq!(got["back/x/2 two"].bytes, b"two!");
    assert_eq!(got["back/x/2 two"].content_type.as_deref(), Some("text/plain"));
    // A failed restore exits 1.
    let out = run(&["--snapshot", &run_id(7).to_string()]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_shows_a_progress_bar_in_a_terminal_and_plain_lines_otherwise() {
    let db = TestDb::create("lb-bar");
    db.sql(&small_fixture(2_000));
    let (dir, store) = local_store();
    backup(&db, &store, &dir).await;
    let home = tempfile::tempdir().expect("home");

    // Piped (a Cloud Run job, the console's child): log lines, no bar.
    let plain = unique("lb-bar-plain");
    db.drop_later(&plain);
    let out = db_job("restore", home.path(), &db.server, &file_url(&dir))
        .args(["db", "--database", &db.name, "--target", &plain])
        .output()
        .expect("run restore");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("progress: restore of {} into {plain}: ", db.name)), "{stderr}");
    assert!(!stderr.contains("[=="), "no bar outside a terminal: {stderr}");

    // In a terminal (`script` gives it a pseudo-terminal): indicatif's bar.
    let tty = unique("lb-bar-tty");
    db.drop_later(&tty);
    let restore = crate::support::binaries::binary("restore");
    let line = format!("exec '{}' --once db --database '{}' --target '{tty}'", restore.display(), db.name);
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("TERM", "xterm")
        .env("LIFEBOAT_DESTINATION", file_url(&dir))
        .envs(db.server.vars())
        .output()
        .expect("run restore in a pseudo-terminal");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    assert!(screen.contains(&format!("restore of {} into {tty} [", db.name)), "the bar's message: {screen}");
    assert!(screen.contains("=]") || screen.contains("==="), "the bar itself: {screen}");
    assert_eq!(db.server.psql(&tty, "SELECT count(*) FROM t"), "2000");
}

/// A real `pg_dump -Fc --compress=0` written to a pipe (as every backup is) has no data offsets;
/// the index finds every data block (tables and large objects), and `pg_restore -j 2` on the
/// patched archive restores an identical database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_offsets_of_a_piped_dump_are_recorded_for_parallel_restore() {
    use lifeboat_core::db::archive::OffsetIndex;
    let db = TestDb::create("lb-offsets");
    db.sql(RICH_SCHEMA);
    let out = std::process::Command::new(pg_tool("pg_dump"))
        .args(["-h", &db.server.host, "-p", &db.server.port, "-U", &db.server.user])
        .args(["--format=custom", "--compress=0", "-d", &db.name])
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("pg_dump");
    assert!(out.status.success());
    let mut archive = out.stdout;
    let mut index = OffsetIndex::default();
    for part in archive.chunks(4093) {
        index.update(part);
    }
    let patches = index.patches();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.pgc");
    std::fs::write(&path, &archive).expect("write");
    let listing =
        std::process::Command::new(pg_tool("pg_restore")).arg("-l").arg(&path).output().expect("pg_restore -l");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let data_entries = listing.lines().filter(|l| l.contains(" TABLE DATA ") || l.contains(" BLOBS ")).count();
    assert!(data_entries >= 3, "{listing}");
    assert_eq!(patches.len(), data_entries, "every data block found: {listing}");
    for (at, bytes) in &patches {
        let at = usize::try_from(*at).expect("small");
        assert_eq!(archive[at], 1, "an offset that was not set");
        archive[at..at + bytes.len()].copy_from_slice(bytes);
        let start = usize::try_from(u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"))).expect("small");
        assert!(matches!(archive[start], 1 | 3), "a block starts at {start}");
    }
    std::fs::write(&path, &archive).expect("write patched");
    let target = unique("lb-offsets-restored");
    db.drop_later(&target);
    db.server.psql("postgres", &format!("CREATE DATABASE {} TEMPLATE template0", ident(&target)));
    let restored = std::process::Command::new(pg_tool("pg_restore"))
        .args(["-h", &db.server.host, "-p", &db.server.port, "-U", &db.server.user, "--exit-on-error", "-j", "2"])
        .args(["-d", &target])
        .arg(&path)
        .output()
        .expect("pg_restore -j 2");
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    db.server.assert_identical(&db.name, &target);
}

/// The metadata a user sets on an object, as the store reports it.
fn metadata_of(o: &lifeboat_core::store::ObjectMeta) -> [String; 6] {
    [
        format!("{:?}", o.content_type),
        format!("{:?}", o.content_encoding),
        format!("{:?}", o.cache_control),
        format!("{:?}", o.content_disposition),
        format!("{:?}", o.content_language),
        format!("{:?}", o.metadata),
    ]
}

/// Objects with the same bytes share one blob, which carries the metadata of whichever was
/// copied first; each is restored with exactly its own metadata (the copy states every field,
/// an empty custom metadata too), not the blob's. An object with bytes of its own carries the
/// five standard fields and custom metadata through snapshot and restore.
#[tokio::test]
async fn objects_sharing_a_blob_are_restored_with_their_own_metadata() {
    use std::collections::BTreeMap;
    let (src, backup, source) = source_and_backup().await;
    let bucket = source.spec.bucket.clone();
    let same = b"the same bytes under three names";
    let rich = PutOptions {
        content_type: Some("text/plain".into()),
        metadata: BTreeMap::from([("owner".into(), "alice".into()), ("note".into(), "first".into())]),
        ..PutOptions::default()
    };
    put(&*src, "shared/rich.txt", same, rich).await;
    put(&*src, "shared/bare", same, PutOptions::default()).await;
    let other = PutOptions {
        content_type: Some("application/json".into()),
        metadata: BTreeMap::from([("owner".into(), "bob".into())]),
        ..PutOptions::default()
    };
    put(&*src, "shared/other.json", same, other).await;
    let full = PutOptions {
        content_type: Some("text/html; charset=utf-8".into()),
        cache_control: Some("public, max-age=300".into()),
        content_disposition: Some("attachment; filename=\"page.html\"".into()),
        content_language: Some("fr".into()),
        metadata: BTreeMap::from([("k".into(), "v".into())]),
        ..PutOptions::default()
    };
    put(&*src, "own/page.html", b"<p>bonjour</p>", full).await;
    let header = written(&snap(&backup, &source, &run_id(1), &settings(4)).await).clone();
    assert_eq!(header.totals.objects, 4);

    let target = gcs_bucket().await;
    let (report, _) = restore(&backup, &*target, &request(&bucket, Selector::Latest)).await;
    assert!(report.is_success() && report.copied == 4, "{report:?}");
    for name in ["shared/rich.txt", "shared/bare", "shared/other.json", "own/page.html"] {
        let (want, got) = (src.stat(name).await.expect("source"), target.stat(name).await.expect("restored"));
        assert_eq!(metadata_of(&got), metadata_of(&want), "{name} restored with its own metadata");
        assert_eq!(target.read_all(name, 100).await.expect("read"), src.read_all(name, 100).await.expect("read"));
    }
    let page = target.stat("own/page.html").await.expect("page");
    assert_eq!(page.content_language.as_deref(), Some("fr"));
    assert_eq!(page.content_disposition.as_deref(), Some("attachment; filename=\"page.html\""));
}
