# Inputs of the lifeboat deployment. Copy terraform.tfvars.example to terraform.tfvars and
# fill in at least project_id, backup_bucket_name, image and the database connection.
# Where a variable feeds a program setting, the environment variable it becomes is named.

# ---------------------------------------------------------------------------------------
# Project and placement
# ---------------------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project that runs lifeboat and holds the backup bucket (GOOGLE_CLOUD_PROJECT)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 characters: lowercase letters, digits, hyphens), not a project number or name."
  }
}

variable "region" {
  description = "Region of the Cloud Run jobs and service, the Artifact Registry repository and (by default) the backup bucket and Cloud Scheduler jobs."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1."
  }
}

variable "scheduler_region" {
  description = "Region of the Cloud Scheduler jobs, when Cloud Scheduler is not offered in var.region. Null means var.region."
  type        = string
  default     = null
}

variable "name_prefix" {
  description = "Prefix of the names of service accounts, topics, secrets and scheduler jobs. The Cloud Run jobs and the service keep their program names (db-backup, ..., monitor)."
  type        = string
  default     = "lifeboat"

  validation {
    # Service account ids are at most 30 characters; the longest suffix is "-storage-backup" (15).
    condition     = can(regex("^[a-z][a-z0-9-]{0,13}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2-15 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Labels added to every resource that supports them (on top of app=lifeboat, managed-by=terraform)."
  type        = map(string)
  default     = {}
}

variable "enable_apis" {
  description = "Enable the Google APIs lifeboat needs (left enabled on destroy)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the Cloud Run jobs and service from `terraform destroy`. The backup bucket is always protected (lifecycle.prevent_destroy)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------
# Container image and build
# ---------------------------------------------------------------------------------------

variable "image" {
  description = "Container image of the first deployment, e.g. europe-west1-docker.pkg.dev/PROJECT/lifeboat/lifeboat:<git sha>. After creation Cloud Build (cloudbuild.yaml) rolls out new images; Terraform ignores later image changes."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-zA-Z0-9._/-]+(:[a-zA-Z0-9._-]+|@sha256:[a-f0-9]{64})$", var.image)) && !endswith(var.image, ":latest")
    error_message = "image must be a full image reference with an explicit tag (not latest) or a sha256 digest."
  }
}

variable "artifact_registry_repository_id" {
  description = "Artifact Registry Docker repository (in var.region) that Cloud Build pushes the image to."
  type        = string
  default     = "lifeboat"
}

variable "create_build_service_account" {
  description = "Create a dedicated service account for Cloud Build (push to the repository, update the jobs and the service, nothing else) and a staging bucket for build sources."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------
# Backup bucket
# ---------------------------------------------------------------------------------------

variable "backup_bucket_name" {
  description = "Name of the backup bucket that Terraform creates (BACKUP_BUCKET_NAME). Globally unique."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{1,55}[a-z0-9]$", var.backup_bucket_name)) && !startswith(var.backup_bucket_name, "goog")
    error_message = "backup_bucket_name must be a valid bucket name of 3-57 characters (lowercase letters, digits, hyphens, underscores; no dots): the build staging bucket is named BUCKET-build."
  }
}

variable "backup_prefix" {
  description = "Optional object prefix inside the backup bucket; the destination becomes gs://BUCKET/PREFIX (LIFEBOAT_DESTINATION). Empty: the bucket root."
  type        = string
  default     = ""

  validation {
    condition     = var.backup_prefix == "" || can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.backup_prefix))
    error_message = "backup_prefix must be empty or a path without leading or trailing slash, e.g. prod/lifeboat."
  }
}

variable "backup_source" {
  description = "Logical name of the backed-up system, the <source> segment of db/<source>/... (BACKUP_SOURCE)."
  type        = string
  default     = "main"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{0,62}$", var.backup_source))
    error_message = "backup_source must be 1-63 characters: lowercase letters, digits, '-' or '_'."
  }
}

variable "bucket_location" {
  description = "Location of the backup bucket. Null means var.region (upper-cased). With bucket_dual_region_locations set, this must be the multi-region that contains both (US, EU or ASIA)."
  type        = string
  default     = null
}

variable "bucket_dual_region_locations" {
  description = "Optional configurable dual-region: exactly two regions, e.g. [\"EUROPE-WEST1\", \"EUROPE-WEST4\"] with bucket_location = \"EU\". Empty: single region (or whatever bucket_location is)."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.bucket_dual_region_locations) == 0 || length(var.bucket_dual_region_locations) == 2
    error_message = "bucket_dual_region_locations must be empty or list exactly two regions."
  }
}

variable "coldline_after_days" {
  description = "Move backup objects (db/ and storage/) to COLDLINE when they are this many days old. 0 disables. COLDLINE bills at least 90 days from creation, so keep this well below how long you keep backups."
  type        = number
  default     = 30

  validation {
    condition     = var.coldline_after_days >= 0 && floor(var.coldline_after_days) == var.coldline_after_days
    error_message = "coldline_after_days must be a whole number >= 0."
  }
}

variable "soft_delete_retention_days" {
  description = "Soft delete: deleted objects stay restorable this many days (7-90)."
  type        = number
  default     = 14

  validation {
    condition     = var.soft_delete_retention_days >= 7 && var.soft_delete_retention_days <= 90
    error_message = "soft_delete_retention_days must be between 7 and 90."
  }
}

variable "retention_policy_days" {
  description = "Retention policy of the backup bucket (write-once): no object can be deleted or replaced before it is this many days old, not by prune, not by a project editor. Null (default): retention_days, so nothing younger than the retention period can be deleted by anyone. 0: no policy (a deliberate choice: a compromised prune could then delete recent backups). Keep it <= retention_days, or prune's deletions are refused (it reports them and goes on)."
  type        = number
  default     = null

  validation {
    condition     = var.retention_policy_days == null || (coalesce(var.retention_policy_days, 0) >= 0 && coalesce(var.retention_policy_days, 0) <= 3650)
    error_message = "retention_policy_days must be null (retention_days) or between 0 and 3650."
  }
}

variable "retention_policy_locked" {
  description = "Lock the backup bucket's retention policy. Off by default, deliberately: a locked policy is IRREVERSIBLE (it can never be shortened or removed, and the bucket cannot be deleted before every object has aged out), so locking is a decision to make once the retention period is final, not a default."
  type        = bool
  default     = false
}

variable "state_bucket_name" {
  description = "Name of the small state bucket (LIFEBOAT_STATE_DESTINATION): monitor incident state and message records, storage-backup's snapshot-id claims; what must be overwritten or deleted sooner than the backups' retention policy allows. Null: BACKUP_BUCKET-state."
  type        = string
  default     = null

  validation {
    condition     = var.state_bucket_name == null || (can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", coalesce(var.state_bucket_name, "x"))) && !startswith(coalesce(var.state_bucket_name, "x"), "goog"))
    error_message = "state_bucket_name must be a valid bucket name of 3-63 characters (lowercase letters, digits, hyphens, underscores; no dots)."
  }
}

variable "kms_key_name" {
  description = "Optional customer-managed key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for the backup bucket; the key's location must match the bucket location. Terraform grants the Cloud Storage service agent use of it. Null: Google-managed encryption."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a full crypto key id: projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

# ---------------------------------------------------------------------------------------
# Source database
# ---------------------------------------------------------------------------------------

variable "database_instance_connection_name" {
  description = "Cloud SQL instance connection name PROJECT:REGION:INSTANCE. The jobs then reach it through the Cloud Run Cloud SQL volume (PGHOST=/cloudsql/PROJECT:REGION:INSTANCE). Leave empty to use database_host instead."
  type        = string
  default     = ""

  validation {
    condition     = var.database_instance_connection_name == "" || can(regex("^[a-z0-9.:-]+:[a-z0-9-]+:[a-z0-9-]+$", var.database_instance_connection_name))
    error_message = "database_instance_connection_name must look like PROJECT:REGION:INSTANCE."
  }
}

variable "database_host" {
  description = "Host name or IP of a PostgreSQL server that is not reached through the Cloud SQL volume (PGHOST). A private address usually needs vpc_network/vpc_subnetwork."
  type        = string
  default     = ""
}

variable "database_port" {
  description = "PostgreSQL port (PGPORT)."
  type        = number
  default     = 5432

  validation {
    condition     = var.database_port > 0 && var.database_port < 65536
    error_message = "database_port must be a TCP port."
  }
}

variable "database_user" {
  description = "PostgreSQL role the backups and restores connect as (PGUSER). Its password lives in Secret Manager (see outputs.db_password_secret). Restoring to a new database needs CREATEDB."
  type        = string
  default     = "postgres"
}

variable "databases" {
  description = "Databases to back up (BACKUP_DATABASES). Empty: every non-template database."
  type        = list(string)
  default     = []
}

variable "backup_compression" {
  description = "Compression of database dumps (BACKUP_COMPRESSION): zstd or gzip."
  type        = string
  default     = "zstd"

  validation {
    condition     = contains(["zstd", "gzip"], var.backup_compression)
    error_message = "backup_compression must be zstd or gzip."
  }
}

variable "backup_encryption_recipients" {
  description = "age public keys (age1..., X25519) that database dumps are encrypted to (BACKUP_ENCRYPTION_RECIPIENTS of db-backup, and of health and monitor, which then report an unencrypted newest backup). Each one can decrypt: list the current key and, during a rotation, the new one; an offline break-glass key is a good second entry. Empty: dumps are not encrypted. Add a version to the identity secret (outputs.backup_encryption_identity_secret) BEFORE setting this: see docs/runbook.md, \"Encrypted backups\"."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for k in var.backup_encryption_recipients : can(regex("^age1[02-9ac-hj-np-z]{58}$", k))]) && length(var.backup_encryption_recipients) <= 16
    error_message = "backup_encryption_recipients must hold at most 16 age X25519 public keys (age1 followed by 58 lower-case Bech32 characters), never a secret key (AGE-SECRET-KEY-...)."
  }
}

variable "backup_encryption_restore_identity" {
  description = "Give the restore job the identity secret (BACKUP_ENCRYPTION_IDENTITY). Null: exactly when backup_encryption_recipients is not empty. Set true after turning encryption off while encrypted backups are still kept, so they stay restorable."
  type        = bool
  default     = null
}

variable "vpc_network" {
  description = "Optional VPC network for Direct VPC egress of the database jobs (needed for a private database_host). Null: no VPC egress."
  type        = string
  default     = null
}

variable "vpc_subnetwork" {
  description = "Optional subnetwork for Direct VPC egress (see vpc_network)."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------------------
# Source buckets
# ---------------------------------------------------------------------------------------

variable "source_buckets" {
  description = "Buckets that storage-backup snapshots (SOURCE_BUCKETS), each \"bucket\" or \"bucket/prefix\". storage-backup gets read access to each. Empty: storage-backup is defined but not scheduled."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for b in var.source_buckets : can(regex("^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$", b))])
    error_message = "Each source_buckets entry must be a bucket name, optionally followed by /prefix."
  }
}

variable "restore_target_buckets" {
  description = "Buckets that the restore job may write into (roles/storage.objectUser: create, and delete for --delete-extra). Empty: grant access by hand before a bucket restore (see docs/runbook.md)."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------------------------------
# Schedules and policy
# ---------------------------------------------------------------------------------------

variable "timezone" {
  description = "Time zone of the schedules and of daily/weekly/monthly retention buckets (BACKUP_TIMEZONE), a tz database name."
  type        = string
  default     = "UTC"
}

variable "db_backup_schedule" {
  description = "Cron schedule of db-backup (BACKUP_SCHEDULE), in var.timezone."
  type        = string
  default     = "0 2 * * *"
}

variable "storage_backup_schedule" {
  description = "Cron schedule of storage-backup, after db-backup."
  type        = string
  default     = "30 3 * * *"
}

variable "prune_schedule" {
  description = "Cron schedule of prune, after the backups."
  type        = string
  default     = "0 5 * * *"
}

variable "health_schedule" {
  description = "Cron schedule of the health job (a daily freshness report published as a result event)."
  type        = string
  default     = "0 7 * * *"
}

variable "monitor_check_schedule" {
  description = "Cron schedule of monitor's POST /check (staleness check and reminders)."
  type        = string
  default     = "0 * * * *"
}

variable "retention_days" {
  description = "Maximum age of backups in days (BACKUP_RETENTION_DAYS)."
  type        = number
  default     = 30

  validation {
    condition     = var.retention_days >= 1
    error_message = "retention_days must be at least 1."
  }
}

variable "keep_last" {
  description = "Prune: always keep the newest N backups (BACKUP_KEEP_LAST). Null: the program's default."
  type        = number
  default     = null
}

variable "keep_daily" {
  description = "Prune: keep one backup per day for N days (BACKUP_KEEP_DAILY). Null: the program's default."
  type        = number
  default     = null
}

variable "keep_weekly" {
  description = "Prune: keep one backup per week for N weeks (BACKUP_KEEP_WEEKLY). Null: the program's default."
  type        = number
  default     = null
}

variable "keep_monthly" {
  description = "Prune: keep one backup per month for N months (BACKUP_KEEP_MONTHLY). Null: the program's default."
  type        = number
  default     = null
}

variable "max_backup_age" {
  description = "A source is stale when its newest good backup is older than this (BACKUP_MAX_AGE), e.g. 25h."
  type        = string
  default     = "25h"

  validation {
    condition     = can(regex("^[0-9]+(s|m|h|d)$", var.max_backup_age))
    error_message = "max_backup_age must be a number followed by s, m, h or d, e.g. 25h."
  }
}

variable "max_unverified_age" {
  description = "A source is unverified when its newest backup a drill restored is older than this (BACKUP_MAX_UNVERIFIED_AGE, at most 32d), e.g. 8d."
  type        = string
  default     = "8d"

  validation {
    condition     = can(regex("^[0-9]+(s|m|h|d)$", var.max_unverified_age))
    error_message = "max_unverified_age must be a number followed by s, m, h or d, e.g. 8d."
  }
}

variable "alert_reminder_interval" {
  description = "How often monitor repeats an alert while an incident stays open (ALERT_REMINDER_INTERVAL)."
  type        = string
  default     = "24h"

  validation {
    condition     = can(regex("^[0-9]+(s|m|h|d)$", var.alert_reminder_interval))
    error_message = "alert_reminder_interval must be a number followed by s, m, h or d, e.g. 24h."
  }
}

variable "alert_emails" {
  description = "E-mail addresses for Cloud Monitoring alerts (failed job executions, dead-lettered results, failed scheduler runs) and BACKUP_ALERT_EMAILS. This path does not depend on monitor or Slack."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alert_emails : can(regex("^[^@,\\s]+@[^@,\\s]+\\.[^@,\\s]+$", e))])
    error_message = "alert_emails must be e-mail addresses."
  }
}

variable "rust_log" {
  description = "Log filter of the programs (RUST_LOG)."
  type        = string
  default     = "info"
}

# ---------------------------------------------------------------------------------------
# Runtime sizing
# ---------------------------------------------------------------------------------------

variable "db_backup_resources" {
  description = "CPU and memory of db-backup and restore (zstd and SHA-256 run beside pg_dump; 2 CPUs keep compression off the critical path)."
  type        = object({ cpu = string, memory = string })
  default     = { cpu = "2", memory = "2Gi" }
}

variable "db_backup_timeout" {
  description = "Maximum run time of one db-backup attempt."
  type        = string
  default     = "21600s"
}

variable "storage_backup_timeout" {
  description = "Maximum run time of one storage-backup attempt."
  type        = string
  default     = "21600s"
}

variable "restore_timeout" {
  description = "Maximum run time of one restore."
  type        = string
  default     = "86400s"
}

variable "job_max_retries" {
  description = "Retries of a failed scheduled job task before the execution counts as failed (and alerts)."
  type        = number
  default     = 1

  validation {
    condition     = var.job_max_retries >= 0 && var.job_max_retries <= 10
    error_message = "job_max_retries must be between 0 and 10."
  }
}

variable "monitor_ingress" {
  description = "Ingress of the monitor service. INGRESS_TRAFFIC_INTERNAL_ONLY still admits Pub/Sub push and Cloud Scheduler of this project; use INGRESS_TRAFFIC_ALL only if you need to reach it from outside (it still requires IAM)."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.monitor_ingress)
    error_message = "monitor_ingress must be INGRESS_TRAFFIC_INTERNAL_ONLY, INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER or INGRESS_TRAFFIC_ALL."
  }
}

variable "console_admins" {
  description = "E-mails of the console's admins (LIFEBOAT_ADMINS): they may back up, prune and restore from it. People or service accounts; each also gets roles/run.invoker on the console service."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.console_admins : can(regex("^[^@\\s,]+@[^@\\s,]+$", e))])
    error_message = "console_admins must be e-mail addresses."
  }
}

variable "console_viewers" {
  description = "E-mails of the console's viewers (LIFEBOAT_VIEWERS): pages and the read-only API. Each gets roles/run.invoker on the console service."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.console_viewers : can(regex("^[^@\\s,]+@[^@\\s,]+$", e))])
    error_message = "console_viewers must be e-mail addresses."
  }
}

# ---------------------------------------------------------------------------------------
# Error reporting
# ---------------------------------------------------------------------------------------

variable "sentry_enabled" {
  description = "Report failed runs and errors to Sentry too (besides the result events and Slack). Creates the secret PREFIX-sentry-dsn (its value, the DSN, is added with `gcloud secrets versions add`, never through Terraform) and gives every program SENTRY_DSN from it. Add the secret's first version before the services roll out (docs/runbook.md, \"Sentry\")."
  type        = bool
  default     = false
}
