# The backup bucket: every backup, manifest, snapshot and drill record, written once and kept
# at least the retention period (retention policy). Beside it the small state bucket: what must
# be overwritten or deleted sooner (monitor state, claims), which a retention policy would forbid.

# The Cloud Storage service agent must be allowed to use the customer-managed key.
data "google_storage_project_service_account" "gcs" {
  count   = var.kms_key_name == null ? 0 : 1
  project = var.project_id
}

resource "google_kms_crypto_key_iam_member" "gcs_cmek" {
  count         = var.kms_key_name == null ? 0 : 1
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = data.google_storage_project_service_account.gcs[0].member
}

resource "google_storage_bucket" "backups" {
  #checkov:skip=CKV_GCP_62:Usage/access logs are a legacy feature that needs a second bucket; object reads and writes are audited with Cloud Audit Logs (enable DATA_READ/DATA_WRITE for storage.googleapis.com, see docs/runbook.md).
  #checkov:skip=CKV_GCP_78:Object versioning adds nothing here: every object is written once with ifGenerationMatch=0 and never overwritten, nothing younger than the retention period can be deleted (retention policy), and deleted objects are recoverable through the soft delete policy. Versioning would keep pruned backups alive and billed.
  name          = var.backup_bucket_name
  project       = var.project_id
  location      = var.bucket_location == null ? upper(var.region) : upper(var.bucket_location)
  storage_class = "STANDARD"
  force_destroy = false

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_days * 86400
  }

  dynamic "custom_placement_config" {
    for_each = length(var.bucket_dual_region_locations) == 2 ? [var.bucket_dual_region_locations] : []
    content {
      data_locations = [for l in custom_placement_config.value : upper(l)]
    }
  }

  # Write-once for the retention period: neither a compromised prune nor a project editor can
  # delete or replace a backup younger than that (prune only deletes older backups anyway; an
  # orphan or blob it finds younger is refused, reported, and collected by a later prune).
  # Unlocked unless var.retention_policy_locked: locking is irreversible, a deliberate decision.
  dynamic "retention_policy" {
    for_each = local.retention_policy_days > 0 ? [local.retention_policy_days] : []
    content {
      retention_period = retention_policy.value * 86400
      is_locked        = var.retention_policy_locked
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  # Age-based move of backup data (not of monitor state) to COLDLINE.
  dynamic "lifecycle_rule" {
    for_each = var.coldline_after_days > 0 ? [var.coldline_after_days] : []
    content {
      condition {
        age                   = lifecycle_rule.value
        matches_prefix        = ["${local.object_root}db/", "${local.object_root}storage/"]
        matches_storage_class = ["STANDARD", "NEARLINE"]
      }
      action {
        type          = "SetStorageClass"
        storage_class = "COLDLINE"
      }
    }
  }

  # A crashed upload must not leave billable parts behind.
  lifecycle_rule {
    condition {
      age = 2
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  lifecycle {
    # Backups are the last line of defence: destroying this bucket must be a deliberate code change.
    prevent_destroy = true
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.gcs_cmek]
}

# ---------------------------------------------------------------------------------------
# State bucket (LIFEBOAT_STATE_DESTINATION): small, short-lived objects only, no retention policy
# ---------------------------------------------------------------------------------------
#
#   state/monitor/incidents.json               the alert state machine, replaced on every change
#                                              (compare-and-swap on the generation)
#   state/monitor/messages/<key>               one record per result event received, deleted by
#                                              monitor after 8 days
#   state/storage-backup/executions/<b>/<e>.json  the snapshot id the tasks of one Cloud Run
#                                              execution share (create-only; needed for a day)
#
# Nothing here is needed to restore: losing it costs at most a repeated alert.

resource "google_storage_bucket" "state" {
  #checkov:skip=CKV_GCP_62:Usage/access logs are a legacy feature that needs a third bucket; reads and writes are audited with Cloud Audit Logs (DATA_READ/DATA_WRITE for storage.googleapis.com, see docs/runbook.md).
  #checkov:skip=CKV_GCP_78:Versioning is off on purpose: the incident state is replaced on every change (compare-and-swap on its generation) and every other object is temporary; noncurrent versions would pile up with no value. Deleted objects stay recoverable through soft delete.
  name          = local.state_bucket_name
  project       = var.project_id
  location      = var.bucket_location == null ? upper(var.region) : upper(var.bucket_location)
  storage_class = "STANDARD"
  force_destroy = false

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = false
  }

  # The shortest soft delete GCS allows besides none: the state is replaced often.
  soft_delete_policy {
    retention_duration_seconds = 7 * 86400
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  # Temporary objects: claims matter for one execution (a day at most), message records for
  # 8 days (monitor deletes them; this is the backstop when monitor no longer runs).
  lifecycle_rule {
    condition {
      age            = 7
      matches_prefix = ["${local.object_root}state/storage-backup/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = 30
      matches_prefix = ["${local.object_root}state/monitor/messages/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 2
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.gcs_cmek]
}
