# Restore drills (issue 10): the `drill` job restores the newest backup of each database into a
# scratch database lifeboat_drill_* on a drill server, checks the newest snapshot of each source
# bucket, and writes a record next to each (…/drills/<ts>.json). Its entry in local.jobs (run.tf)
# holds the job. Its identity and the grants it shares with the others are where theirs are:
# the service account and its bucket grants in iam.tf (it reads like restore: backups_full_reader;
# it creates records only: drill_records_creator; it deletes nothing), the encryption identity and
# the Sentry DSN in secrets.tf, publishing in pubsub.tf. This file holds what only drill has: its
# variables, its own secret (the drill server's password) and the grants that depend on where it
# restores (the production password and Cloud SQL only without a separate drill server).
# The deployer may not act as drill (it reads every dump and holds the identity): an operator
# rolls it out after a build, like prune and restore (artifact.tf, cloudbuild.yaml _OPERATOR_JOBS).
#
# The drill server: by default the backed-up server itself (PG*, the db-backup user, which may
# CREATE DATABASE), so a drill costs the production server one restore's I/O per night. Set
# drill_database_host to restore on a separate (small) instance instead, e.g. a Cloud SQL instance
# on a private IP reached through the VPC (vpc_network / vpc_subnetwork); its password then comes
# from its own secret, and the drill never receives the production database password.
# PostgreSQL cannot limit CREATEDB to a name prefix: the program refuses to create or drop any
# database whose name does not start with lifeboat_drill_, and a separate instance holding
# nothing else is the way to make that a hard boundary.

variable "drill_schedule" {
  description = "Cron schedule of the drill job (restore drills). After the backups (db_backup_schedule, storage_backup_schedule) and before the health report, so the report shows last night's verified backups."
  type        = string
  default     = "0 6 * * *"
}

variable "drill_timeout" {
  description = "Maximum run time of one drill (every database restored once, every snapshot checked)."
  type        = string
  default     = "14400s"
}

variable "drill_database_host" {
  description = "Host of a separate drill server (a private IP or host name; a Cloud SQL instance on a private IP through the VPC). Empty: drills restore on the backed-up server itself (PGHOST), with its user and password."
  type        = string
  default     = ""
}

variable "drill_database_port" {
  description = "Port of the separate drill server (drill_database_host)."
  type        = number
  default     = 5432
}

variable "drill_database_user" {
  description = "User on the drill server; needs CREATEDB. Empty: database_user."
  type        = string
  default     = ""
}

variable "drill_sample_objects" {
  description = "Objects of each bucket snapshot a drill reads back in full and compares byte for byte: a number (20) or a percentage (1%). The others are checked by their blob's metadata only."
  type        = string
  default     = "20"

  validation {
    condition     = can(regex("^([0-9]+|[0-9]+(\\.[0-9]+)?%)$", var.drill_sample_objects))
    error_message = "drill_sample_objects must be a number of objects (20) or a percentage (1%)."
  }
}

locals {
  # A separate drill server: its own password (DRILL_PGPASSWORD), never the production one.
  drill_own_server = var.drill_database_host != ""

  drill_env = merge(local.common_env, local.db_env, {
    SOURCE_BUCKETS       = join(",", var.source_buckets)
    DRILL_PGHOST         = var.drill_database_host
    DRILL_PGPORT         = local.drill_own_server ? tostring(var.drill_database_port) : ""
    DRILL_PGUSER         = var.drill_database_user
    DRILL_SAMPLE_OBJECTS = var.drill_sample_objects
  })

  # Which secrets reach the drill: the password of the server it restores on, and the identity
  # while encryption is on (local.restore_identity, as for restore). The job's entry picks one of
  # these four maps.
  drill_own_secret_env = {
    DRILL_PGPASSWORD = google_secret_manager_secret.drill_db_password.secret_id
  }
  drill_own_identity_secret_env = {
    DRILL_PGPASSWORD           = google_secret_manager_secret.drill_db_password.secret_id
    BACKUP_ENCRYPTION_IDENTITY = google_secret_manager_secret.backup_encryption_identity.secret_id
  }
}

# The backed-up Cloud SQL instance, when drills restore there (no separate drill server).
resource "google_project_iam_member" "drill_cloudsql_client" {
  for_each = local.use_cloudsql && !local.drill_own_server ? {
    drill = google_service_account.drill.member
  } : {}

  project = local.cloudsql_project
  role    = "roles/cloudsql.client"
  member  = each.value

  condition {
    title       = "lifeboat-source-instance"
    description = "Only the backed-up Cloud SQL instance"
    expression  = "resource.type == \"sqladmin.googleapis.com/Instance\" && resource.name == \"projects/${local.cloudsql_project}/instances/${local.cloudsql_instance}\""
  }
}

# The production database password, only when drills restore on the production server.
resource "google_secret_manager_secret_iam_member" "drill_db_password_accessor" {
  for_each = local.drill_own_server ? {} : {
    drill = google_service_account.drill.member
  }

  project   = var.project_id
  secret_id = google_secret_manager_secret.db_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

# The password of a separate drill server (drill_database_host). Always created (no cost, no
# value); wired into the job only with a separate server: add its value with
# `gcloud secrets versions add` before the first drill (docs/runbook.md, "Restore drills").
resource "google_secret_manager_secret" "drill_db_password" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-drill-db-password"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "drill_db_password_reader" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.drill_db_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.drill.member
}

output "drill_command" {
  description = "Run the restore drills now (waits for the result); the records are in drills/ of each drilled backup."
  value       = local.execute_job["drill"]
}
