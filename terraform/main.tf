# Shared values, data sources and the Google APIs lifeboat uses.
# Resources are split by concern: bucket.tf, pubsub.tf, run.tf, scheduler.tf, iam.tf,
# secrets.tf, monitoring.tf, artifact.tf, outputs.tf.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  project_number   = data.google_project.this.number
  scheduler_region = coalesce(var.scheduler_region, var.region)

  # Object layout inside the backup bucket (DESIGN.md): PREFIX/db/..., PREFIX/storage/..., PREFIX/state/...
  object_root = var.backup_prefix == "" ? "" : "${var.backup_prefix}/"
  destination = var.backup_prefix == "" ? "gs://${var.backup_bucket_name}" : "gs://${var.backup_bucket_name}/${var.backup_prefix}"

  # The state bucket (bucket.tf): what must be overwritten or deleted sooner than the retention
  # period (monitor incident state and message records, storage-backup's snapshot-id claims),
  # under the same prefix as the backups, keys under state/ (LIFEBOAT_STATE_DESTINATION).
  state_bucket_name = coalesce(var.state_bucket_name, "${var.backup_bucket_name}-state")
  state_destination = var.backup_prefix == "" ? "gs://${local.state_bucket_name}" : "gs://${local.state_bucket_name}/${var.backup_prefix}"

  # IAM condition prefixes (resource.name of an object: projects/_/buckets/BUCKET/objects/NAME).
  objects_resource_prefix       = "projects/_/buckets/${var.backup_bucket_name}/objects/${local.object_root}"
  state_objects_resource_prefix = "projects/_/buckets/${local.state_bucket_name}/objects/${local.object_root}"

  # Pieces of the read conditions (iam.tf, where the why is): an object under db/ or storage/,
  # a list request whose prefix starts there, and the names of the small metadata objects.
  object_db      = "resource.name.startsWith(\"${local.objects_resource_prefix}db/\")"
  object_storage = "resource.name.startsWith(\"${local.objects_resource_prefix}storage/\")"
  list_db        = "api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${local.object_root}db/\")"
  list_storage   = "api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${local.object_root}storage/\")"
  is_json        = "resource.name.endsWith(\".json\")"
  is_part        = "resource.name.endsWith(\".jsonl.zst\")"
  # A drill record: a *.json after the first /drills/ of the name (extract gives "" without one).
  drill_record = "resource.name.extract(\"/drills/{record}\").endsWith(\".json\")"

  # Retention policy of the backup bucket: the retention period unless set otherwise (0: none).
  retention_policy_days = coalesce(var.retention_policy_days, var.retention_days)

  # Database connection: Cloud SQL volume (unix socket directory) or a plain host.
  use_cloudsql = var.database_instance_connection_name != ""
  pg_host      = local.use_cloudsql ? "/cloudsql/${var.database_instance_connection_name}" : var.database_host
  # PROJECT:REGION:INSTANCE; the project part may contain a domain (example.com:project).
  cloudsql_parts    = local.use_cloudsql ? split(":", var.database_instance_connection_name) : []
  cloudsql_instance = local.use_cloudsql ? element(local.cloudsql_parts, length(local.cloudsql_parts) - 1) : ""
  cloudsql_project  = local.use_cloudsql ? join(":", slice(local.cloudsql_parts, 0, length(local.cloudsql_parts) - 2)) : ""

  use_vpc = var.vpc_network != null || var.vpc_subnetwork != null

  source_bucket_names = distinct([for b in var.source_buckets : split("/", b)[0]])

  # Pub/Sub service agent: creates OIDC tokens for push and forwards to the dead-letter topic.
  pubsub_service_agent = "serviceAccount:service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # ---- Environment shared by the programs; each job's own is in its local.jobs entry (run.tf).
  #      Secrets are NOT here: they are secret_key_ref env entries (run.tf). ----
  common_env = {
    LIFEBOAT_DESTINATION       = local.destination
    LIFEBOAT_STATE_DESTINATION = local.state_destination
    BACKUP_BUCKET_NAME         = var.backup_bucket_name
    BACKUP_SOURCE              = var.backup_source
    LIFEBOAT_RESULTS_TOPIC     = google_pubsub_topic.results.name
    GOOGLE_CLOUD_PROJECT       = var.project_id
    BACKUP_TIMEZONE            = var.timezone
    BACKUP_RETENTION_DAYS      = tostring(var.retention_days)
    BACKUP_ALERT_EMAILS        = join(",", var.alert_emails)
    BACKUP_SCHEDULE            = var.db_backup_schedule
    RUST_LOG                   = var.rust_log
  }

  # The programs that connect to PostgreSQL (db-backup, restore).
  db_env = {
    PGHOST             = local.pg_host
    PGPORT             = tostring(var.database_port)
    PGUSER             = var.database_user
    BACKUP_DATABASES   = join(",", var.databases)
    BACKUP_COMPRESSION = var.backup_compression
  }

  # Encryption of database dumps: the public keys, for db-backup (encrypts to them) and for the
  # programs that judge freshness (health, monitor: a newest backup that is not encrypted while
  # this is set is the status "unencrypted", an alert). Empty: not encrypted, nothing expected.
  encryption_env = {
    BACKUP_ENCRYPTION_RECIPIENTS = join(",", var.backup_encryption_recipients)
  }

  # What this deployment backs up: the sources every reader of freshness must expect, so that a
  # database or bucket whose first backup never succeeds is reported missing (not just absent).
  # The same variables that db-backup and storage-backup are given.
  expected_sources_env = {
    BACKUP_DATABASES = join(",", var.databases)
    SOURCE_BUCKETS   = join(",", var.source_buckets)
  }

  # The programs that judge freshness and raise alerts (health, monitor, console): stale after
  # max_backup_age, unverified (no recent backup restored by a drill) after max_unverified_age.
  freshness_env = merge(local.encryption_env, local.expected_sources_env, {
    BACKUP_MAX_AGE            = var.max_backup_age
    BACKUP_MAX_UNVERIFIED_AGE = var.max_unverified_age
    ALERT_REMINDER_INTERVAL   = var.alert_reminder_interval
  })

  # Each caller of monitor on its own endpoint only: the push subscription's identity may call
  # POST /pubsub and nothing else, the scheduler's POST /check and POST /run (runtime/auth.rs).
  monitor_env = merge(local.common_env, local.freshness_env, {
    LIFEBOAT_ALLOWED_INVOKERS = google_service_account.scheduler.email
    LIFEBOAT_PUSH_INVOKERS    = google_service_account.pubsub_push.email
  })

  # The console: what it reads (like health), the jobs it starts, who may use it. Members are
  # IAM principals: service accounts by their address, everyone else as a user.
  console_jobs = ["db-backup", "storage-backup", "prune", "restore"]
  console_members = {
    for email in distinct(concat(var.console_admins, var.console_viewers)) :
    email => endswith(email, ".gserviceaccount.com") ? "serviceAccount:${email}" : "user:${email}"
  }
  console_env = merge(local.common_env, local.freshness_env, {
    LIFEBOAT_ADMINS  = join(",", var.console_admins)
    LIFEBOAT_VIEWERS = join(",", var.console_viewers)
    LIFEBOAT_REGION  = var.region
  })

  apis = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ]
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
