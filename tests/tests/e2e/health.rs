//! `health` end to end: backups in fake-gcs-server, the service served in-process (JSON and the
//! HTML page), and the binary in job mode (exit code, table).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use lifeboat_core::core::clock::Clock;
use lifeboat_core::programs::health;
use lifeboat_core::runtime::App;
use lifeboat_core::store::DynStore;
use serde_json::Value;

use crate::support::binaries::job;
use crate::support::fake_backups::{Drill, db_backup, db_drill, encrypted_db_backup, run_at, snapshot, snapshot_drill};
use crate::support::gcs::gcs_store_with;
use crate::support::stack::{Served, config, services};

async fn store() -> DynStore {
    Arc::new(gcs_store_with(1 << 20, "backups").await)
}

#[tokio::test]
async fn health_serves_json_and_an_html_page() {
    let store = store().await;
    let t0 = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let clock = Clock::manual(t0);
    for (k, size) in [(3, 1000), (2, 1100), (1, 900)] {
        db_backup(&*store, "main", "app", &run_at(t0 - Duration::days(k) + Duration::hours(2)), size, true).await;
    }
    db_backup(&*store, "main", "billing", &run_at(t0 - Duration::minutes(25 * 60 + 1)), 500, true).await;
    snapshot(&*store, "media", &run_at(t0 - Duration::hours(3)), &[("a.png", "blob-a")], true, false).await;

    let (services, env) = services(store.clone(), &[("BACKUP_DATABASES", "app,billing,ledger")]);
    let services = services.with_clock(clock.clone());
    let program = health::start(services.clone(), config(&env, &[], health::read)).await.expect("start");
    let app = App::new(&health::SPEC, Arc::new(program), services);
    let served = Served::start(app).await;
    let (base, http) = (served.base.clone(), served.http.clone());

    let r = http.get(format!("{base}/status")).send().await.expect("status");
    assert_eq!(r.status(), 503, "billing is stale, ledger missing");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.expect("json");
    let rows = body["sources"].as_array().expect("sources");
    let summary: Vec<_> = rows.iter().map(|s| (s["name"].clone(), s["status"].clone())).collect();
    assert_eq!(
        summary,
        [("app", "ok"), ("billing", "stale"), ("snapshots", "ok"), ("ledger", "missing")]
            .map(|(n, s)| (Value::from(n), Value::from(s)))
    );
    let app_row = &rows[0];
    assert_eq!(app_row["complete_backups"], 3);
    assert_eq!(app_row["age_seconds"], 22 * 3600);
    // Sizes count the dump and the manifest (whose length varies by a byte or two).
    let change = app_row["bytes_change"].as_i64().expect("change");
    assert!((-205..=-195).contains(&change), "{change}");
    assert_eq!(app_row["recent_sizes"].as_array().map(Vec::len), Some(3));
    assert_eq!(rows[2]["kind"], "bucket");

    for request in [
        http.get(format!("{base}/")),
        http.get(format!("{base}/status")).header("accept", "text/html,application/xhtml+xml;q=0.9"),
    ] {
        let r = request.send().await.expect("page");
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        let html = r.text().await.expect("html");
        assert_eq!(html.matches(r#"<tr class="row""#).count(), 4, "one row per source");
        for text in ["main/app", "main/billing", "gs://media", "main/ledger", "2 of 4 need attention", "<svg"] {
            assert!(html.contains(text), "{text} missing");
        }
    }

    // Fresh backups for billing and ledger: all ok, 200.
    for db in ["billing", "ledger"] {
        db_backup(&*store, "main", db, &run_at(t0 - Duration::hours(1)), 700, true).await;
    }
    let r = http.get(format!("{base}/status")).send().await.expect("status");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["ok"], true);
    // …until time passes (injected): 25 h after the newest of app.
    clock.advance(Duration::hours(4));
    let r = http.get(format!("{base}/status")).send().await.expect("status");
    assert_eq!(r.status(), 503, "app's newest backup is now 26 h old");

    served.stop().await;
}

#[tokio::test]
async fn job_mode_exits_non_zero_unless_everything_is_ok() {
    let store = store().await;
    let now = Utc::now();
    db_backup(&*store, "main", "app", &run_at(now - Duration::hours(2)), 100, true).await;
    let run = || {
        let home = tempfile::tempdir().expect("home");
        job("health", home.path(), &store.location().to_string())
            .env("BACKUP_DATABASES", "app")
            .env("SOURCE_BUCKETS", "media/photos")
            .output()
            .expect("run health")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "the expected bucket has no snapshot:\n{stdout}");
    assert!(stdout.contains("main/app") && stdout.contains("gs://media") && stdout.contains("missing"), "{stdout}");
    assert!(stdout.lines().next().is_some_and(|h| h.contains(" AGE ") && h.contains(" VERIFIED ")), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 sources ok: gs://media missing"));
    snapshot(&*store, "media", &run_at(now - Duration::hours(1)), &[("p.jpg", "b1")], true, false).await;
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// `SOURCE_BUCKETS` in its documented `gs://BUCKET[/PREFIX]` form is read as `storage-backup`
/// reads it: the expected bucket is `media`, not a phantom `gs://gs:` that is forever missing.
#[tokio::test]
async fn sources_in_url_form_are_the_buckets_storage_backup_snapshots() {
    let store = store().await;
    let now = Utc::now();
    snapshot(&*store, "media", &run_at(now - Duration::hours(1)), &[("p.jpg", "b1")], true, false).await;
    snapshot(&*store, "logs", &run_at(now - Duration::hours(1)), &[("l.txt", "b2")], true, false).await;
    let home = tempfile::tempdir().expect("home");
    let out = job("health", home.path(), &store.location().to_string())
        .env("SOURCE_BUCKETS", "gs://media/photos/, gs://logs")
        .output()
        .expect("run health");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("gs://gs") && !stdout.contains("missing"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("gs://")).count(), 2, "{stdout}");
}

/// An error outside any run (a service's request failing) is reported to Sentry too: the health
/// service asked for its status cannot read a store that does not exist.
#[tokio::test]
async fn an_error_serving_a_request_is_reported_to_sentry() {
    let sentry = crate::support::sentry::Project::new().await;
    let home = tempfile::tempdir().expect("home");
    let missing = format!("gs://{}", crate::support::unique("lb-none"));
    let mut command = crate::support::binaries::command("health", home.path());
    command
        .env("STORAGE_EMULATOR_HOST", crate::support::require_env("STORAGE_EMULATOR_HOST"))
        .env("LIFEBOAT_DESTINATION", &missing)
        .env("SENTRY_DSN", sentry.dsn());
    let service = crate::support::binaries::Service::start(command).await;
    let status = reqwest::get(format!("{}/status", service.base)).await.expect("GET /status").status();
    assert_eq!(status, 503);
    let mut events = Vec::new();
    for _ in 0..100 {
        events = sentry.events().await;
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 1, "{events:?}");
    let text = events[0].to_string();
    assert!(text.contains("cannot read the backup store"), "{text}");
    assert!(!text.contains(&sentry.key), "{text}");
}

/// `BACKUP_MAX_AGE` and `BACKUP_MAX_UNVERIFIED_AGE` are bounded: a huge value would silence the
/// alarm for good; zero or a non-duration is refused too. Both named in one message.
#[test]
fn an_unbounded_max_age_is_a_configuration_problem() {
    let home = tempfile::tempdir().expect("home");
    for program in ["health", "monitor", "console"] {
        for value in ["100000h", "33days", "1y"] {
            let out = job(program, home.path(), "gs://placeholder-1")
                .env("BACKUP_MAX_AGE", value)
                .env("BACKUP_MAX_UNVERIFIED_AGE", value)
                .output()
                .expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{program} {value}: {err}");
            assert!(err.contains("BACKUP_MAX_AGE: ") && err.contains("is longer than 32d"), "{program}: {err}");
            assert!(err.contains("BACKUP_MAX_UNVERIFIED_AGE: "), "{program}: {err}");
        }
        for value in ["0s", "soon", "-1d"] {
            let out = job(program, home.path(), "gs://placeholder-1")
                .env("BACKUP_MAX_UNVERIFIED_AGE", value)
                .output()
                .expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{program} {value}: {err}");
            assert!(err.contains("BACKUP_MAX_UNVERIFIED_AGE: "), "{program} {value}: {err}");
        }
        let help = job(program, home.path(), "gs://placeholder-1").arg("--help").output().expect("help");
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("BACKUP_MAX_UNVERIFIED_AGE (default: 8d)"), "{program}: {help}");
    }
}

/// Drill records beside the backups: the verified age per source (from the backup's time, not
/// the drill's), `unverified` past the limit, a record without metadata read from the store, a
/// failed drill verifying nothing, a new deployment not unverified on day 1.
#[tokio::test]
async fn health_reports_the_verified_age_and_unverified_sources() {
    let store = store().await;
    let t0 = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let clock = Clock::manual(t0);
    let day = |d: i64| t0 - Duration::days(d) + Duration::hours(2);
    let mut app = Vec::new();
    let mut ledger = Vec::new();
    for d in (1..=10).rev() {
        app.push(db_backup(&*store, "main", "app", &run_at(day(d)), 100, true).await);
        ledger.push(db_backup(&*store, "main", "ledger", &run_at(day(d)), 100, true).await);
    }
    for d in (1..=3).rev() {
        db_backup(&*store, "main", "billing", &run_at(day(d)), 100, true).await;
    }
    // app: the newest passed drill is of a backup 9 days old (drilled yesterday); newer drills failed.
    db_drill(&*store, &app[1], t0 - Duration::days(1), Drill::Passed).await;
    db_drill(&*store, &app[9], t0 - Duration::hours(2), Drill::Failed).await;
    // ledger: a passed record without metadata on the backup of 2 days ago.
    db_drill(&*store, &ledger[8], t0 - Duration::hours(30), Drill::PassedNoMetadata).await;
    let snap = snapshot(&*store, "media", &run_at(day(12)), &[("a.png", "blob-a")], true, false).await;
    let newest_snap = snapshot(&*store, "media", &run_at(day(1)), &[("a.png", "blob-a")], true, false).await;
    snapshot_drill(&*store, &snap, day(11), Drill::Passed).await;

    let (services, env) = services(store.clone(), &[("BACKUP_DATABASES", "app,billing,ledger")]);
    let services = services.with_clock(clock.clone());
    let program = health::start(services.clone(), config(&env, &[], health::read)).await.expect("start");
    let app_program = App::new(&health::SPEC, Arc::new(program), services);
    let served = Served::start(app_program).await;
    let (base, http) = (served.base.clone(), served.http.clone());

    let status = || async {
        let r = http.get(format!("{base}/status")).send().await.expect("status");
        let code = r.status().as_u16();
        (code, r.json::<Value>().await.expect("json"))
    };
    let (code, body) = status().await;
    assert_eq!(code, 503);
    let rows = body["sources"].as_array().expect("sources");
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).expect(name).clone();
    let (app_row, ledger_row, billing, media) = (row("app"), row("ledger"), row("billing"), row("snapshots"));
    assert_eq!(app_row["status"], "unverified", "{app_row}");
    assert_eq!(app_row["newest_verified_backup"], app[1].run.to_string());
    assert_eq!(app_row["verified_age_seconds"], (9 * 24 - 2) * 3600, "aged by the backup, not the drill");
    assert_eq!(app_row["last_drill_outcome"], "failed");
    assert_eq!(app_row["last_drill_backup"], app[9].run.to_string());
    assert_eq!(app_row["bytes_change"].as_i64().map(i64::abs).map(|c| c < 5), Some(true), "records are not bytes");
    assert_eq!(ledger_row["status"], "ok", "{ledger_row}");
    assert_eq!(ledger_row["verified_age_seconds"], (2 * 24 - 2) * 3600, "read from the record itself");
    assert_eq!((billing["status"].clone(), billing["verified_age_seconds"].clone()), ("ok".into(), Value::Null));
    assert_eq!(media["status"], "unverified", "{media}");
    assert_eq!(media["newest_verified_backup"], snap.run.to_string());

    let page = http.get(format!("{base}/")).send().await.expect("page").text().await.expect("html");
    assert!(page.contains("verified age") && page.contains("unverified after 8d"), "{page}");
    assert!(page.contains(r#"<span class="pill">unverified</span>"#) && page.contains("last drill failed"), "{page}");
    assert!(page.contains("8d22h"), "app's verified age is shown: {page}");

    // Drills pass on the newest backups: everything ok.
    db_drill(&*store, &app[9], t0 - Duration::hours(1), Drill::Passed).await;
    snapshot_drill(&*store, &newest_snap, t0 - Duration::hours(1), Drill::Passed).await;
    let (code, body) = status().await;
    assert_eq!(code, 200, "{body}");
    let app_row = body["sources"].as_array().expect("rows").iter().find(|r| r["name"] == "app").cloned().expect("app");
    assert_eq!(app_row["verified_age_seconds"], 22 * 3600);
    // Eight days later without a drill, billing's backups (no drill ever) are unverified too.
    clock.advance(Duration::days(8));
    let (_, body) = status().await;
    let billing = body["sources"].as_array().expect("rows").iter().find(|r| r["name"] == "billing").cloned();
    assert_eq!(billing.expect("billing")["status"], "stale", "stale wins over unverified");

    served.stop().await;
}

/// With BACKUP_ENCRYPTION_RECIPIENTS set (the value db-backup gets), a database whose newest
/// backup is not encrypted is `unencrypted`; without it, the flag is only shown.
#[tokio::test]
async fn an_unencrypted_newest_backup_is_reported_where_encryption_is_configured() {
    let store = store().await;
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let key = lifeboat_core::db::encryption::Identities::generate().recipients();
    encrypted_db_backup(&*store, "main", "sealed", &run_at(now - Duration::hours(2)), 100, &key).await;
    encrypted_db_backup(&*store, "main", "leaky", &run_at(now - Duration::hours(20)), 100, &key).await;
    db_backup(&*store, "main", "leaky", &run_at(now - Duration::hours(1)), 100, true).await;
    snapshot(&*store, "media", &run_at(now - Duration::hours(3)), &[("a.png", "blob-a")], true, false).await;

    let evaluate = |vars: Vec<(&'static str, String)>| {
        let store = store.clone();
        async move {
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (services, env) = services(store, &vars);
            let program = health::start(services, config(&env, &[], health::read)).await.expect("start");
            let rows = program.evaluate(now).await.expect("evaluate");
            rows.iter().map(|r| (r.name.clone(), r.status.name(), r.encrypted)).collect::<Vec<_>>()
        }
    };
    let expected = |leaky| {
        vec![
            ("leaky".to_owned(), leaky, Some(false)),
            ("sealed".to_owned(), "ok", Some(true)),
            ("snapshots".to_owned(), "ok", None),
        ]
    };
    assert_eq!(evaluate(vec![]).await, expected("ok"));
    assert_eq!(evaluate(vec![("BACKUP_ENCRYPTION_RECIPIENTS", key.join(","))]).await, expected("unencrypted"));

    // The job: exit 1 and the table says why; a malformed recipient is exit 2 naming the variable.
    let home = tempfile::tempdir().expect("home");
    let run = |recipients: &str| {
        job("health", home.path(), &store.location().to_string())
            .env("BACKUP_ENCRYPTION_RECIPIENTS", recipients)
            .output()
            .expect("run health")
    };
    let out = run(&key[0]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let leaky = stdout.lines().find(|l| l.starts_with("main/leaky")).expect("a leaky row");
    assert!(leaky.contains("unencrypted") && leaky.split_whitespace().any(|w| w == "no"), "{stdout}");
    assert!(stdout.contains("ENCRYPTED"), "{stdout}");
    let out = run("age1definitelynotakey");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BACKUP_ENCRYPTION_RECIPIENTS: item 1 is not an age X25519 recipient"), "{stderr}");
}

/// Finding which backups are verified costs no request per backup: the listing that finds the
/// backups finds their drill records, and the outcome is in the records' metadata. Records
/// without it are read newest first, until a passed one, at most `MAX_RECORD_READS` per series.
#[tokio::test]
async fn verification_costs_no_request_per_backup() {
    use lifeboat_core::inventory::{MAX_RECORD_READS, load};

    use crate::support::counting::Counting;

    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let mut measured = Vec::new();
    // Every backup drilled with `each`, the newest with `newest`.
    for (n, each, newest) in [
        (5, Drill::Passed, Drill::Passed),
        (40, Drill::Passed, Drill::Passed),
        (40, Drill::Failed, Drill::Failed),
        (40, Drill::PassedNoMetadata, Drill::PassedNoMetadata),
        (5, Drill::FailedNoMetadata, Drill::FailedNoMetadata),
        (40, Drill::FailedNoMetadata, Drill::FailedNoMetadata),
    ] {
        let store = store().await;
        for d in (0..n).rev() {
            let path = db_backup(&*store, "main", "app", &run_at(now - Duration::hours(d * 6 + 1)), 10, true).await;
            let drill = if d == 0 { newest } else { each };
            db_drill(&*store, &path, now - Duration::hours(d * 6), drill).await;
        }
        let counting = Counting::new(store.clone());
        let series = load(&counting, "main").await.expect("load");
        let (lists, reads, writes) = counting.counts.get();
        assert_eq!(writes, 0);
        measured.push((n, format!("{each:?}"), lists, reads, series[0].newest_verified().is_some()));
    }
    eprintln!("one load: (backups, drill records, list pages, reads, verified): {measured:?}");
    let figures: Vec<(usize, usize, bool)> = measured.iter().map(|m| (m.2, m.3, m.4)).collect();
    let capped = 2 * MAX_RECORD_READS; // a stat and a read each
    assert_eq!(
        figures,
        [(2, 0, true), (2, 0, true), (2, 0, false), (2, 2, true), (2, 10, false), (2, capped, false)],
        "{measured:?}"
    );
}

/// The whole chain with the real binaries: `db-backup`, then `health` (no verified age yet),
/// `drill --once` (restores it into a scratch database and writes the record), `health` again:
/// the verified age is the backup's age.
#[tokio::test]
async fn health_shows_the_verified_age_after_a_real_drill() {
    use futures::TryStreamExt as _;
    use lifeboat_core::store::ObjectStoreExt as _;

    use crate::support::db::{db_job, small_fixture};
    use crate::support::postgres::TestDb;

    let store = store().await;
    let db = TestDb::create("lbverified");
    db.sql(&small_fixture(200));
    let home = tempfile::tempdir().expect("home");
    let destination = store.location().to_string();
    let run = |program: &str| {
        db_job(program, home.path(), &db.server, &destination)
            .env("BACKUP_DATABASES", &db.name)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    };
    let out = run("db-backup");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // health's row of the database: (status, age, verified age).
    let row = |out: &std::process::Output| {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = stdout.lines().find(|l| l.starts_with(&format!("main/{}", db.name))).map(str::to_owned);
        let line = line.unwrap_or_else(|| panic!("no row: {stdout}"));
        let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        (fields[1].clone(), fields[2].clone(), fields[3].clone())
    };
    let before = row(&run("health"));
    assert_eq!((before.0.as_str(), before.2.as_str()), ("ok", "-"), "{before:?}");

    let out = run("drill");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // The record carries its outcome in its metadata: readers need no read to know it.
    let prefix = format!("db/main/{}/", db.name);
    let records: Vec<_> = store.list_all(&prefix).try_collect().await.expect("list");
    let record = records.iter().find(|o| o.key.contains("/drills/")).expect("a drill record");
    assert_eq!(
        record.metadata.get(lifeboat_core::core::naming::DRILL_OUTCOME_METADATA).map(String::as_str),
        Some("passed")
    );
    let after = row(&run("health"));
    assert_eq!(after.0, "ok", "{after:?}");
    assert_ne!(after.2, "-", "the drilled backup is verified: {after:?}");
    assert!(after.2.ends_with('s') || after.2.ends_with('m'), "aged by the backup (seconds old): {after:?}");
}
