//! PostgreSQL for the database tests: the real server of the local stack (PGHOST, PGPORT,
//! PGUSER), one uniquely named database per test (dropped at the end), a rich fixture schema, dump
//! comparisons, fake `pg_dump` tools, and a throwaway password-protected cluster.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lifeboat_core::postgres::tools::PgTools;

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

    /// The libpq variables that point a program at this server.
    pub fn vars(&self) -> [(&'static str, &str); 3] {
        [("PGHOST", self.host.as_str()), ("PGPORT", self.port.as_str()), ("PGUSER", self.user.as_str())]
    }

    /// `psql` on `database`, quiet and unaligned, stopping at the first error.
    fn psql_command(&self, database: &str) -> Command {
        let mut c = Command::new(pg_tool("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", &self.host, "-p", &self.port, "-U", &self.user])
            .args(["-d", database])
            .env("PGAPPNAME", "lifeboat-tests");
        c
    }

    /// `psql` on `database` with `sql` on stdin; panics with psql's stderr on failure.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut child = self
            .psql_command(database)
            .args(["-f", "-"])
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
        Self::create_named(&unique(prefix))
    }

    /// A new empty database called exactly `name` (which must be unique).
    pub fn create_named(name: &str) -> Self {
        let server = Server::from_env();
        server.psql("postgres", &format!("CREATE DATABASE {}", ident(name)));
        Self { name: name.to_owned(), server, also_drop: std::sync::Mutex::default() }
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
            let _ = self
                .server
                .psql_command("postgres")
                .args(["-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&n))])
                .stdout(Stdio::null())
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

/// A throwaway cluster that requires a password (scram-sha-256). It listens on a Unix socket in
/// its own directory and on no TCP port at all, so it can never collide with another test (and the
/// socket path is how Cloud SQL is reached on Cloud Run, `host=/cloudsql/…`).
#[derive(Debug)]
pub struct PasswordCluster {
    dir: tempfile::TempDir,
    /// The superuser's password.
    pub password: String,
    as_postgres: bool,
}

impl PasswordCluster {
    /// The port number in the socket's name (`.s.PGSQL.5432`); private to the socket directory.
    pub const PORT: u16 = 5432;

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
        let cluster = Self { dir, password, as_postgres };
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
        let settings = format!(
            "\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {}\nfsync = off\n",
            cluster.socket_dir(),
            Self::PORT
        );
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).expect("postgresql.conf");
        conf.write_all(settings.as_bytes()).expect("configure the cluster");
        cluster.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-l", &cluster.dir.path().join("log").to_string_lossy(), "-w", "start"],
        );
        cluster
    }

    /// The directory of its socket (what `PGHOST` or `?host=` names).
    pub fn socket_dir(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    /// The server, as the superuser.
    pub fn server(&self) -> Server {
        Server { host: self.socket_dir(), port: Self::PORT.to_string(), user: "postgres".into() }
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
