# Secret Manager secrets. Terraform creates the secrets and who may read them, never their
# values: values are added by an operator with `gcloud secrets versions add` (see
# docs/runbook.md), so they never land in Terraform state or in a tfvars file.
# The programs receive them as environment variables through secret_key_ref (run.tf):
# jobs resolve `latest` when an execution starts; the monitor service when an instance starts
# (deploy a new revision after a rotation).

resource "google_secret_manager_secret" "db_password" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-db-password"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "slack_webhook" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-slack-webhook"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# Database password: the two programs that connect to PostgreSQL.
resource "google_secret_manager_secret_iam_member" "db_password_accessor" {
  for_each = {
    db-backup = google_service_account.db_backup.member
    restore   = google_service_account.restore.member
  }

  project   = var.project_id
  secret_id = google_secret_manager_secret.db_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

# Slack webhook: only monitor sends Slack messages (health reports through result events).
resource "google_secret_manager_secret_iam_member" "slack_webhook_accessor" {
  for_each = {
    monitor = google_service_account.monitor.member
  }

  project   = var.project_id
  secret_id = google_secret_manager_secret.slack_webhook.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
