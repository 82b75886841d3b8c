//! `db-backup` and `restore` run in-process, configured from an environment as their binaries
//! are, against a [`Server`]; and checks of what they left in the store.

use lifeboat_core::config::Env;
use lifeboat_core::core::db_manifest::DbManifest;
use lifeboat_core::core::events::{Outcome, RunResult};
use lifeboat_core::programs::{db_backup, restore};
use lifeboat_core::runtime::{Program as _, RunContext, Trigger};
use lifeboat_core::store::{DynStore, ObjectStoreExt as _};

use super::postgres::Server;
use super::stack::{config, services_on};

/// The environment of a backup or restore run against `server`, into `destination`.
pub fn run_env(server: &Server, destination: &str) -> Env {
    let home = std::env::temp_dir();
    let mut env = Env::from_pairs([
        ("HOME", home.to_string_lossy().as_ref()),
        ("LIFEBOAT_DESTINATION", destination),
        ("RUST_LOG", "info"),
    ]);
    for (k, v) in server.vars() {
        env = env.with(k, v);
    }
    env
}

/// `file://` URL of a directory.
pub fn file_url(dir: &tempfile::TempDir) -> String {
    format!("file://{}", dir.path().display())
}

/// Builds `db-backup` as its binary would (configuration from `env`).
pub async fn backup_app(env: &Env, store: DynStore) -> db_backup::App {
    lifeboat_core::runtime::logging::init(env);
    let config = config(env, &[], db_backup::read);
    db_backup::start(services_on(env, store), config).await.expect("start db-backup")
}

/// Runs `db-backup` once.
pub async fn run_backup(env: &Env, store: DynStore) -> RunResult {
    backup_app(env, store).await.run(RunContext::new(Trigger::Job)).await
}

/// Runs `restore` once with `args` (after `--once`).
pub async fn run_restore(env: &Env, store: DynStore, args: &[&str]) -> RunResult {
    lifeboat_core::runtime::logging::init(env);
    let config = config(env, args, restore::read);
    let app = restore::start(services_on(env, store), config).await.expect("start restore");
    app.run(RunContext::new(Trigger::Job)).await
}

/// Asserts a successful run and returns the backup id of its only item.
pub fn expect_success(result: &RunResult) -> String {
    assert_eq!(
        result.outcome,
        Outcome::Success,
        "run failed: {}",
        serde_json::to_string_pretty(result).unwrap_or_default()
    );
    assert_eq!(result.items.len(), 1, "{result:?}");
    assert_eq!(result.items[0].outcome, Outcome::Success);
    result.items[0].backup_id.clone().expect("backup id")
}

/// Asserts a failed run whose failure item names `database` and whose error contains every
/// `needle`; returns the error.
pub fn expect_failure(result: &RunResult, database: &str, needles: &[&str]) -> String {
    assert_eq!(result.outcome, Outcome::Failure, "run should have failed: {result:?}");
    let item = result
        .items
        .iter()
        .find(|i| i.name == database)
        .unwrap_or_else(|| panic!("no item for {database}: {result:?}"));
    assert_eq!(item.outcome, Outcome::Failure, "{item:?}");
    assert!(item.backup_id.is_none(), "a failed item must not name a backup: {item:?}");
    let error = item.error.clone().expect("an error message");
    for n in needles {
        assert!(error.contains(n), "error of {database} lacks {n:?}: {error}");
    }
    assert!(result.summary.contains(database), "summary does not name {database}: {}", result.summary);
    error
}

/// Every key under `db/` in the store.
pub async fn db_keys(store: &DynStore) -> Vec<String> {
    let mut keys = Vec::new();
    let mut listing = store.list_all("db/");
    while let Some(o) = futures::StreamExt::next(&mut listing).await {
        keys.push(o.expect("list").key);
    }
    keys
}

/// Asserts that nothing a reader could take for a backup exists: no manifest, no dump.
pub async fn assert_nothing_stored(store: &DynStore) {
    let keys = db_keys(store).await;
    assert!(keys.is_empty(), "a failed backup left objects behind: {keys:?}");
}

/// The manifest of a backup.
pub async fn manifest(store: &DynStore, source: &str, database: &str, backup_id: &str) -> DbManifest {
    let key = format!(
        "{}{backup_id}/manifest.json",
        lifeboat_core::core::naming::DbBackupPath::series_prefix(source, database)
    );
    let bytes = store.read_all(&key, 1 << 20).await.expect("manifest");
    DbManifest::from_json(&bytes).expect("valid manifest")
}

/// Backs up `db` into the `file://` store in `dir` and returns the backup id.
pub async fn backup(db: &super::postgres::TestDb, store: &DynStore, dir: &tempfile::TempDir) -> String {
    let env = run_env(&db.server, &file_url(dir)).with("BACKUP_DATABASES", &db.name);
    expect_success(&run_backup(&env, store.clone()).await)
}

/// A table `t` of `rows` rows with text, for small fixtures.
pub fn small_fixture(rows: u32) -> String {
    format!(
        "CREATE TABLE t (id int PRIMARY KEY, s text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;"
    )
}

/// A program's binary in job mode against `server`, backing up into (or restoring from) `destination`.
pub fn db_job(name: &str, home: &std::path::Path, server: &Server, destination: &str) -> std::process::Command {
    let mut c = super::binaries::job(name, home, destination);
    c.envs(server.vars());
    c
}
