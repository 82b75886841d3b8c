# State moves for deployments made before the jobs and their schedules became one for_each
# resource each (run.tf, scheduler.tf). With these, `terraform plan` on such a deployment shows
# the moves and no destroy/create: the jobs keep their executions and history, and nothing is
# briefly unscheduled. A move whose source is not in the state is ignored (e.g. the
# storage-backup schedule when source_buckets is empty). The one other change to expect in
# that plan is an in-place update of google_monitoring_alert_policy.job_failed: its job-name
# filter lists the same jobs in another order (sorted, as for_each instances are).
#
# Keep them: a deployment that skips a release still needs them. Removing a moved block
# makes Terraform destroy and re-create that object instead. infra/checks/test_terraform.py
# checks that every old address is still moved to an instance that exists.

# ---- Cloud Run jobs: google_cloud_run_v2_job.NAME -> google_cloud_run_v2_job.job["PROGRAM"] ----

moved {
  from = google_cloud_run_v2_job.db_backup
  to   = google_cloud_run_v2_job.job["db-backup"]
}

moved {
  from = google_cloud_run_v2_job.storage_backup
  to   = google_cloud_run_v2_job.job["storage-backup"]
}

moved {
  from = google_cloud_run_v2_job.restore
  to   = google_cloud_run_v2_job.job["restore"]
}

moved {
  from = google_cloud_run_v2_job.prune
  to   = google_cloud_run_v2_job.job["prune"]
}

moved {
  from = google_cloud_run_v2_job.health
  to   = google_cloud_run_v2_job.job["health"]
}

# ---- Cloud Scheduler: google_cloud_scheduler_job.NAME -> google_cloud_scheduler_job.job["PROGRAM"] ----

moved {
  from = google_cloud_scheduler_job.db_backup
  to   = google_cloud_scheduler_job.job["db-backup"]
}

# Was `count = length(var.source_buckets) > 0 ? 1 : 0`.
moved {
  from = google_cloud_scheduler_job.storage_backup[0]
  to   = google_cloud_scheduler_job.job["storage-backup"]
}

moved {
  from = google_cloud_scheduler_job.prune
  to   = google_cloud_scheduler_job.job["prune"]
}

moved {
  from = google_cloud_scheduler_job.health
  to   = google_cloud_scheduler_job.job["health"]
}

# ---- drill's grants that joined the other programs' (the same binding at a new address: without
#      the move, Terraform would create the new one, a no-op, then destroy the old one and with
#      it the binding) ----

moved {
  from = google_pubsub_topic_iam_member.drill_results_publisher
  to   = google_pubsub_topic_iam_member.results_publisher["drill"]
}

moved {
  from = google_secret_manager_secret_iam_member.drill_identity_accessor
  to   = google_secret_manager_secret_iam_member.backup_encryption_identity_accessor["drill"]
}
