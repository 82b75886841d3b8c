//! `restore`: databases (`restore db`, `restore list`) against the real PostgreSQL server and
//! buckets (`restore bucket`) against fake-gcs-server, in-process and as the binary. What it
//! refuses (corruption, row counts that differ, a non-empty target), what it chooses (latest,
//! by id, before a time) and how it restores (dry run, prefixes, conflicts, extras).

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

/// Asserts a failed restore into `target`, with every `needle` in its error, whose database was
/// dropped (nothing half-restored is left for someone to mistake for the real one).
fn assert_refused(db: &TestDb, result: &RunResult, target: &str, needles: &[&str]) {
    assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
    let e = result.items[0].error.clone().expect("error");
    for needle in needles {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
    assert!(!db.server.exists(target), "the half-restored database {target} was not dropped");
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

    // Damaged ciphertext, the right identity: truncated, a flipped bit in the header, and (where
    // the store reports a CRC32C of what it holds now) a flipped bit in the payload.
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
    let mut cases = vec![("truncated", truncated, "restore refused"), ("header", header_flip, "restore refused")];
    if local_dir.is_none() {
        cases.push(("payload", payload_flip.clone(), "restore refused"));
    }
    for (what, bytes, needle) in cases {
        replace_object(&*store, local_dir, &dump, &bytes).await;
        for target in [occupied.name.clone(), fresh.clone()] {
            let result = attempt(Some(right.clone()), target).await;
            assert!(result.items[0].error.as_deref().is_some_and(|e| e.contains(needle)), "{what}: {result:?}");
            refused(&result, &[], &[]);
        }
    }
    if local_dir.is_some() {
        // The file store keeps the CRC32C recorded at write time: a flipped payload bit is found
        // while streaming (age's chunk tag), after the restore began; its database is dropped.
        replace_object(&*store, local_dir, &dump, &payload_flip).await;
        let target = unique("lb-age-payload");
        db.drop_later(&target);
        let result = attempt(Some(right.clone()), target.clone()).await;
        assert_refused(db, &result, &target, &["corrupted", "restore refused"]);
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
