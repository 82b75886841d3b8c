//! How to reach PostgreSQL: `DATABASE_URL` and the `PG*` variables, read and resolved in one
//! step into one [`Connection`], with every problem recorded under the variable at fault.
//!
//! The tools get the connection as libpq environment variables (`PGHOST`, `PGPASSWORD`…), so
//! nothing secret is ever on a command line (which any local user can read in `/proc`).
//! `tokio-postgres` gets the same values, so the catalog queries and the dump talk to the same
//! server as the same user. Texts that come back (server messages, a tool's stderr) are redacted
//! of the password and the URL before they go anywhere.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use url::{Host, Url};

use super::PgError;
use crate::config::{Reader, vars};
use crate::core::naming::decode_segment;
use crate::core::secret::Secret;
use crate::error::ErrorKind;

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

/// Where and as whom to connect: `DATABASE_URL` first, the `PG*` variables on top, then
/// libpq's defaults. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Connection {
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

/// The parts of a connection [`Connection::overridden`] replaces.
#[derive(Debug, Clone, Default)]
pub struct ServerOverride {
    /// Another server.
    pub host: Option<String>,
    /// Its port.
    pub port: Option<u16>,
    /// Another login.
    pub user: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
    /// The database for catalog queries (creating and dropping databases).
    pub maintenance_db: Option<String>,
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

impl Connection {
    /// Reads `DATABASE_URL` and the `PG*` variables and resolves them. Each problem is recorded
    /// in `r` under the variable at fault, never with the URL's value (it may hold a password);
    /// `None` when the settings cannot make one connection. The OS user (`USER`, `LOGNAME`) is
    /// libpq's default user.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        let url = r.secret(&vars::DATABASE_URL);
        let port = r.number_in(&vars::PGPORT, 1, 65_535).and_then(|p| u16::try_from(p).ok());
        let host = r.text(&vars::PGHOST);
        let user = r.text(&vars::PGUSER);
        let password = r.secret(&vars::PGPASSWORD);
        let dbname = r.text(&vars::PGDATABASE);
        let uri = match url.as_ref().map(|u| parse_uri(u.expose())) {
            None => UriParts::default(),
            Some(Ok(parts)) => parts,
            Some(Err(UriError::Scheme)) => {
                r.problem(
                    vars::DATABASE_URL.name,
                    "must start with postgresql:// (value not shown: it may hold a password)",
                );
                return None;
            }
            Some(Err(UriError::Invalid(message))) => {
                r.problem(vars::DATABASE_URL.name, format!("{message} (value not shown)"));
                return None;
            }
        };
        let port = port.or(uri.port).unwrap_or(5432);
        let (host_var, host) = match (host, uri.host) {
            (Some(h), _) => (vars::PGHOST.name, h),
            (None, Some(h)) => (vars::DATABASE_URL.name, h),
            (None, None) => (vars::PGHOST.name, default_host(port)),
        };
        if host.contains(',') {
            r.problem(host_var, "lifeboat connects to one host; several (a,b) are not supported");
            return None;
        }
        let env = r.env();
        let user = user
            .or(uri.user)
            .or_else(|| env.get("USER").or_else(|| env.get("LOGNAME")).map(str::to_owned))
            .unwrap_or_else(|| "postgres".to_owned());
        Some(Self {
            host,
            hostaddr: uri.hostaddr,
            port,
            user,
            password: password.or(uri.password.map(Secret::new)),
            maintenance_db: dbname.or(uri.dbname).unwrap_or_else(|| "postgres".to_owned()),
            extra_env: uri.extra,
            url,
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
        let (client, connection) = config.connect(NoTls).await.map_err(|e| PgError::Connect {
            database: database.to_owned(),
            message: self.describe(&e),
            kind: kind_of(&e),
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection ended with an error");
            }
        });
        Ok(client)
    }

    /// A failed catalog query on `database`, redacted and classified.
    pub fn query_error(&self, database: &str, e: &tokio_postgres::Error) -> PgError {
        PgError::Query { database: database.to_owned(), message: self.describe(e), kind: kind_of(e) }
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

    /// `text` without the password or the URL, whatever their length
    /// ([`crate::core::secret::redact`]: a short password is removed where it stands as a token
    /// of its own, so the rest of a server's message stays readable).
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

    /// Another server (or another login on this one), for a drill: `host` set = another server,
    /// reached with only what is given (port 5432, this user, no password, `postgres`, unless
    /// given: this server's password and TLS settings are never sent elsewhere); `host` unset =
    /// this server with the given parts replaced (another `user` brings its own password or
    /// none). Redaction keeps knowing this connection's secrets.
    #[must_use]
    pub fn overridden(&self, o: ServerOverride) -> Self {
        let mut c = self.clone();
        if let Some(host) = o.host {
            c.host = host;
            c.hostaddr = None;
            c.port = o.port.unwrap_or(5432);
            c.password = None;
            c.maintenance_db = "postgres".to_owned();
            c.extra_env = BTreeMap::new();
        } else if let Some(port) = o.port {
            c.port = port;
        }
        if let Some(user) = o.user {
            c.user = user;
            c.password = None;
        }
        if let Some(password) = o.password {
            c.password = Some(password);
        }
        if let Some(db) = o.maintenance_db {
            c.maintenance_db = db;
        }
        c
    }

    /// Where we connect, for messages: `user@host:port` (redacted too: a user named like its
    /// password, `postgres`/`postgres`, is not rare).
    pub fn describe_target(&self) -> String {
        self.redact(&format!("{}@{}:{}", self.user, self.host, self.port))
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

/// What the server's answer says about trying again: no answer at all (network, timeout) and
/// the SQLSTATE classes of passing trouble (connection, resources, shutdown, serialization) are
/// transient; refused logins and privileges are refusals; a missing database is not found.
fn kind_of(e: &tokio_postgres::Error) -> ErrorKind {
    let Some(code) = e.code() else { return ErrorKind::Transient };
    if *code == SqlState::INVALID_CATALOG_NAME {
        return ErrorKind::NotFound;
    }
    if *code == SqlState::DUPLICATE_DATABASE {
        return ErrorKind::Conflict;
    }
    match code.code().get(..2) {
        Some("08" | "40" | "53" | "57") => ErrorKind::Transient,
        _ => ErrorKind::Refused,
    }
}

/// Why a `DATABASE_URL` cannot be used. Never holds the URL's value.
#[derive(Debug, PartialEq, Eq)]
enum UriError {
    /// Not `postgresql://` nor `postgres://`.
    Scheme,
    /// What is wrong, in words.
    Invalid(String),
}

impl From<&str> for UriError {
    fn from(message: &str) -> Self {
        Self::Invalid(message.to_owned())
    }
}

impl From<String> for UriError {
    fn from(message: String) -> Self {
        Self::Invalid(message)
    }
}

/// Stands in for the empty host of `postgresql://user@/db` or `postgresql://:5433/db`, which
/// libpq reads as "no host given" and the `url` crate refuses; `.invalid` names no real host
/// (RFC 2606), so it cannot be mistaken for one.
const NO_HOST: &str = "no-host.invalid";

/// [`Url::parse`], with [`NO_HOST`] put where libpq allows an empty host next to a user or port.
fn parse_url(uri: &str) -> Result<Url, url::ParseError> {
    match Url::parse(uri) {
        Err(url::ParseError::EmptyHost) => {
            let start = uri.find("://").map_or(0, |i| i + 3);
            let end = uri[start..].find(['/', '?', '#']).map_or(uri.len(), |i| start + i);
            let host_at = uri[start..end].rfind('@').map_or(start, |i| start + i + 1);
            Url::parse(&format!("{}{NO_HOST}{}", &uri[..host_at], &uri[host_at..]))
        }
        other => other,
    }
}

/// Parses `postgresql://[user[:password]@][host][:port][/dbname][?param=value&…]` with the `url`
/// crate, the way libpq reads it (one host):
/// - `postgres://` and `postgresql://`, case as written (libpq compares them exactly);
/// - the host may be empty (then the `host=` parameter, `PGHOST` or the default applies), a
///   unix socket directory percent-encoded (`%2Fvar%2Frun%2Fpostgresql`) or given as
///   `?host=/cloudsql/…`, or an IPv6 address in brackets (`[::1]`);
/// - user, password, host, database and parameters are percent-decoded strictly (a broken
///   escape is an error), and a `+` stays a `+` (libpq does not read form encoding);
/// - a `#` must be percent-encoded (`%23`): the `url` crate would take the rest for a fragment;
/// - an unknown parameter is refused by its name, never with its value.
///
/// Error messages never contain the password (nor anything else of the value).
fn parse_uri(uri: &str) -> Result<UriParts, UriError> {
    if !(uri.starts_with("postgresql://") || uri.starts_with("postgres://")) {
        return Err(UriError::Scheme);
    }
    let url = parse_url(uri).map_err(|e| match e {
        url::ParseError::InvalidPort => {
            "the port is not a number from 1 to 65535 (or several hosts are given; give one)".to_owned()
        }
        url::ParseError::InvalidIpv6Address => {
            "the IPv6 host is not valid; write it in brackets, like [::1]".to_owned()
        }
        other => format!("it is not a valid URI ({other})"),
    })?;
    if url.fragment().is_some() {
        return Err("a '#' must be percent-encoded as %23".into());
    }
    let decode = |what: &str, text: &str| {
        decode_segment(text).ok_or_else(|| UriError::Invalid(format!("the {what} is not valid percent-encoding")))
    };
    let mut parts = UriParts::default();
    if !url.username().is_empty() {
        parts.user = Some(decode("user name", url.username())?);
    }
    if let Some(p) = url.password() {
        parts.password = Some(decode("password", p)?);
    }
    parts.host = match url.host() {
        Some(Host::Ipv6(addr)) => Some(addr.to_string()),
        Some(Host::Ipv4(addr)) => Some(addr.to_string()),
        Some(Host::Domain(host)) if !host.is_empty() && host != NO_HOST => Some(decode("host", host)?),
        _ => None,
    };
    if parts.host.as_deref().is_some_and(|h| h.contains(',')) {
        return Err("several hosts are not supported; give one".into());
    }
    parts.port = url.port();
    let dbname = url.path().strip_prefix('/').unwrap_or(url.path());
    if !dbname.is_empty() {
        parts.dbname = Some(decode("database name", dbname)?);
    }
    for pair in url.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("query parameter {:?} has no value", pair.split('=').next().unwrap_or("")))?;
        let key = decode_segment(k).ok_or("a query parameter name is not valid percent-encoding")?;
        let value = decode_segment(v).ok_or_else(|| format!("the value of {key} is not valid percent-encoding"))?;
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
                None => return Err(format!("unsupported connection parameter {other:?}").into()),
            },
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Env};

    /// Reads a connection from `pairs` as a program does.
    fn read(pairs: &[(&str, &str)]) -> Result<Connection, ConfigError> {
        let env = Env::from_pairs(pairs.iter().copied());
        let mut r = Reader::new(&env);
        let c = Connection::read(&mut r);
        r.finish()?;
        Ok(c.expect("a connection when there is no problem"))
    }

    fn invalid(uri: &str) -> String {
        match parse_uri(uri).expect_err(uri) {
            UriError::Invalid(message) => message,
            UriError::Scheme => "scheme".into(),
        }
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
        let p = parse_uri("postgresql://u:pw@/app?host=/cloudsql/x").expect("user, no host");
        assert_eq!((p.user.as_deref(), p.password.as_deref()), (Some("u"), Some("pw")));
        assert_eq!((p.host.as_deref(), p.dbname.as_deref()), (Some("/cloudsql/x"), Some("app")));
        let p = parse_uri("postgresql://u@").expect("user only");
        assert_eq!((p.user.as_deref(), p.host), (Some("u"), None));
        let p = parse_uri("postgresql://:5433/app").expect("port, no host");
        assert_eq!((p.host, p.port, p.dbname.as_deref()), (None, Some(5433), Some("app")));
    }

    #[test]
    fn libpq_specifics() {
        // Host and database names keep their case; IPv4 hosts stay as written.
        let p = parse_uri("postgresql://DB.Example:5433/Sales").expect("case");
        assert_eq!((p.host.as_deref(), p.dbname.as_deref()), (Some("DB.Example"), Some("Sales")));
        let p = parse_uri("postgresql://10.1.2.3/app").expect("ipv4");
        assert_eq!(p.host.as_deref(), Some("10.1.2.3"));
        // Empty parts are unset, not empty.
        let p = parse_uri("postgresql://@h:/").expect("empty parts");
        assert_eq!((p.user, p.port, p.dbname), (None, None, None));
        let p = parse_uri("postgresql://:only-pw@h").expect("password without user");
        assert_eq!((p.user, p.password.as_deref()), (None, Some("only-pw")));
        // `+` is not a space (libpq reads percent-encoding only); `%2B` is a plus too.
        let p = parse_uri("postgresql://u:a+b%2Bc@h/d+b?application_name=x+y&password=p+q").expect("plus");
        assert_eq!(p.password.as_deref(), Some("p+q"), "the query's password comes last and wins");
        assert_eq!((p.dbname.as_deref(), p.extra.get("PGAPPNAME").map(String::as_str)), (Some("d+b"), Some("x+y")));
        let p = parse_uri("postgresql://u:a+b%2Bc@h/d").expect("plus in the password");
        assert_eq!(p.password.as_deref(), Some("a+b+c"));
        // Odd characters in the password, raw or encoded, come back exactly.
        let p = parse_uri("postgresql://u:%22q%27%20%C3%BC%25%3A%2F%40%3F%23@h/d").expect("odd password");
        assert_eq!(p.password.as_deref(), Some("\"q' ü%:/@?#"));
        let p = parse_uri("postgresql://u:a b\"c@h/d").expect("raw space and quote");
        assert_eq!(p.password.as_deref(), Some("a b\"c"));
        // Parameters override the authority, as in libpq.
        let p = parse_uri("postgresql://u@h1:1/d1?host=h2&port=2&dbname=d2&user=v&hostaddr=10.0.0.2").expect("params");
        assert_eq!(
            (p.host.as_deref(), p.port, p.dbname.as_deref(), p.user.as_deref(), p.hostaddr.as_deref()),
            (Some("h2"), Some(2), Some("d2"), Some("v"), Some("10.0.0.2"))
        );
        let p = parse_uri("postgresql:///d?options=-c%20search_path%3Da%2Cb").expect("options");
        assert_eq!(p.extra.get("PGOPTIONS").map(String::as_str), Some("-c search_path=a,b"));
        // The scheme is compared as written, like libpq does.
        assert_eq!(parse_uri("POSTGRESQL://h/d"), Err(UriError::Scheme));
        assert_eq!(parse_uri("postgresql:/h/d"), Err(UriError::Scheme));
    }

    #[test]
    fn uri_errors_name_what_is_wrong() {
        assert!(invalid("postgresql://h/d?frobnicate=1").contains("unsupported connection parameter \"frobnicate\""));
        assert!(invalid("postgresql://h/d?sslmode").contains("\"sslmode\" has no value"));
        assert!(invalid("postgresql://h:port/d").contains("port"));
        assert!(invalid("postgresql://h:70000/d").contains("port"));
        assert!(invalid("postgresql://h/d?port=x").contains("port"));
        assert!(invalid("postgresql://a,b/d").contains("several hosts"));
        assert!(invalid("postgresql://a:1,b:2/d").contains("several hosts"));
        assert!(invalid("postgresql://u@[::1/d").contains("IPv6"));
        assert!(invalid("postgresql://h/d%zz").contains("database name"));
        assert!(invalid("postgresql://h/d?application_name=%C3").contains("application_name"));
        assert!(invalid("postgresql://h/d?password=a#b").contains("%23"));
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
            "postgresql://u:sek#rit@h/db",
            "postgresql://u@h/db?password=sek%zzrit",
            "postgresql://u@h/db?password=sekrit&frobnicate=sekrit",
            "postgresql://u:sekrit@[::1/db",
        ] {
            let e = match parse_uri(bad).expect_err(bad) {
                UriError::Invalid(message) => message,
                UriError::Scheme => continue,
            };
            assert!(!e.contains("sekrit") && !e.contains("sek"), "{bad}: {e}");
        }
    }

    #[test]
    fn pg_variables_override_the_url() {
        let p = read(&[
            ("USER", "osuser"),
            ("DATABASE_URL", "postgresql://app:pw@h1:6000/appdb"),
            ("PGHOST", "h2"),
            ("PGPASSWORD", "other"),
        ])
        .expect("ok");
        assert_eq!((p.host.as_str(), p.port, p.user.as_str(), p.maintenance_db.as_str()), ("h2", 6000, "app", "appdb"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("other"));

        let p = read(&[("USER", "osuser"), ("PGHOST", "h")]).expect("ok");
        assert_eq!((p.port, p.user.as_str(), p.maintenance_db.as_str()), (5432, "osuser", "postgres"));
        let p =
            read(&[("LOGNAME", "logname"), ("PGHOST", "h"), ("PGPORT", "5433"), ("PGDATABASE", "cat")]).expect("ok");
        assert_eq!((p.port, p.user.as_str(), p.maintenance_db.as_str()), (5433, "logname", "cat"));
    }

    #[test]
    fn problems_name_the_variable_and_never_the_password() {
        let e = read(&[("DATABASE_URL", "postgresql://u:hunter2-secret@h/db?frobnicate=1")]).expect_err("bad");
        assert_eq!((e.problems.len(), e.problems[0].name.as_str()), (1, "DATABASE_URL"), "{e}");
        assert!(e.problems[0].message.contains("frobnicate") && e.problems[0].message.ends_with("(value not shown)"));
        let e = read(&[("DATABASE_URL", "mysql://u:hunter2-secret@h/db")]).expect_err("scheme");
        assert_eq!(e.problems.len(), 1, "reported once: {e}");
        assert!(e.problems[0].message.starts_with("must start with postgresql://"), "{e}");
        let e = read(&[("PGHOST", "a,b")]).expect_err("two hosts");
        assert_eq!(e.problems[0].name, "PGHOST");
        let e = read(&[("DATABASE_URL", "postgresql://u:hunter2-secret@h/db?host=a,b")]).expect_err("two hosts");
        assert_eq!(e.problems[0].name, "DATABASE_URL");
        let e = read(&[("PGHOST", "h"), ("PGPORT", "99999")]).expect_err("port");
        assert_eq!(e.problems[0].name, "PGPORT");
        let e = read(&[("DATABASE_URL", "postgresql://u:hunter2-secret@h:x/db")]).expect_err("port");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn tools_get_the_password_through_their_environment_only() {
        let p = read(&[("PGHOST", "/cloudsql/p:r:i"), ("PGPASSWORD", "hunter2-secret")]).expect("ok");
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
    fn the_url_is_redacted_from_tool_output() {
        let url = "postgresql://u:s3cr3t-pw@db.internal/app";
        let p = read(&[("DATABASE_URL", url)]).expect("ok");
        let text = format!("could not connect: {url} refused; password s3cr3t-pw");
        let redacted = p.redact(&text);
        assert!(!redacted.contains("s3cr3t") && !redacted.contains("db.internal/app"), "{redacted}");
    }

    #[test]
    fn a_short_password_is_redacted_and_the_message_kept() {
        let p = read(&[("PGHOST", "h"), ("PGUSER", "ab"), ("PGPASSWORD", "ab")]).expect("ok");
        let text = r#"FATAL: password authentication failed for user "ab"; table abc"#;
        assert_eq!(p.redact(text), r#"FATAL: password authentication failed for user "[redacted]"; table abc"#);
        assert_eq!(p.describe_target(), "[redacted]@h:5432");
    }

    #[test]
    fn required_tls_is_refused_clearly_over_tcp() {
        let p = read(&[("DATABASE_URL", "postgresql://u@db.example/app?sslmode=require")]).expect("ok");
        let e = p.client_config("app").expect_err("no TLS");
        assert!(e.to_string().contains("sslmode=require"), "{e}");
        let p = read(&[("DATABASE_URL", "postgresql://u@/app?host=/cloudsql/x&sslmode=require")]).expect("ok");
        assert!(p.client_config("app").is_ok());
    }
}
