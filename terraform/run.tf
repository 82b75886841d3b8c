# Cloud Run: five jobs (db-backup, storage-backup, prune, health scheduled; restore manual)
# and one service (monitor). All run the same image; `command` picks the binary.
#
# The image is set by Terraform only when a resource is created. Afterwards cloudbuild.yaml
# rolls out new images with `gcloud run jobs update` / `gcloud run services update`, so the
# image (and the client fields gcloud stamps) are in ignore_changes.

# ---------------------------------------------------------------------------------------
# db-backup
# ---------------------------------------------------------------------------------------

resource "google_cloud_run_v2_job" "db_backup" {
  name                = "db-backup"
  project             = var.project_id
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account       = google_service_account.db_backup.email
      timeout               = var.db_backup_timeout
      max_retries           = var.job_max_retries
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

      containers {
        name    = "db-backup"
        image   = var.image
        command = ["/usr/local/bin/db-backup"]

        resources {
          limits = {
            cpu    = var.db_backup_resources.cpu
            memory = var.db_backup_resources.memory
          }
        }

        dynamic "env" {
          for_each = { for k, v in local.db_backup_env : k => v if v != "" }
          content {
            name  = env.key
            value = env.value
          }
        }

        env {
          name = "PGPASSWORD"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.db_password.secret_id
              version = "latest"
            }
          }
        }

        dynamic "volume_mounts" {
          for_each = local.use_cloudsql ? ["cloudsql"] : []
          content {
            name       = volume_mounts.value
            mount_path = "/cloudsql"
          }
        }
      }

      # Cloud SQL volume: a unix socket per instance under /cloudsql/PROJECT:REGION:INSTANCE.
      dynamic "volumes" {
        for_each = local.use_cloudsql ? ["cloudsql"] : []
        content {
          name = volumes.value
          cloud_sql_instance {
            instances = [var.database_instance_connection_name]
          }
        }
      }

      dynamic "vpc_access" {
        for_each = local.use_vpc ? ["vpc"] : []
        content {
          egress = "PRIVATE_RANGES_ONLY"
          network_interfaces {
            network    = var.vpc_network
            subnetwork = var.vpc_subnetwork
          }
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [client, client_version, template[0].template[0].containers[0].image]

    precondition {
      condition     = var.database_instance_connection_name != "" || var.database_host != ""
      error_message = "Set database_instance_connection_name (Cloud SQL) or database_host."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.db_password_accessor,
    google_storage_bucket_iam_member.backups_reader,
    google_storage_bucket_iam_member.db_backup_creator,
  ]
}

# ---------------------------------------------------------------------------------------
# storage-backup (scheduled only when var.source_buckets is not empty)
# ---------------------------------------------------------------------------------------

resource "google_cloud_run_v2_job" "storage_backup" {
  name                = "storage-backup"
  project             = var.project_id
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account       = google_service_account.storage_backup.email
      timeout               = var.storage_backup_timeout
      max_retries           = var.job_max_retries
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

      containers {
        name    = "storage-backup"
        image   = var.image
        command = ["/usr/local/bin/storage-backup"]

        resources {
          limits = {
            cpu    = "1"
            memory = "1Gi"
          }
        }

        dynamic "env" {
          for_each = { for k, v in local.storage_backup_env : k => v if v != "" }
          content {
            name  = env.key
            value = env.value
          }
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [client, client_version, template[0].template[0].containers[0].image]
  }

  depends_on = [
    google_project_service.apis,
    google_storage_bucket_iam_member.backups_reader,
    google_storage_bucket_iam_member.storage_backup_creator,
  ]
}

# ---------------------------------------------------------------------------------------
# restore (defined, never scheduled: run it with `gcloud run jobs execute restore --args=...`)
# ---------------------------------------------------------------------------------------

resource "google_cloud_run_v2_job" "restore" {
  name                = "restore"
  project             = var.project_id
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account       = google_service_account.restore.email
      timeout               = var.restore_timeout
      max_retries           = 0 # a half-done restore is investigated, not repeated
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

      containers {
        name    = "restore"
        image   = var.image
        command = ["/usr/local/bin/restore"]

        resources {
          limits = {
            cpu    = var.db_backup_resources.cpu
            memory = var.db_backup_resources.memory
          }
        }

        dynamic "env" {
          for_each = { for k, v in local.restore_env : k => v if v != "" }
          content {
            name  = env.key
            value = env.value
          }
        }

        env {
          name = "PGPASSWORD"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.db_password.secret_id
              version = "latest"
            }
          }
        }

        dynamic "volume_mounts" {
          for_each = local.use_cloudsql ? ["cloudsql"] : []
          content {
            name       = volume_mounts.value
            mount_path = "/cloudsql"
          }
        }
      }

      dynamic "volumes" {
        for_each = local.use_cloudsql ? ["cloudsql"] : []
        content {
          name = volumes.value
          cloud_sql_instance {
            instances = [var.database_instance_connection_name]
          }
        }
      }

      dynamic "vpc_access" {
        for_each = local.use_vpc ? ["vpc"] : []
        content {
          egress = "PRIVATE_RANGES_ONLY"
          network_interfaces {
            network    = var.vpc_network
            subnetwork = var.vpc_subnetwork
          }
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [client, client_version, template[0].template[0].containers[0].image]
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.db_password_accessor,
    google_storage_bucket_iam_member.backups_reader,
  ]
}

# ---------------------------------------------------------------------------------------
# prune
# ---------------------------------------------------------------------------------------

resource "google_cloud_run_v2_job" "prune" {
  name                = "prune"
  project             = var.project_id
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account       = google_service_account.prune.email
      timeout               = "3600s"
      max_retries           = var.job_max_retries
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

      containers {
        name    = "prune"
        image   = var.image
        command = ["/usr/local/bin/prune"]

        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }

        dynamic "env" {
          for_each = { for k, v in local.prune_env : k => v if v != "" }
          content {
            name  = env.key
            value = env.value
          }
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [client, client_version, template[0].template[0].containers[0].image]
  }

  depends_on = [
    google_project_service.apis,
    google_storage_bucket_iam_member.backups_reader,
    google_storage_bucket_iam_member.prune_deleter,
  ]
}

# ---------------------------------------------------------------------------------------
# health
# ---------------------------------------------------------------------------------------

resource "google_cloud_run_v2_job" "health" {
  name                = "health"
  project             = var.project_id
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account       = google_service_account.health.email
      timeout               = "900s"
      max_retries           = var.job_max_retries
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

      containers {
        name    = "health"
        image   = var.image
        command = ["/usr/local/bin/health"]

        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }

        dynamic "env" {
          for_each = { for k, v in local.health_env : k => v if v != "" }
          content {
            name  = env.key
            value = env.value
          }
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [client, client_version, template[0].template[0].containers[0].image]
  }

  depends_on = [
    google_project_service.apis,
    google_storage_bucket_iam_member.backups_reader,
  ]
}

# ---------------------------------------------------------------------------------------
# monitor (service: Pub/Sub push to /pubsub, Cloud Scheduler to /check; IAM-authenticated,
# no unauthenticated access: only the push and scheduler service accounts are invokers)
# ---------------------------------------------------------------------------------------

resource "google_cloud_run_v2_service" "monitor" {
  name                 = "monitor"
  project              = var.project_id
  location             = var.region
  ingress              = var.monitor_ingress
  invoker_iam_disabled = false
  deletion_protection  = var.deletion_protection

  template {
    service_account                  = google_service_account.monitor.email
    timeout                          = "60s"
    max_instance_request_concurrency = 20
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = 0
      max_instance_count = 2
    }

    containers {
      name    = "monitor"
      image   = var.image
      command = ["/usr/local/bin/monitor"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle = true
      }

      dynamic "env" {
        for_each = { for k, v in local.monitor_env : k => v if v != "" }
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name = "SLACK_WEBHOOK_URL"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.slack_webhook.secret_id
            version = "latest"
          }
        }
      }

      startup_probe {
        period_seconds    = 2
        failure_threshold = 15
        http_get {
          path = "/healthz"
        }
      }

      liveness_probe {
        period_seconds    = 30
        failure_threshold = 3
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [client, client_version, template[0].containers[0].image]
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.slack_webhook_accessor,
    google_storage_bucket_iam_member.backups_reader,
    google_storage_bucket_iam_member.monitor_state,
  ]
}
