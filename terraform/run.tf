# Cloud Run: the jobs (one per program that runs to completion and exits: local.jobs) and one
# service (monitor). All run the same image. A job's key in local.jobs is its program name:
# the Cloud Run job name, the container name and the binary (/usr/local/bin/NAME).
#
# The image is set by Terraform only when a resource is created. Afterwards cloudbuild.yaml
# rolls out new images with `gcloud run jobs update` / `gcloud run services update`, so the
# image (and the client fields gcloud stamps) are in ignore_changes.

locals {
  # The Cloud Run jobs. Adding a job is adding an entry here; it also needs its own service
  # account and grants (iam.tf) and its name in cloudbuild.yaml's _JOBS (a structural test
  # compares the two). An entry sets what differs from local.job_defaults:
  #
  #   service_account        email of the program's own service account (iam.tf)
  #   env                    plain environment; empty values are left out (the program's default)
  #   secret_env             env var name -> Secret Manager secret id, resolved as `latest` when
  #                          an execution starts (values never pass through Terraform)
  #   uses_database          connects to PostgreSQL: the Cloud SQL volume at /cloudsql and Direct
  #                          VPC egress (each when configured); the plan fails without a database
  #   resources              CPU and memory limits of the container
  #   timeout                maximum run time of one attempt
  #   max_retries            task retries before the execution counts as failed (and alerts)
  #   schedule               cron in var.timezone; null: never scheduled, and the scheduler
  #                          identity may not start it
  #   schedule_enabled       false: the scheduler identity may start the job (iam.tf), but no
  #                          Cloud Scheduler job exists (nothing to do yet)
  #   scheduler_description  description of the Cloud Scheduler job; null: the standard one
  jobs = {
    db-backup = {
      service_account = google_service_account.db_backup.email
      env             = merge(local.common_env, local.db_env, local.encryption_env)
      secret_env      = local.db_secret_env
      uses_database   = true
      resources       = var.db_backup_resources
      timeout         = var.db_backup_timeout
      schedule        = var.db_backup_schedule
    }

    storage-backup = {
      service_account = google_service_account.storage_backup.email
      env = merge(local.common_env, {
        SOURCE_BUCKETS = join(",", var.source_buckets)
      })
      resources = { cpu = "1", memory = "1Gi" }
      timeout   = var.storage_backup_timeout
      schedule  = var.storage_backup_schedule
      # Defined either way (so a manual run works and adding a bucket is one variable), but
      # only scheduled when there is a bucket to snapshot.
      schedule_enabled = length(var.source_buckets) > 0
    }

    # Never scheduled: run it with `gcloud run jobs execute restore --args=...` (outputs.restore_commands).
    restore = {
      service_account = google_service_account.restore.email
      env             = merge(local.common_env, local.db_env)
      secret_env      = local.restore_identity ? local.db_restore_secret_env : local.db_secret_env
      uses_database   = true
      resources       = var.db_backup_resources
      timeout         = var.restore_timeout
      max_retries     = 0 # a half-done restore is investigated, not repeated
    }

    prune = {
      service_account = google_service_account.prune.email
      env = merge(local.common_env, {
        for k, v in {
          BACKUP_KEEP_LAST    = var.keep_last
          BACKUP_KEEP_DAILY   = var.keep_daily
          BACKUP_KEEP_WEEKLY  = var.keep_weekly
          BACKUP_KEEP_MONTHLY = var.keep_monthly
        } : k => tostring(v) if v != null
      })
      timeout  = "3600s"
      schedule = var.prune_schedule
    }

    # Restore drills (drill.tf): scratch restores of the newest backups, records next to them.
    drill = {
      service_account = google_service_account.drill.email
      env             = local.drill_env
      secret_env = (local.drill_own_server
        ? (local.restore_identity ? local.drill_own_identity_secret_env : local.drill_own_secret_env)
      : (local.restore_identity ? local.db_restore_secret_env : local.db_secret_env))
      uses_database = true
      resources     = var.db_backup_resources
      timeout       = var.drill_timeout
      max_retries   = 0 # a failed drill is a finding: alerted once, not repeated
      schedule      = var.drill_schedule
    }

    health = {
      service_account       = google_service_account.health.email
      env                   = merge(local.common_env, local.freshness_env)
      timeout               = "900s"
      schedule              = var.health_schedule
      scheduler_description = "Start the health Cloud Run job (daily freshness report)"
    }
  }

  # What a job gets unless its entry in local.jobs says otherwise.
  job_defaults = {
    secret_env            = {}
    uses_database         = false
    resources             = { cpu = "1", memory = "512Mi" }
    max_retries           = var.job_max_retries
    schedule              = null
    schedule_enabled      = true
    scheduler_description = null
  }

  # local.jobs with the defaults filled in: what the resources read.
  job_settings = { for name, job in local.jobs : name => merge(local.job_defaults, job) }

  # The database password, for the programs that connect to PostgreSQL.
  db_secret_env = { PGPASSWORD = google_secret_manager_secret.db_password.secret_id }

  # The programs that restore database dumps (restore, drill): the password, and the identity
  # that decrypts encrypted dumps. The identity is wired only while encryption is on (or kept on
  # with var.backup_encryption_restore_identity): Cloud Run refuses to start a job whose secret
  # has no version yet. Entries pick it with
  #   secret_env = local.restore_identity ? local.db_restore_secret_env : local.db_secret_env
  restore_identity = coalesce(var.backup_encryption_restore_identity, length(var.backup_encryption_recipients) > 0)
  db_restore_secret_env = {
    PGPASSWORD                 = google_secret_manager_secret.db_password.secret_id
    BACKUP_ENCRYPTION_IDENTITY = google_secret_manager_secret.backup_encryption_identity.secret_id
  }
}

resource "google_cloud_run_v2_job" "job" {
  for_each = local.job_settings

  name                = each.key
  project             = var.project_id
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account       = each.value.service_account
      timeout               = each.value.timeout
      max_retries           = each.value.max_retries
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

      containers {
        name    = each.key
        image   = var.image
        command = ["/usr/local/bin/${each.key}"]

        resources {
          limits = {
            cpu    = each.value.resources.cpu
            memory = each.value.resources.memory
          }
        }

        dynamic "env" {
          for_each = { for k, v in each.value.env : k => v if v != "" }
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = each.value.secret_env
          content {
            name = env.key
            value_source {
              secret_key_ref {
                secret  = env.value
                version = "latest"
              }
            }
          }
        }

        # SENTRY_DSN for every program when Sentry is on (secrets.tf).
        dynamic "env" {
          for_each = local.sentry_secret_env
          content {
            name = env.key
            value_source {
              secret_key_ref {
                secret  = env.value
                version = "latest"
              }
            }
          }
        }

        dynamic "volume_mounts" {
          for_each = each.value.uses_database && local.use_cloudsql ? ["cloudsql"] : []
          content {
            name       = volume_mounts.value
            mount_path = "/cloudsql"
          }
        }
      }

      # Cloud SQL volume: a unix socket per instance under /cloudsql/PROJECT:REGION:INSTANCE.
      dynamic "volumes" {
        for_each = each.value.uses_database && local.use_cloudsql ? ["cloudsql"] : []
        content {
          name = volumes.value
          cloud_sql_instance {
            instances = [var.database_instance_connection_name]
          }
        }
      }

      # Direct VPC egress to a database on a private address.
      dynamic "vpc_access" {
        for_each = each.value.uses_database && local.use_vpc ? ["vpc"] : []
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
      condition     = !each.value.uses_database || var.database_instance_connection_name != "" || var.database_host != ""
      error_message = "Set database_instance_connection_name (Cloud SQL) or database_host."
    }
  }

  # The grants first, so that no job can run before its rights exist. depends_on cannot differ
  # between instances: this is the union of what the jobs need.
  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.db_password_accessor,
    google_secret_manager_secret_iam_member.backup_encryption_identity_accessor,
    google_secret_manager_secret_iam_member.sentry_dsn_accessor,
    google_storage_bucket_iam_member.backups_metadata_reader,
    google_storage_bucket_iam_member.backups_full_reader,
    google_storage_bucket_iam_member.db_backup_reader,
    google_storage_bucket_iam_member.storage_backup_reader,
    google_storage_bucket_iam_member.prune_reader,
    google_storage_bucket_iam_member.db_backup_creator,
    google_storage_bucket_iam_member.storage_backup_creator,
    google_storage_bucket_iam_member.storage_backup_state,
    google_storage_bucket_iam_member.prune_deleter,
    google_storage_bucket_iam_member.drill_records_creator,
    google_secret_manager_secret_iam_member.drill_db_password_accessor,
    google_secret_manager_secret_iam_member.drill_db_password_reader,
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

      # SENTRY_DSN when Sentry is on (secrets.tf).
      dynamic "env" {
        for_each = local.sentry_secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
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
    google_secret_manager_secret_iam_member.sentry_dsn_accessor,
    google_storage_bucket_iam_member.backups_metadata_reader,
    google_storage_bucket_iam_member.monitor_state,
  ]
}

# ---------------------------------------------------------------------------------------
# console (service: the dashboard and admin API; IAM-authenticated, reached through
# `gcloud run services proxy console`; admins' actions start the jobs through the Run Admin API)
# ---------------------------------------------------------------------------------------

resource "google_cloud_run_v2_service" "console" {
  name                 = "console"
  project              = var.project_id
  location             = var.region
  ingress              = "INGRESS_TRAFFIC_ALL"
  invoker_iam_disabled = false
  deletion_protection  = var.deletion_protection

  template {
    service_account                  = google_service_account.console.email
    timeout                          = "60s"
    max_instance_request_concurrency = 20
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = 0
      max_instance_count = 1
    }

    containers {
      name    = "console"
      image   = var.image
      command = ["/usr/local/bin/console"]

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
        for_each = { for k, v in local.console_env : k => v if v != "" }
        content {
          name  = env.key
          value = env.value
        }
      }

      # SENTRY_DSN when Sentry is on (secrets.tf).
      dynamic "env" {
        for_each = local.sentry_secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
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
    google_secret_manager_secret_iam_member.sentry_dsn_accessor,
    google_storage_bucket_iam_member.backups_metadata_reader,
  ]
}
