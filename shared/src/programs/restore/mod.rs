//! `restore`: restores a database backup (streaming into pg_restore) or a bucket snapshot
//! (server-side copies), verifying checksums.
//!
//! The work is chosen by a subcommand of [`Cli`] (beside the runtime's `--once`):
//!
//! - `restore list --database NAME`: the backups of a database (id, start time, size, age).
//! - `restore db --database NAME [--backup-id ID | --before RFC3339] [--target NAME] [--clean
//!   [--drop-replaced] [--terminate-sessions]] [--replace-live-database] [--jobs N] [--no-owner]
//!   [--no-privileges]`: restores a database backup into a side database, swapped in under the
//!   target's name only when verified ([`crate::db::restore`]).
//! - `restore bucket --source-bucket B … --target-bucket T …`: restores a bucket snapshot with
//!   server-side copies, implemented in [`crate::bucket::restore`] (wiring in `bucket.rs`).
//! - `restore keygen --output FILE`: a new age key pair for encrypted backups: the identity
//!   (secret) into a new file, the recipient (public key) on stdout. Refused on Cloud Run, where
//!   stdout and files would not stay on a trusted machine.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::config::{Reader, vars};
use crate::core::events::{ItemResult, Outcome, RunResult};
use crate::core::naming::RunId;
use crate::core::units;
use crate::db::DbError;
use crate::db::encryption::{self, Identities};
use crate::db::restore::{self as db_restore, RestoreSettings, RestoreTarget, Selector};
use crate::postgres::Connection;
use crate::postgres::tools::PgTools;
use crate::runtime::cli::ARGUMENTS;
use crate::runtime::{self, Program, ProgramSpec, RunContext, Services, StartError};
mod bucket;

use bucket::BucketArgs;

/// The program's specification.
pub static SPEC: ProgramSpec =
    ProgramSpec { name: "restore", vars: &[vars::POSTGRES, vars::DB_RESTORE, &[&vars::DATABASES]] };

/// Restores a database backup (streaming into pg_restore) or a bucket snapshot (server-side
/// copies), verifying checksums.
///
/// Run it once with a command: restore --once list|db|bucket ...; restore COMMAND --help
/// describes each command and its options.
#[derive(Debug, Clone, Parser)]
#[command(disable_help_subcommand = true)]
pub struct Cli {
    /// The runtime's flags (`--once`), read by the runtime.
    #[command(flatten)]
    pub runtime: runtime::Args,
    /// What to restore.
    #[command(subcommand)]
    pub command: Command,
}

/// What `restore` does.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// List the backups of a database: id, start time (UTC), size, age, complete or not.
    List(ListArgs),
    /// Restore a database backup: by default the newest complete one, into a new database.
    ///
    /// By default the newest complete backup is restored into a new database
    /// NAME_restored_TIMESTAMP. A restore never harms what exists: it always goes into a fresh
    /// side database lifeboat_restore_TIMESTAMP_ID, and only when everything verified (size,
    /// CRC32C, SHA-256, decompression, pg_restore exit 0, every table's row count) is that
    /// renamed to the target. Any failure (or a termination signal) drops the side database and
    /// leaves the target exactly as it was. An existing target is refused unless --clean; with
    /// it the existing database is renamed aside to TARGET_before_TIMESTAMP in the same
    /// transaction as the swap (and dropped only with --drop-replaced). template0, template1,
    /// the maintenance database, the backed-up database and the databases in BACKUP_DATABASES
    /// are refused as targets unless --replace-live-database. Download, checks, decompression
    /// and pg_restore are one stream; with --jobs N the verified archive goes to a scratch file
    /// first.
    Db(DbArgs),
    /// Restore a bucket snapshot with server-side copies, checked against its checksums.
    ///
    /// By default the newest complete snapshot of bucket B, every object, into bucket T (a name,
    /// gs://T or file:///DIR). Each restored object gets the metadata it had and is checked
    /// against the snapshot's size, MD5 and CRC32C. Objects already in the target with the same
    /// bytes and metadata are left alone; a different object under a snapshot name is a conflict
    /// and is never overwritten; other target objects are kept.
    Bucket(BucketArgs),
    /// Create an age key pair for encrypted database backups (BACKUP_ENCRYPTION_RECIPIENTS /
    /// BACKUP_ENCRYPTION_IDENTITY).
    ///
    /// Writes the identity (the SECRET key, in age-keygen's format) into a new file, readable by
    /// its owner only, and prints the recipient (the public key). Put the public key into
    /// BACKUP_ENCRYPTION_RECIPIENTS (Terraform variable backup_encryption_recipients) and the
    /// file into Secret Manager (gcloud secrets versions add ... --data-file FILE), then delete
    /// the file or keep it offline. Run it on a trusted machine: it refuses to run on Cloud Run.
    Keygen(KeygenArgs),
}

/// `restore keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// A new file for the identity (the secret key); an existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub output: std::path::PathBuf,
}

/// `restore list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// The database whose backups to list.
    #[arg(long, value_name = "NAME")]
    pub database: String,
}

/// `restore db`.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The backed-up database.
    #[arg(long, value_name = "NAME")]
    pub database: String,
    /// Restore exactly this backup (e.g. 20261126T020000Z-1a2b3c4d).
    #[arg(long, value_name = "ID", conflicts_with = "before")]
    pub backup_id: Option<RunId>,
    /// The newest backup started at or before TIME (RFC 3339, e.g. 2026-11-26T03:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = units::parse_time)]
    pub before: Option<DateTime<Utc>>,
    /// Restore into this database (default: NAME_restored_TIMESTAMP); an existing one is
    /// refused unless --clean.
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Replace an existing target: when the restore verified, the target is renamed aside to
    /// TARGET_before_TIMESTAMP and the restore renamed to TARGET, in one transaction. The old
    /// database is kept unless --drop-replaced.
    #[arg(long)]
    pub clean: bool,
    /// With --clean: drop the replaced database once the swap committed.
    #[arg(long, requires = "clean")]
    pub drop_replaced: bool,
    /// With --clean: end the sessions connected to the target just before the swap (otherwise
    /// open sessions make the restore fail, target untouched).
    #[arg(long, requires = "clean")]
    pub terminate_sessions: bool,
    /// Allow a live database as the target: template0, template1, the maintenance database
    /// (PGDATABASE), the database the backup was taken of, or one in BACKUP_DATABASES. Refused
    /// without it, nothing changed.
    #[arg(long)]
    pub replace_live_database: bool,
    /// Decompress the verified archive into a scratch file (LIFEBOAT_SCRATCH_DIR, default the
    /// system temp directory; removed afterwards, whatever happens), then pg_restore -j N into
    /// the side database.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Objects belong to the restoring user (default: the original owners, which must exist as
    /// roles on the target server).
    #[arg(long)]
    pub no_owner: bool,
    /// Do not restore GRANTs.
    #[arg(long)]
    pub no_privileges: bool,
}

/// Settings of `restore`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connection.
    pub pg: Connection,
    /// The PostgreSQL client tools.
    pub tools: PgTools,
    /// Secret keys for encrypted dumps (`BACKUP_ENCRYPTION_IDENTITY`).
    pub identities: Option<Identities>,
    /// The databases being backed up (`BACKUP_DATABASES`): refused as targets unless
    /// `--replace-live-database`.
    pub protected: Vec<String>,
    /// Where `--jobs` puts its scratch file (`LIFEBOAT_SCRATCH_DIR`).
    pub scratch_dir: std::path::PathBuf,
    /// What to do.
    pub command: Command,
}

/// Reads the settings: the connection from the environment, the work from the command line.
pub fn read(r: &mut Reader<'_>, cli: Option<Cli>) -> Option<Config> {
    let pg = Connection::read(r);
    let tools = PgTools::read(r);
    let identities = encryption::read_identities(r);
    let protected = r.names(&vars::DATABASES);
    let scratch_dir = r.text(&vars::SCRATCH_DIR).map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let command = cli.map(|c| c.command);
    if let Some(Command::Db(a)) = &command
        && (a.database.is_empty() || a.target.as_deref().is_some_and(|t| t.is_empty() || t.len() > 63))
    {
        r.problem(ARGUMENTS, "--database and --target must be 1 to 63 bytes");
    }
    if let Some(Command::Bucket(a)) = &command
        && let Err(e) = a.target_location()
    {
        r.problem(ARGUMENTS, e);
    }
    if let Some(Command::Keygen(_)) = &command
        && r.env().get(vars::CLOUD_RUN_JOB.name).is_some()
    {
        r.problem(
            ARGUMENTS,
            "keygen runs on a trusted workstation, not on Cloud Run (its secret key would land in a container \
             and its logs); run `restore --once keygen --output FILE` locally",
        );
    }
    Some(Config { pg: pg?, tools: tools?, identities: identities?, protected, scratch_dir, command: command? })
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
    config: Config,
}

/// Builds the program.
pub async fn start(services: Services, config: Config) -> Result<App, StartError> {
    Ok(App { services, config })
}

impl App {
    async fn list(&self, args: &ListArgs, mut result: RunResult) -> RunResult {
        let source = &self.services.common.source;
        match db_restore::list_backups(&*self.services.store, source, &args.database).await {
            Ok(entries) if entries.is_empty() => {
                println!(
                    "no backups of database {:?} (source {source:?}) in {}",
                    args.database,
                    self.services.store.location()
                );
                result.summary = format!("database {:?} has no backups", args.database);
            }
            Ok(entries) => {
                print!("{}", db_restore::format_list(&entries, Utc::now()));
                let complete = entries.iter().filter(|e| e.complete).count();
                result.summary =
                    format!("database {:?} has {complete} complete backup(s) of {}", args.database, entries.len());
                result.figures.insert("backups".into(), entries.len().into());
                result.figures.insert("complete".into(), complete.into());
            }
            Err(e) => {
                result.outcome = Outcome::Failure;
                result.summary = format!("cannot list the backups of {:?}: {e}", args.database);
            }
        }
        result
    }

    async fn restore_db(&self, args: &DbArgs, ctx: &RunContext, mut result: RunResult) -> RunResult {
        let mut item = ItemResult {
            kind: "database".into(),
            name: args.database.clone(),
            outcome: Outcome::Success,
            error: None,
            backup_id: None,
            figures: BTreeMap::new(),
        };
        match self.restore_db_inner(args, ctx, &mut item).await {
            Ok(done) => {
                let replaced = match &done.replaced {
                    db_restore::Replaced::Nothing => String::new(),
                    db_restore::Replaced::KeptAs(n) => format!("; the database it replaced is kept as {n:?}"),
                    db_restore::Replaced::Dropped(n) => {
                        format!("; the database it replaced was renamed {n:?}, then dropped")
                    }
                    db_restore::Replaced::DropFailed { name, error } => {
                        format!("; the database it replaced is kept as {name:?} (dropping it failed: {error})")
                    }
                };
                result.summary = format!(
                    "restored {:?} backup {} into database {:?} ({} tables verified, {:.1} s){replaced}",
                    args.database,
                    item.backup_id.as_deref().unwrap_or("?"),
                    done.target,
                    done.tables_verified,
                    done.elapsed.as_secs_f64()
                );
                println!("{}", result.summary);
            }
            Err(e) => {
                tracing::error!(database = args.database, error = %e, "restore failed");
                item.outcome = Outcome::Failure;
                item.error = Some(e.to_string());
                result.outcome = Outcome::Failure;
                result.summary = format!("restore of {:?} failed: {e}", args.database);
            }
        }
        result.items.push(item);
        result
    }

    async fn restore_db_inner(
        &self,
        args: &DbArgs,
        ctx: &RunContext,
        item: &mut ItemResult,
    ) -> Result<db_restore::RestoreDone, DbError> {
        let tools = &self.config.tools;
        let pg_restore_version = tools.version("pg_restore").await?;
        let selector = match (&args.backup_id, args.before) {
            (Some(id), _) => Selector::Id(id.clone()),
            (None, Some(t)) => Selector::Before(t),
            (None, None) => Selector::Latest,
        };
        let store = &*self.services.store;
        let (path, manifest) =
            db_restore::choose(store, &self.services.common.source, &args.database, &selector).await?;
        item.backup_id = Some(manifest.backup_id.clone());
        let target = RestoreTarget {
            name: args.target.clone().unwrap_or_else(|| db_restore::default_target(&args.database, Utc::now())),
            clean: args.clean,
            drop_replaced: args.drop_replaced,
            terminate_sessions: args.terminate_sessions,
            replace_live_database: args.replace_live_database,
            protected: self.config.protected.clone(),
        };
        item.figures.insert("target".into(), target.name.clone().into());
        let settings = RestoreSettings {
            conn: self.config.pg.clone(),
            pg_restore: tools.path("pg_restore"),
            pg_restore_version,
            jobs: args.jobs,
            no_owner: args.no_owner,
            no_privileges: args.no_privileges,
            temp_dir: self.config.scratch_dir.clone(),
            identities: self.config.identities.clone(),
            progress_interval: self.services.common.progress_interval,
        };
        tracing::info!(
            backup_id = manifest.backup_id,
            size = units::bytes(manifest.dump.stored_bytes),
            target = target.name,
            encrypted_to = manifest.dump.encryption.as_ref().map(|e| e.recipients.join(",")),
            "restoring"
        );
        let done = db_restore::restore_database(&settings, store, &path, &manifest, &target, &ctx.cancel).await;
        match &done {
            Ok(done) => item.figures = done.figures(),
            Err(DbError::RestoreFailed { side, drop_error, .. }) => {
                item.figures.insert("side_database".into(), side.clone().into());
                item.figures.insert("side_database_dropped".into(), drop_error.is_none().into());
                item.figures.insert("target_touched".into(), false.into());
            }
            Err(_) => {
                item.figures.insert("target_touched".into(), false.into());
            }
        }
        done
    }
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let result = self.services.result(SPEC.name, ctx.started);
        let mut result = match &self.config.command {
            Command::List(args) => self.list(args, result).await,
            Command::Db(args) => self.restore_db(args, &ctx, result).await,
            Command::Bucket(args) => bucket::run(&self.services, args, &ctx, result).await,
            Command::Keygen(args) => keygen(args, result),
        };
        result.finished_at = Utc::now();
        result
    }
}

/// `restore keygen`: a new identity into a new owner-only file, its public key on stdout.
fn keygen(args: &KeygenArgs, mut result: RunResult) -> RunResult {
    let identity = Identities::generate();
    let public = identity.recipients().join(",");
    match write_new_secret_file(&args.output, identity.to_secret_text(Utc::now()).expose()) {
        Ok(()) => {
            println!("{public}");
            eprintln!(
                "The identity (SECRET key) is in {}: store it in Secret Manager, then delete it or keep it offline.\n\
                 The recipient (public key) above goes into BACKUP_ENCRYPTION_RECIPIENTS.",
                args.output.display()
            );
            result.summary = format!("new age key pair: public key {public}, identity in {}", args.output.display());
            result.figures.insert("recipient".into(), public.into());
        }
        Err(e) => {
            result.outcome = Outcome::Failure;
            result.summary = format!("cannot write the identity to {}: {e}", args.output.display());
        }
    }
    result
}

/// Creates `path` (never overwriting), readable and writable by its owner only, with `text`.
fn write_new_secret_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn keygen_writes_a_new_owner_only_identity_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("key.txt");
        let c = parse(&["keygen", "--output", output.to_str().expect("utf-8")]).expect("keygen");
        let Command::Keygen(args) = c.command else { panic!("keygen") };
        let started = Utc::now();
        let result = keygen(&args, RunResult::new("restore", "main", "file:///tmp", started));
        assert_eq!(result.outcome, Outcome::Success, "{result:?}");
        let text = std::fs::read_to_string(&output).expect("identity file");
        let identity =
            Identities::parse(&crate::core::secret::Secret::new(text.clone())).expect("parses").expect("one");
        let public = identity.recipients()[0].clone();
        assert_eq!(result.figures["recipient"], public.as_str());
        assert!(result.summary.contains(&public) && !result.summary.contains("AGE-SECRET-KEY"), "{}", result.summary);
        assert!(!serde_json::to_string(&result).expect("json").contains("AGE-SECRET-KEY"));
        assert_eq!(std::fs::metadata(&output).expect("meta").permissions().mode() & 0o777, 0o600);
        let again = keygen(&args, RunResult::new("restore", "main", "file:///tmp", started));
        assert_eq!(again.outcome, Outcome::Failure);
        assert_eq!(std::fs::read_to_string(&output).expect("kept"), text, "never overwritten");
        // Not on Cloud Run.
        let env = Env::from_pairs([("PGHOST", "/tmp"), ("CLOUD_RUN_JOB", "restore")]);
        let e = runtime::configure(&SPEC, ["keygen", "--output", "/tmp/x"], &env, read).expect_err("cloud run");
        assert!(e.problems[0].message.contains("not on Cloud Run"), "{e}");
    }

    #[test]
    fn a_malformed_identity_is_a_problem_that_does_not_show_it() {
        let env = Env::from_pairs([("PGHOST", "/tmp"), ("BACKUP_ENCRYPTION_IDENTITY", "AGE-SECRET-KEY-1NOTAKEYx")]);
        let args = ["--once", "list", "--database", "app"];
        let e = runtime::configure(&SPEC, args, &env, read).expect_err("malformed");
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].name, "BACKUP_ENCRYPTION_IDENTITY");
        assert!(!e.to_string().contains("NOTAKEY"), "{e}");
    }

    #[test]
    fn bucket_subcommand_parses() {
        let c = parse(&["bucket", "--source-bucket", "media", "--target-bucket", "t-1", "--dry-run"]).expect("bucket");
        let Command::Bucket(a) = c.command else { panic!("bucket") };
        assert!(a.dry_run);
        for (args, needle) in [
            (&["bucket", "--source-bucket", "m"][..], "--target-bucket"),
            (&["bucket", "--source-bucket", "m", "--target-bucket", "Bad_Bucket"][..], "not a valid bucket"),
        ] {
            let e = parse(args).expect_err("bad");
            assert_eq!(e.problems.len(), 1, "{e}");
            assert!(e.problems[0].message.contains(needle), "{args:?}: {e}");
        }
    }

    /// The settings from the command line `--once ARGS`, as the binary reads them.
    fn parse(args: &[&str]) -> Result<Config, crate::config::ConfigError> {
        let env = Env::from_pairs([("PGHOST", "/tmp")]);
        let args = std::iter::once("--once").chain(args.iter().copied());
        match runtime::configure(&SPEC, args, &env, read)? {
            runtime::Invocation::Run { config, .. } => Ok(config),
            runtime::Invocation::Print(text) => panic!("nothing to print expected: {text}"),
        }
    }

    #[test]
    fn subcommands_parse() {
        let c = parse(&["list", "--database", "app"]).expect("list");
        assert!(matches!(c.command, Command::List(ListArgs { database }) if database == "app"));
        let c =
            parse(&["db", "--database", "app", "--backup-id", "20261126T020000Z-1a2b3c4d", "--jobs", "2", "--clean"])
                .expect("db");
        let Command::Db(a) = c.command else { panic!("db") };
        assert_eq!(a.backup_id.map(|r| r.to_string()).as_deref(), Some("20261126T020000Z-1a2b3c4d"));
        assert_eq!((a.jobs, a.clean, a.no_owner), (Some(2), true, false));
        let c =
            parse(&["db", "--database", "app", "--before", "2026-11-26T03:00:00+01:00", "--target", "x"]).expect("db");
        let Command::Db(a) = c.command else { panic!("db") };
        assert_eq!(a.before.map(|t| t.to_rfc3339()).as_deref(), Some("2026-11-26T02:00:00+00:00"));
    }

    #[test]
    fn no_command_and_no_mode_are_two_problems() {
        let env = Env::from_pairs([("PGHOST", "/tmp")]);
        let e = runtime::configure(&SPEC, Vec::<&str>::new(), &env, read).expect_err("nothing to do");
        let names: Vec<_> = e.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, [ARGUMENTS, "mode"], "{e}");
        assert!(e.problems[0].message.starts_with("a command is required: one of list, db, bucket"), "{e}");
    }

    #[test]
    fn once_may_follow_the_command() {
        let env = Env::from_pairs([("PGHOST", "/tmp")]);
        let args = ["list", "--database", "app", "--once"];
        let Ok(runtime::Invocation::Run { mode, config, .. }) = runtime::configure(&SPEC, args, &env, read) else {
            panic!("list --once")
        };
        assert_eq!(mode, runtime::Mode::Job);
        assert!(matches!(config.command, Command::List(ListArgs { database }) if database == "app"));
    }

    #[test]
    fn bad_arguments_are_configuration_problems() {
        for (args, needle) in [
            (&[][..], "a command is required"),
            (&["frobnicate"][..], "frobnicate"),
            (&["db"][..], "--database"),
            (&["db", "--database", "a", "--backup-id", "yesterday"][..], "yesterday"),
            (&["db", "--database", "a", "--before", "yesterday"][..], "RFC 3339"),
            (
                &[
                    "db",
                    "--database",
                    "a",
                    "--backup-id",
                    "20261126T020000Z-1a2b3c4d",
                    "--before",
                    "2026-11-26T03:00:00Z",
                ][..],
                "cannot be used with",
            ),
            (&["db", "--database", "a", "--jobs", "0"][..], "0"),
        ] {
            let e = parse(args).expect_err("bad");
            assert_eq!(e.problems.len(), 1, "{e}");
            assert_eq!(e.problems[0].name, "arguments");
            assert!(e.problems[0].message.contains(needle), "{args:?}: {e}");
        }
    }
}
