# Cloud Scheduler. Jobs are started through the Run Admin API (POST .../jobs/NAME:run) with
# an OAuth access token of the scheduler service account, which holds roles/run.invoker on
# exactly the jobs that have a schedule (iam.tf). monitor's /check is an ordinary
# authenticated HTTP call with an OIDC identity token whose audience is the service URL.
#
# All schedules are in var.timezone (BACKUP_TIMEZONE). Execution failures are not retried
# here: the Run API call only starts an execution (task retries are the job's max_retries);
# retry_config only covers a failed start.

locals {
  run_jobs_api = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs"

  # The jobs of local.jobs (run.tf) that have a schedule.
  scheduled_jobs = { for name, job in local.job_settings : name => job if job.schedule != null }
}

resource "google_cloud_scheduler_job" "job" {
  for_each = { for name, job in local.scheduled_jobs : name => job if job.schedule_enabled }

  name             = "${var.name_prefix}-${each.key}"
  description      = coalesce(each.value.scheduler_description, "Start the ${each.key} Cloud Run job")
  project          = var.project_id
  region           = local.scheduler_region
  schedule         = each.value.schedule
  time_zone        = var.timezone
  attempt_deadline = "120s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "${local.run_jobs_api}/${google_cloud_run_v2_job.job[each.key].name}:run"

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
