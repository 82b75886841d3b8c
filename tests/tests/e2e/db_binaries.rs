//! The real `db-backup` and `restore` binaries in job mode against the real PostgreSQL server
//! and a `file://` destination: exit codes, the manifest, the listing, a restore.

use std::path::Path;
use std::process::{Command, Output};

use lifeboat_core::core::db_manifest::DbManifest;

use crate::support::postgres::{Server, TestDb};
use crate::support::{binary, unique};

fn run(name: &str, home: &Path, server: &Server, destination: &str, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(binary(name));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("PGHOST", &server.host)
        .env("PGPORT", &server.port)
        .env("PGUSER", &server.user)
        .env("LIFEBOAT_DESTINATION", destination)
        .arg("--once")
        .args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap_or_else(|e| panic!("run {name}: {e}"))
}

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

#[test]
fn db_backup_and_restore_binaries_run_once() {
    let db = TestDb::create("lb-bin");
    db.sql("CREATE TABLE t (id int PRIMARY KEY, s text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g;");
    let server = db.server.clone();
    let home = tempfile::tempdir().expect("home");
    let backups = tempfile::tempdir().expect("backups");
    let destination = format!("file://{}", backups.path().display());

    let out = run("db-backup", home.path(), &server, &destination, &[("BACKUP_DATABASES", &db.name)], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "db-backup failed: {stderr}");
    let found = manifests(backups.path(), &db.name);
    assert_eq!(found.len(), 1, "one manifest: {found:?}");
    let id = found[0].backup_id.clone();
    assert_eq!(found[0].row_counts.as_ref().and_then(|c| c.get("public.t")), Some(&500));
    assert!(stderr.contains("result event") && stderr.contains(&id), "the result event is logged: {stderr}");

    let missing = unique("lb-bin-missing");
    let out = run("db-backup", home.path(), &server, &destination, &[("BACKUP_DATABASES", &missing)], &[]);
    assert_eq!(out.status.code(), Some(1), "a failed backup exits 1: {}", String::from_utf8_lossy(&out.stderr));
    assert!(manifests(backups.path(), &missing).is_empty());

    let out = run("restore", home.path(), &server, &destination, &[], &["list", "--database", &db.name]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(listing.starts_with("ID ") && listing.contains(&id) && listing.contains("complete"), "{listing}");

    let target = unique("lb-bin-restored");
    db.drop_later(&target);
    let out =
        run("restore", home.path(), &server, &destination, &[], &["db", "--database", &db.name, "--target", &target]);
    assert_eq!(out.status.code(), Some(0), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("into database \"{target}\"")));
    assert_eq!(server.psql(&target, "SELECT count(*) FROM t"), "500");

    let out = run("restore", home.path(), &server, &destination, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "no command is a configuration error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("a command is required"));
}

#[test]
fn sigterm_mid_backup_fails_the_job_cleanly() {
    let db = TestDb::create("lb-bin-term");
    let server = db.server.clone();
    let home = tempfile::tempdir().expect("home");
    let backups = tempfile::tempdir().expect("backups");
    let destination = format!("file://{}", backups.path().display());
    let tools = crate::support::postgres::fake_bin_dir(
        "case \"$1\" in --version) exec \"$REAL\" --version;; esac\nprintf PGDMP\nhead -c 300000 /dev/urandom\nexec sleep 120",
    );
    let bin_dir = tools.path().to_string_lossy().into_owned();
    let mut c = Command::new(binary("db-backup"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("PGHOST", &server.host)
        .env("PGPORT", &server.port)
        .env("PGUSER", &server.user)
        .env("LIFEBOAT_DESTINATION", &destination)
        .env("LIFEBOAT_PG_BIN_DIR", &bin_dir)
        .env("BACKUP_DATABASES", &db.name)
        .arg("--once")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("spawn db-backup");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
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
