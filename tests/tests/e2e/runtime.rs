//! What every program shares, through the real binaries and over a real socket: `--help`,
//! configuration errors (exit 2), job mode, logs, and service mode (health, authentication, one
//! run at a time, graceful stop on SIGTERM).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lifeboat_core::config::{Env, vars};
use lifeboat_core::core::events::{Outcome, RunResult};
use lifeboat_core::programs;
use lifeboat_core::runtime::auth::{jwt_with_claims, unsigned_jwt_for};
use lifeboat_core::runtime::{App, Program, ProgramSpec, RunContext, Services};
use tokio::sync::Notify;

use crate::support::binaries::{Service, command};
use crate::support::stack::{Served, local_store, services_on};

const PROGRAMS: [&ProgramSpec; 7] = [
    &programs::db_backup::SPEC,
    &programs::storage_backup::SPEC,
    &programs::restore::SPEC,
    &programs::prune::SPEC,
    &programs::health::SPEC,
    &programs::monitor::SPEC,
    &programs::console::SPEC,
];

#[test]
fn every_binary_answers_help_with_all_its_variables() {
    let home = tempfile::tempdir().expect("home");
    for spec in PROGRAMS {
        let out = command(spec.name, home.path()).arg("--help").output().expect("run --help");
        assert!(out.status.success(), "{} --help failed", spec.name);
        let text = String::from_utf8(out.stdout).expect("utf-8");
        for v in spec.all_vars() {
            assert!(text.contains(v.name), "{} --help does not list {}", spec.name, v.name);
        }
        assert!(text.starts_with(spec.name), "{text}");
    }
}

#[test]
fn bad_configuration_lists_every_problem_and_exits_2() {
    let home = tempfile::tempdir().expect("home");
    for spec in PROGRAMS {
        // restore needs a command too (without one, that is a fifth problem).
        let subcommand: &[&str] = if spec.name == "restore" { &["list", "--database", "app"] } else { &[] };
        // storage-backup needs its source buckets (without them, a fifth problem).
        let sources: &[(&str, &str)] = if spec.name == "storage-backup" { &[("SOURCE_BUCKETS", "media")] } else { &[] };
        let out = command(spec.name, home.path())
            .arg("--once")
            .args(subcommand)
            .envs(sources.iter().copied())
            .env("LIFEBOAT_DESTINATION", "s3://not-supported")
            .env("BACKUP_RETENTION_DAYS", "-1")
            .env("BACKUP_TIMEZONE", "Nowhere/Special")
            .env("LIFEBOAT_API_TOKEN", "short-secret")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{}: {}", spec.name, String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        for name in [vars::DESTINATION.name, vars::RETENTION_DAYS.name, vars::TIMEZONE.name, vars::API_TOKEN.name] {
            assert!(err.contains(name), "{}: {name} not reported in {err}", spec.name);
        }
        assert!(!err.contains("short-secret"), "{}: a secret leaked into the error", spec.name);
        assert!(err.contains("invalid configuration (4 problems)"), "{err}");
    }
}

/// Destinations that break GCS's rules are configuration problems (exit 2, naming the variable)
/// of every program, found before anything is read or written: the emulator would accept most
/// of them, and real GCS would refuse them only at the first night's run. (So is a schedule
/// Cloud Scheduler would refuse: croner checks it, as before.)
#[test]
fn destinations_that_break_gcs_rules_exit_2_naming_the_variable() {
    let home = tempfile::tempdir().expect("home");
    let long = format!("gs://b-1/{}", "p".repeat(600));
    let bad = [
        ("LIFEBOAT_DESTINATION", "gs://a..b"),
        ("LIFEBOAT_DESTINATION", "gs://goog-backups"),
        ("LIFEBOAT_DESTINATION", "gs://acme-google-backups"),
        ("LIFEBOAT_DESTINATION", "gs://acme-g00gle"),
        ("LIFEBOAT_DESTINATION", "gs://192.168.5.4"),
        ("LIFEBOAT_DESTINATION", "gs://b-1/prod\r\nx"),
        ("LIFEBOAT_DESTINATION", "gs://b-1/prod\tx"),
        ("LIFEBOAT_DESTINATION", "gs://b-1/a/../b"),
        ("LIFEBOAT_DESTINATION", long.as_str()),
        ("BACKUP_BUCKET_NAME", "a..b"),
        ("BACKUP_BUCKET_NAME", "googlebackups"),
        // Not a destination, but the same promise: Cloud Scheduler would refuse it only at deploy.
        ("BACKUP_SCHEDULE", "99 99 99 99 99"),
    ];
    for spec in PROGRAMS {
        let subcommand: &[&str] = if spec.name == "restore" { &["list", "--database", "app"] } else { &[] };
        let sources: &[(&str, &str)] = if spec.name == "storage-backup" { &[("SOURCE_BUCKETS", "media")] } else { &[] };
        for (var, value) in bad {
            let out = crate::support::binaries::job(spec.name, home.path(), "gs://placeholder-1")
                .env_remove("LIFEBOAT_DESTINATION")
                .args(subcommand)
                .envs(sources.iter().copied())
                .env(var, value)
                .output()
                .expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{} {var}={value:?}: {err}", spec.name);
            assert!(err.contains(&format!("- {var}: ")), "{} {var}={value:?}: {err}", spec.name);
            assert!(!err.contains('\r'), "a control character is shown escaped: {err:?}");
        }
    }
}

#[test]
fn no_mode_is_a_configuration_error() {
    let home = tempfile::tempdir().expect("home");
    let out = command("prune", home.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --once"));
}

#[tokio::test]
async fn service_mode_binary_refuses_anonymous_runs_and_stops_on_sigterm() {
    let home = tempfile::tempdir().expect("home");
    let mut prune = command("prune", home.path());
    prune.env("LIFEBOAT_DESTINATION", format!("file://{}/backups", home.path().display()));
    // PORT=0: the kernel picks the port when the binary binds; the binary logs it and we read it.
    let Service { mut child, base, .. } = Service::start(prune).await;
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    let resp = http.post(format!("{base}/run")).send().await.expect("post");
    assert_eq!(resp.status(), 401);
    let pid = child.id().expect("pid");
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
    let exit =
        tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("stops after SIGTERM").expect("wait");
    assert!(exit.success(), "graceful stop exits 0, got {exit:?}");
}

#[test]
fn on_cloud_run_logs_are_json_for_cloud_logging_and_hold_no_secret() {
    let home = tempfile::tempdir().expect("home");
    let out = command("health", home.path())
        .env("CLOUD_RUN_JOB", "health")
        .env("LIFEBOAT_DESTINATION", format!("file://{}/backups", home.path().display()))
        .env("LIFEBOAT_API_TOKEN", "super-secret-token-value-42")
        .env("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/SECRETSECRET")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "no backups at all is not healthy");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let json_lines: Vec<serde_json::Value> =
        all.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).expect("a JSON log line")).collect();
    assert!(!json_lines.is_empty(), "no JSON log lines in: {all}");
    for line in &json_lines {
        assert!(line.get("severity").is_some(), "no severity in {line}");
    }
    assert!(json_lines.iter().any(|l| l["severity"] == "ERROR"), "the failure is logged as an error");
    assert!(!all.contains("super-secret-token-value-42") && !all.contains("SECRETSECRET"), "a secret leaked: {all}");
}

#[test]
fn locally_logs_are_readable_text() {
    let home = tempfile::tempdir().expect("home");
    let out = command("health", home.path())
        .arg("--once")
        .env("LIFEBOAT_DESTINATION", format!("file://{}/backups", home.path().display()))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job failed"), "{err}");
    assert!(!err.lines().any(|l| l.starts_with('{')), "text logs expected locally: {err}");
}

static SPEC: ProgramSpec = ProgramSpec { name: "slow", vars: &[] };

/// A program that blocks until released, so a second request can arrive mid-run.
struct Slow {
    services: Services,
    release: Arc<Notify>,
    started: Arc<Notify>,
    runs: AtomicUsize,
}

#[async_trait]
impl Program for Slow {
    async fn run(&self, ctx: RunContext) -> RunResult {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        self.release.notified().await;
        let mut r = self.services.result(SPEC.name, ctx.started);
        r.summary = "released".into();
        r.outcome = Outcome::Success;
        r
    }
}

const TOKEN: &str = "local-test-token-0123456789";

const INVOKER: &str = "scheduler@proj.iam.gserviceaccount.com";

#[tokio::test]
async fn service_mode_authenticates_serialises_runs_and_stops_gracefully() {
    let (dir, store) = local_store();
    let env = Env::from_pairs([
        ("LIFEBOAT_DESTINATION", format!("file://{}", dir.path().display())),
        ("LIFEBOAT_API_TOKEN", TOKEN.to_owned()),
        ("LIFEBOAT_ALLOWED_INVOKERS", INVOKER.to_owned()),
        // On Cloud Run: the platform verified the ID tokens it forwards, so they are trusted.
        ("K_SERVICE", "slow".to_owned()),
    ]);
    let services = services_on(&env, store);
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let program = Arc::new(Slow {
        services: services.clone(),
        release: release.clone(),
        started: started.clone(),
        runs: AtomicUsize::new(0),
    });
    let app = App::new(&SPEC, program.clone(), services);
    let served = Served::start(app).await;
    let (base, http) = (served.base.clone(), served.http.clone());

    let health = http.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<serde_json::Value>().await.expect("json")["status"], "ok");

    let anonymous = http.post(format!("{base}/run")).send().await.expect("anonymous run");
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.text().await.expect("body").contains("credentials"));
    let stranger = http
        .post(format!("{base}/run"))
        .bearer_auth(unsigned_jwt_for("stranger@evil.example"))
        .send()
        .await
        .expect("stranger");
    assert_eq!(stranger.status(), 403);
    let wrong_token =
        http.post(format!("{base}/run")).bearer_auth("not-the-token-at-all-000").send().await.expect("wrong token");
    assert_eq!(wrong_token.status(), 401);
    assert_eq!(program.runs.load(Ordering::SeqCst), 0, "refused requests never run the program");

    // An allowed identity starts a run; a second request while it runs gets 409.
    let first = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move { http.post(format!("{base}/run")).bearer_auth(unsigned_jwt_for(INVOKER)).send().await }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("run started");
    let second = http.post(format!("{base}/run")).bearer_auth(TOKEN).send().await.expect("second run");
    assert_eq!(second.status(), 409);
    release.notify_one();
    let first = first.await.expect("join").expect("first run");
    assert_eq!(first.status(), 200);
    let body: serde_json::Value = first.json().await.expect("json");
    assert_eq!(body["outcome"], "success");
    assert_eq!(body["summary"], "released");
    assert_eq!(program.runs.load(Ordering::SeqCst), 1);

    let unknown = http.get(format!("{base}/nope")).send().await.expect("unknown");
    assert_eq!(unknown.status(), 404);
    let wrong_method = http.get(format!("{base}/run")).send().await.expect("GET /run");
    assert_eq!(wrong_method.status(), 405);
    let too_big = http.post(format!("{base}/run")).bearer_auth(TOKEN).body(vec![b'x'; 2 * 1024 * 1024]).send().await;
    if let Ok(resp) = too_big {
        assert_eq!(resp.status(), 413);
    }
    assert_eq!(program.runs.load(Ordering::SeqCst), 1, "refused requests never run the program");

    served.stop().await;
    assert!(http.get(format!("{base}/healthz")).send().await.is_err(), "no longer listening");
}

// --- identity: every rule of runtime::auth, on the real `monitor` binary -----------------------

const SCHEDULER: &str = "scheduler@proj.iam.gserviceaccount.com";
const PUSH: &str = "push@proj.iam.gserviceaccount.com";

/// The `monitor` binary in service mode, its state in `home`; on Cloud Run when `k_service`.
async fn monitor_binary(home: &std::path::Path, k_service: bool) -> Service {
    let mut monitor = command("monitor", home);
    monitor
        .env("LIFEBOAT_DESTINATION", format!("file://{}/backups", home.display()))
        .env("LIFEBOAT_API_TOKEN", TOKEN)
        .env("LIFEBOAT_ALLOWED_INVOKERS", SCHEDULER)
        .env("LIFEBOAT_PUSH_INVOKERS", PUSH);
    if k_service {
        monitor.env("K_SERVICE", "monitor");
    }
    Service::start(monitor).await
}

/// The status of `POST base+path` with the given headers and an empty JSON body.
async fn post_status(base: &str, path: &str, headers: &[(&str, String)]) -> u16 {
    let mut request = reqwest::Client::new().post(format!("{base}{path}")).json(&serde_json::json!({}));
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    request.send().await.expect("post").status().as_u16()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn off_cloud_run_only_the_static_token_authenticates_and_the_server_binds_loopback() {
    let home = tempfile::tempdir().expect("home");
    let monitor = monitor_binary(home.path(), false).await;
    assert!(monitor.addr.ip().is_loopback(), "off Cloud Run the server listens on 127.0.0.1: {}", monitor.addr);
    let base = &monitor.base;
    // An unsigned JWT naming an allowed identity: anyone can write one, and nothing verified it.
    let forged = bearer(&unsigned_jwt_for(SCHEDULER));
    assert_eq!(post_status(base, "/check", &[("authorization", forged.clone())]).await, 401);
    assert_eq!(post_status(base, "/check", &[("x-serverless-authorization", forged)]).await, 401);
    let push = bearer(&unsigned_jwt_for(PUSH));
    assert_eq!(post_status(base, "/pubsub", &[("authorization", push)]).await, 401);
    assert_eq!(post_status(base, "/check", &[]).await, 401);
    assert_eq!(post_status(base, "/check", &[("authorization", bearer(TOKEN))]).await, 200);
}

#[tokio::test]
async fn on_cloud_run_identities_are_read_from_the_verified_header_and_checked_per_endpoint() {
    let home = tempfile::tempdir().expect("home");
    let monitor = monitor_binary(home.path(), true).await;
    assert!(monitor.addr.ip().is_unspecified(), "on Cloud Run the server listens on every interface");
    let base = &monitor.base;
    let (scheduler, push) = (bearer(&unsigned_jwt_for(SCHEDULER)), bearer(&unsigned_jwt_for(PUSH)));

    // Each identity on its own endpoint: admitted (an empty envelope is a 400, not a refusal).
    assert_eq!(post_status(base, "/check", &[("authorization", scheduler.clone())]).await, 200);
    assert_eq!(post_status(base, "/pubsub", &[("authorization", push.clone())]).await, 400);
    // The right identity on the wrong endpoint: 403.
    assert_eq!(post_status(base, "/check", &[("authorization", push.clone())]).await, 403);
    assert_eq!(post_status(base, "/run", &[("authorization", push.clone())]).await, 403);
    assert_eq!(post_status(base, "/pubsub", &[("authorization", scheduler.clone())]).await, 403);

    // X-Serverless-Authorization is what Cloud Run verified; Authorization is passed through.
    assert_eq!(post_status(base, "/check", &[("x-serverless-authorization", scheduler.clone())]).await, 200);
    let disagreeing = [("x-serverless-authorization", push.clone()), ("authorization", scheduler.clone())];
    assert_eq!(post_status(base, "/check", &disagreeing).await, 401, "two headers naming different callers");
    let agreeing = [("x-serverless-authorization", scheduler.clone()), ("authorization", scheduler.clone())];
    assert_eq!(post_status(base, "/check", &agreeing).await, 200);

    // email_verified: boolean true, or absent for a service account; never a string.
    let claims = |verified: serde_json::Value| {
        let mut c = serde_json::json!({ "email": SCHEDULER });
        if !verified.is_null() {
            c["email_verified"] = verified;
        }
        bearer(&jwt_with_claims(&c))
    };
    for (verified, expected) in [
        (serde_json::json!("false"), 401),
        (serde_json::json!("true"), 401),
        (serde_json::json!(false), 401),
        (serde_json::json!(true), 200),
        (serde_json::Value::Null, 200),
    ] {
        let status = post_status(base, "/check", &[("authorization", claims(verified.clone()))]).await;
        assert_eq!(status, expected, "email_verified = {verified}");
    }
}

#[tokio::test]
async fn an_unauthenticated_huge_body_is_refused_before_it_is_read() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let home = tempfile::tempdir().expect("home");
    let monitor = monitor_binary(home.path(), false).await;
    // Announce 5 MB and send none of it: the answer must come from the head alone.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", monitor.addr.port())).await.expect("connect");
    let head =
        "POST /pubsub HTTP/1.1\r\nHost: monitor\r\nContent-Type: application/json\r\nContent-Length: 5242880\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered (and closed) without waiting for the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("www-authenticate: bearer"), "{answer}");

    // Authenticated, the same body is read up to the limit: 413.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", monitor.addr.port())).await.expect("connect");
    let head = format!(
        "POST /pubsub HTTP/1.1\r\nHost: monitor\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 5242880\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..20 {
        if stream.write_all(&chunk).await.is_err() {
            break; // the server answered and closed after its limit
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}
