//! `console` end to end, through its real binary: locally its actions run the sibling binaries
//! on the stack's PostgreSQL; "on Cloud Run" (`K_SERVICE`) they go to a stand-in of the Cloud Run
//! Admin API that checks the path, the body and the OAuth token from the (stood-in) metadata server.

use serde_json::{Value, json};

use crate::support::console::{ACCESS_TOKEN, Client, RunApi, TOKEN, cloud_console, local_console};
use crate::support::postgres::TestDb;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn jwt(email: &str) -> String {
    bearer(&lifeboat_core::runtime::auth::unsigned_jwt_for(email))
}

#[tokio::test]
async fn every_action_runs_its_job_locally_and_a_restore_needs_its_target_typed_twice() {
    let db = TestDb::create("console");
    db.sql("CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 500);");
    let home = tempfile::tempdir().expect("home");
    // A local "bucket": a directory snapshotted through a file:// source.
    let uploads = home.path().join("src/uploads");
    std::fs::create_dir_all(uploads.join("photos")).expect("source dir");
    std::fs::write(uploads.join("photos/a.jpg"), b"not really a jpeg").expect("object");
    std::fs::write(uploads.join("notes.txt"), b"hello").expect("object");
    let source = format!("file://{}", uploads.display());
    let console = local_console(home.path(), &[("BACKUP_DATABASES", &db.name), ("SOURCE_BUCKETS", &source)]).await;
    let c = Client::new(&console.base);

    // Pages are readable locally (loopback) without credentials; the database is listed.
    let overview = reqwest::get(format!("{}/", c.base)).await.expect("overview");
    assert_eq!(overview.status(), 200);
    let html = overview.text().await.expect("html");
    assert!(html.contains(&format!("/api/databases/{}/backup", db.name)), "{html}");

    // Back up now → an execution that ends with the backup listed.
    let (status, started) = c.act(&format!("/api/databases/{}/backup", db.name), &json!({})).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["admin"], "api-token");
    let execution = &started["executions"][0];
    assert_eq!(
        (execution["job"].as_str(), execution["env"]["BACKUP_DATABASES"].as_str()),
        (Some("db-backup"), Some(db.name.as_str()))
    );
    let done = c.wait(execution["url"].as_str().expect("url")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["output"].to_string().contains("backup complete"), "{done}");
    // The job's progress line (its last one, "done") is what the page shows of it.
    assert!(
        done["progress"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("dump of {}: ", db.name)) && p.contains("(done)")),
        "{done}"
    );
    let (status, backups) = c.get(&format!("/api/databases/{}/backups", db.name), &[]).await;
    assert_eq!(status, 200);
    let list = backups["backups"].as_array().expect("backups");
    assert_eq!(list.len(), 1, "{backups}");
    assert!(list[0]["sha256"].as_str().is_some_and(|s| s.len() == 64) && list[0]["complete"] == true, "{backups}");
    let backup_id = list[0]["id"].as_str().expect("id").to_owned();

    // The source page shows it with its checksum.
    let page =
        reqwest::get(format!("{}/sources/db/{}", c.base, db.name)).await.expect("page").text().await.expect("html");
    assert!(page.contains(&backup_id) && page.contains(&list[0]["crc32c"].as_str().expect("crc")[..4]), "{page}");

    // Prune preview: the plan, nothing deleted.
    let (status, started) = c.act("/api/prune/preview", &json!({})).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["executions"][0]["args"], json!(["--dry-run"]));
    let done = c.wait(started["executions"][0]["url"].as_str().expect("url")).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // Restore: the confirmation must repeat the target; template and maintenance databases and
    // the source itself are refused; nothing starts for a refused request.
    let before = c.execution_count().await;
    let target = format!("{}_restored", db.name);
    db.drop_later(&target);
    let restore = format!("/api/databases/{}/restore", db.name);
    for (body, expected) in [
        (json!({"target": target, "confirm_target": format!("{target}x")}), "confirm_target"),
        (json!({"target": "template1", "confirm_target": "template1"}), "never a restore target"),
        (json!({"target": "postgres", "confirm_target": "postgres"}), "never a restore target"),
        (json!({"target": db.name, "confirm_target": db.name}), "backed-up database itself"),
        (json!({"target": target, "confirm_target": target, "before": "last tuesday"}), "RFC 3339"),
        (json!({"target": target, "confirm_target": target, "backup_id": "nope"}), "not a backup id"),
    ] {
        let (status, answer) = c.act(&restore, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains(expected)), "{body}: {answer}");
    }
    let (status, answer) = c
        .act(&restore, &json!({"target": target, "confirm_target": target, "backup_id": "20200101T000000Z-00000000"}))
        .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(c.execution_count().await, before, "refused restores start nothing");

    let (status, started) =
        c.act(&restore, &json!({"target": target, "confirm_target": target, "backup_id": backup_id})).await;
    assert_eq!(status, 202, "{started}");
    let done = c.wait(started["executions"][0]["url"].as_str().expect("url")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(db.server.psql(&target, "SELECT count(*) FROM t"), "500");
    assert!(
        done["progress"].as_str().is_some_and(|p| p.contains(&format!("into {target}")) && p.contains("of ~")),
        "{done}"
    );

    // Snapshot the bucket now, then restore it: a dry run first (nothing written), then for real.
    let (status, started) = c.act("/api/buckets/uploads/snapshot", &json!({})).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["executions"][0]["env"]["SOURCE_BUCKETS"], source.as_str());
    let done = c.wait(started["executions"][0]["url"].as_str().expect("url")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (status, snapshots) = c.get("/api/buckets/uploads/snapshots", &[]).await;
    assert_eq!(status, 200, "{snapshots}");
    assert_eq!(snapshots["snapshots"][0]["objects"], 2, "{snapshots}");
    let restored = home.path().join("restored");
    let target = format!("file://{}", restored.display());
    let (status, started) = c.act("/api/buckets/uploads/restore", &json!({"target_bucket": target})).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["action"], "restore-bucket-dry-run");
    let done = c.wait(started["executions"][0]["url"].as_str().expect("url")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(!restored.join("notes.txt").exists(), "a dry run writes nothing");
    let (status, answer) =
        c.act("/api/buckets/uploads/restore", &json!({"target_bucket": target, "dry_run": false})).await;
    assert_eq!(status, 400, "unconfirmed: {answer}");
    let (status, started) = c
        .act(
            "/api/buckets/uploads/restore",
            &json!({"target_bucket": target, "dry_run": false, "confirm_target": target}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let done = c.wait(started["executions"][0]["url"].as_str().expect("url")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(std::fs::read(restored.join("photos/a.jpg")).expect("restored object"), b"not really a jpeg");

    // Prune by the policy: everything here is younger than the retention period, so kept.
    let (status, started) = c.act("/api/prune/apply", &json!({})).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["executions"][0]["args"], json!([]));
    let done = c.wait(started["executions"][0]["url"].as_str().expect("url")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, backups) = c.get(&format!("/api/databases/{}/backups", db.name), &[]).await;
    assert_eq!(backups["backups"].as_array().map(Vec::len), Some(1), "nothing young is pruned: {backups}");

    // Full backup: both jobs at once.
    let (status, started) = c.act("/api/backup", &json!({})).await;
    assert_eq!(status, 202, "{started}");
    let jobs: Vec<&str> =
        started["executions"].as_array().expect("list").iter().filter_map(|e| e["job"].as_str()).collect();
    assert_eq!(jobs, ["db-backup", "storage-backup"]);
    for e in started["executions"].as_array().expect("list") {
        c.wait(e["url"].as_str().expect("url")).await;
    }
}

#[tokio::test]
async fn bad_input_and_missing_credentials_are_4xx_with_a_reason_and_start_nothing() {
    let db = TestDb::create("console-bad");
    let home = tempfile::tempdir().expect("home");
    // A file:// source beside the file:// backup store (copies are server-side: one kind of store).
    let media = format!("file://{}/media", home.path().display());
    let console = local_console(home.path(), &[("BACKUP_DATABASES", &db.name), ("SOURCE_BUCKETS", &media)]).await;
    let c = Client::new(&console.base);
    let token = [("authorization", bearer(TOKEN))];

    // No credentials, a wrong token, an (unverifiable) ID token off Cloud Run: 401.
    let backup = format!("/api/databases/{}/backup", db.name);
    assert_eq!(c.post(&backup, &json!({}), &[]).await.0, 401);
    assert_eq!(c.post(&backup, &json!({}), &[("authorization", bearer("not-the-token-0000000"))]).await.0, 401);
    assert_eq!(c.post(&backup, &json!({}), &[("authorization", jwt("admin@example.com"))]).await.0, 401);

    let cases: Vec<(String, Value, u16, &str)> = vec![
        ("/api/databases/no-such-db/backup".into(), json!({}), 404, "no database"),
        ("/api/buckets/no-such-bucket/snapshot".into(), json!({}), 404, "no bucket"),
        ("/api/databases/no-such-db/restore".into(), json!({"target": "x", "confirm_target": "x"}), 404, "no database"),
        (backup.clone(), json!({"database": "other"}), 400, "unknown field"),
        (format!("/api/databases/{}/restore", db.name), json!({"target": "x"}), 400, "confirm_target"),
        (
            format!("/api/databases/{}/restore", db.name),
            json!({"target": "x", "confirm_target": "x", "before": "2026-13-45"}),
            400,
            "RFC 3339",
        ),
        (
            "/api/buckets/media/restore".into(),
            json!({"target_bucket": "media-copy", "dry_run": false}),
            400,
            "confirm_target",
        ),
        (
            "/api/buckets/media/restore".into(),
            json!({"target_bucket": "a", "target_prefix": "../x"}),
            400,
            "folder path",
        ),
    ];
    for (path, body, expected, reason) in &cases {
        let (status, answer) = c.post(path, body, &token).await;
        assert_eq!(status, *expected, "{path} {body}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains(reason)), "{path} {body}: {answer}");
    }

    // Not JSON (a form post, as a forged cross-site form would send): 415. Another origin: 403.
    let http = reqwest::Client::new();
    let form = http
        .post(format!("{}{backup}", c.base))
        .header("authorization", bearer(TOKEN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=b")
        .send()
        .await
        .expect("form");
    assert_eq!(form.status(), 415);
    let (status, answer) =
        c.post(&backup, &json!({}), &[token[0].clone(), ("origin", "https://evil.example".into())]).await;
    assert_eq!(status, 403, "{answer}");
    for site in ["cross-site", "same-site"] {
        let (status, answer) = c.post(&backup, &json!({}), &[token[0].clone(), ("sec-fetch-site", site.into())]).await;
        assert_eq!(status, 403, "{site}: {answer}");
    }

    // A huge body: 413, read no further than the limit.
    let huge = http
        .post(format!("{}{backup}", c.base))
        .header("authorization", bearer(TOKEN))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await;
    if let Ok(resp) = huge {
        assert_eq!(resp.status(), 413);
    }

    assert_eq!(c.execution_count().await, 0, "no refused request started a job");
}

#[tokio::test]
async fn on_cloud_run_actions_start_jobs_through_the_admin_api_for_admins_only() {
    let api = RunApi::start().await;
    let results = crate::support::pubsub::pubsub_fixture().await;
    let home = tempfile::tempdir().expect("home");
    let admin = "admin@example.com";
    let viewer = "viewer@example.com";
    let console = cloud_console(
        home.path(),
        &api,
        &[
            ("LIFEBOAT_ADMINS", admin),
            ("LIFEBOAT_VIEWERS", viewer),
            ("BACKUP_DATABASES", "app"),
            ("SOURCE_BUCKETS", "media/photos"),
            ("LIFEBOAT_RESULTS_TOPIC", &results.topic_id),
            ("PUBSUB_EMULATOR_HOST", &results.host),
        ],
    )
    .await;
    let c = Client::new(&console.base);

    // Reads: viewers and admins; nobody else.
    assert_eq!(c.get("/api/status", &[("authorization", jwt(viewer))]).await.0, 200);
    assert_eq!(c.get("/api/status", &[("x-serverless-authorization", jwt(admin))]).await.0, 200);
    assert_eq!(c.get("/api/status", &[("authorization", jwt("stranger@example.com"))]).await.0, 403);
    assert_eq!(c.get("/api/status", &[]).await.0, 401, "on Cloud Run nothing is open");
    assert_eq!(c.get("/", &[]).await.0, 401);

    // Actions: admins only; two headers naming different callers are refused.
    assert_eq!(c.post("/api/databases/app/backup", &json!({}), &[("authorization", jwt(viewer))]).await.0, 403);
    let lying = [("x-serverless-authorization", jwt(viewer)), ("authorization", jwt(admin))];
    assert_eq!(c.post("/api/databases/app/backup", &json!({}), &lying).await.0, 401);
    assert!(api.runs().is_empty(), "no refused request reached the Admin API");

    // Through `gcloud run services proxy` the page's origin (localhost) is not the Host the
    // service sees; the browser's Sec-Fetch-Site says it is the console's own page.
    let as_admin = [
        ("x-serverless-authorization", jwt(admin)),
        ("origin", "http://localhost:8080".to_owned()),
        ("sec-fetch-site", "same-origin".to_owned()),
    ];
    let (status, started) = c.post("/api/databases/app/backup", &json!({}), &as_admin).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["admin"], admin);
    let e = &started["executions"][0];
    assert_eq!(e["job"], "db-backup");
    assert!(
        e["name"]
            .as_str()
            .is_some_and(|n| n
                .starts_with("projects/lifeboat-local/locations/europe-west1/jobs/db-backup/executions/db-backup-")),
        "{e}"
    );

    let (status, started) = c.post("/api/buckets/media/snapshot", &json!({}), &as_admin).await;
    assert_eq!(status, 202, "{started}");
    let restore = json!({"target": "app_copy", "confirm_target": "app_copy", "before": "2026-11-26T03:00:00Z"});
    // No backup of app exists in the store: a restore has nothing to take.
    assert_eq!(c.post("/api/databases/app/restore", &restore, &as_admin).await.0, 404);

    let runs = api.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].path, "/v2/projects/lifeboat-local/locations/europe-west1/jobs/db-backup:run");
    assert_eq!(
        runs[0].body,
        json!({"overrides": {"containerOverrides": [{"env": [{"name": "BACKUP_DATABASES", "value": "app"}]}]}})
    );
    assert_eq!(runs[1].path, "/v2/projects/lifeboat-local/locations/europe-west1/jobs/storage-backup:run");
    // The entry as storage-backup reads it (the canonical form of `media/photos`).
    assert_eq!(runs[1].body["overrides"]["containerOverrides"][0]["env"][0]["value"], "gs://media/photos");
    for run in &runs {
        assert_eq!(run.authorization.as_deref(), Some(format!("Bearer {ACCESS_TOKEN}").as_str()));
    }
    // The audit trail: one `console` result event per action, naming the admin.
    let mut audit = Vec::new();
    for _ in 0..20 {
        for m in results.pull().await {
            let event = lifeboat_core::core::events::Event::from_json(&m.message.data).expect("an event");
            m.ack().await.expect("ack");
            audit.push(event.data);
        }
        if audit.len() >= 2 {
            break;
        }
    }
    let mut actions: Vec<(String, String)> = audit
        .iter()
        .map(|r| {
            assert_eq!(r.program, "console");
            (
                r.figures["action"].as_str().unwrap_or_default().to_owned(),
                r.figures["admin"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [("backup-database".to_owned(), admin.to_owned()), ("snapshot-bucket".to_owned(), admin.to_owned())],
        "{audit:?}"
    );
    assert!(audit.iter().all(|r| r.summary.starts_with(admin)), "{audit:?}");

    let token_fetches = api.seen().iter().filter(|s| s.path.contains("/computeMetadata/")).count();
    assert_eq!(token_fetches, 1, "the token is reused until it nears its expiry");

    // The execution is followed through the API; the page says what Cloud Run can tell.
    let url = e["url"].as_str().expect("url");
    let (status, followed) = c.get(&format!("/api{url}"), &[("authorization", jwt(viewer))]).await;
    assert_eq!(status, 200, "{followed}");
    assert_eq!(followed["state"], "succeeded");
    let page = reqwest::Client::new()
        .get(format!("{}{url}", c.base))
        .header("authorization", jwt(viewer))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Cloud Logging") && page.contains("tasks: 0 running, 1 succeeded"), "{page}");
    let (status, list) = c.get("/api/executions", &[("authorization", jwt(viewer))]).await;
    assert_eq!(status, 200);
    assert_eq!(list["executions"].as_array().map(Vec::len), Some(2), "{list}");
}

/// Where the screenshot of the browser test goes: `target/screenshots/`, and with
/// `LIFEBOAT_BLESS=1` also `docs/console.png` (the README shows that one).
fn screenshot_paths() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut paths = vec![root.join("target/screenshots/console.png")];
    if std::env::var_os("LIFEBOAT_BLESS").is_some() {
        paths.push(root.join("docs/console.png"));
    }
    paths
}

#[tokio::test]
async fn a_browser_backs_up_a_database_from_the_overview_and_sees_the_new_backup() {
    use fantoccini::Locator;

    let db = TestDb::create("console-browser");
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 2000) g;");
    let home = tempfile::tempdir().expect("home");
    let console = local_console(home.path(), &[("BACKUP_DATABASES", &db.name)]).await;
    let browser = crate::support::browser::Browser::start().await;
    let b = &browser.client;

    // The token travels in the fragment (never sent to the server); the page keeps it for the tab.
    b.goto(&format!("{}/#token={TOKEN}", console.base)).await.expect("open the overview");
    let row = format!(r#"tr.source[data-name="main/{}"]"#, db.name);
    let count =
        b.find(Locator::Css(&format!("{row} td.count"))).await.expect("the database's row").text().await.expect("text");
    assert_eq!(count, "0", "no backup yet");
    assert!(!b.current_url().await.expect("url").as_str().contains("token="), "the token left the address bar");

    b.find(Locator::Css(&format!("{row} button"))).await.expect("Back up now").click().await.expect("click");
    browser
        .wait_for(60, "the execution page to show success", |url, source| {
            url.contains("/executions/db-backup/") && source.contains(">succeeded<")
        })
        .await;

    b.goto(&format!("{}/", console.base)).await.expect("back to the overview");
    let count = b.find(Locator::Css(&format!("{row} td.count"))).await.expect("row").text().await.expect("text");
    assert_eq!(count, "1", "the new backup is listed");
    let shot = b.screenshot().await.expect("screenshot");
    assert!(shot.starts_with(b"\x89PNG") && shot.len() > 10_000, "a real PNG ({} bytes)", shot.len());
    for path in screenshot_paths() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("screenshot dir");
        std::fs::write(&path, &shot).expect("save the screenshot");
    }

    b.find(Locator::Css(&format!("{row} a"))).await.expect("link").click().await.expect("open the source page");
    let page = browser.wait_for(10, "the database's page", |url, _| url.contains("/sources/db/")).await;
    assert_eq!(page.matches(r#"<tr class="backup">"#).count(), 1, "{page}");
    browser.client.clone().close().await.expect("close the session");
}

/// Drill records beside the backups (written into the console's own `file://` store): the
/// overview shows the newest verified backup and each source's verified age, the source page each
/// backup's drills (outcome, RTO, figures), and the API says the same in JSON.
#[tokio::test]
async fn the_console_shows_verified_ages_and_drill_results() {
    use chrono::{DateTime, Duration, Utc};

    use crate::support::fake_backups::{Drill, db_backup, db_drill, run_at, snapshot, snapshot_drill};

    let home = tempfile::tempdir().expect("home");
    let location: lifeboat_core::core::location::Location =
        format!("file://{}/backups", home.path().display()).parse().expect("location");
    let store = lifeboat_core::store::local::LocalStore::open(location).expect("store");
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let mut app = Vec::new();
    for d in (1..=3).rev() {
        app.push(db_backup(&store, "main", "app", &run_at(now - Duration::days(d)), 100, true).await);
    }
    db_drill(&store, &app[1], now - Duration::hours(30), Drill::Passed).await;
    db_drill(&store, &app[2], now - Duration::hours(3), Drill::Failed).await;
    let snap = snapshot(&store, "media", &run_at(now - Duration::hours(5)), &[("a.png", "blob-a")], true, false).await;
    snapshot_drill(&store, &snap, now - Duration::hours(4), Drill::PassedNoMetadata).await;

    let media_dir = format!("file://{}/src/media", home.path().display());
    let console = local_console(
        home.path(),
        &[("BACKUP_SOURCE", "main"), ("BACKUP_DATABASES", "app"), ("SOURCE_BUCKETS", &media_dir)],
    )
    .await;
    let c = Client::new(&console.base);

    let (status, body) = c.get("/api/status", &[]).await;
    assert_eq!(status, 200, "{body}");
    let rows = body["sources"].as_array().expect("sources");
    let app_row = rows.iter().find(|r| r["name"] == "app").expect("app");
    assert_eq!(app_row["newest_verified_backup"], app[1].run.to_string(), "{app_row}");
    let verified_age = app_row["verified_age_seconds"].as_i64().expect("verified age");
    assert!((2 * 86_400..2 * 86_400 + 600).contains(&verified_age), "{verified_age}");
    assert_eq!(app_row["last_drill_outcome"], "failed");
    let media = rows.iter().find(|r| r["kind"] == "bucket").expect("media");
    assert_eq!(media["newest_verified_backup"], snap.run.to_string(), "a record without metadata is read: {media}");

    let overview = reqwest::get(format!("{}/", c.base)).await.expect("overview").text().await.expect("html");
    assert!(overview.contains(r#"<div class="k">newest verified backup</div>"#), "{overview}");
    assert!(overview.contains("verified age") && overview.contains("unverified after 8d"), "{overview}");
    assert!(overview.contains(&format!(r#"<span title="{}">2d00h</span>"#, app[1].run)), "{overview}");
    assert!(overview.contains("last drill failed"), "{overview}");

    let page = reqwest::get(format!("{}/sources/db/app", c.base)).await.expect("page").text().await.expect("html");
    assert!(page.contains("passed · RTO 95s") && page.contains("failed · RTO 95s"), "{page}");
    assert!(page.contains("3 tables, 1000 rows; error: row counts differ from the manifest"), "{page}");
    assert_eq!(page.matches(r#"<td class="verified">yes</td>"#).count(), 1, "{page}");

    let (status, backups) = c.get("/api/databases/app/backups", &[]).await;
    assert_eq!(status, 200, "{backups}");
    let list = backups["backups"].as_array().expect("backups");
    let verified: Vec<_> = list.iter().filter(|b| b["verified"] == true).map(|b| b["id"].clone()).collect();
    assert_eq!(verified, [json!(app[1].run.to_string())], "{backups}");
    let drill = &list.iter().find(|b| b["id"] == json!(app[1].run.to_string())).expect("drilled")["drills"][0];
    assert_eq!((drill["outcome"].as_str(), drill["rto_seconds"].as_f64()), (Some("passed"), Some(95.0)), "{drill}");
    assert_eq!((drill["tables"].as_u64(), drill["rows"].as_u64()), (Some(3), Some(1000)), "{drill}");
    let (_, snapshots) = c.get("/api/buckets/media/snapshots", &[]).await;
    let s = &snapshots["snapshots"][0];
    assert_eq!((s["verified"].as_bool(), s["drills"][0]["objects_checked"].as_u64()), (Some(true), Some(5)), "{s}");
}
