//! Connection settings, resolved once from `DATABASE_URL` and the `PG*` variables.
//!
//! The tools get them as libpq environment variables (`PGHOST`, `PGPASSWORD`…), so nothing secret
//! is ever on a command line (which any local user can read in `/proc`). `tokio-postgres` gets
//! the same values, so the catalog queries and the dump talk to the same server as the same user.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio_postgres::NoTls;

use super::PgError;
use crate::config::{Env, Reader, vars};
use crate::core::secret::Secret;
use crate::postgres::settings::PgConfig;

/// libpq environment variables lifeboat sets (or removes) on every tool it starts.
const CONTROLLED_ENV: &[&str] =
    &["PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE", "DATABASE_URL"];

/// URI query parameters we understand, and the libpq environment variable each becomes.
const URI_PARAMS: &[(&str, &str)] = &[
    ("application_name", "PGAPPNAME"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("gssencmode", "PGGSSENCMODE"),
    ("options", "PGOPTIONS"),
    ("sslcert", "PGSSLCERT"),
    ("sslcrl", "PGSSLCRL"),
    ("sslkey", "PGSSLKEY"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
];

/// Resolved connection settings.
#[derive(Debug, Clone)]
pub struct ConnParams {
    /// Host name, IP address, or unix socket directory (starts with `/`).
    pub host: String,
    /// Numeric address that skips name resolution (`hostaddr`).
    pub hostaddr: Option<String>,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password.
    pub password: Option<Secret>,
    /// Database for catalog queries (listing databases, creating restore targets).
    pub maintenance_db: String,
    /// Further libpq settings as environment variables (`PGSSLMODE`…).
    pub extra_env: BTreeMap<&'static str, String>,
    /// The raw `DATABASE_URL`, kept only to redact it from tool output.
    url: Option<Secret>,
}

/// The parts of a `postgresql://` URI.
#[derive(Debug, Default, PartialEq, Eq)]
struct UriParts {
    host: Option<String>,
    hostaddr: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    extra: BTreeMap<&'static str, String>,
}

impl ConnParams {
    /// Resolves `pg` (URL first, `PG*` variables on top, then libpq's defaults). `env` gives the
    /// OS user name, libpq's default user. Errors never quote the URL (it may hold a password).
    pub fn resolve(pg: &PgConfig, env: &Env) -> Result<Self, PgError> {
        let uri = match &pg.url {
            Some(url) => parse_uri(url.expose())
                .map_err(|e| PgError::Settings { var: "DATABASE_URL", message: format!("{e} (value not shown)") })?,
            None => UriParts::default(),
        };
        let port = pg.port.or(uri.port).unwrap_or(5432);
        let host = match pg.host.clone().or(uri.host) {
            Some(h) => h,
            None => default_host(port),
        };
        if host.contains(',') {
            return Err(PgError::Settings {
                var: "PGHOST",
                message: "lifeboat connects to one host; several (a,b) are not supported".into(),
            });
        }
        let user = pg
            .user
            .clone()
            .or(uri.user)
            .or_else(|| env.get("USER").or_else(|| env.get("LOGNAME")).map(str::to_owned))
            .unwrap_or_else(|| "postgres".to_owned());
        let password = pg.password.clone().or(uri.password.map(Secret::new));
        Ok(Self {
            host,
            hostaddr: uri.hostaddr,
            port,
            user,
            password,
            maintenance_db: pg.dbname.clone().or(uri.dbname).unwrap_or_else(|| "postgres".to_owned()),
            extra_env: uri.extra,
            url: pg.url.clone(),
        })
    }

    /// Sets the libpq environment of a tool that connects to `database`. Inherited libpq
    /// variables that lifeboat resolves itself are removed first, so the tool sees exactly these.
    pub fn apply_env(&self, cmd: &mut tokio::process::Command, database: &str) {
        for name in CONTROLLED_ENV {
            cmd.env_remove(name);
        }
        for (name, value) in &self.extra_env {
            cmd.env(name, value);
        }
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", database);
        if let Some(addr) = &self.hostaddr {
            cmd.env("PGHOSTADDR", addr);
        }
        if let Some(password) = &self.password {
            cmd.env("PGPASSWORD", password.expose());
        }
        if !self.extra_env.contains_key("PGAPPNAME") {
            cmd.env("PGAPPNAME", "lifeboat");
        }
        if !self.extra_env.contains_key("PGCONNECT_TIMEOUT") {
            cmd.env("PGCONNECT_TIMEOUT", "30");
        }
    }

    /// The `tokio-postgres` configuration for `database`.
    pub fn client_config(&self, database: &str) -> Result<tokio_postgres::Config, PgError> {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host).port(self.port).user(&self.user).dbname(database);
        c.application_name(self.extra_env.get("PGAPPNAME").map_or("lifeboat", String::as_str));
        let timeout = self.extra_env.get("PGCONNECT_TIMEOUT").and_then(|t| t.parse::<u64>().ok()).unwrap_or(30);
        c.connect_timeout(Duration::from_secs(timeout.max(2)));
        if let Some(addr) = &self.hostaddr {
            let ip = addr.parse().map_err(|_| PgError::Settings {
                var: "DATABASE_URL",
                message: format!("hostaddr {addr:?} is not an IP address"),
            })?;
            c.hostaddr(ip);
        }
        if let Some(password) = &self.password {
            c.password(password.expose());
        }
        if let Some(options) = self.extra_env.get("PGOPTIONS") {
            c.options(options);
        }
        match self.extra_env.get("PGSSLMODE").map(String::as_str) {
            None | Some("disable" | "allow" | "prefer") => {}
            Some(mode) if self.host.starts_with('/') => {
                tracing::debug!(sslmode = mode, "sslmode does not apply to a unix socket");
            }
            Some(mode) => {
                return Err(PgError::Settings {
                    var: "DATABASE_URL",
                    message: format!(
                        "sslmode={mode}: lifeboat's catalog connection has no TLS yet; connect through a unix socket \
                         (Cloud SQL: /cloudsql/PROJECT:REGION:INSTANCE) or a private network with sslmode=prefer"
                    ),
                });
            }
        }
        Ok(c)
    }

    /// Connects to `database`; the connection is driven by a background task.
    pub async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, PgError> {
        let config = self.client_config(database)?;
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| PgError::Connect { database: database.to_owned(), message: self.describe(&e) })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection ended with an error");
            }
        });
        Ok(client)
    }

    /// A redacted, readable description of a `tokio-postgres` error (server messages included).
    pub fn describe(&self, e: &tokio_postgres::Error) -> String {
        let text = match e.as_db_error() {
            Some(db) => {
                let mut s = format!("{}: {}", db.severity(), db.message());
                if let Some(d) = db.detail() {
                    s.push_str(&format!(" ({d})"));
                }
                if let Some(h) = db.hint() {
                    s.push_str(&format!("; hint: {h}"));
                }
                s
            }
            None => {
                let mut s = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(inner) = source {
                    let part = inner.to_string();
                    if !s.contains(&part) {
                        s.push_str(&format!(": {part}"));
                    }
                    source = inner.source();
                }
                s
            }
        };
        self.redact(&text)
    }

    /// `text` without the password or the URL.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        if let Some(url) = &self.url {
            out = url.redact_in(&out);
        }
        if let Some(password) = &self.password {
            out = password.redact_in(&out);
        }
        out
    }

    /// Where we connect, for messages: `user@host:port`.
    pub fn describe_target(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// libpq's default: the local socket directory when a server listens there, else localhost.
fn default_host(port: u16) -> String {
    for dir in ["/var/run/postgresql", "/tmp"] {
        if Path::new(dir).join(format!(".s.PGSQL.{port}")).exists() {
            return dir.to_owned();
        }
    }
    "localhost".to_owned()
}

/// Parses `postgresql://[user[:password]@][host][:port][/dbname][?param=value&…]` as libpq does
/// (single host). Error messages never contain the password.
fn parse_uri(uri: &str) -> Result<UriParts, String> {
    let rest = uri
        .strip_prefix("postgresql://")
        .or_else(|| uri.strip_prefix("postgres://"))
        .ok_or("must start with postgresql:// or postgres://")?;
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut parts = UriParts::default();
    // Credentials end at the first '@' that comes before any '/'.
    let mut main = main;
    let cut = main.find(['@', '/']);
    if let Some(at) = cut.filter(|&i| main.as_bytes()[i] == b'@') {
        let userinfo = &main[..at];
        main = &main[at + 1..];
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            parts.user =
                Some(crate::core::naming::decode_segment(user).ok_or("the user name is not valid percent-encoding")?);
        }
        if let Some(p) = password {
            parts.password =
                Some(crate::core::naming::decode_segment(p).ok_or("the password is not valid percent-encoding")?);
        }
    }
    let (hostport, dbname) = match main.split_once('/') {
        Some((h, d)) => (h, Some(d)),
        None => (main, None),
    };
    if hostport.contains(',') {
        return Err("several hosts are not supported; give one".into());
    }
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or("an IPv6 host lacks its closing ]")?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => {
                (crate::core::naming::decode_segment(h).ok_or("the host is not valid percent-encoding")?, Some(p))
            }
            None => {
                (crate::core::naming::decode_segment(hostport).ok_or("the host is not valid percent-encoding")?, None)
            }
        }
    };
    if !host.is_empty() {
        parts.host = Some(host);
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        parts.port = Some(p.parse().map_err(|_| "the port is not a number from 1 to 65535")?);
    }
    if let Some(d) = dbname.filter(|d| !d.is_empty()) {
        parts.dbname =
            Some(crate::core::naming::decode_segment(d).ok_or("the database name is not valid percent-encoding")?);
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("query parameter {:?} has no value", pair.split('=').next().unwrap_or("")))?;
        let key =
            crate::core::naming::decode_segment(k).ok_or("a query parameter name is not valid percent-encoding")?;
        let value = crate::core::naming::decode_segment(v)
            .ok_or_else(|| format!("the value of {key} is not valid percent-encoding"))?;
        match key.as_str() {
            "host" => parts.host = Some(value),
            "hostaddr" => parts.hostaddr = Some(value),
            "port" => parts.port = Some(value.parse().map_err(|_| "the port is not a number from 1 to 65535")?),
            "user" => parts.user = Some(value),
            "password" => parts.password = Some(value),
            "dbname" => parts.dbname = Some(value),
            other => match URI_PARAMS.iter().find(|(name, _)| *name == other) {
                Some((_, env)) => {
                    parts.extra.insert(env, value);
                }
                None => return Err(format!("unsupported connection parameter {other:?}")),
            },
        }
    }
    Ok(parts)
}

impl PgConfig {
    /// Records a problem when the settings cannot be resolved into one connection (a malformed
    /// `DATABASE_URL`, several hosts…), naming the variable at fault.
    pub fn check_connection(&self, r: &mut Reader<'_>) {
        let url_ok = |u: &Secret| u.expose().starts_with("postgres://") || u.expose().starts_with("postgresql://");
        if self.url.as_ref().is_some_and(|u| !url_ok(u)) {
            return; // already reported by PgConfig::read
        }
        match ConnParams::resolve(self, r.env()) {
            Ok(_) => {}
            Err(PgError::Settings { var, message }) => r.problem(var, message),
            Err(e) => r.problem(vars::DATABASE_URL.name, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(url: Option<&str>) -> PgConfig {
        PgConfig { url: url.map(Secret::new), ..PgConfig::default() }
    }

    #[test]
    fn uri_parts() {
        let p =
            parse_uri("postgresql://app:p%40ss%2Fw:rd@db.internal:6543/sales%20eu?sslmode=require&application_name=x")
                .expect("valid");
        assert_eq!(p.user.as_deref(), Some("app"));
        assert_eq!(p.password.as_deref(), Some("p@ss/w:rd"));
        assert_eq!(p.host.as_deref(), Some("db.internal"));
        assert_eq!(p.port, Some(6543));
        assert_eq!(p.dbname.as_deref(), Some("sales eu"));
        assert_eq!(p.extra.get("PGSSLMODE").map(String::as_str), Some("require"));
        assert_eq!(p.extra.get("PGAPPNAME").map(String::as_str), Some("x"));

        let p = parse_uri("postgres:///app?host=/cloudsql/proj:europe-west1:db&user=backup").expect("socket");
        assert_eq!(p.host.as_deref(), Some("/cloudsql/proj:europe-west1:db"));
        assert_eq!(p.dbname.as_deref(), Some("app"));
        assert_eq!(p.user.as_deref(), Some("backup"));

        let p = parse_uri("postgresql://%2Fvar%2Frun%2Fpostgresql/db").expect("encoded socket");
        assert_eq!(p.host.as_deref(), Some("/var/run/postgresql"));

        let p = parse_uri("postgresql://u@[::1]:5433").expect("ipv6");
        assert_eq!((p.host.as_deref(), p.port), (Some("::1"), Some(5433)));

        assert_eq!(parse_uri("postgresql://").expect("empty"), UriParts::default());
    }

    #[test]
    fn uri_errors_never_show_the_password() {
        for bad in [
            "mysql://u:sekrit@h/db",
            "postgresql://u:sekrit@h:port/db",
            "postgresql://u:sekrit@h/db?frobnicate=1",
            "postgresql://u:sek%zzrit@h/db",
            "postgresql://u:sekrit@a,b/db",
            "postgresql://u:sekrit/db",
        ] {
            let e = parse_uri(bad).expect_err(bad);
            assert!(!e.contains("sekrit"), "{e}");
        }
    }

    #[test]
    fn pg_variables_override_the_url() {
        let env = Env::from_pairs([("USER", "osuser")]);
        let mut c = pg(Some("postgresql://app:pw@h1:6000/appdb"));
        c.host = Some("h2".into());
        c.password = Some(Secret::new("other"));
        let p = ConnParams::resolve(&c, &env).expect("ok");
        assert_eq!((p.host.as_str(), p.port, p.user.as_str(), p.maintenance_db.as_str()), ("h2", 6000, "app", "appdb"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("other"));

        let p = ConnParams::resolve(&PgConfig { host: Some("h".into()), ..PgConfig::default() }, &env).expect("ok");
        assert_eq!((p.port, p.user.as_str(), p.maintenance_db.as_str()), (5432, "osuser", "postgres"));
    }

    #[test]
    fn tools_get_the_password_through_their_environment_only() {
        let c = PgConfig {
            host: Some("/cloudsql/p:r:i".into()),
            password: Some(Secret::new("hunter2-secret")),
            ..pg(None)
        };
        let p = ConnParams::resolve(&c, &Env::default()).expect("ok");
        let mut cmd = tokio::process::Command::new("pg_dump");
        cmd.arg("--format=custom");
        p.apply_env(&mut cmd, "Sales \"EU\"");
        let std = cmd.as_std();
        assert!(std.get_args().all(|a| !a.to_string_lossy().contains("hunter2")));
        let envs: BTreeMap<_, _> = std
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned())))
            .collect();
        assert_eq!(envs["PGPASSWORD"].as_deref(), Some("hunter2-secret"));
        assert_eq!(envs["PGDATABASE"].as_deref(), Some("Sales \"EU\""));
        assert_eq!(envs["PGHOST"].as_deref(), Some("/cloudsql/p:r:i"));
        assert_eq!(envs["DATABASE_URL"], None, "removed, not inherited");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert_eq!(p.redact("FATAL: password hunter2-secret"), "FATAL: password [redacted]");
    }

    #[test]
    fn required_tls_is_refused_clearly_over_tcp() {
        let c = pg(Some("postgresql://u@db.example/app?sslmode=require"));
        let p = ConnParams::resolve(&c, &Env::default()).expect("ok");
        let e = p.client_config("app").expect_err("no TLS");
        assert!(e.to_string().contains("sslmode=require"), "{e}");
        let c = pg(Some("postgresql://u@/app?host=/cloudsql/x&sslmode=require"));
        assert!(ConnParams::resolve(&c, &Env::default()).expect("ok").client_config("app").is_ok());
    }
}
