# Cloud Scheduler. Jobs are started through the Run Admin API (POST .../jobs/NAME:run) with
# an OAuth access token of the scheduler service account, which holds roles/run.invoker on
# exactly these jobs (iam.tf). monitor's /check is an ordinary authenticated HTTP call with
# an OIDC identity token whose audience is the service URL.
#
# All schedules are in var.timezone (BACKUP_TIMEZONE). Execution failures are not retried
# here: the Run API call only starts an execution (task retries are the job's max_retries).

locals {
  run_jobs_api = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs"
}

resource "google_cloud_scheduler_job" "db_backup" {
  name             = "${var.name_prefix}-db-backup"
  description      = "Start the db-backup Cloud Run job"
  project          = var.project_id
  region           = local.scheduler_region
  schedule         = var.db_backup_schedule
  time_zone        = var.timezone
  attempt_deadline = "120s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "${local.run_jobs_api}/${google_cloud_run_v2_job.db_backup.name}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_job]
}

resource "google_cloud_scheduler_job" "storage_backup" {
  count = length(var.source_buckets) > 0 ? 1 : 0

  name             = "${var.name_prefix}-storage-backup"
  description      = "Start the storage-backup Cloud Run job"
  project          = var.project_id
  region           = local.scheduler_region
  schedule         = var.storage_backup_schedule
  time_zone        = var.timezone
  attempt_deadline = "120s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "${local.run_jobs_api}/${google_cloud_run_v2_job.storage_backup.name}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_job]
}

resource "google_cloud_scheduler_job" "prune" {
  name             = "${var.name_prefix}-prune"
  description      = "Start the prune Cloud Run job"
  project          = var.project_id
  region           = local.scheduler_region
  schedule         = var.prune_schedule
  time_zone        = var.timezone
  attempt_deadline = "120s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "${local.run_jobs_api}/${google_cloud_run_v2_job.prune.name}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_job]
}

resource "google_cloud_scheduler_job" "health" {
  name             = "${var.name_prefix}-health"
  description      = "Start the health Cloud Run job (daily freshness report)"
  project          = var.project_id
  region           = local.scheduler_region
  schedule         = var.health_schedule
  time_zone        = var.timezone
  attempt_deadline = "120s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "${local.run_jobs_api}/${google_cloud_run_v2_job.health.name}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_job]
}

resource "google_cloud_scheduler_job" "monitor_check" {
  name             = "${var.name_prefix}-monitor-check"
  description      = "Call monitor POST /check (staleness and reminders)"
  project          = var.project_id
  region           = local.scheduler_region
  schedule         = var.monitor_check_schedule
  time_zone        = var.timezone
  attempt_deadline = "300s"

  retry_config {
    retry_count          = 2
    min_backoff_duration = "30s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.monitor.uri}/check"

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloud_run_v2_service.monitor.uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.monitor_invoker_scheduler]
}
