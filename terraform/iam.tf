# One service account per program, plus one for Cloud Scheduler and one for Pub/Sub push.
# Every grant is on a single resource (a bucket, a source bucket, a topic, a secret, a job, a
# service); nothing gets a project-wide storage role. Where a program may only use one part of a
# bucket, the grant carries an IAM condition on the object name (possible because the buckets use
# uniform bucket-level access). Read access follows what each program's code reads:
#
# Backup bucket (retention policy: nothing younger than the retention period can be deleted):
#   program         list          read (get)                               create     delete
#   db-backup       db/           db/ manifest.json (previous size)        db/        -
#   storage-backup  storage/      storage/ *.json, *.jsonl.zst (previous   storage/   -
#                                 snapshot's header, summaries, parts)
#   restore         db/ storage/  db/ and storage/: dumps, blobs, all       -          -
#   drill           db/ storage/  (same as restore: it restores the dumps   records    -
#                                 and reads back blobs)                    only:
#                                                                          db/ storage/
#                                                                          …/drills/*.json
#   prune           db/ storage/  db/ storage/ *.json, *.jsonl.zst          -          db/ storage/
#                                 (manifests, headers, parts: never a dump or a blob)
#   health          db/ storage/  db/ storage/ *.json (drill records whose   -          -
#                                 outcome is not in their metadata; freshness
#                                 itself comes from the listing)
#   monitor         db/ storage/  (same as health)                          -          -
#   console         db/ storage/  db/ storage/ *.json (manifests, snapshot   -          -
#                                 headers, drill records: never a dump)
#
# State bucket (no retention policy; bucket.tf):
#   monitor         state/monitor/: read, create, replace, delete (objectUser)
#   storage-backup  state/storage-backup/: read and create-only (snapshot-id claims)
#
# Listing cannot be limited by resource.name: storage.objects.list is checked on the bucket
# (resource.name = projects/_/buckets/BUCKET), never on an object. The documented way to limit it
# is the request's prefix, the API attribute storage.googleapis.com/objectListPrefix (IAM
# Conditions attribute reference, "API attributes"): a list request is allowed when its prefix
# starts with the granted one; every lifeboat program lists with such a prefix (db/<source>/,
# storage/...). A get request carries no list prefix, so a list clause never grants a read.
# *.json under db/ and storage/ are manifests, snapshot headers and summaries and drill records;
# dumps (dump.pgc.*), snapshot parts (*.jsonl.zst) and blobs (<md5>-<size>) never end so.
# A drill record is the one *.json in a drills/ folder (local.drill_record: resource.name.extract
# gives what follows the first "/drills/", empty when there is none).
# Conditions may use at most 12 logical operators; the longest here uses 6.

resource "google_service_account" "db_backup" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-db-backup"
  display_name = "lifeboat db-backup"
  description  = "Runs the db-backup job: pg_dump into db/ of the backup bucket. Cannot delete objects."
}

resource "google_service_account" "storage_backup" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-storage-backup"
  display_name = "lifeboat storage-backup"
  description  = "Runs the storage-backup job: reads the source buckets, writes storage/ of the backup bucket."
}

resource "google_service_account" "restore" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-restore"
  display_name = "lifeboat restore"
  description  = "Runs the restore job (manual only): reads the backup bucket, writes the restore targets."
}

resource "google_service_account" "prune" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-prune"
  display_name = "lifeboat prune"
  description  = "Runs the prune job: the only identity that deletes backups."
}

resource "google_service_account" "health" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-health"
  display_name = "lifeboat health"
  description  = "Runs the health job: reads the backup bucket only."
}

resource "google_service_account" "monitor" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-monitor"
  display_name = "lifeboat monitor"
  description  = "Runs the monitor service: reads the backup bucket, keeps incident state under state/, sends Slack alerts."
}

resource "google_service_account" "console" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-console"
  display_name = "lifeboat console"
  description  = "Runs the console service: reads the backup bucket, starts the backup, prune and restore jobs (with overrides) for its admins."
}

resource "google_service_account" "drill" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-drill"
  display_name = "lifeboat drill"
  description  = "Runs the drill job: reads the backup bucket, creates drill records (…/drills/) only, restores into lifeboat_drill_* scratch databases."
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "lifeboat scheduler"
  description  = "Identity of the Cloud Scheduler jobs: may start the scheduled jobs and call monitor /check."
}

resource "google_service_account" "pubsub_push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-pubsub-push"
  display_name = "lifeboat Pub/Sub push"
  description  = "Identity in the OIDC token of the push subscription to monitor /pubsub."
}

# ---------------------------------------------------------------------------------------
# Backup bucket
# ---------------------------------------------------------------------------------------

# Read access, one resource per shape of access (a program added later joins the map of the
# access it needs, as drill, which restores dumps, joined backups_full_reader).
#
# Manifests, snapshot headers and drill records (*.json) only: never a dump, a part or a blob.
# health and monitor judge freshness from the listing; they read a drill record only when its
# outcome is not in the object's metadata (a record written by hand or by an older drill;
# inventory.rs, resolve_drills), and the console shows manifests and drill records.
resource "google_storage_bucket_iam_member" "backups_metadata_reader" {
  for_each = {
    health  = google_service_account.health.member
    monitor = google_service_account.monitor.member
    console = google_service_account.console.member
  }

  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectViewer"
  member = each.value

  condition {
    title       = "backup-metadata-only"
    description = "List db/ and storage/; read *.json under them (manifests, headers, drill records), never a dump"
    expression  = "${local.list_db} || ${local.list_storage} || ((${local.object_db} || ${local.object_storage}) && ${local.is_json})"
  }
}

# prune also reads the snapshot parts (*.jsonl.zst: which blobs a kept snapshot references).
resource "google_storage_bucket_iam_member" "prune_reader" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.prune.member

  condition {
    title       = "backup-metadata-and-parts"
    description = "List db/ and storage/; read manifests, headers and snapshot parts, never a dump or a blob"
    expression  = "${local.list_db} || ${local.list_storage} || ((${local.object_db} || ${local.object_storage}) && (${local.is_json} || ${local.is_part}))"
  }
}

resource "google_storage_bucket_iam_member" "db_backup_reader" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.db_backup.member

  condition {
    title       = "db-manifests-only"
    description = "List db/; read the manifests under db/ (the previous backup's size, for progress)"
    expression  = "${local.list_db} || (${local.object_db} && resource.name.endsWith(\"/manifest.json\"))"
  }
}

resource "google_storage_bucket_iam_member" "storage_backup_reader" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.storage_backup.member

  condition {
    title       = "storage-metadata-only"
    description = "List storage/; read snapshot headers, summaries and parts (the previous snapshot), never a blob or a dump"
    expression  = "${local.list_storage} || (${local.object_storage} && (${local.is_json} || ${local.is_part}))"
  }
}

# Everything under db/ and storage/: the programs that restore (the dumps, the blobs): restore,
# and drill (drill.tf), which restores the newest dumps into scratch databases and reads back
# sampled objects of the newest snapshots.
resource "google_storage_bucket_iam_member" "backups_full_reader" {
  for_each = {
    restore = google_service_account.restore.member
    drill   = google_service_account.drill.member
  }

  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectViewer"
  member = each.value

  condition {
    title       = "backups-read"
    description = "List and read everything under db/ and storage/ (dumps and blobs included)"
    expression  = "${local.list_db} || ${local.list_storage} || ${local.object_db} || ${local.object_storage}"
  }
}

# objectCreator cannot delete and therefore cannot overwrite either.
resource "google_storage_bucket_iam_member" "db_backup_creator" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.db_backup.member

  condition {
    title       = "db-prefix-only"
    description = "db-backup creates objects under db/ only"
    expression  = local.object_db
  }
}

resource "google_storage_bucket_iam_member" "storage_backup_creator" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.storage_backup.member

  condition {
    title       = "storage-prefix-only"
    description = "storage-backup creates objects under storage/ only"
    expression  = local.object_storage
  }
}

# drill creates its records only: a *.json in the drills/ folder of a backup or snapshot under
# db/ or storage/ (…/drills/<ts>.json), never a manifest, a dump, a part or a blob. Create-only:
# objectCreator cannot delete, hence cannot overwrite a record either.
resource "google_storage_bucket_iam_member" "drill_records_creator" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.drill.member

  condition {
    title       = "drill-records-only"
    description = "drill creates *.json records in the drills/ folder of a backup or snapshot under db/ or storage/ only"
    expression  = "(${local.object_db} || ${local.object_storage}) && ${local.drill_record}"
  }
}

resource "google_project_iam_custom_role" "object_deleter" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_object_deleter"
  title       = "lifeboat object deleter"
  description = "Delete objects, nothing else (granted to prune on the backup bucket, limited to db/ and storage/; the retention policy still refuses anything younger than the period)."
  permissions = ["storage.objects.delete"]
}

resource "google_storage_bucket_iam_member" "prune_deleter" {
  bucket = google_storage_bucket.backups.name
  role   = google_project_iam_custom_role.object_deleter.id
  member = google_service_account.prune.member

  condition {
    title       = "backup-prefixes-only"
    description = "prune deletes under db/ and storage/ (the retention policy refuses anything younger than the period)"
    expression  = "${local.object_db} || ${local.object_storage}"
  }
}

# ---------------------------------------------------------------------------------------
# State bucket (bucket.tf): each program its own folder
# ---------------------------------------------------------------------------------------

resource "google_storage_bucket_iam_member" "monitor_state" {
  bucket = google_storage_bucket.state.name
  role   = "roles/storage.objectUser"
  member = google_service_account.monitor.member

  condition {
    title       = "monitor-state-only"
    description = "monitor reads, replaces and deletes its incident state and message records under state/monitor/ only"
    expression  = "resource.name.startsWith(\"${local.state_objects_resource_prefix}state/monitor/\") || api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${local.object_root}state/monitor/\")"
  }
}

# Claims are create-only (objectCreator cannot replace or delete) and read back by the other
# tasks of the same execution; the bucket's lifecycle rule deletes them after 7 days.
resource "google_storage_bucket_iam_member" "storage_backup_state" {
  for_each = toset(["roles/storage.objectCreator", "roles/storage.objectViewer"])

  bucket = google_storage_bucket.state.name
  role   = each.value
  member = google_service_account.storage_backup.member

  condition {
    title       = "storage-backup-claims-only"
    description = "storage-backup creates and reads its snapshot-id claims under state/storage-backup/ only"
    expression  = "resource.name.startsWith(\"${local.state_objects_resource_prefix}state/storage-backup/\") || api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${local.object_root}state/storage-backup/\")"
  }
}

# ---------------------------------------------------------------------------------------
# Source and restore-target buckets (not managed here, only the grants)
# ---------------------------------------------------------------------------------------

resource "google_storage_bucket_iam_member" "source_reader" {
  for_each = toset(local.source_bucket_names)

  bucket = each.value
  role   = "roles/storage.objectViewer"
  member = google_service_account.storage_backup.member
}

resource "google_storage_bucket_iam_member" "restore_target_writer" {
  for_each = toset(var.restore_target_buckets)

  bucket = each.value
  role   = "roles/storage.objectUser"
  member = google_service_account.restore.member
}

# ---------------------------------------------------------------------------------------
# Cloud SQL: connect to the one instance only (IAM condition on the instance name)
# ---------------------------------------------------------------------------------------

resource "google_project_iam_member" "cloudsql_client" {
  for_each = local.use_cloudsql ? {
    db-backup = google_service_account.db_backup.member
    restore   = google_service_account.restore.member
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

# ---------------------------------------------------------------------------------------
# Who may start what
# ---------------------------------------------------------------------------------------

# roles/run.invoker on a job grants run.jobs.run: what the Run Admin API's jobs/NAME:run needs
# (the role Google documents for scheduled jobs). It does not allow overriding args or env
# (run.jobs.runWithOverrides), nor reading or changing the job. Only jobs with a schedule
# (scheduler.tf); restore is deliberately absent: it is never scheduled, and only operators
# with their own rights run it.
resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_job" {
  for_each = { for name, job in local.scheduled_jobs : name => google_cloud_run_v2_job.job[name].name }

  project  = var.project_id
  location = var.region
  name     = each.value
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

resource "google_cloud_run_v2_service_iam_member" "monitor_invoker_scheduler" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.monitor.name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

resource "google_cloud_run_v2_service_iam_member" "monitor_invoker_pubsub" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.monitor.name
  role     = "roles/run.invoker"
  member   = google_service_account.pubsub_push.member
}

# The Pub/Sub service agent mints the OIDC tokens of the push subscription as pubsub_push.
resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = google_service_account.pubsub_push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------------------------------
# console: starts the jobs an admin asks for, with argument and environment overrides
# ---------------------------------------------------------------------------------------

# roles/run.jobsExecutorWithOverrides on exactly the jobs the console starts: run.jobs.run and
# run.jobs.runWithOverrides (what `jobs.run` with containerOverrides needs) and reading their
# executions; nothing on health, on the service, or on the project.
resource "google_cloud_run_v2_job_iam_member" "console_runs_job" {
  for_each = toset(local.console_jobs)

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.job[each.value].name
  role     = "roles/run.jobsExecutorWithOverrides"
  member   = google_service_account.console.member
}

# Admins and viewers may invoke the (IAM-authenticated) console; who may act is then decided
# by the console itself (LIFEBOAT_ADMINS / LIFEBOAT_VIEWERS). They reach it with
# `gcloud run services proxy console --region REGION` (outputs.console_proxy_command).
resource "google_cloud_run_v2_service_iam_member" "console_invoker" {
  for_each = local.console_members

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.console.name
  role     = "roles/run.invoker"
  member   = each.value
}
