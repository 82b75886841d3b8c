# Cloud Monitoring: the second alert path. It watches Cloud Run and Cloud Scheduler
# themselves and mails var.alert_emails, so it still works when monitor or Slack is down.

resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.alert_emails)

  project      = var.project_id
  display_name = "lifeboat alerts: ${each.value}"
  type         = "email"
  labels = {
    email_address = each.value
  }

  depends_on = [google_project_service.apis]
}

locals {
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  # Every job, the manual restore included: a failed restore must be noticed too.
  lifeboat_jobs = [for job in google_cloud_run_v2_job.job : job.name]
}

resource "google_monitoring_alert_policy" "job_failed" {
  project      = var.project_id
  display_name = "lifeboat: Cloud Run job execution failed"
  combiner     = "OR"
  severity     = "ERROR"

  conditions {
    display_name = "Failed executions of a lifeboat job"

    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"cloud_run_job\"",
        "metric.type = \"run.googleapis.com/job/completed_execution_count\"",
        "metric.labels.result = \"failed\"",
        "resource.labels.job_name = monitoring.regex.full_match(\"${join("|", local.lifeboat_jobs)}\")",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.labels.job_name"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "lifeboat: a backup job failed"
    content   = <<-EOT
      A lifeboat Cloud Run job execution failed (after its task retries).
      Open the job's executions and logs:
      `gcloud run jobs executions list --job JOB --region ${var.region} --project ${var.project_id}`.
      What to do for each job: docs/runbook.md, section "Alerts".
    EOT
  }

  notification_channels = local.notification_channels
}

resource "google_monitoring_alert_policy" "results_dead_lettered" {
  project      = var.project_id
  display_name = "lifeboat: result events dead-lettered (monitor not processing)"
  combiner     = "OR"
  severity     = "WARNING"

  conditions {
    display_name = "Messages forwarded to the dead-letter topic"

    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"pubsub_subscription\"",
        "metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\"",
        "resource.labels.subscription_id = \"${google_pubsub_subscription.monitor_push.name}\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "lifeboat: monitor is not taking result events"
    content   = <<-EOT
      Pub/Sub gave up delivering result events to the monitor service and moved them to the
      dead-letter topic: Slack alerts may be missing. Check the monitor service logs, then read
      the events: `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter.name} --limit 20 --project ${var.project_id}`.
      See docs/runbook.md, section "Alerts".
    EOT
  }

  notification_channels = local.notification_channels
}

resource "google_monitoring_alert_policy" "scheduler_failed" {
  project      = var.project_id
  display_name = "lifeboat: Cloud Scheduler could not start a job"
  combiner     = "OR"
  severity     = "ERROR"

  conditions {
    display_name = "Failed lifeboat scheduler attempts"

    # Catches what no job metric can: a run that never started (permissions, API disabled,
    # job deleted). The scheduler job ids all start with the name prefix.
    condition_matched_log {
      filter = join(" AND ", [
        "resource.type = \"cloud_scheduler_job\"",
        "resource.labels.job_id =~ \"^${var.name_prefix}-\"",
        "severity >= ERROR",
      ])
    }
  }

  alert_strategy {
    auto_close = "86400s"

    notification_rate_limit {
      period = "3600s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "lifeboat: a scheduled run did not start"
    content   = <<-EOT
      Cloud Scheduler got an error when starting a lifeboat job or calling monitor /check.
      `gcloud scheduler jobs describe JOB --location ${local.scheduler_region} --project ${var.project_id}`
      shows the last status. See docs/runbook.md, section "Alerts".
    EOT
  }

  notification_channels = local.notification_channels

  depends_on = [google_project_service.apis]
}
