//! The console's actions, checked and turned into job requests. Pure: a request body in, either
//! a reason for a 4xx answer or the [`JobRequest`]s to start (which job, which arguments, which
//! environment overrides). Nothing here knows whether the job then runs on Cloud Run or as a
//! child process, and nothing is started for a request that fails a check.
//!
//! What is refused, and why:
//! - names that PostgreSQL or the store would not take (1–63 bytes, no control characters);
//! - restore targets `template0`, `template1`, `postgres` (the maintenance database) and the
//!   backed-up database itself (a restore never lands on the live source);
//! - a destructive request whose `confirm_target` does not repeat the target exactly;
//! - a backup id that is not `<ts>-<id>` and a time that is not RFC 3339;
//! - unknown fields (a typo must not silently mean "the default").

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::core::naming::RunId;

/// A program that runs to completion, started by the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Job {
    /// `db-backup`.
    DbBackup,
    /// `storage-backup`.
    StorageBackup,
    /// `prune`.
    Prune,
    /// `restore`.
    Restore,
}

impl Job {
    /// Every job the console may start.
    pub const ALL: [Self; 4] = [Self::DbBackup, Self::StorageBackup, Self::Prune, Self::Restore];

    /// The program's name: its binary, its Cloud Run job.
    pub fn name(self) -> &'static str {
        match self {
            Self::DbBackup => "db-backup",
            Self::StorageBackup => "storage-backup",
            Self::Prune => "prune",
            Self::Restore => "restore",
        }
    }

    /// The job called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|j| j.name() == name)
    }
}

/// One job execution to start: the job, its arguments and environment overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// The job.
    pub job: Job,
    /// Arguments (after the program name; `--once` is the executor's business).
    pub args: Vec<String>,
    /// Environment overrides.
    pub env: Vec<(String, String)>,
}

/// Which backup or snapshot a restore takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The newest complete one.
    Newest,
    /// Exactly this one.
    Id(RunId),
    /// The newest started at or before this time.
    Before(DateTime<Utc>),
}

impl Choice {
    fn args(&self, id_flag: &str) -> Vec<String> {
        match self {
            Self::Newest => Vec::new(),
            Self::Id(id) => vec![id_flag.to_owned(), id.to_string()],
            Self::Before(t) => vec!["--before".to_owned(), t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)],
        }
    }
}

/// A checked action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Back up one database now.
    BackupDatabase {
        /// The database.
        database: String,
    },
    /// Snapshot one bucket now.
    SnapshotBucket {
        /// The `SOURCE_BUCKETS` entry (`BUCKET` or `BUCKET/PREFIX`).
        entry: String,
    },
    /// Every database and every bucket, as scheduled.
    FullBackup,
    /// The retention plan: printed (`apply` false) or carried out.
    Prune {
        /// Delete for real.
        apply: bool,
    },
    /// Restore a database backup into a new (or empty) database.
    RestoreDatabase {
        /// The backed-up database.
        database: String,
        /// Which backup.
        choice: Choice,
        /// The database to restore into.
        target: String,
    },
    /// Restore a bucket snapshot.
    RestoreBucket {
        /// The backed-up bucket.
        bucket: String,
        /// Which snapshot.
        choice: Choice,
        /// The bucket to restore into.
        target_bucket: String,
        /// The folder of the target to restore under.
        target_prefix: Option<String>,
        /// Only print what would be copied.
        dry_run: bool,
    },
}

impl Action {
    /// The action's name (in audit events and the API).
    pub fn name(&self) -> &'static str {
        match self {
            Self::BackupDatabase { .. } => "backup-database",
            Self::SnapshotBucket { .. } => "snapshot-bucket",
            Self::FullBackup => "full-backup",
            Self::Prune { apply: false } => "prune-preview",
            Self::Prune { apply: true } => "prune-apply",
            Self::RestoreDatabase { .. } => "restore-database",
            Self::RestoreBucket { dry_run: true, .. } => "restore-bucket-dry-run",
            Self::RestoreBucket { dry_run: false, .. } => "restore-bucket",
        }
    }

    /// One line for people (audit log, page).
    pub fn describe(&self) -> String {
        match self {
            Self::BackupDatabase { database } => format!("back up database {database}"),
            Self::SnapshotBucket { entry } => format!("snapshot bucket {entry}"),
            Self::FullBackup => "back up every database and bucket".to_owned(),
            Self::Prune { apply: false } => "preview the prune plan".to_owned(),
            Self::Prune { apply: true } => "prune by the retention policy".to_owned(),
            Self::RestoreDatabase { database, target, .. } => format!("restore database {database} into {target}"),
            Self::RestoreBucket { bucket, target_bucket, dry_run, .. } => {
                format!("{}restore bucket {bucket} into {target_bucket}", if *dry_run { "dry-run " } else { "" })
            }
        }
    }

    /// The executions the action starts.
    pub fn requests(&self) -> Vec<JobRequest> {
        let request = |job, args: Vec<String>, env: Vec<(String, String)>| JobRequest { job, args, env };
        match self {
            Self::BackupDatabase { database } => {
                vec![request(Job::DbBackup, Vec::new(), vec![("BACKUP_DATABASES".into(), database.clone())])]
            }
            Self::SnapshotBucket { entry } => {
                vec![request(Job::StorageBackup, Vec::new(), vec![("SOURCE_BUCKETS".into(), entry.clone())])]
            }
            Self::FullBackup => {
                vec![
                    request(Job::DbBackup, Vec::new(), Vec::new()),
                    request(Job::StorageBackup, Vec::new(), Vec::new()),
                ]
            }
            Self::Prune { apply } => {
                let args = if *apply { Vec::new() } else { vec!["--dry-run".to_owned()] };
                vec![request(Job::Prune, args, Vec::new())]
            }
            Self::RestoreDatabase { database, choice, target } => {
                let mut args =
                    vec!["db".into(), "--database".into(), database.clone(), "--target".into(), target.clone()];
                args.extend(choice.args("--backup-id"));
                vec![request(Job::Restore, args, Vec::new())]
            }
            Self::RestoreBucket { bucket, choice, target_bucket, target_prefix, dry_run } => {
                let mut args = vec![
                    "bucket".into(),
                    "--source-bucket".into(),
                    bucket.clone(),
                    "--target-bucket".into(),
                    target_bucket.clone(),
                ];
                if let Some(p) = target_prefix {
                    args.extend(["--target-prefix".to_owned(), p.clone()]);
                }
                args.extend(choice.args("--snapshot"));
                if *dry_run {
                    args.push("--dry-run".into());
                }
                vec![request(Job::Restore, args, Vec::new())]
            }
        }
    }
}

/// Why a request is refused (answered 400 with this text; nothing is started).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Databases a restore must never write into.
pub const REFUSED_TARGETS: [&str; 3] = ["template0", "template1", "postgres"];

/// Checks a database, bucket or target name: 1 to 63 bytes, no control characters, no `/`.
pub fn check_name(what: &str, name: &str) -> Result<(), BadInput> {
    if name.is_empty() || name.len() > 63 {
        return Err(BadInput(format!("{what} must be 1 to 63 bytes, got {} bytes", name.len())));
    }
    if name.chars().any(|c| c.is_control() || c == '/') || name.trim() != name {
        return Err(BadInput(format!("{what} {name:?} holds a control character, a slash or surrounding spaces")));
    }
    Ok(())
}

fn choice(id: Option<&str>, before: Option<&str>, id_field: &str) -> Result<Choice, BadInput> {
    match (id.filter(|s| !s.is_empty()), before.filter(|s| !s.is_empty())) {
        (Some(_), Some(_)) => Err(BadInput(format!("give {id_field} or before, not both"))),
        (Some(id), None) => id
            .parse::<RunId>()
            .map(Choice::Id)
            .map_err(|_| BadInput(format!("{id_field} {id:?} is not a backup id like 20261126T020000Z-1a2b3c4d"))),
        (None, Some(t)) => {
            crate::core::units::parse_time(t).map(Choice::Before).map_err(|e| BadInput(format!("before: {e}")))
        }
        (None, None) => Ok(Choice::Newest),
    }
}

/// The body of `POST /api/databases/{database}/restore`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbRestoreBody {
    /// Exactly this backup.
    #[serde(default)]
    pub backup_id: Option<String>,
    /// The newest backup started at or before this RFC 3339 time.
    #[serde(default)]
    pub before: Option<String>,
    /// The database to restore into.
    pub target: String,
    /// The target again, typed by the admin: the confirmation.
    pub confirm_target: String,
}

impl DbRestoreBody {
    /// Checks the request for `database`.
    pub fn check(&self, database: &str) -> Result<Action, BadInput> {
        check_name("target", &self.target)?;
        if self.confirm_target != self.target {
            return Err(BadInput(format!(
                "confirm_target {:?} does not repeat target {:?}: type the target name again to confirm",
                self.confirm_target, self.target
            )));
        }
        if REFUSED_TARGETS.contains(&self.target.as_str()) {
            return Err(BadInput(format!(
                "{:?} is never a restore target (template or maintenance database)",
                self.target
            )));
        }
        if self.target == database {
            return Err(BadInput(format!(
                "{:?} is the backed-up database itself: restore into a new database, check it, then switch",
                self.target
            )));
        }
        let choice = choice(self.backup_id.as_deref(), self.before.as_deref(), "backup_id")?;
        Ok(Action::RestoreDatabase { database: database.to_owned(), choice, target: self.target.clone() })
    }
}

/// The body of `POST /api/buckets/{bucket}/restore`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketRestoreBody {
    /// Exactly this snapshot.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// The newest snapshot started at or before this RFC 3339 time.
    #[serde(default)]
    pub before: Option<String>,
    /// The bucket to restore into.
    pub target_bucket: String,
    /// The folder of the target to restore under.
    #[serde(default)]
    pub target_prefix: Option<String>,
    /// Only print what would be copied (the default: a dry run comes first).
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// The target bucket again, required to restore for real.
    #[serde(default)]
    pub confirm_target: Option<String>,
}

impl BucketRestoreBody {
    /// Checks the request for `bucket`; `backup_bucket` is the backup store's own bucket, `None`
    /// for a `file://` backup store, whose restores go to `file:///DIR` targets (as `restore
    /// bucket` takes them).
    pub fn check(&self, bucket: &str, backup_bucket: Option<&str>) -> Result<Action, BadInput> {
        match self.target_bucket.strip_prefix("file://") {
            Some(dir) if backup_bucket.is_none() => {
                let clean = dir.starts_with('/')
                    && !dir.split('/').any(|s| s == "..")
                    && !dir.chars().any(char::is_control)
                    && dir.len() <= 1024;
                if !clean {
                    return Err(BadInput(format!(
                        "target_bucket {:?} must be file:///ABSOLUTE/DIR",
                        self.target_bucket
                    )));
                }
            }
            Some(_) => {
                return Err(BadInput("file:// targets are for a file:// backup store; name a bucket".to_owned()));
            }
            None => {
                check_name("target_bucket", self.target_bucket.strip_prefix("gs://").unwrap_or(&self.target_bucket))?
            }
        }
        if backup_bucket == Some(self.target_bucket.trim_start_matches("gs://")) {
            return Err(BadInput(format!(
                "{:?} is the backup store itself: never a restore target",
                self.target_bucket
            )));
        }
        let target_prefix = match self.target_prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => None,
            Some(p)
                if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") || p.chars().any(char::is_control) =>
            {
                return Err(BadInput(format!("target_prefix {p:?} must be a folder path like restored/2026-11-26")));
            }
            Some(p) => Some(p.to_owned()),
        };
        let dry_run = self.dry_run.unwrap_or(true);
        if !dry_run && self.confirm_target.as_deref() != Some(self.target_bucket.as_str()) {
            return Err(BadInput(format!(
                "restoring for real needs confirm_target repeating target_bucket {:?} (run a dry run first)",
                self.target_bucket
            )));
        }
        let choice = choice(self.snapshot.as_deref(), self.before.as_deref(), "snapshot")?;
        Ok(Action::RestoreBucket {
            bucket: bucket.to_owned(),
            choice,
            target_bucket: self.target_bucket.clone(),
            target_prefix,
            dry_run,
        })
    }
}

/// An empty request body (`{}`) for the actions that take no options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_body(target: &str, confirm: &str) -> DbRestoreBody {
        DbRestoreBody { backup_id: None, before: None, target: target.into(), confirm_target: confirm.into() }
    }

    #[test]
    fn a_database_restore_needs_the_target_typed_again_and_a_safe_target() {
        let ok = db_body("app_copy", "app_copy").check("app").expect("valid");
        assert_eq!(
            ok.requests(),
            [JobRequest {
                job: Job::Restore,
                args: ["db", "--database", "app", "--target", "app_copy"].map(String::from).to_vec(),
                env: vec![]
            }]
        );
        assert!(db_body("app_copy", "app_cop").check("app").expect_err("mismatch").0.contains("confirm_target"));
        for refused in ["template0", "template1", "postgres", "app"] {
            assert!(db_body(refused, refused).check("app").is_err(), "{refused}");
        }
        assert!(db_body("", "").check("app").is_err());
        assert!(db_body(&"x".repeat(64), &"x".repeat(64)).check("app").is_err());
        assert!(db_body("a\nb", "a\nb").check("app").is_err());
    }

    #[test]
    fn backup_id_and_time_are_checked() {
        let mut body = db_body("t", "t");
        body.before = Some("yesterday".into());
        assert!(body.check("app").expect_err("bad time").0.contains("RFC 3339"));
        body.before = Some("2026-11-26T03:00:00+01:00".into());
        let action = body.check("app").expect("valid");
        assert!(action.requests()[0].args.ends_with(&["--before".to_owned(), "2026-11-26T02:00:00Z".to_owned()]));
        body.backup_id = Some("20261126T020000Z-1a2b3c4d".into());
        assert!(body.check("app").expect_err("both").0.contains("not both"));
        body.before = None;
        assert!(body.check("app").expect("id").requests()[0].args.contains(&"--backup-id".to_owned()));
        body.backup_id = Some("latest".into());
        assert!(body.check("app").is_err());
    }

    #[test]
    fn a_bucket_restore_is_a_dry_run_unless_confirmed() {
        let body = BucketRestoreBody {
            snapshot: None,
            before: None,
            target_bucket: "media-restored".into(),
            target_prefix: Some("/2026/".into()),
            dry_run: None,
            confirm_target: None,
        };
        let action = body.check("media", Some("backups")).expect("dry run");
        assert_eq!(action.name(), "restore-bucket-dry-run");
        let args = &action.requests()[0].args;
        assert!(args.ends_with(&["--target-prefix".into(), "2026".into(), "--dry-run".into()]), "{args:?}");
        let real = BucketRestoreBody { dry_run: Some(false), ..body.clone() };
        assert!(real.check("media", None).expect_err("unconfirmed").0.contains("confirm_target"));
        let confirmed = BucketRestoreBody { confirm_target: Some("media-restored".into()), ..real };
        assert!(!confirmed.check("media", None).expect("real").requests()[0].args.contains(&"--dry-run".to_owned()));
        let into_backups = BucketRestoreBody { target_bucket: "gs://backups".into(), ..body.clone() };
        assert!(into_backups.check("media", Some("backups")).is_err());
        let local = BucketRestoreBody { target_bucket: "file:///srv/restored".into(), ..body.clone() };
        assert!(local.check("media", None).is_ok());
        assert!(local.check("media", Some("backups")).is_err(), "file:// targets only with a file:// store");
        let sneaky = BucketRestoreBody { target_bucket: "file:///srv/../etc".into(), ..body.clone() };
        assert!(sneaky.check("media", None).is_err());
        let escape = BucketRestoreBody { target_prefix: Some("a/../b".into()), ..body };
        assert!(escape.check("media", None).is_err());
    }

    #[test]
    fn backups_and_prune_map_to_their_jobs() {
        let db = Action::BackupDatabase { database: "app".into() }.requests();
        assert_eq!(db[0].job, Job::DbBackup);
        assert_eq!(db[0].env, [("BACKUP_DATABASES".to_owned(), "app".to_owned())]);
        let full = Action::FullBackup.requests();
        assert_eq!(full.iter().map(|r| r.job).collect::<Vec<_>>(), [Job::DbBackup, Job::StorageBackup]);
        assert_eq!(Action::Prune { apply: false }.requests()[0].args, ["--dry-run"]);
        assert!(Action::Prune { apply: true }.requests()[0].args.is_empty());
        assert_eq!(Job::parse("storage-backup"), Some(Job::StorageBackup));
        assert_eq!(Job::parse("health"), None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<DbRestoreBody, _> =
            serde_json::from_str(r#"{"target":"a","confirm_target":"a","backupid":"20261126T020000Z-1a2b3c4d"}"#);
        assert!(r.is_err());
    }
}
