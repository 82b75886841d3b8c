# Image repository and the identity Cloud Build deploys with (cloudbuild.yaml).

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:The image holds only public code and binaries (no data, no secrets); Google-managed encryption is sufficient.
  project       = var.project_id
  location      = var.region
  repository_id = var.artifact_registry_repository_id
  description   = "lifeboat container images (built by cloudbuild.yaml)"
  format        = "DOCKER"

  # Delete images older than 90 days, except the 20 most recent ones (rollback targets).
  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "7776000s"
    }
  }

  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------------------------------
# Cloud Build deployer: push images, update the jobs and the service, nothing else.
# Submit builds with it:  gcloud builds submit --service-account=<outputs.build_service_account_id> ...
# ---------------------------------------------------------------------------------------

resource "google_service_account" "deployer" {
  count = var.create_build_service_account ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name_prefix}-deployer"
  display_name = "lifeboat Cloud Build deployer"
  description  = "Builds the lifeboat image, pushes it and rolls it out to the Cloud Run jobs and service."
}

# Build sources uploaded by `gcloud builds submit --gcs-source-staging-dir=gs://<this>/source`.
resource "google_storage_bucket" "build_staging" {
  #checkov:skip=CKV_GCP_62:Holds only short-lived source tarballs (deleted after 7 days); access logging would add a second bucket for no audit value.
  #checkov:skip=CKV_GCP_78:Source tarballs are throw-away build inputs; versioning is not wanted.
  count = var.create_build_service_account ? 1 : 0

  name          = "${var.backup_bucket_name}-build"
  project       = var.project_id
  location      = upper(var.region)
  force_destroy = true

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  soft_delete_policy {
    retention_duration_seconds = 604800
  }

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "deployer_staging_reader" {
  count = var.create_build_service_account ? 1 : 0

  bucket = google_storage_bucket.build_staging[0].name
  role   = "roles/storage.objectViewer"
  member = google_service_account.deployer[0].member
}

resource "google_artifact_registry_repository_iam_member" "deployer_writer" {
  count = var.create_build_service_account ? 1 : 0

  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.deployer[0].member
}

# Build logs (cloudbuild.yaml uses logging: CLOUD_LOGGING_ONLY, required with a user-specified service account).
resource "google_project_iam_member" "deployer_log_writer" {
  count = var.create_build_service_account ? 1 : 0

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.deployer[0].member
}

# What the deployer rolls out (cloudbuild.yaml _JOBS and _SERVICES) and what it may not touch.
# Deploying a workload means acting as its service account (iam.serviceAccountUser) and, with
# run.developer, being able to run it with any arguments: whoever deploys prune can delete every
# backup older than the retention period, whoever deploys restore can overwrite databases and
# buckets, whoever deploys drill can read every dump and decrypt it with the encryption identity
# (and holds a database password that may CREATE DATABASE), whoever deploys the console can start
# prune and restore with overrides (it holds run.jobsExecutorWithOverrides on them). So the
# deployer gets no role on those four and no actAs on their service accounts: an operator rolls
# them out after a build (cloudbuild.yaml prints the commands; docs/runbook.md, "Later
# deployments"). The trade-off: until then they run the previous image. Formats are versioned and
# readers accept older ones, so a lagging restore, drill or prune still reads what the newer
# programs write; the console shows its own version.
locals {
  deployer_jobs     = ["db-backup", "storage-backup", "health"]
  deployer_services = ["monitor"]
  operator_rollout  = ["prune", "restore", "drill", "console"]
}

# run.developer on each job and service it rolls out (not on the project): update the image.
resource "google_cloud_run_v2_job_iam_member" "deployer_updates_job" {
  for_each = var.create_build_service_account ? toset(local.deployer_jobs) : toset([])

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.job[each.value].name
  role     = "roles/run.developer"
  member   = google_service_account.deployer[0].member
}

resource "google_cloud_run_v2_service_iam_member" "deployer_updates_monitor" {
  count = var.create_build_service_account ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.monitor.name
  role     = "roles/run.developer"
  member   = google_service_account.deployer[0].member
}

# Deploying a job or service that runs as a service account requires actAs on that account:
# only the accounts of what the deployer rolls out, never prune's, restore's, drill's or the
# console's.
resource "google_service_account_iam_member" "deployer_acts_as_runtime" {
  for_each = var.create_build_service_account ? {
    db-backup      = google_service_account.db_backup.name
    storage-backup = google_service_account.storage_backup.name
    health         = google_service_account.health.name
    monitor        = google_service_account.monitor.name
  } : {}

  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.deployer[0].member
}
