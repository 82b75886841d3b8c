//! `drill` end to end, as its binary: after a real `db-backup` (the real PostgreSQL server) and a
//! real `storage-backup` (fake-gcs-server), `drill --once` restores the database into a scratch
//! database, checks the snapshot, writes both records and drops the scratch database; a
//! corrupted dump or blob fails the drill (exit 1, failed records) and the failure reaches the
//! Slack stand-in through the Pub/Sub emulator and `monitor`; an encrypted backup is drilled with
//! the identity (and fails without it).

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use lifeboat_core::core::clock::Clock;
use lifeboat_core::core::drill::{DrillKind, DrillOutcome, DrillRecord, RecordKey, scratch_database_name};
use lifeboat_core::core::events::{Event, Outcome};
use lifeboat_core::core::naming::{DbBackupPath, SnapshotPath};
use lifeboat_core::db::encryption::Identities;
use lifeboat_core::db::restore::list_backups;
use lifeboat_core::programs::monitor;
use lifeboat_core::runtime::App;
use lifeboat_core::store::{DynStore, ObjectMeta, ObjectStore, ObjectStoreExt as _, PutOptions};
use serde_json::{Value, json};

use crate::support::binaries::job;
use crate::support::buckets::{gcs_backup_store, gcs_bucket, overwrite, put, typed};
use crate::support::db::{db_job, small_fixture};
use crate::support::postgres::{Server, TestDb, ident, literal};
use crate::support::pubsub::pubsub_fixture;
use crate::support::slack::Hook;
use crate::support::stack::{Served, config, services};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A database with a table of `rows` rows, backed up by the `db-backup` binary into `backup`
/// (with `extra` variables); returns the database and its backup's path.
async fn backed_up_database(backup: &DynStore, rows: u32, extra: &[(&str, &str)]) -> (TestDb, DbBackupPath) {
    let db = TestDb::create("lbdrill");
    db.sql(&small_fixture(rows));
    db.sql("CREATE TABLE empty_one (x int);");
    let home = tempfile::tempdir().expect("home");
    let out = db_job("db-backup", home.path(), &db.server, &backup.location().to_string())
        .env("BACKUP_DATABASES", &db.name)
        .envs(extra.iter().copied())
        .output()
        .expect("run db-backup");
    assert_eq!(out.status.code(), Some(0), "db-backup failed: {}", stderr(&out));
    let backups = list_backups(&**backup, "main", &db.name).await.expect("list");
    assert_eq!(backups.len(), 1, "{backups:?}");
    let backup_path = backups[0].path.clone();
    (db, backup_path)
}

/// A source bucket with a few objects, snapshotted by the `storage-backup` binary into `backup`.
async fn snapshotted_bucket(backup: &DynStore, objects: usize) -> (DynStore, String, SnapshotPath) {
    let src = gcs_bucket().await;
    let bucket = crate::support::buckets::bucket_of(&*src);
    for i in 0..objects {
        put(
            &*src,
            &format!("photos/{i:03}.jpg"),
            format!("picture number {i} ").repeat(50 + i).as_bytes(),
            typed("image/jpeg"),
        )
        .await;
    }
    let out = job("storage-backup", &std::env::temp_dir(), &backup.location().to_string())
        .env("SOURCE_BUCKETS", &bucket)
        .env("RUST_LOG", "info")
        .output()
        .expect("run storage-backup");
    assert_eq!(out.status.code(), Some(0), "storage-backup failed: {}", stderr(&out));
    let snapshots = lifeboat_core::bucket::read::list_snapshots(&**backup, &bucket).await.expect("list");
    let run = snapshots.last().expect("a snapshot").run.clone();
    (src, bucket.clone(), SnapshotPath { bucket, run })
}

/// `drill --once` against `server`, from `backup`, with `vars`.
fn drill(server: &Server, backup: &DynStore, vars: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().expect("home");
    db_job("drill", home.path(), server, &backup.location().to_string())
        .env("RUST_LOG", "info")
        .envs(vars.iter().copied())
        .output()
        .expect("run drill")
}

/// Every drill record under `prefix`, parsed, with its key.
async fn records(store: &dyn ObjectStore, prefix: &str) -> Vec<(String, DrillRecord)> {
    let objects: Vec<ObjectMeta> = store.list_all(prefix).try_collect().await.expect("list");
    let mut out = Vec::new();
    for o in objects.into_iter().filter(|o| o.key.contains("/drills/")) {
        let bytes = store.read_all(&o.key, 1 << 20).await.expect("read record");
        out.push((o.key.clone(), DrillRecord::from_json(&bytes).expect("a drill record")));
    }
    out
}

/// The scratch databases of `database` that exist on `server`.
fn scratch_databases(server: &Server, database: &str) -> String {
    let any = scratch_database_name(database, Utc::now());
    let prefix = &any[..any.len() - "20261202t031500z".len()];
    server.psql(
        "postgres",
        &format!("SELECT string_agg(datname, ',') FROM pg_database WHERE starts_with(datname, {})", literal(prefix)),
    )
}

fn assert_recent(t: DateTime<Utc>) {
    let age = Utc::now() - t;
    assert!(age >= chrono::Duration::zero() && age < chrono::Duration::minutes(10), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_once_drills_a_database_and_a_bucket_and_records_both() {
    let backup = gcs_backup_store().await;
    let (db, db_path) = backed_up_database(&backup, 1500, &[]).await;
    let (_src, bucket, snapshot) = snapshotted_bucket(&backup, 7).await;

    let out = drill(
        &db.server,
        &backup,
        &[("BACKUP_DATABASES", &db.name), ("SOURCE_BUCKETS", &bucket), ("DRILL_SAMPLE_OBJECTS", "3")],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "drill failed: {log}");
    assert!(log.contains("drill passed"), "{log}");

    // The database record, next to the backup it drilled.
    let db_records = records(&*backup, &db_path.prefix()).await;
    assert_eq!(db_records.len(), 1, "{db_records:?}");
    let (key, r) = &db_records[0];
    let Some(RecordKey::Db { backup: drilled, drilled_at }) = RecordKey::parse(key) else { panic!("{key}") };
    assert_eq!(drilled, db_path);
    assert_eq!(drilled_at.timestamp(), r.started_at.timestamp());
    assert_eq!((r.kind, r.outcome, r.error.as_deref()), (DrillKind::Db, DrillOutcome::Passed, None));
    assert_eq!((r.source.as_str(), r.name.as_str(), &r.backup_id), ("main", db.name.as_str(), &db_path.run));
    assert_eq!((r.tables, r.rows), (Some(2), Some(1500)), "both tables compared, every row counted");
    let rto = r.rto_seconds.expect("an RTO");
    assert!(rto > 0.0 && rto < 120.0, "{rto}");
    let manifest = crate::support::db::manifest(&backup, "main", &db.name, &db_path.run.to_string()).await;
    assert_eq!(r.bytes, manifest.dump.stored_bytes);
    assert_eq!((r.objects_checked, r.objects_sampled), (None, None));
    assert_recent(r.started_at);
    assert!(r.finished_at >= r.started_at);
    assert_eq!(scratch_databases(&db.server, &db.name), "", "the scratch database is dropped");

    // The bucket record, next to the snapshot.
    let bucket_records = records(&*backup, &snapshot.prefix()).await;
    assert_eq!(bucket_records.len(), 1, "{bucket_records:?}");
    let (key, r) = &bucket_records[0];
    assert!(matches!(RecordKey::parse(key), Some(RecordKey::Bucket { snapshot: s, .. }) if s == snapshot), "{key}");
    assert_eq!((r.kind, r.outcome, r.error.as_deref()), (DrillKind::Bucket, DrillOutcome::Passed, None));
    assert_eq!((r.source.as_str(), r.name.as_str(), &r.backup_id), (bucket.as_str(), bucket.as_str(), &snapshot.run));
    assert_eq!((r.objects_checked, r.objects_sampled), (Some(7), Some(3)));
    assert!(r.bytes > 3 * 50 * 16, "the sample's bytes were read: {}", r.bytes);
    assert_eq!((r.rto_seconds, r.tables, r.rows), (None, None, None));

    // A second drill writes a second record (create-only, never replacing the first).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = drill(&db.server, &backup, &[("BACKUP_DATABASES", &db.name)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(records(&*backup, &db_path.prefix()).await.len(), 2);
}

/// A monitor served in-process on `store`, alerting to `slack`.
async fn serve_monitor(store: &DynStore, slack: &Hook) -> Served {
    let (services, env) = services(
        store.clone(),
        &[("LIFEBOAT_API_TOKEN", TOKEN), ("LIFEBOAT_REGION", "europe-west1"), ("SLACK_WEBHOOK_URL", &slack.url())],
    );
    let services = services.with_clock(Clock::system());
    let program = monitor::start(services.clone(), config(&env, &[], monitor::read)).await.expect("start monitor");
    Served::start(App::new(&monitor::SPEC, Arc::new(program), services)).await
}

const TOKEN: &str = "drill-test-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_dump_and_a_corrupted_blob_fail_the_drill_and_alert_slack() {
    let backup = gcs_backup_store().await;
    let (db, db_path) = backed_up_database(&backup, 800, &[]).await;
    let (_src, bucket, snapshot) = snapshotted_bucket(&backup, 4).await;
    // One bit of the dump, and one blob's bytes (same size), changed in the backup store.
    let dump_key = db_path.dump_key("zst");
    let mut dump: Vec<u8> = backup.read_all(&dump_key, 1 << 30).await.expect("dump").to_vec();
    let middle = dump.len() / 2;
    dump[middle] ^= 0x01;
    overwrite(&*backup, &dump_key, &dump, PutOptions::default()).await;
    let blobs: Vec<ObjectMeta> =
        backup.list_all(&SnapshotPath::blobs_prefix(&bucket)).try_collect().await.expect("blobs");
    let victim = &blobs[1];
    let mut bytes = backup.read_all(&victim.key, 1 << 20).await.expect("blob").to_vec();
    bytes[0] ^= 0x20;
    overwrite(&*backup, &victim.key, &bytes, PutOptions::default()).await;

    let pubsub = pubsub_fixture().await;
    let out = drill(
        &db.server,
        &backup,
        &[
            ("BACKUP_DATABASES", &db.name),
            ("SOURCE_BUCKETS", &bucket),
            ("LIFEBOAT_RESULTS_TOPIC", &pubsub.topic_id),
            ("PUBSUB_EMULATOR_HOST", &pubsub.host),
            ("GOOGLE_CLOUD_PROJECT", pubsub.project),
        ],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a failed drill exits 1: {log}");

    // Failed records, each saying why.
    let db_records = records(&*backup, &db_path.prefix()).await;
    assert_eq!(db_records.len(), 1, "{db_records:?}");
    let r = &db_records[0].1;
    assert_eq!(r.outcome, DrillOutcome::Failed);
    let e = r.error.as_deref().expect("why");
    assert!(e.contains(&dump_key) && e.contains("restore refused"), "{e}");
    assert_eq!((r.rto_seconds, r.tables), (None, None));
    assert_eq!(scratch_databases(&db.server, &db.name), "", "no scratch database is left");
    let bucket_records = records(&*backup, &snapshot.prefix()).await;
    let r = &bucket_records[0].1;
    assert_eq!((r.outcome, r.objects_checked), (DrillOutcome::Failed, Some(4)));
    let e = r.error.as_deref().expect("why");
    assert!(e.starts_with("1 of 4 objects do not restore") && e.contains(&victim.key) && e.contains("MD5"), "{e}");

    // The result event, through the Pub/Sub emulator, to monitor, to Slack.
    let mut received = pubsub.pull().await;
    assert_eq!(received.len(), 1, "one event per run");
    let m = received.pop().expect("the event");
    m.ack().await.expect("ack");
    let event = Event::from_json(&m.message.data).expect("event");
    assert_eq!((event.data.program.as_str(), event.data.outcome), ("drill", Outcome::Failure));
    assert_eq!(event.data.items.len(), 2, "{:?}", event.data.items);
    assert!(event.data.items.iter().all(|i| i.outcome == Outcome::Failure && i.figures.contains_key("record")));
    let slack = Hook::new().await;
    let monitor = serve_monitor(&backup, &slack).await;
    let attributes: BTreeMap<String, String> = m.message.attributes.clone().into_iter().collect();
    let envelope = lifeboat_core::runtime::push::envelope(
        &m.message.data,
        &attributes,
        &m.message.message_id,
        Utc::now(),
        pubsub.subscription.fully_qualified_name(),
    );
    let answer = monitor.http.post(format!("{}/pubsub", monitor.base)).bearer_auth(TOKEN).json(&envelope).send().await;
    let answer = answer.expect("post");
    assert_eq!(answer.status().as_u16(), 200);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["status"], json!("alerted"), "{body}");
    let texts = slack.texts().await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("drill failed") && texts[0].contains(&db.name), "{}", texts[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_backup_is_drilled_with_the_identity_and_fails_without_it() {
    let backup = gcs_backup_store().await;
    let key = Identities::generate();
    let recipient = key.recipients()[0].clone();
    let (db, db_path) = backed_up_database(&backup, 300, &[("BACKUP_ENCRYPTION_RECIPIENTS", &recipient)]).await;
    assert!(backup.stat(&db_path.dump_key("zst.age")).await.is_ok(), "the dump is encrypted");

    let out = drill(&db.server, &backup, &[("BACKUP_DATABASES", &db.name)]);
    assert_eq!(out.status.code(), Some(1), "no identity, no drill: {}", stderr(&out));
    let identity = key.to_secret_text(Utc::now()).expose().to_owned();
    let out = drill(&db.server, &backup, &[("BACKUP_DATABASES", &db.name), ("BACKUP_ENCRYPTION_IDENTITY", &identity)]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(!log.contains("AGE-SECRET-KEY"), "the identity is never logged");

    let mut found = records(&*backup, &db_path.prefix()).await;
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(found.len(), 2, "{found:?}");
    let failed = found.iter().find(|(_, r)| r.outcome == DrillOutcome::Failed).expect("the failed drill");
    assert!(failed.1.error.as_deref().is_some_and(|e| e.contains(&recipient)), "says which key: {:?}", failed.1.error);
    let passed = found.iter().find(|(_, r)| r.passed()).expect("the passed drill");
    assert_eq!((passed.1.tables, passed.1.rows), (Some(2), Some(300)));
    assert_eq!(scratch_databases(&db.server, &db.name), "");
}

/// A scratch name that exists already belongs to another drill: the drill fails and leaves it
/// (and what it holds) alone; it never drops a database it did not create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_scratch_database_is_refused_and_left_alone() {
    let backup = gcs_backup_store().await;
    let (db, db_path) = backed_up_database(&backup, 50, &[]).await;
    // The names the drill will pick in the next seconds, taken by "another drill".
    let now = Utc::now();
    let taken: Vec<String> =
        (0..8).map(|s| scratch_database_name(&db.name, now + chrono::Duration::seconds(s))).collect();
    for name in &taken {
        db.server.psql("postgres", &format!("CREATE DATABASE {name}"));
        db.server.psql(name, "CREATE TABLE mine (x int); INSERT INTO mine VALUES (7);");
        db.drop_later(name);
    }
    let out = drill(&db.server, &backup, &[("BACKUP_DATABASES", &db.name)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let found = records(&*backup, &db_path.prefix()).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let e = found[0].1.error.as_deref().expect("why");
    assert!(e.contains("already exists") && e.contains("left alone"), "{e}");
    for name in &taken {
        assert_eq!(db.server.psql(name, "SELECT x FROM mine"), "7", "{name} was touched");
    }
}

/// The content checksum of `table` as the backup records it, computed here independently (with
/// the fixed session settings under which a row's text form does not depend on the server).
fn content_checksum(db: &TestDb, table: &str) -> String {
    db.sql(&format!(
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
         SET extra_float_digits = 1; SET bytea_output = 'hex'; \
         SELECT coalesce(sum(('x' || substr(md5(r::text), 1, 16))::bit(64)::bigint::numeric), 0)::text \
         FROM ONLY {table} r;"
    ))
}

/// `BACKUP_TABLE_CHECKSUMS=true`: db-backup records a content checksum per table in the dump's
/// snapshot, the drill recomputes them on the restored copy and passes; a recorded checksum
/// that differs from the restored content fails the drill, naming the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_checksums_are_recorded_and_compared_by_the_drill() {
    let backup = gcs_backup_store().await;
    let db = TestDb::create("lbdrillsum");
    db.sql(&small_fixture(700));
    db.sql("CREATE TABLE empty_one (x int);");
    // Types whose text form depends on session settings, in a name that needs quoting; the
    // database's own settings differ from the drill server's defaults (they are not restored).
    db.sql(
        "CREATE SCHEMA \"Sales\"; \
         CREATE TABLE \"Sales\".\"Mixed \"\"Q\"\"\" (id int, ts timestamptz, d date, iv interval, f float8, \
           n numeric, b bytea, j jsonb, s text); \
         INSERT INTO \"Sales\".\"Mixed \"\"Q\"\"\" SELECT g, '2026-03-29 01:30:00+00'::timestamptz + g * interval '7 hours', \
           date '2026-01-01' + g, g * interval '1 day 3 hours', g / 3.0, g * 1.5, \
           decode(md5(g::text), 'hex'), jsonb_build_object('g', g), CASE WHEN g % 5 = 0 THEN NULL ELSE 'it''s \"' || g END \
         FROM generate_series(1, 300) g;",
    );
    db.server.psql(
        "postgres",
        &format!(
            "ALTER DATABASE {0} SET TimeZone = 'Pacific/Chatham'; ALTER DATABASE {0} SET DateStyle = 'SQL, DMY'; \
             ALTER DATABASE {0} SET IntervalStyle = 'sql_standard'; ALTER DATABASE {0} SET bytea_output = 'escape';",
            ident(&db.name)
        ),
    );
    let home = tempfile::tempdir().expect("home");
    let out = db_job("db-backup", home.path(), &db.server, &backup.location().to_string())
        .env("BACKUP_DATABASES", &db.name)
        .env("BACKUP_TABLE_CHECKSUMS", "true")
        .output()
        .expect("run db-backup");
    assert_eq!(out.status.code(), Some(0), "db-backup failed: {}", stderr(&out));
    let backups = list_backups(&*backup, "main", &db.name).await.expect("list");
    let db_path = backups[0].path.clone();
    let manifest = crate::support::db::manifest(&backup, "main", &db.name, &db_path.run.to_string()).await;

    // One checksum per table, equal to the direct computation on the source.
    let sums = manifest.table_checksums.clone().expect("table checksums recorded");
    let mixed = r#""Sales"."Mixed ""Q""""#;
    let keys: Vec<&str> = sums.keys().map(String::as_str).collect();
    assert_eq!(keys, [mixed, "public.empty_one", "public.t"]);
    assert_eq!(sums["public.t"], content_checksum(&db, "public.t"));
    assert_eq!(sums[mixed], content_checksum(&db, mixed));
    assert_eq!(sums["public.empty_one"], "0");
    assert_ne!(sums["public.t"], "0");
    // The same scan gave the row counts.
    let counts = manifest.row_counts.clone().expect("row counts");
    assert_eq!((counts["public.t"], counts[mixed], counts["public.empty_one"]), (700, 300, 0));

    let out = drill(&db.server, &backup, &[("BACKUP_DATABASES", &db.name)]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "drill failed: {log}");
    assert!(log.contains("table checksums match"), "{log}");
    let found = records(&*backup, &db_path.prefix()).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].1.outcome, found[0].1.tables), (DrillOutcome::Passed, Some(3)));

    // The recorded checksum of one table changed in the manifest (everything else kept): the
    // restored content no longer matches it and the drill fails, naming that table only.
    let manifest_key = db_path.manifest_key();
    let mut json: Value = serde_json::from_slice(&backup.read_all(&manifest_key, 1 << 20).await.expect("manifest"))
        .expect("manifest json");
    json["table_checksums"]["public.t"] = json!("12345");
    let bytes = serde_json::to_vec_pretty(&json).expect("json");
    overwrite(&*backup, &manifest_key, &bytes, typed("application/json")).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = drill(&db.server, &backup, &[("BACKUP_DATABASES", &db.name)]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a checksum mismatch fails the drill: {log}");
    let found = records(&*backup, &db_path.prefix()).await;
    assert_eq!(found.len(), 2, "{found:?}");
    let failed = found.iter().find(|(_, r)| r.outcome == DrillOutcome::Failed).expect("the failed drill");
    let e = failed.1.error.as_deref().expect("why");
    assert!(e.contains("public.t: content checksum") && e.contains("backup had 12345"), "{e}");
    assert!(e.contains("1 of 3 tables") && !e.contains("Mixed") && !e.contains("empty_one"), "{e}");
    assert_eq!(failed.1.rto_seconds, None);
    assert_eq!(scratch_databases(&db.server, &db.name), "", "no scratch database is left");
}
