//! The real binaries: `--help`, configuration errors (exit 2), job mode, service mode.

use std::process::{Command, Stdio};
use std::time::Duration;

use lifeboat_core::config::vars;
use lifeboat_core::programs;
use lifeboat_core::runtime::ProgramSpec;

use crate::support::binary;

const PROGRAMS: [&ProgramSpec; 6] = [
    &programs::db_backup::SPEC,
    &programs::storage_backup::SPEC,
    &programs::restore::SPEC,
    &programs::prune::SPEC,
    &programs::health::SPEC,
    &programs::monitor::SPEC,
];

/// A command with a clean environment (only PATH and HOME), so the developer's variables do not leak in.
fn clean(name: &str, home: &std::path::Path) -> Command {
    let mut c = Command::new(binary(name));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", home);
    c
}

#[test]
fn every_binary_answers_help_with_all_its_variables() {
    let home = tempfile::tempdir().expect("home");
    for spec in PROGRAMS {
        let out = clean(spec.name, home.path()).arg("--help").output().expect("run --help");
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
        let command: &[&str] = if spec.name == "restore" { &["list", "--database", "app"] } else { &[] };
        // storage-backup needs its source buckets (without them, a fifth problem).
        let sources: &[(&str, &str)] = if spec.name == "storage-backup" { &[("SOURCE_BUCKETS", "media")] } else { &[] };
        let out = clean(spec.name, home.path())
            .arg("--once")
            .args(command)
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

#[test]
fn no_mode_is_a_configuration_error() {
    let home = tempfile::tempdir().expect("home");
    let out = clean("prune", home.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --once"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test]
async fn service_mode_binary_refuses_anonymous_runs_and_stops_on_sigterm() {
    let home = tempfile::tempdir().expect("home");
    let port = free_port();
    let mut child = tokio::process::Command::from(clean("prune", home.path()))
        .env("PORT", port.to_string())
        .env("LIFEBOAT_DESTINATION", format!("file://{}/backups", home.path().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut healthy = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            assert_eq!(r.status(), 200);
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "service did not come up");
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
    let out = clean("health", home.path())
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
    let out = clean("health", home.path())
        .arg("--once")
        .env("LIFEBOAT_DESTINATION", format!("file://{}/backups", home.path().display()))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job failed"), "{err}");
    assert!(!err.lines().any(|l| l.starts_with('{')), "text logs expected locally: {err}");
}
