//! `prune` applied to fake-gcs-server with real manifests and snapshots. Time is injected: the
//! objects are written now (the server's clock), the clock of the program is set hours later to
//! cross the grace periods without sleeping.

use std::sync::Arc;

use chrono::{Duration, Utc};
use lifeboat_core::core::clock::Clock;
use lifeboat_core::core::events::{Outcome, RunResult};
use lifeboat_core::programs::prune;
use lifeboat_core::runtime::{Program, RunContext, Trigger};
use lifeboat_core::store::{DynStore, ObjectStore};

use crate::support::binaries::job;
use crate::support::fake_backups::{Drill, blob_key, db_backup, db_drill, keys, run_at, snapshot, snapshot_drill};
use crate::support::gcs::gcs_store_with;
use crate::support::stack::{config, services};

async fn store() -> DynStore {
    Arc::new(gcs_store_with(1 << 20, "backups").await)
}

async fn app(store: &DynStore, vars: &[(&str, &str)], clock: &Clock) -> prune::App {
    let (services, env) = services(store.clone(), vars);
    let cfg = config(&env, &[], prune::read);
    prune::start(services.with_clock(clock.clone()), cfg).await.expect("start")
}

fn figure(r: &RunResult, name: &str) -> u64 {
    r.figures.get(name).and_then(serde_json::Value::as_u64).unwrap_or_else(|| panic!("figure {name} in {r:?}"))
}

async fn bytes_under(store: &dyn ObjectStore, prefixes: &[String]) -> u64 {
    use futures::TryStreamExt as _;
    use lifeboat_core::store::ObjectStoreExt as _;
    let mut total = 0;
    for p in prefixes {
        let objects: Vec<_> = store.list_all(p).try_collect().await.expect("list");
        total += objects.iter().map(|o| o.size).sum::<u64>();
    }
    total
}

#[tokio::test]
async fn prune_applies_the_plan_and_collects_orphans_after_the_grace() {
    let store = store().await;
    let now = Utc::now();
    let mut backups = Vec::new();
    for k in 1..=8 {
        backups
            .push(db_backup(&*store, "main", "app", &run_at(now - Duration::days(k)), 1000 + k as usize, true).await);
    }
    let orphan = db_backup(&*store, "main", "app", &run_at(now - Duration::days(20)), 500, false).await;
    let other_source = db_backup(&*store, "other", "app", &run_at(now - Duration::days(50)), 10, true).await;
    let expected_freed = bytes_under(&*store, &backups[3..].iter().map(|b| b.prefix()).collect::<Vec<_>>()).await;

    let vars = [("BACKUP_RETENTION_DAYS", "1"), ("BACKUP_KEEP_DAILY", "3"), ("PRUNE_MAX_DELETE_FRACTION", "0.75")];
    let clock = Clock::manual(now + Duration::hours(1));
    let app = app(&store, &vars, &clock).await;
    let result = app.run(RunContext::new(Trigger::Http)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.summary);
    assert_eq!(figure(&result, "backups_deleted"), 5);
    assert_eq!(figure(&result, "orphans_deleted"), 0, "the orphan is younger than PRUNE_GRACE (server time)");
    assert_eq!(figure(&result, "objects_deleted"), 10);
    assert_eq!(figure(&result, "bytes_freed"), expected_freed);
    assert!(result.summary.contains("deleted 5 backups, 0 orphans"), "{}", result.summary);
    assert_eq!(result.items.len(), 1);
    assert_eq!(result.items[0].name, "main/app");

    let left = keys(&*store).await;
    for b in &backups[..3] {
        assert!(left.contains(&b.manifest_key()) && left.contains(&b.dump_key("zst")), "{} kept", b.run);
    }
    for b in &backups[3..] {
        assert!(!left.iter().any(|k| k.starts_with(&b.prefix())), "{} deleted", b.run);
    }
    assert!(left.contains(&orphan.dump_key("zst")));
    assert!(left.contains(&other_source.manifest_key()), "another source is never touched");

    // Idempotent: planning again deletes nothing.
    let again = app.plan(clock.now()).await.expect("plan");
    assert_eq!(again.totals().backups + again.totals().orphans, 0, "{}", again.table(chrono_tz::UTC));

    // Past the grace period (as seen against the objects' server time) the orphan goes.
    clock.set(now + Duration::hours(49));
    let result = app.run(RunContext::new(Trigger::Http)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.summary);
    assert_eq!((figure(&result, "backups_deleted"), figure(&result, "orphans_deleted")), (0, 1));
    let left = keys(&*store).await;
    assert!(!left.contains(&orphan.dump_key("zst")));
    assert_eq!(left.len(), 3 * 2 + 2, "three backups of main/app and the other source's");
}

/// The newest verified backup (a passed drill record beside it) is kept whatever the policy, with
/// its records; other backups go with their records; a snapshot verified by a record without
/// metadata (read from the store) is kept with the blobs it references.
#[tokio::test]
async fn prune_keeps_the_newest_verified_backup_and_its_drill_records() {
    let store = store().await;
    let now = Utc::now();
    let mut backups = Vec::new();
    for k in 1..=8 {
        backups.push(db_backup(&*store, "main", "app", &run_at(now - Duration::days(k)), 100, true).await);
    }
    // backups[0] is the newest (1 day old), backups[7] the oldest.
    let failed = db_drill(&*store, &backups[0], now - Duration::hours(12), Drill::Failed).await;
    let verified = db_drill(&*store, &backups[5], now - Duration::days(5), Drill::Passed).await;
    let older = db_drill(&*store, &backups[7], now - Duration::days(7), Drill::Passed).await;
    let mut snapshots = Vec::new();
    for (k, blob) in [(9, "blob-old"), (6, "blob-verified"), (3, "blob-mid"), (1, "blob-new")] {
        let run = run_at(now - Duration::days(k));
        snapshots.push(snapshot(&*store, "media", &run, &[("a.png", blob)], true, false).await);
    }
    let snap_record = snapshot_drill(&*store, &snapshots[1], now - Duration::days(5), Drill::PassedNoMetadata).await;

    let vars = [
        ("BACKUP_RETENTION_DAYS", "1"),
        ("BACKUP_KEEP_DAILY", "2"),
        ("PRUNE_MAX_DELETE_FRACTION", "1"),
        ("PRUNE_GRACE", "24h"),
    ];
    // 50 h later: past the grace for unreferenced blobs (server time is now).
    let clock = Clock::manual(now + Duration::hours(50));
    let app = app(&store, &vars, &clock).await;
    let plan = app.plan(clock.now()).await.expect("plan");
    let table = plan.table(chrono_tz::UTC);
    assert!(table.contains(&format!("{}", backups[5].run)) && table.contains("keep   newest verified"), "{table}");
    let result = app.run(RunContext::new(Trigger::Http)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.summary);

    let left = keys(&*store).await;
    for b in [&backups[0], &backups[1], &backups[5]] {
        assert!(left.contains(&b.manifest_key()), "{} kept", b.run);
    }
    assert!(left.contains(&verified) && left.contains(&failed), "a kept backup's records are never touched");
    for b in [&backups[2], &backups[3], &backups[4], &backups[6], &backups[7]] {
        assert!(!left.iter().any(|k| k.starts_with(&b.prefix())), "{} deleted", b.run);
    }
    assert!(!left.contains(&older), "a deleted backup's records go with it");
    assert!(left.contains(&snapshots[1].header_key()) && left.contains(&snap_record), "verified snapshot kept");
    assert!(left.contains(&blob_key("media", "blob-verified")), "with the blobs it references");
    assert!(!left.contains(&snapshots[0].header_key()) && !left.contains(&blob_key("media", "blob-old")));
    assert_eq!(figure(&result, "backups_deleted"), 5 + 1);
}

#[tokio::test]
async fn prune_holds_a_series_whose_newest_run_failed() {
    let store = store().await;
    let now = Utc::now();
    for k in 10..15 {
        db_backup(&*store, "main", "app", &run_at(now - Duration::days(k)), 100, true).await;
    }
    // The newest run wrote its dump (server time: now) and never its manifest.
    db_backup(&*store, "main", "app", &run_at(now - Duration::hours(1)), 100, false).await;
    let before = keys(&*store).await;
    let vars = [("BACKUP_RETENTION_DAYS", "1"), ("PRUNE_MAX_DELETE_FRACTION", "1")];
    // 7 h later the run is past RUN_GRACE (6 h): failed.
    let clock = Clock::manual(now + Duration::hours(7));
    let result = app(&store, &vars, &clock).await.run(RunContext::new(Trigger::Http)).await;
    assert_eq!(result.outcome, Outcome::Failure, "a refused prune is a failed run: {}", result.summary);
    assert!(result.summary.contains("prune refused (main/app: newest run"), "{}", result.summary);
    assert_eq!(figure(&result, "series_held"), 1);
    assert_eq!(figure(&result, "objects_deleted"), 0);
    let why = result.items[0].error.as_deref().unwrap_or_default();
    assert!(why.contains("failed (no manifest)"), "{why}");
    assert_eq!(keys(&*store).await, before, "nothing deleted");

    // Too many deletions without --force: held too.
    let store = self::store().await;
    for k in 10..15 {
        db_backup(&*store, "main", "app", &run_at(now - Duration::days(k)), 100, true).await;
    }
    let vars = [("BACKUP_RETENTION_DAYS", "1")];
    let result = app(&store, &vars, &clock).await.run(RunContext::new(Trigger::Http)).await;
    assert_eq!(result.outcome, Outcome::Failure);
    assert!(result.summary.contains("1 series held, prune refused"), "{}", result.summary);
    assert!(result.summary.contains("more than the allowed share"), "{}", result.summary);
    assert!(result.items[0].error.as_deref().unwrap_or_default().contains("--force"));
    let (services, env) = services(store.clone(), &vars);
    let forced =
        prune::start(services.with_clock(clock), config(&env, &["--force"], prune::read)).await.expect("start");
    let result = forced.run(RunContext::new(Trigger::Http)).await;
    assert_eq!((result.outcome, figure(&result, "backups_deleted")), (Outcome::Success, 4));
}

#[tokio::test]
async fn prune_deletes_unreferenced_blobs_only_after_the_grace() {
    let store = store().await;
    let now = Utc::now();
    let s1 =
        snapshot(&*store, "media", &run_at(now - Duration::days(10)), &[("x", "a"), ("y", "b")], true, false).await;
    let s2 = snapshot(&*store, "media", &run_at(now - Duration::days(5)), &[("y", "b"), ("z", "c")], true, false).await;
    let s3 = snapshot(&*store, "media", &run_at(now - Duration::days(1)), &[("z", "c"), ("w", "d")], true, false).await;
    // A blob nothing references (e.g. copied by a crashed snapshot).
    store
        .put(&blob_key("media", "stray"), bytes::Bytes::from_static(b"stray"), Default::default())
        .await
        .expect("stray blob");

    let vars = [("BACKUP_RETENTION_DAYS", "1"), ("BACKUP_KEEP_LAST", "2"), ("PRUNE_MAX_DELETE_FRACTION", "1")];
    let clock = Clock::manual(now + Duration::hours(1));
    let app = app(&store, &vars, &clock).await;
    let result = app.run(RunContext::new(Trigger::Http)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.summary);
    assert_eq!((figure(&result, "backups_deleted"), figure(&result, "blobs_deleted")), (1, 0));
    let left = keys(&*store).await;
    assert!(!left.iter().any(|k| k.starts_with(&s1.prefix())), "snapshot s1 dropped");
    assert!(left.contains(&blob_key("media", "a")), "young blobs survive the first run");

    clock.set(now + Duration::hours(49));
    let result = app.run(RunContext::new(Trigger::Http)).await;
    assert_eq!(figure(&result, "blobs_deleted"), 2, "{result:?}");
    let left = keys(&*store).await;
    let blobs: Vec<_> = left.iter().filter(|k| k.contains("/blobs/")).cloned().collect();
    assert_eq!(blobs, ["b", "c", "d"].map(|b| blob_key("media", b)));
    assert!(left.contains(&s2.header_key()) && left.contains(&s3.header_key()));
    assert_eq!(item_figure(&result, "gs://media", "blobs_deleted"), 2);
}

fn item_figure(r: &RunResult, item: &str, name: &str) -> u64 {
    let item = r.items.iter().find(|i| i.name == item).unwrap_or_else(|| panic!("item {item} in {r:?}"));
    item.figures.get(name).and_then(serde_json::Value::as_u64).unwrap_or_default()
}

#[tokio::test]
async fn a_crash_mid_prune_and_a_rerun_reach_the_same_end_state() {
    let now = Utc::now();
    let db_runs: Vec<_> = (1..=6).map(|k| run_at(now - Duration::days(k * 3))).collect();
    let snap_runs: Vec<_> = (1..=4).map(|k| run_at(now - Duration::days(k * 3))).collect();
    let (clean, crashed) = (store().await, store().await);
    for s in [&clean, &crashed] {
        for (i, run) in db_runs.iter().enumerate() {
            db_backup(&**s, "main", "app", run, 100 + i, true).await;
        }
        for (i, run) in snap_runs.iter().enumerate() {
            let blob = format!("blob-{i}");
            snapshot(&**s, "media", run, &[("shared", "common"), ("own", &blob)], true, false).await;
        }
    }
    let vars = [("BACKUP_RETENTION_DAYS", "1"), ("BACKUP_KEEP_LAST", "2"), ("PRUNE_MAX_DELETE_FRACTION", "1")];
    let clock = Clock::manual(now + Duration::hours(49));

    // The crashed prune removed only the completion objects of its first deletions.
    let crashed_app = app(&crashed, &vars, &clock).await;
    let plan = crashed_app.plan(clock.now()).await.expect("plan");
    for sp in &plan.series {
        let first = sp.deletions().next().expect("something to delete");
        let order = sp.deletion_order(first);
        assert!(order[0].ends_with("manifest.json") || order[0].ends_with("header.json"), "{order:?}");
        assert!(crashed.delete(order[0]).await.expect("delete"), "completion object deleted first");
    }
    let rerun = crashed_app.run(RunContext::new(Trigger::Http)).await;
    assert_eq!(rerun.outcome, Outcome::Success, "{}", rerun.summary);
    assert_eq!(figure(&rerun, "orphans_deleted"), 2, "the half-deleted runs are now orphans");

    let result = app(&clean, &vars, &clock).await.run(RunContext::new(Trigger::Http)).await;
    assert_eq!(result.outcome, Outcome::Success, "{}", result.summary);
    assert_eq!(figure(&result, "backups_deleted"), 4 + 2);
    let (a, b) = (keys(&*clean).await, keys(&*crashed).await);
    assert_eq!(a, b, "same end state");
    assert_eq!(a.iter().filter(|k| k.ends_with("manifest.json")).count(), 2);
    assert_eq!(a.iter().filter(|k| k.contains("/blobs/")).count(), 3, "common + the two kept snapshots' own");
}

/// A prune its guard refuses exits 1 (so Cloud Run's "job execution failed" e-mail fires, as the
/// runbook promises) with the reason in its result event; it used to exit 0 with a warning. A
/// dry run of the same plan only reports it (exit 0).
#[tokio::test]
async fn a_refused_prune_binary_exits_1_with_the_reason() {
    let store = store().await;
    let now = Utc::now();
    for k in 10..15 {
        db_backup(&*store, "main", "app", &run_at(now - Duration::days(k)), 100, true).await;
    }
    let before = keys(&*store).await;
    let home = tempfile::tempdir().expect("home");
    let run = |dry_run: bool| {
        let mut c = job("prune", home.path(), &store.location().to_string());
        c.env("BACKUP_RETENTION_DAYS", "1");
        if dry_run {
            c.arg("--dry-run");
        }
        c.output().expect("run prune")
    };
    let out = run(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("prune refused (main/app: the rules would delete 4 of 5 backups"), "{stderr}");
    assert_eq!(keys(&*store).await, before, "nothing deleted");
    let out = run(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("prune would be refused"), "{stderr}");
}

#[tokio::test]
async fn dry_run_binary_prints_the_plan_and_changes_nothing() {
    let store = store().await;
    let now = Utc::now();
    for k in 1..=5 {
        db_backup(&*store, "main", "app", &run_at(now - Duration::days(k)), 100, true).await;
    }
    let before = keys(&*store).await;
    let home = tempfile::tempdir().expect("home");
    let out = job("prune", home.path(), &store.location().to_string())
        .env("BACKUP_RETENTION_DAYS", "1")
        .env("BACKUP_KEEP_LAST", "2")
        .env("BACKUP_TIMEZONE", "Asia/Tokyo")
        .env("PRUNE_MAX_DELETE_FRACTION", "1")
        .arg("--dry-run")
        .output()
        .expect("run prune");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("SERIES"), "{stdout}");
    assert!(stdout.contains("STARTED (Asia/Tokyo)"), "{stdout}");
    assert_eq!(stdout.matches(" DELETE ").count(), 3, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.contains("  keep  ")).count(), 2, "{stdout}");
    assert!(stdout.contains("newest good"), "{stdout}");
    assert!(stdout.contains("delete 3 backups and 0 orphans (6 objects"), "{stdout}");
    assert_eq!(keys(&*store).await, before, "a dry run changes nothing");
}

/// A `pg_dump` that writes part of a dump and then hangs (until it is killed).
const HANGING_PG_DUMP: &str = "case \"$1\" in --version) exec \"$REAL\" --version;; esac\nprintf PGDMP\nhead -c 300000 /dev/urandom\nexec sleep 120";

/// The temp files of a `file://` store (`.lifeboat-tmp/`).
fn temp_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(root.join(".lifeboat-tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn prune_collects_the_temp_files_of_a_killed_backup_after_the_grace() {
    use std::os::unix::process::CommandExt as _;

    use crate::support::db::{db_job, file_url};
    use crate::support::postgres::{TestDb, fake_bin_dir};

    let db = TestDb::create("lb-prune-killed");
    db.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);");
    let home = tempfile::tempdir().expect("home");
    let backups = tempfile::tempdir().expect("backups");
    let tools = fake_bin_dir(HANGING_PG_DUMP);
    // The backup runs in its own process group, so the kill takes its pg_dump along.
    let mut c = db_job("db-backup", home.path(), &db.server, &file_url(&backups));
    c.env("LIFEBOAT_PG_BIN_DIR", tools.path())
        .env("BACKUP_DATABASES", &db.name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = c.spawn().expect("spawn db-backup");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while temp_files(backups.path()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "db-backup never started writing");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let group = format!("-{}", child.id());
    let killed = std::process::Command::new("kill").args(["-9", "--", &group]).status().expect("kill");
    assert!(killed.success());
    let _ = child.wait();

    let left = temp_files(backups.path());
    assert_eq!(left.len(), 1, "the killed run left its temp file: {left:?}");
    let old = left[0].clone();
    // Three days old (past the 48 h grace); a second one written just now (a write that may
    // still be going on) must stay.
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(72 * 3600)))
        .expect("age the temp file");
    let young = old.with_file_name(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
    std::fs::write(&young, b"a write in progress").expect("young temp file");
    let old_size = std::fs::metadata(&old).expect("stat").len();

    let dry = job("prune", home.path(), &file_url(&backups)).arg("--dry-run").output().expect("prune --dry-run");
    let dry_log = String::from_utf8_lossy(&dry.stderr);
    assert_eq!(dry.status.code(), Some(0), "{dry_log}");
    assert!(old.exists(), "a dry run deletes nothing");
    assert!(dry_log.contains("would delete 1 temp files of killed runs"), "{dry_log}");

    let out = job("prune", home.path(), &file_url(&backups)).output().expect("prune");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(!old.exists(), "the killed run's temp file is collected: {log}");
    assert!(young.exists(), "a young temp file stays");
    assert!(log.contains("deleted 1 temp files of killed runs"), "{log}");
    assert!(log.contains(&format!("\"temp_bytes_freed\":{old_size}")), "{log}");
}
