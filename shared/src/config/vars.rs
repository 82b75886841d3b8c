//! The declaration of every environment variable lifeboat reads. `--help` and the README's
//! configuration reference are generated from these; nothing else names a variable.

// The help texts are plain text (shown by --help and in the README), not Markdown: `<source>`
// in them is a placeholder, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use super::Var;

macro_rules! var {
    ($id:ident, $name:literal, secret, $help:literal) => {
        #[doc = $help]
        pub const $id: Var = Var { name: $name, default: None, help: $help, secret: true };
    };
    ($id:ident, $name:literal, $default:expr, $help:literal) => {
        #[doc = $help]
        pub const $id: Var = Var { name: $name, default: $default, help: $help, secret: false };
    };
}

// --- shared by every program -------------------------------------------------------------------
var!(
    DESTINATION,
    "LIFEBOAT_DESTINATION",
    None,
    "Where backups live: gs://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH. Takes precedence over BACKUP_BUCKET_NAME; when neither is set, file://$HOME/.local/share/lifeboat/backups."
);
var!(
    BACKUP_BUCKET_NAME,
    "BACKUP_BUCKET_NAME",
    None,
    "Name of the GCS backup bucket (same as LIFEBOAT_DESTINATION=gs://NAME)."
);
var!(
    STATE_DESTINATION,
    "LIFEBOAT_STATE_DESTINATION",
    None,
    "Where state that is replaced or deleted sooner than backups lives (monitor incident state and message records, storage-backup's snapshot-id claims, all under state/): gs://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH. Unset = the backup destination itself. Deployed: a small separate bucket, so the backup bucket can carry a retention policy."
);
var!(
    SOURCE,
    "BACKUP_SOURCE",
    Some("main"),
    "Logical name of the system being backed up; the <source> in db/<source>/<database>/…."
);
var!(
    RESULTS_TOPIC,
    "LIFEBOAT_RESULTS_TOPIC",
    None,
    "Pub/Sub topic id (or projects/P/topics/T) that receives one result event per run; unset = events are only logged."
);
var!(
    PROJECT,
    "GOOGLE_CLOUD_PROJECT",
    None,
    "Google Cloud project id (Pub/Sub). On Cloud Run it defaults to the project of the metadata server."
);
var!(
    TIMEZONE,
    "BACKUP_TIMEZONE",
    Some("UTC"),
    "IANA time zone for schedules and the daily/weekly/monthly retention calendar."
);
var!(RETENTION_DAYS, "BACKUP_RETENTION_DAYS", Some("30"), "Backups younger than this many days are always kept.");
var!(
    SCHEDULE,
    "BACKUP_SCHEDULE",
    Some("0 2 * * *"),
    "Cron schedule of the database backup (used by Terraform for Cloud Scheduler; validated here)."
);
var!(
    ALERT_EMAILS,
    "BACKUP_ALERT_EMAILS",
    None,
    "Comma-separated e-mail addresses for Cloud Monitoring alerts (Terraform) and shown in Slack alerts."
);
var!(
    UPLOAD_CHUNK_MIB,
    "LIFEBOAT_UPLOAD_CHUNK_MIB",
    Some("8"),
    "Chunk size of resumable uploads in MiB; a failed chunk is re-sent alone. Memory use is about twice this."
);
var!(
    CONNECT_TIMEOUT,
    "LIFEBOAT_CONNECT_TIMEOUT",
    Some("10s"),
    "Longest time to open a connection (TCP and TLS) to GCS, Pub/Sub, Slack, webhooks, Sentry or the Cloud Run Admin API; at most 5m."
);
var!(
    STALL_TIMEOUT,
    "LIFEBOAT_STALL_TIMEOUT",
    Some("60s"),
    "Longest a network request may go without progress: waiting for the answer's headers (an upload chunk included), or between two pieces of its body. A stalled request is retried, then the run fails. At most 1h."
);
var!(
    REQUEST_ATTEMPTS,
    "LIFEBOAT_REQUEST_ATTEMPTS",
    Some("6"),
    "Attempts in all for a network request that failed for a passing reason (timeout, connection, 408, 429, 5xx), with exponential backoff in between: 1 to 20."
);
var!(
    ALLOWED_INVOKERS,
    "LIFEBOAT_ALLOWED_INVOKERS",
    None,
    "Comma-separated service-account e-mails (the scheduler's) allowed to call POST /run and monitor's POST /check: the email claim of the ID token Cloud Run verified. Trusted only on Cloud Run (K_SERVICE set)."
);
var!(
    PUSH_INVOKERS,
    "LIFEBOAT_PUSH_INVOKERS",
    None,
    "Comma-separated service-account e-mails of Pub/Sub push subscriptions: allowed to call monitor's POST /pubsub and nothing else."
);
var!(
    API_TOKEN,
    "LIFEBOAT_API_TOKEN",
    secret,
    "Static bearer token accepted on every authenticated endpoint (at least 16 characters). Off Cloud Run it is the only credential: ID tokens are trusted only where Cloud Run verified them."
);
var!(
    SENTRY_DSN,
    "SENTRY_DSN",
    secret,
    "Optional Sentry DSN (from Secret Manager): failed runs and errors are reported there too, secrets scrubbed; unset = no Sentry."
);
var!(PORT, "PORT", None, "Set by Cloud Run services: serve HTTP on this port (POST /run, GET /healthz).");
var!(
    BIND,
    "LIFEBOAT_BIND",
    None,
    "IP address the HTTP server listens on; default 0.0.0.0 on Cloud Run (K_SERVICE set), else 127.0.0.1 (this machine only)."
);
var!(
    K_SERVICE,
    "K_SERVICE",
    None,
    "Set by Cloud Run services: ID tokens in requests were verified by Cloud Run and are trusted."
);
var!(CLOUD_RUN_JOB, "CLOUD_RUN_JOB", None, "Set by Cloud Run jobs: run once and exit (same as --once).");
var!(
    STORAGE_EMULATOR_HOST,
    "STORAGE_EMULATOR_HOST",
    None,
    "GCS emulator endpoint (e.g. http://127.0.0.1:4443); anonymous credentials are used."
);
var!(PUBSUB_EMULATOR_HOST, "PUBSUB_EMULATOR_HOST", None, "Pub/Sub emulator host:port; no credentials are used.");
var!(
    RUST_LOG,
    "RUST_LOG",
    Some("info"),
    "Log filter (tracing-subscriber EnvFilter syntax). Logs are JSON for Cloud Logging on Cloud Run, text elsewhere."
);

/// Variables every program reads.
pub const COMMON: &[&Var] = &[
    &DESTINATION,
    &BACKUP_BUCKET_NAME,
    &STATE_DESTINATION,
    &SOURCE,
    &RESULTS_TOPIC,
    &PROJECT,
    &TIMEZONE,
    &RETENTION_DAYS,
    &SCHEDULE,
    &ALERT_EMAILS,
    &UPLOAD_CHUNK_MIB,
    &CONNECT_TIMEOUT,
    &STALL_TIMEOUT,
    &REQUEST_ATTEMPTS,
    &PROGRESS_INTERVAL,
    &ALLOWED_INVOKERS,
    &PUSH_INVOKERS,
    &API_TOKEN,
    &SENTRY_DSN,
    &PORT,
    &BIND,
    &K_SERVICE,
    &CLOUD_RUN_JOB,
    &STORAGE_EMULATOR_HOST,
    &PUBSUB_EMULATOR_HOST,
    &RUST_LOG,
];

// --- PostgreSQL (db-backup, restore, drill) -------------------------------------------------------------
var!(
    DATABASE_URL,
    "DATABASE_URL",
    None,
    "libpq connection URI (postgresql://user@host:port/db). The PG* variables below fill in or override its parts."
);
var!(PGHOST, "PGHOST", None, "Database host, or a unix socket directory such as /cloudsql/PROJECT:REGION:INSTANCE.");
var!(PGPORT, "PGPORT", None, "Database port (libpq default 5432).");
var!(PGUSER, "PGUSER", None, "Database user.");
var!(
    PGPASSWORD,
    "PGPASSWORD",
    secret,
    "Database password (from Secret Manager). Handed to pg_dump/pg_restore through their environment only."
);
var!(PGDATABASE, "PGDATABASE", None, "Database to connect to for catalog queries (default postgres).");
var!(
    PG_BIN_DIR,
    "LIFEBOAT_PG_BIN_DIR",
    None,
    "Directory holding pg_dump/pg_restore/psql; default: the newest /usr/lib/postgresql/*/bin, else PATH."
);
var!(
    DATABASES,
    "BACKUP_DATABASES",
    None,
    "Comma-separated databases to back up, each once (an empty item is an error); unset = every non-template database of the server."
);
var!(COMPRESSION, "BACKUP_COMPRESSION", Some("zstd"), "Compression of dumps: zstd or gzip.");
var!(
    COMPRESSION_LEVEL,
    "BACKUP_COMPRESSION_LEVEL",
    None,
    "Compression level (zstd 1-19, default 1; gzip 1-9, default 6). zstd 1 keeps up with pg_dump and stores no more than 3 on database dumps (bench/db-backup.sh, section compression)."
);
var!(
    COMPRESSION_JOB_MIB,
    "BACKUP_COMPRESSION_JOB_MIB",
    Some("2"),
    "zstd job size in MiB (1-64): each compression thread works on this much at a time; encoder memory is about 3 x threads x this."
);
var!(
    COMPRESSION_THREADS,
    "BACKUP_COMPRESSION_THREADS",
    None,
    "Compression worker threads (zstd); default: the number of CPUs."
);
var!(
    ROW_COUNTS,
    "BACKUP_ROW_COUNTS",
    Some("true"),
    "Record exact per-table row counts in the manifest (same snapshot as the dump); turn off for very large databases."
);
var!(
    TABLE_CHECKSUMS,
    "BACKUP_TABLE_CHECKSUMS",
    Some("false"),
    "Also record a content checksum per table (one md5-based aggregate per table, same snapshot as the dump), which drill compares on the restored copy; a drill fails on any difference. Off by default: it costs about 6 s of one server CPU core per GB of table data, run beside the dump (measured: 13.0 s against 0.8 s for the row counts on the 2.2 GB benchmark database)."
);
var!(DB_CONCURRENCY, "BACKUP_CONCURRENCY", Some("1"), "Databases backed up at the same time.");
var!(
    ENCRYPTION_RECIPIENTS,
    "BACKUP_ENCRYPTION_RECIPIENTS",
    None,
    "Public keys (age X25519, age1..., comma-separated, up to 16) that database dumps are encrypted to after compression; each one can decrypt. Unset = dumps are not encrypted. Give health and monitor the same value: they then report a database whose newest backup is not encrypted (status unencrypted)."
);
var!(
    ENCRYPTION_IDENTITY,
    "BACKUP_ENCRYPTION_IDENTITY",
    secret,
    "Secret keys (age X25519, AGE-SECRET-KEY-1..., one per line or comma-separated; age-keygen output as it is) that restore and drill decrypt encrypted dumps with (from Secret Manager). Several = a rotation: each is tried."
);

var!(
    SCRATCH_DIR,
    "LIFEBOAT_SCRATCH_DIR",
    None,
    "Directory for the scratch archive of a parallel restore (restore db --jobs N): about the size of the uncompressed dump, removed afterwards whatever happens; default: the system temp directory (TMPDIR, else /tmp)."
);

/// Variables of the PostgreSQL connection.
pub const POSTGRES: &[&Var] = &[&DATABASE_URL, &PGHOST, &PGPORT, &PGUSER, &PGPASSWORD, &PGDATABASE, &PG_BIN_DIR];
/// Variables `db-backup` reads besides [`COMMON`] and [`POSTGRES`].
pub const DB_BACKUP: &[&Var] = &[
    &DATABASES,
    &COMPRESSION,
    &COMPRESSION_LEVEL,
    &COMPRESSION_THREADS,
    &COMPRESSION_JOB_MIB,
    &ROW_COUNTS,
    &TABLE_CHECKSUMS,
    &DB_CONCURRENCY,
    &ENCRYPTION_RECIPIENTS,
];
/// Variables of a database restore (`restore`, `drill`) besides [`COMMON`] and [`POSTGRES`].
pub const DB_RESTORE: &[&Var] = &[&ENCRYPTION_IDENTITY, &SCRATCH_DIR];

// --- drill --------------------------------------------------------------------------------------
var!(
    DRILL_PGHOST,
    "DRILL_PGHOST",
    None,
    "Drill server: host or unix socket directory the scratch databases are restored on. Unset = the PG* server (the backed-up one); set = another server, reached with the DRILL_PG* variables only (the PG* password is never sent to it)."
);
var!(DRILL_PGPORT, "DRILL_PGPORT", None, "Drill server port (default: PGPORT's without DRILL_PGHOST, else 5432).");
var!(
    DRILL_PGUSER,
    "DRILL_PGUSER",
    None,
    "Drill server user (needs CREATEDB; default: the PG* user). Another user than PGUSER brings its own DRILL_PGPASSWORD."
);
var!(DRILL_PGPASSWORD, "DRILL_PGPASSWORD", secret, "Drill server password (from Secret Manager).");
var!(
    DRILL_PGDATABASE,
    "DRILL_PGDATABASE",
    None,
    "Database on the drill server for catalog queries (creating and dropping scratch databases); default: PGDATABASE's without DRILL_PGHOST, else postgres."
);
var!(
    DRILL_SAMPLE_OBJECTS,
    "DRILL_SAMPLE_OBJECTS",
    Some("20"),
    "Objects of each bucket snapshot read back in full and compared byte for byte (MD5, CRC32C): a number (20) or a percentage of the snapshot (1%). Every other object is checked by its blob's metadata only."
);
var!(
    DRILL_CONCURRENCY,
    "DRILL_CONCURRENCY",
    Some("16"),
    "Blob metadata lookups and sample reads of a bucket drill in flight at once."
);

/// Variables `drill` reads besides [`COMMON`], [`POSTGRES`] and [`DB_RESTORE`].
pub const DRILL: &[&Var] = &[
    &DATABASES,
    &SOURCE_BUCKETS,
    &DRILL_PGHOST,
    &DRILL_PGPORT,
    &DRILL_PGUSER,
    &DRILL_PGPASSWORD,
    &DRILL_PGDATABASE,
    &DRILL_SAMPLE_OBJECTS,
    &DRILL_CONCURRENCY,
];

// --- storage-backup ----------------------------------------------------------------------------
var!(
    SOURCE_BUCKETS,
    "SOURCE_BUCKETS",
    None,
    "Comma-separated source buckets to snapshot, each BUCKET or BUCKET/PREFIX (names starting with PREFIX; end it with / for a folder). gs://BUCKET[/PREFIX] and, for local use with a file:// destination, file:///DIR work too. Each bucket once, of the destination's kind (gs:// or file://)."
);
var!(SNAPSHOT_CONCURRENCY, "SNAPSHOT_CONCURRENCY", Some("16"), "Server-side copies in flight at once.");
var!(
    SUSPICIOUS_FRACTION,
    "SNAPSHOT_SUSPICIOUS_FRACTION",
    Some("0.5"),
    "A snapshot listing fewer than this fraction of the previous snapshot's objects is marked suspicious."
);

var!(
    SNAPSHOT_ID,
    "SNAPSHOT_ID",
    None,
    "Pins the snapshot id (like 20261126T030000Z-1a2b3c4d) that every task of a run writes into; unset = a fresh id, shared by the tasks of one Cloud Run execution through a create-only claim object."
);
var!(
    CLOUD_RUN_TASK_INDEX,
    "CLOUD_RUN_TASK_INDEX",
    Some("0"),
    "Set by Cloud Run jobs: this task's index. storage-backup snapshots the objects whose name hashes to it."
);
var!(
    CLOUD_RUN_TASK_COUNT,
    "CLOUD_RUN_TASK_COUNT",
    Some("1"),
    "Set by Cloud Run jobs: the number of tasks; each writes one part of the snapshot, the last one the header."
);
var!(
    CLOUD_RUN_EXECUTION,
    "CLOUD_RUN_EXECUTION",
    None,
    "Set by Cloud Run jobs: the execution name; the tasks of one execution share one snapshot id through it."
);

/// Variables `storage-backup` reads besides [`COMMON`].
pub const STORAGE_BACKUP: &[&Var] = &[
    &SOURCE_BUCKETS,
    &SNAPSHOT_CONCURRENCY,
    &SUSPICIOUS_FRACTION,
    &SNAPSHOT_ID,
    &CLOUD_RUN_TASK_INDEX,
    &CLOUD_RUN_TASK_COUNT,
    &CLOUD_RUN_EXECUTION,
];

// --- prune ---------------------------------------------------------------------------------------
var!(KEEP_LAST, "BACKUP_KEEP_LAST", None, "Always keep this many newest backups per source.");
var!(KEEP_DAILY, "BACKUP_KEEP_DAILY", None, "Keep the newest backup of each of this many days.");
var!(KEEP_WEEKLY, "BACKUP_KEEP_WEEKLY", None, "Keep the newest backup of each of this many ISO weeks.");
var!(KEEP_MONTHLY, "BACKUP_KEEP_MONTHLY", None, "Keep the newest backup of each of this many months.");
var!(
    PRUNE_MAX_DELETE_FRACTION,
    "PRUNE_MAX_DELETE_FRACTION",
    Some("0.5"),
    "One run refuses to delete more than this share of a source's backups unless --force is given."
);
var!(
    PRUNE_GRACE,
    "PRUNE_GRACE",
    Some("48h"),
    "Unreferenced blobs and orphaned data objects younger than this are never deleted."
);

/// Variables `prune` reads besides [`COMMON`].
pub const PRUNE: &[&Var] =
    &[&KEEP_LAST, &KEEP_DAILY, &KEEP_WEEKLY, &KEEP_MONTHLY, &PRUNE_MAX_DELETE_FRACTION, &PRUNE_GRACE];

// --- health and monitor --------------------------------------------------------------------------
var!(
    MAX_AGE,
    "BACKUP_MAX_AGE",
    Some("25h"),
    "A source whose newest good backup is older than this is stale (at most 32 days: a longer limit would silence the alarm)."
);
var!(
    MAX_UNVERIFIED_AGE,
    "BACKUP_MAX_UNVERIFIED_AGE",
    Some("8d"),
    "A source whose newest drill-verified backup (one a `drill` restored and checked; aged by its backup time) is older than this is unverified; with no verified backup at all, once its oldest backup is older than this (so a new deployment is not unverified on its first day). Stale, failed, suspicious, unencrypted and missing win over unverified. At most 32 days."
);
var!(SLACK_WEBHOOK_URL, "SLACK_WEBHOOK_URL", secret, "Slack incoming-webhook URL for alerts (from Secret Manager).");
var!(ALERT_WEBHOOK_URL, "ALERT_WEBHOOK_URL", secret, "Optional generic webhook that receives the same alerts as JSON.");
var!(
    REMINDER_INTERVAL,
    "ALERT_REMINDER_INTERVAL",
    Some("24h"),
    "While an incident stays open, at most one reminder per interval."
);

var!(
    REGION,
    "LIFEBOAT_REGION",
    None,
    "Cloud Run region of the jobs, used in the rerun command of alerts (gcloud run jobs execute JOB --region REGION)."
);

// --- console ------------------------------------------------------------------------------------
var!(
    ADMINS,
    "LIFEBOAT_ADMINS",
    None,
    "Comma-separated e-mails (people or service accounts) allowed every console action: backups, prune, restores. Each action is logged and published with the admin's identity. Identities count on Cloud Run only; elsewhere the LIFEBOAT_API_TOKEN holder acts."
);
var!(
    VIEWERS,
    "LIFEBOAT_VIEWERS",
    None,
    "Comma-separated e-mails allowed to read the console's pages and GET /api/ (admins may read too). Off Cloud Run, while the console listens on loopback only, anyone on this machine may read."
);
var!(
    RUN_API_URL,
    "LIFEBOAT_RUN_API_URL",
    Some("https://run.googleapis.com"),
    "Cloud Run Admin API (v2) endpoint the console starts job executions through (on Cloud Run)."
);
var!(
    METADATA_HOST,
    "GCE_METADATA_HOST",
    Some("metadata.google.internal"),
    "Host of the metadata server the console gets its OAuth token from (on Cloud Run)."
);
var!(
    PROGRESS_INTERVAL,
    "LIFEBOAT_PROGRESS_INTERVAL",
    Some("30s"),
    "How often long work (dumps, snapshots, restores) logs a progress line: done, rate, estimated total and time left; 0s turns the lines off."
);

/// Variables `console` reads besides [`COMMON`].
pub const CONSOLE: &[&Var] = &[
    &ADMINS,
    &VIEWERS,
    &REGION,
    &RUN_API_URL,
    &METADATA_HOST,
    &MAX_AGE,
    &MAX_UNVERIFIED_AGE,
    &DATABASES,
    &SOURCE_BUCKETS,
];

/// Variables `health` reads besides [`COMMON`].
pub const HEALTH: &[&Var] = &[&MAX_AGE, &MAX_UNVERIFIED_AGE, &ENCRYPTION_RECIPIENTS];
/// Variables `monitor` reads besides [`COMMON`].
pub const MONITOR: &[&Var] = &[
    &MAX_AGE,
    &MAX_UNVERIFIED_AGE,
    &SLACK_WEBHOOK_URL,
    &ALERT_WEBHOOK_URL,
    &REMINDER_INTERVAL,
    &REGION,
    &ENCRYPTION_RECIPIENTS,
];

/// Every group, titled, in the order of the README's configuration reference.
pub const GROUPS: &[(&str, &[&Var])] = &[
    ("Every program", COMMON),
    ("PostgreSQL connection (db-backup, restore, drill)", POSTGRES),
    ("db-backup", DB_BACKUP),
    ("restore and drill", DB_RESTORE),
    ("drill", DRILL),
    ("storage-backup", STORAGE_BACKUP),
    ("prune", PRUNE),
    ("health and monitor", MONITOR),
    ("console", CONSOLE),
];
