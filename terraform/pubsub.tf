# Result events: every program publishes one per run to the results topic; Pub/Sub pushes
# them to monitor's POST /pubsub with an OIDC token. Messages monitor cannot take after
# max_delivery_attempts go to the dead-letter topic, where a pull subscription keeps them
# for inspection (and an alert policy in monitoring.tf fires).

resource "google_pubsub_topic" "results" {
  #checkov:skip=CKV_GCP_83:Result events carry run figures and object names, no backup data or secrets; Google-managed encryption is sufficient and keeps the key out of the event path.
  name    = "${var.name_prefix}-results"
  project = var.project_id

  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Same content as the results topic (run figures, no backup data or secrets); Google-managed encryption.
  name    = "${var.name_prefix}-results-dead-letter"
  project = var.project_id

  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

# Keeps dead-lettered events for a week so an operator can read them:
#   gcloud pubsub subscriptions pull <name> --limit 10
resource "google_pubsub_subscription" "dead_letter" {
  name    = "${var.name_prefix}-results-dead-letter"
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.id

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # never expires for inactivity
  }
}

resource "google_pubsub_subscription" "monitor_push" {
  name    = "${var.name_prefix}-results-to-monitor"
  project = var.project_id
  topic   = google_pubsub_topic.results.id

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.monitor.uri}/pubsub"

    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloud_run_v2_service.monitor.uri
    }
  }

  # monitor answers non-2xx for retryable Slack failures (429/5xx): back off, then dead-letter.
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = 10
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.monitor_invoker_pubsub,
    google_service_account_iam_member.pubsub_agent_token_creator,
  ]
}

# ---- Publishing: each program's own service account, on the results topic only ----

resource "google_pubsub_topic_iam_member" "results_publisher" {
  for_each = {
    db-backup      = google_service_account.db_backup.member
    storage-backup = google_service_account.storage_backup.member
    restore        = google_service_account.restore.member
    prune          = google_service_account.prune.member
    health         = google_service_account.health.member
    monitor        = google_service_account.monitor.member
    console        = google_service_account.console.member
    drill          = google_service_account.drill.member
  }

  project = var.project_id
  topic   = google_pubsub_topic.results.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}

# ---- Pub/Sub service agent: dead-letter forwarding needs publish on the dead-letter topic
#      and subscribe on the source subscription ----

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription_iam_member" "monitor_push_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.monitor_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
