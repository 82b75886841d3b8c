output "backup_bucket" {
  description = "The backup bucket."
  value       = google_storage_bucket.backups.name
}

output "state_bucket" {
  description = "The state bucket (monitor incident state, storage-backup claims): LIFEBOAT_STATE_DESTINATION."
  value       = google_storage_bucket.state.name
}

output "backup_destination" {
  description = "LIFEBOAT_DESTINATION of every program."
  value       = local.destination
}

output "results_topic" {
  description = "Pub/Sub topic of result events."
  value       = google_pubsub_topic.results.id
}

output "dead_letter_subscription" {
  description = "Pull subscription holding result events monitor could not take."
  value       = google_pubsub_subscription.dead_letter.id
}

output "job_names" {
  description = "Cloud Run jobs (restore is never scheduled)."
  # Keys with underscores (db_backup), like every other output map: scripts read them.
  value = { for name, job in google_cloud_run_v2_job.job : replace(name, "-", "_") => job.name }
}

output "monitor_url" {
  description = "URL of the monitor service (IAM-authenticated)."
  value       = google_cloud_run_v2_service.monitor.uri
}

output "service_accounts" {
  description = "Service account of each program and of the scheduler / push identities."
  value = {
    db_backup      = google_service_account.db_backup.email
    storage_backup = google_service_account.storage_backup.email
    restore        = google_service_account.restore.email
    prune          = google_service_account.prune.email
    health         = google_service_account.health.email
    monitor        = google_service_account.monitor.email
    scheduler      = google_service_account.scheduler.email
    pubsub_push    = google_service_account.pubsub_push.email
  }
}

output "db_password_secret" {
  description = "Secret holding the PostgreSQL password (add a version: see docs/runbook.md)."
  value       = google_secret_manager_secret.db_password.secret_id
}

output "slack_webhook_secret" {
  description = "Secret holding the Slack incoming-webhook URL (add a version: see docs/runbook.md)."
  value       = google_secret_manager_secret.slack_webhook.secret_id
}

output "backup_encryption_identity_secret" {
  description = "Secret holding the age identity that decrypts encrypted database dumps; readable by restore (and drill) only (add a version: see docs/runbook.md, \"Encrypted backups\")."
  value       = google_secret_manager_secret.backup_encryption_identity.secret_id
}

output "image_repository" {
  description = "Artifact Registry path the image is pushed to (cloudbuild.yaml _REGION/_REPOSITORY)."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "build_service_account_id" {
  description = "Service account to submit Cloud Build builds with (null when create_build_service_account = false)."
  value       = var.create_build_service_account ? google_service_account.deployer[0].id : null
}

output "build_staging_bucket" {
  description = "Bucket for build sources (gcloud builds submit --gcs-source-staging-dir=gs://BUCKET/source)."
  value       = var.create_build_service_account ? google_storage_bucket.build_staging[0].name : null
}

locals {
  gcloud_flags = "--region ${var.region} --project ${var.project_id}"
  # Run a job by hand and wait for it: job name -> command (add --args=... for its arguments).
  execute_job = { for name, job in google_cloud_run_v2_job.job : name => "gcloud run jobs execute ${job.name} ${local.gcloud_flags} --wait" }
}

output "backup_now_commands" {
  description = "Run a backup now (waits for the result)."
  value = {
    db_backup      = local.execute_job["db-backup"]
    storage_backup = local.execute_job["storage-backup"]
    prune_dry_run  = "${local.execute_job["prune"]} --args=--dry-run"
    health         = local.execute_job["health"]
  }
}

output "restore_commands" {
  description = "Templates for manual restores (replace the UPPER-CASE words). What the restore job prints is in Cloud Logging; see docs/runbook.md for the `gcloud logging read` command."
  value = {
    list_backups            = "${local.execute_job["restore"]} --args=list,--database,DBNAME"
    restore_database        = "${local.execute_job["restore"]} --args=db,--database,DBNAME,--target,NEWNAME"
    restore_database_before = "${local.execute_job["restore"]} --args=db,--database,DBNAME,--before,2026-01-31T00:00:00Z,--target,NEWNAME"
    restore_bucket_dry_run  = "${local.execute_job["restore"]} --args=bucket,--source-bucket,SOURCEBUCKET,--target-bucket,TARGETBUCKET,--target-prefix,restored/,--dry-run"
    restore_bucket          = "${local.execute_job["restore"]} --args=bucket,--source-bucket,SOURCEBUCKET,--target-bucket,TARGETBUCKET,--target-prefix,restored/"
  }
}

output "console_proxy_command" {
  description = "How an admin or viewer opens the console: this proxies http://localhost:8080 to the IAM-authenticated service with their own identity."
  value       = "gcloud run services proxy ${google_cloud_run_v2_service.console.name} --region ${var.region} --project ${var.project_id}"
}
