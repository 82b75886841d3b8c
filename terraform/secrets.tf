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

# The age identity (secret key) that decrypts encrypted database dumps. Always created, so that
# turning encryption off never destroys the only copy of a key that old backups need; the value
# comes from `restore keygen` or `age-keygen` (docs/runbook.md, "Encrypted backups"). db-backup
# only ever gets the public keys (var.backup_encryption_recipients).
resource "google_secret_manager_secret" "backup_encryption_identity" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-backup-encryption-identity"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# Only the programs that restore dumps may read the identity: restore, and drill (drill.tf), which
# restores into a scratch database. Never db-backup, health, monitor, prune or the console.
resource "google_secret_manager_secret_iam_member" "backup_encryption_identity_accessor" {
  for_each = {
    restore = google_service_account.restore.member
    drill   = google_service_account.drill.member
  }

  project   = var.project_id
  secret_id = google_secret_manager_secret.backup_encryption_identity.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

# Database password: db-backup and restore, which connect to PostgreSQL. drill reads it only while
# it restores on the backed-up server (drill.tf, drill_db_password_accessor).
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

# Optional Sentry DSN (var.sentry_enabled): every program reports failed runs and errors to
# Sentry with it (notify/sentry.rs, secrets scrubbed). Only created when enabled; its value is
# added by an operator (docs/runbook.md, "Sentry"), never through Terraform.
resource "google_secret_manager_secret" "sentry_dsn" {
  count = var.sentry_enabled ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name_prefix}-sentry-dsn"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

locals {
  # The runtime identities: every program reports to Sentry, nobody else reads the DSN.
  runtime_service_accounts = {
    db-backup      = google_service_account.db_backup.member
    storage-backup = google_service_account.storage_backup.member
    restore        = google_service_account.restore.member
    prune          = google_service_account.prune.member
    health         = google_service_account.health.member
    monitor        = google_service_account.monitor.member
    console        = google_service_account.console.member
    drill          = google_service_account.drill.member
  }

  # SENTRY_DSN -> the secret, on every job and service (run.tf); empty when Sentry is off.
  sentry_secret_env = var.sentry_enabled ? { SENTRY_DSN = google_secret_manager_secret.sentry_dsn[0].secret_id } : {}
}

resource "google_secret_manager_secret_iam_member" "sentry_dsn_accessor" {
  for_each = var.sentry_enabled ? local.runtime_service_accounts : {}

  project   = var.project_id
  secret_id = google_secret_manager_secret.sentry_dsn[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
