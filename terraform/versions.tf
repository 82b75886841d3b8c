# Toolchain and provider pins.
#
# The google provider is pinned to the 6.x line (6.50 is the last 6.x release): every
# resource and argument used here exists in 6.50. Moving to 7.x is a deliberate upgrade
# (7.0 changed, among others, the type of google_storage_bucket.retention_policy.retention_period).
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  # Every resource that supports labels gets these; var.labels can add or override.
  default_labels = merge({ app = "lifeboat", managed-by = "terraform" }, var.labels)
}
