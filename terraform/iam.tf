# One service account per program, plus one for Cloud Scheduler and one for Pub/Sub push.
# Every grant is on a single resource (the backup bucket, a source bucket, a topic, a secret,
# a job, the service); nothing gets a project-wide storage role. Where a program may only
# write one part of the bucket, the grant carries an IAM condition on the object name prefix
# (possible because the bucket uses uniform bucket-level access).
#
# Who may do what in the backup bucket:
#   program         read  create              delete                    why
#   db-backup       yes   db/ only            no                        never deletes; a failed run's partial
#                                                                       objects have no manifest and are
#                                                                       collected by prune as orphans
#   storage-backup  yes   storage/ only       no                        (+ read on each source bucket)
#   restore         yes   no                  no                        (+ write on restore_target_buckets)
#   prune           yes   no                  db/ and storage/ only     custom role with storage.objects.delete
#   health          yes   no                  no
#   monitor         yes   state/ only         state/ only               objectUser limited to state/ (incident state,
#                                                                       updated with generation preconditions)
#   console         yes   no                  no                        (+ starts the backup, prune and restore
#                                                                       jobs, with overrides, on admins' behalf)
#   drill           yes   drills/ records     no                        (drill.tf; + restores into lifeboat_drill_*
#                         only                                          scratch databases on the drill server)

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

resource "google_storage_bucket_iam_member" "backups_reader" {
  for_each = {
    db-backup      = google_service_account.db_backup.member
    storage-backup = google_service_account.storage_backup.member
    restore        = google_service_account.restore.member
    prune          = google_service_account.prune.member
    health         = google_service_account.health.member
    monitor        = google_service_account.monitor.member
    console        = google_service_account.console.member
  }

  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectViewer"
  member = each.value
}

# objectCreator cannot delete and therefore cannot overwrite either.
resource "google_storage_bucket_iam_member" "db_backup_creator" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.db_backup.member

  condition {
    title       = "db-prefix-only"
    description = "db-backup creates objects under db/ only"
    expression  = "resource.name.startsWith(\"${local.objects_resource_prefix}db/\")"
  }
}

resource "google_storage_bucket_iam_member" "storage_backup_creator" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.storage_backup.member

  condition {
    title       = "storage-prefix-only"
    description = "storage-backup creates objects under storage/ only"
    expression  = "resource.name.startsWith(\"${local.objects_resource_prefix}storage/\")"
  }
}

resource "google_project_iam_custom_role" "object_deleter" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_object_deleter"
  title       = "lifeboat object deleter"
  description = "Delete objects, nothing else (granted to prune on the backup bucket, limited to db/ and storage/)."
  permissions = ["storage.objects.delete"]
}

resource "google_storage_bucket_iam_member" "prune_deleter" {
  bucket = google_storage_bucket.backups.name
  role   = google_project_iam_custom_role.object_deleter.id
  member = google_service_account.prune.member

  condition {
    title       = "backup-prefixes-only"
    description = "prune deletes under db/ and storage/, never monitor state"
    expression  = "resource.name.startsWith(\"${local.objects_resource_prefix}db/\") || resource.name.startsWith(\"${local.objects_resource_prefix}storage/\")"
  }
}

resource "google_storage_bucket_iam_member" "monitor_state" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectUser"
  member = google_service_account.monitor.member

  condition {
    title       = "state-prefix-only"
    description = "monitor reads and writes its incident state under state/ only"
    expression  = "resource.name.startsWith(\"${local.objects_resource_prefix}state/\")"
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
