//! Catalog queries and identifier quoting.
//!
//! Row counts are keyed by the qualified table name written as PostgreSQL would need it:
//! `public.orders`, `"Sales"."Q1 ""EU"""`; plain lower-case names stay bare, anything else is
//! quoted, so a key is unambiguous and [`parse_qualified`] reads it back.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::Connection;
use super::PgError;

/// A database of the server with what a restore needs to recreate it alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// Name.
    pub name: String,
    /// Encoding (`UTF8`).
    pub encoding: String,
    /// `LC_COLLATE`.
    pub collate: String,
    /// `LC_CTYPE`.
    pub ctype: String,
}

/// The server's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    /// `server_version`, e.g. `15.20 (Debian 15.20-0+deb12u1)`.
    pub text: String,
    /// `server_version_num`, e.g. 150020.
    pub num: u32,
}

/// `"name"` with inner quotes doubled: always safe in SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal: `'it''s'`, or `E'a\\b'` when it holds a backslash.
pub fn quote_literal(value: &str) -> String {
    let doubled = value.replace('\'', "''");
    if value.contains('\\') { format!("E'{}'", doubled.replace('\\', "\\\\")) } else { format!("'{doubled}'") }
}

fn is_plain(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
}

fn key_part(name: &str) -> String {
    if is_plain(name) { name.to_owned() } else { quote_ident(name) }
}

/// The row-count key of `schema.table`.
pub fn qualified_key(schema: &str, table: &str) -> String {
    format!("{}.{}", key_part(schema), key_part(table))
}

/// Reads a key of [`qualified_key`] back into `(schema, table)`.
pub fn parse_qualified(key: &str) -> Option<(String, String)> {
    fn part(s: &str) -> Option<(String, &str)> {
        if let Some(rest) = s.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = rest.char_indices();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if rest[i + 1..].starts_with('"') {
                        out.push('"');
                        chars.next();
                    } else {
                        return Some((out, &rest[i + 1..]));
                    }
                } else {
                    out.push(c);
                }
            }
            None
        } else {
            let end = s.find('.').unwrap_or(s.len());
            let name = &s[..end];
            is_plain(name).then(|| (name.to_owned(), &s[end..]))
        }
    }
    let (schema, rest) = part(key)?;
    let (table, rest) = part(rest.strip_prefix('.')?)?;
    (rest.is_empty() && !schema.is_empty() && !table.is_empty()).then_some((schema, table))
}

/// `server_version` and `server_version_num`.
pub async fn server_version(client: &Client, conn: &Connection, database: &str) -> Result<ServerVersion, PgError> {
    let row = client
        .query_one("SELECT current_setting('server_version'), current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| conn.query_error(database, &e))?;
    let num: i32 = row.get(1);
    Ok(ServerVersion { text: row.get(0), num: u32::try_from(num).unwrap_or(0) })
}

/// Every database a backup of "all databases" covers: not a template, accepting connections,
/// and one we may connect to (managed services keep private databases, like Cloud SQL's
/// `cloudsqladmin`, that their users cannot open).
pub async fn list_databases(client: &Client, conn: &Connection, database: &str) -> Result<Vec<DatabaseInfo>, PgError> {
    let rows = client
        .query(
            "SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype, \
                    has_database_privilege(datname, 'CONNECT') \
             FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname",
            &[],
        )
        .await
        .map_err(|e| conn.query_error(database, &e))?;
    let mut out = Vec::new();
    for row in rows {
        let info = DatabaseInfo { name: row.get(0), encoding: row.get(1), collate: row.get(2), ctype: row.get(3) };
        if row.get::<_, bool>(4) {
            out.push(info);
        } else {
            tracing::info!(database = info.name, "skipped: no CONNECT privilege");
        }
    }
    Ok(out)
}

/// Encoding and locale of one database (`None` when it does not exist).
pub async fn database_info(
    client: &Client,
    conn: &Connection,
    database: &str,
    name: &str,
) -> Result<Option<DatabaseInfo>, PgError> {
    let row = client
        .query_opt(
            "SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(|e| conn.query_error(database, &e))?;
    Ok(row.map(|row| DatabaseInfo { name: row.get(0), encoding: row.get(1), collate: row.get(2), ctype: row.get(3) }))
}

/// `pg_database_size` of the connected database: an estimate of a dump's size (the dump holds no
/// indexes and no dead rows, so it is usually smaller). `None` when it cannot be read.
pub async fn database_size(client: &Client) -> Option<u64> {
    let row = client.query_one("SELECT pg_database_size(current_database())", &[]).await.ok()?;
    u64::try_from(row.get::<_, i64>(0)).ok()
}

/// The user tables whose rows a backup counts: ordinary tables (partitions included,
/// partitioned parents and views not) outside the system schemas, minus tables that belong to
/// an extension (their content is the extension's, not the dump's).
pub async fn user_tables(client: &Client, conn: &Connection, database: &str) -> Result<Vec<(String, String)>, PgError> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                               AND d.objid = c.oid AND d.deptype = 'e') \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| conn.query_error(database, &e))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Exact row counts (`SELECT count(*) FROM ONLY t`) of `tables`, on `client`'s current
/// transaction (hence its snapshot).
pub async fn count_rows(
    client: &Client,
    conn: &Connection,
    database: &str,
    tables: &[(String, String)],
) -> Result<BTreeMap<String, i64>, PgError> {
    let mut counts = BTreeMap::new();
    for (schema, table) in tables {
        let sql = format!("SELECT count(*) FROM ONLY {}.{}", quote_ident(schema), quote_ident(table));
        let row = client.query_one(&sql, &[]).await.map_err(|e| conn.query_error(database, &e))?;
        counts.insert(qualified_key(schema, table), row.get::<_, i64>(0));
    }
    Ok(counts)
}

/// The session settings under which [`table_checksum_query`] reads rows: a row's text form
/// depends on them, and a drill server may have other defaults than the backed-up one.
pub const CHECKSUM_SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'";

/// The one query that checksums a table's content, used at backup time (in the dump's snapshot)
/// and by the drill (on the restored copy): one streaming aggregate over the table giving its
/// row count and an order-independent checksum, the sum of the first 64 bits of each row's
/// `md5(row::text)` (as `numeric` text, so it never overflows). Run after [`CHECKSUM_SESSION`].
pub fn table_checksum_query(schema: &str, table: &str) -> String {
    format!(
        "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text \
         FROM ONLY {}.{} t",
        quote_ident(schema),
        quote_ident(table)
    )
}

/// Row count and content checksum ([`table_checksum_query`]) of one table, on `client`'s
/// current transaction; `client` must have run [`CHECKSUM_SESSION`].
pub async fn table_checksum(
    client: &Client,
    conn: &Connection,
    database: &str,
    schema: &str,
    table: &str,
) -> Result<(i64, String), PgError> {
    let row = client
        .query_one(&table_checksum_query(schema, table), &[])
        .await
        .map_err(|e| conn.query_error(database, &e))?;
    Ok((row.get(0), row.get(1)))
}

/// Row counts and content checksums of `tables`, keyed by [`qualified_key`], on `client`'s
/// current transaction (hence its snapshot); sets [`CHECKSUM_SESSION`] first.
pub async fn table_checksums(
    client: &Client,
    conn: &Connection,
    database: &str,
    tables: &[(String, String)],
) -> Result<BTreeMap<String, (i64, String)>, PgError> {
    client.batch_execute(CHECKSUM_SESSION).await.map_err(|e| conn.query_error(database, &e))?;
    let mut sums = BTreeMap::new();
    for (schema, table) in tables {
        sums.insert(qualified_key(schema, table), table_checksum(client, conn, database, schema, table).await?);
    }
    Ok(sums)
}

/// How many sessions (other than this one) are connected to database `name`.
pub async fn session_count(client: &Client, conn: &Connection, database: &str, name: &str) -> Result<i64, PgError> {
    let row = client
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", &[&name])
        .await
        .map_err(|e| conn.query_error(database, &e))?;
    Ok(row.get(0))
}

/// `COMMENT ON DATABASE name IS text` (`None`: removes the comment).
pub async fn comment_on_database(
    client: &Client,
    conn: &Connection,
    database: &str,
    name: &str,
    text: Option<&str>,
) -> Result<(), PgError> {
    let sql = format!(
        "COMMENT ON DATABASE {} IS {}",
        quote_ident(name),
        text.map_or_else(|| "NULL".to_owned(), quote_literal)
    );
    client.batch_execute(&sql).await.map_err(|e| conn.query_error(database, &e))
}

/// How [`swap_in`] treats the database it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replace<'a> {
    /// The new name of the database being replaced.
    pub aside: &'a str,
    /// End the sessions connected to it first (otherwise a connected database makes the swap fail).
    pub terminate_sessions: bool,
}

/// In ONE transaction: renames `target` to `replace.aside` (when `replace` is given; the
/// target must then exist) and `side` to `target`, and removes `side`'s comment. Renames are
/// transactional: either both happen or neither does, so there is no moment without a database
/// under the target's name, and no moment with a half-restored one.
pub async fn swap_in(
    client: &mut Client,
    conn: &Connection,
    database: &str,
    side: &str,
    target: &str,
    replace: Option<Replace<'_>>,
) -> Result<(), PgError> {
    let err = |e: tokio_postgres::Error| conn.query_error(database, &e);
    let tx = client.transaction().await.map_err(err)?;
    if let Some(r) = replace {
        if r.terminate_sessions {
            // Renaming waits (up to 5 s) for the terminated sessions to end.
            tx.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&target],
            )
            .await
            .map_err(err)?;
        }
        tx.batch_execute(&format!("ALTER DATABASE {} RENAME TO {}", quote_ident(target), quote_ident(r.aside)))
            .await
            .map_err(err)?;
    }
    tx.batch_execute(&format!(
        "ALTER DATABASE {side_q} RENAME TO {target_q}; COMMENT ON DATABASE {target_q} IS NULL",
        side_q = quote_ident(side),
        target_q = quote_ident(target)
    ))
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// `CREATE DATABASE` from `template0`, with the encoding and locale of `like` when known.
pub async fn create_database(
    client: &Client,
    conn: &Connection,
    database: &str,
    name: &str,
    like: Option<&DatabaseInfo>,
) -> Result<(), PgError> {
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
    if let Some(info) = like {
        sql.push_str(&format!(
            " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(&info.encoding),
            quote_literal(&info.collate),
            quote_literal(&info.ctype)
        ));
    }
    client.batch_execute(&sql).await.map_err(|e| conn.query_error(database, &e))
}

/// `DROP DATABASE IF EXISTS`, ending other sessions on it first (PostgreSQL 13+).
pub async fn drop_database(
    client: &Client,
    conn: &Connection,
    database: &str,
    name: &str,
    server_num: u32,
) -> Result<(), PgError> {
    let force = if server_num >= 130_000 { " WITH (FORCE)" } else { "" };
    let sql = format!("DROP DATABASE IF EXISTS {}{force}", quote_ident(name));
    client.batch_execute(&sql).await.map_err(|e| conn.query_error(database, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_checksum_query_quotes_its_table() {
        assert_eq!(
            table_checksum_query("Sales", "a\"b"),
            "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text \
             FROM ONLY \"Sales\".\"a\"\"b\" t"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
        assert_eq!(qualified_key("public", "orders"), "public.orders");
        assert_eq!(qualified_key("Sales", "Q1 \"EU\""), "\"Sales\".\"Q1 \"\"EU\"\"\"");
        assert_eq!(qualified_key("a.b", "ünï"), "\"a.b\".\"ünï\"");
        assert_eq!(parse_qualified("public.orders"), Some(("public".into(), "orders".into())));
        assert_eq!(parse_qualified("\"a.b\".\"x\"\"y\""), Some(("a.b".into(), "x\"y".into())));
        for bad in ["public", "public.", ".t", "Public.t", "a.b.c", "\"a.t", "a.t; DROP TABLE x", "a.\"t\"x"] {
            assert_eq!(parse_qualified(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn keys_round_trip(schema in "\\PC{1,20}", table in "\\PC{1,20}") {
            let key = qualified_key(&schema, &table);
            prop_assert_eq!(parse_qualified(&key), Some((schema, table)));
        }
    }
}
