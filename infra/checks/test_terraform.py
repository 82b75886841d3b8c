"""Structural checks of terraform/ (no terraform binary: python-hcl2 parses the files).

They pin down the security and wiring rules of issue 6 so a later edit cannot silently drop
them: no public principals, a hardened backup bucket, one service account per program with
least privilege, schedulers that point at jobs that exist, secrets only through Secret Manager.
"""

from __future__ import annotations

import re
import unittest

import _hcl
from _hcl import block, blocks, dynamic_blocks, service_account_refs, walk_strings

PROGRAM_JOBS = {
    # terraform resource name -> Cloud Run job name (= binary name)
    "db_backup": "db-backup",
    "storage_backup": "storage-backup",
    "restore": "restore",
    "prune": "prune",
    "health": "health",
}
SCHEDULED_JOBS = {"db_backup", "storage_backup", "prune", "health"}
SECRET_ENV_NAMES = {"PGPASSWORD", "SLACK_WEBHOOK_URL"}

# Roles that can delete (or overwrite, which needs delete) objects.
DELETE_CAPABLE_STORAGE_ROLES = {
    "roles/storage.admin",
    "roles/storage.objectAdmin",
    "roles/storage.objectUser",
    "roles/storage.legacyBucketOwner",
    "roles/storage.legacyBucketWriter",
    "roles/storage.legacyObjectOwner",
    "roles/owner",
    "roles/editor",
}

TF = _hcl.load()


def ref_name(value: str, rtype: str) -> str | None:
    m = re.search(re.escape(rtype) + r"\.([A-Za-z0-9_-]+)\b", value)
    return m.group(1) if m else None


def container(job_or_service: dict, kind: str) -> dict:
    if kind == "job":
        tmpl = block(block(job_or_service, "template"), "template")
    else:
        tmpl = block(job_or_service, "template")
    return block(tmpl, "containers")


def runtime_template(body: dict, kind: str) -> dict:
    return block(block(body, "template"), "template") if kind == "job" else block(body, "template")


def all_workloads() -> dict[str, tuple[str, dict]]:
    out = {name: ("job", body) for name, body in TF.of_type("google_cloud_run_v2_job").items()}
    out.update({name: ("service", body) for name, body in TF.of_type("google_cloud_run_v2_service").items()})
    return out


class ParseTest(unittest.TestCase):
    def test_every_tf_file_parses(self):
        names = set(TF.files)
        for expected in ("versions.tf", "variables.tf", "main.tf", "bucket.tf", "pubsub.tf", "run.tf",
                         "scheduler.tf", "iam.tf", "secrets.tf", "monitoring.tf", "outputs.tf"):
            self.assertIn(expected, names)
        self.assertGreater(len(TF.resources), 40, "suspiciously few resources parsed")

    def test_provider_pinned_to_6x(self):
        providers = {}
        for tb in TF.terraform_blocks:
            for rp in blocks(tb, "required_providers"):
                providers.update(rp)
        self.assertIn("google", providers)
        self.assertEqual(providers["google"]["source"], "hashicorp/google")
        self.assertRegex(providers["google"]["version"], r"^~>\s*6\.\d+$")

    def test_variables_are_documented(self):
        for name, body in TF.variables.items():
            with self.subTest(variable=name):
                self.assertTrue(body.get("description"), "every variable needs a description")
                self.assertIn("type", body)

    def test_required_variables_exist(self):
        for name in ("project_id", "region", "database_instance_connection_name", "database_host", "databases",
                     "source_buckets", "backup_bucket_name", "db_backup_schedule", "storage_backup_schedule",
                     "prune_schedule", "monitor_check_schedule", "timezone", "retention_days", "image",
                     "alert_emails", "kms_key_name", "retention_policy_days", "bucket_dual_region_locations"):
            self.assertIn(name, TF.variables)
        self.assertEqual(TF.variables["db_backup_schedule"]["default"], "0 2 * * *")

    def test_image_variable_rejects_latest(self):
        conditions = " ".join(v["condition"] for v in blocks(TF.variables["image"], "validation"))
        self.assertIn(":latest", conditions)


class PublicAccessTest(unittest.TestCase):
    def test_no_public_principals_anywhere(self):
        for fname, parsed in TF.files.items():
            for s in walk_strings(parsed):
                with self.subTest(file=fname):
                    self.assertNotIn("allUsers", s)
                    self.assertNotIn("allAuthenticatedUsers", s)

    def test_monitor_service_requires_iam(self):
        monitor = TF.resource("google_cloud_run_v2_service", "monitor")
        self.assertIs(monitor.get("invoker_iam_disabled", False), False)
        invokers = [b for b in TF.bindings()
                    if b.rtype.startswith("google_cloud_run_v2_service_iam") and b.role == "roles/run.invoker"]
        self.assertEqual({a for b in invokers for a in b.member_accounts}, {"scheduler", "pubsub_push"})
        for b in invokers:
            self.assertTrue(b.member_accounts, f"{b.rname}: invoker must be a service account of this module")


class BucketTest(unittest.TestCase):
    def test_every_bucket_is_hardened(self):
        buckets = TF.of_type("google_storage_bucket")
        self.assertIn("backups", buckets)
        for name, body in buckets.items():
            with self.subTest(bucket=name):
                self.assertEqual(body.get("public_access_prevention"), "enforced")
                self.assertIs(body.get("uniform_bucket_level_access"), True)
                soft = block(body, "soft_delete_policy")
                self.assertIn("retention_duration_seconds", soft)
                self.assertNotEqual(soft["retention_duration_seconds"], 0)

    def test_backup_bucket_options(self):
        b = TF.resource("google_storage_bucket", "backups")
        self.assertIs(b.get("force_destroy"), False)
        self.assertEqual(block(b, "lifecycle").get("prevent_destroy"), True)
        coldline = [d for d in dynamic_blocks(b, "lifecycle_rule")
                    + [{"content": [r]} for r in blocks(b, "lifecycle_rule")]
                    for c in blocks(d, "content")
                    if block(c, "action").get("storage_class") == "COLDLINE"]
        self.assertTrue(coldline, "a lifecycle rule must move backups to COLDLINE by age")
        rule = block(coldline[0], "content")
        self.assertEqual(block(rule, "action")["type"], "SetStorageClass")
        self.assertIn("age", block(rule, "condition"))
        self.assertTrue(dynamic_blocks(b, "retention_policy"), "optional retention policy")
        self.assertTrue(dynamic_blocks(b, "encryption"), "optional customer-managed key")
        self.assertTrue(dynamic_blocks(b, "custom_placement_config"), "optional dual-region")
        sd = TF.variables["soft_delete_retention_days"]
        self.assertGreaterEqual(sd["default"], 7)

    def test_no_storage_admin_and_no_basic_roles_at_project_level(self):
        for b in TF.bindings():
            if b.level not in ("project", "folder", "organization"):
                continue
            with self.subTest(binding=b.rname):
                self.assertFalse(b.role.startswith("roles/storage."), f"{b.rname} grants {b.role} project-wide")
                self.assertNotIn(b.role, {"roles/owner", "roles/editor", "roles/viewer"})
                self.assertFalse(b.role.startswith("roles/secretmanager."), "secrets are granted per secret")
                self.assertFalse(b.role.startswith("roles/pubsub."), "Pub/Sub is granted per topic")
                self.assertFalse(b.role.startswith("roles/run."), "Cloud Run is granted per job/service")
        for b in TF.bindings():
            with self.subTest(binding=b.rname):
                self.assertNotEqual(b.role, "roles/storage.admin")

    def test_cloudsql_client_is_limited_to_the_instance(self):
        for b in TF.bindings():
            if b.role == "roles/cloudsql.client":
                self.assertEqual(b.member_accounts, {"db_backup", "restore"})
                cond = block(b.body, "condition")
                self.assertIn("sqladmin.googleapis.com/Instance", cond["expression"])
                self.assertIn("instances/", cond["expression"])


class ServiceAccountTest(unittest.TestCase):
    def test_each_workload_has_its_own_service_account(self):
        accounts = TF.of_type("google_service_account")
        seen: dict[str, str] = {}
        for name, (kind, body) in all_workloads().items():
            with self.subTest(workload=name):
                sa = runtime_template(body, kind).get("service_account", "")
                sa_name = ref_name(sa, "google_service_account")
                self.assertIsNotNone(sa_name, f"{name} must run as a service account of this module")
                self.assertIn(sa_name, accounts)
                self.assertNotIn(sa_name, seen, f"{name} shares its service account with {seen.get(sa_name)}")
                self.assertNotIn(sa_name, {"scheduler", "pubsub_push", "deployer"})
                seen[sa_name] = name
        self.assertEqual(len(seen), 6)

    def test_job_names_and_binaries(self):
        jobs = TF.of_type("google_cloud_run_v2_job")
        self.assertEqual(set(jobs), set(PROGRAM_JOBS))
        for rname, job_name in PROGRAM_JOBS.items():
            with self.subTest(job=job_name):
                self.assertEqual(jobs[rname]["name"], job_name)
                self.assertEqual(container(jobs[rname], "job")["command"], [f"/usr/local/bin/{job_name}"])
        monitor = TF.resource("google_cloud_run_v2_service", "monitor")
        self.assertEqual(monitor["name"], "monitor")
        self.assertEqual(container(monitor, "service")["command"], ["/usr/local/bin/monitor"])
        self.assertEqual(set(TF.of_type("google_cloud_run_v2_service")), {"monitor"})

    def test_db_backup_cannot_delete(self):
        custom_roles = TF.of_type("google_project_iam_custom_role")
        for b in TF.bindings():
            if "db_backup" not in b.member_accounts:
                continue
            with self.subTest(binding=b.rname, role=b.role):
                self.assertNotIn(b.role, DELETE_CAPABLE_STORAGE_ROLES)
                custom = ref_name(b.role, "google_project_iam_custom_role")
                if custom:
                    perms = custom_roles[custom]["permissions"]
                    self.assertFalse([p for p in perms if p.endswith(".delete")], perms)
                self.assertIn(b.role, {"roles/storage.objectViewer", "roles/storage.objectCreator",
                                       "roles/pubsub.publisher", "roles/secretmanager.secretAccessor",
                                       "roles/cloudsql.client"})

    def test_only_prune_deletes_backups_and_monitor_only_state(self):
        custom_roles = TF.of_type("google_project_iam_custom_role")
        deleters = set()
        for b in TF.bindings():
            if b.rtype != "google_storage_bucket_iam_member" or "google_storage_bucket.backups." not in " ".join(b.targets):
                continue
            custom = ref_name(b.role, "google_project_iam_custom_role")
            can_delete = b.role in DELETE_CAPABLE_STORAGE_ROLES or (
                custom is not None and "storage.objects.delete" in custom_roles[custom]["permissions"])
            if not can_delete:
                continue
            deleters |= b.member_accounts
            with self.subTest(binding=b.rname):
                self.assertTrue(b.conditions, f"{b.rname}: delete rights must be limited by a name-prefix condition")
                expr = b.conditions[0]["expression"]
                if b.member_accounts == {"monitor"}:
                    self.assertIn("state/", expr)
                    self.assertNotIn("db/", expr)
                else:
                    self.assertEqual(b.member_accounts, {"prune"})
                    self.assertNotIn("state/", expr)
        self.assertEqual(deleters, {"prune", "monitor"})

    def test_writers_are_limited_to_their_prefix(self):
        for b in TF.bindings():
            if b.role == "roles/storage.objectCreator" and "google_storage_bucket.backups." in " ".join(b.targets):
                with self.subTest(binding=b.rname):
                    expr = block(b.body, "condition")["expression"]
                    expected = {"db_backup": "db/", "storage_backup": "storage/"}[next(iter(b.member_accounts))]
                    self.assertIn(expected, expr)

    def test_results_topic_publishers(self):
        publishers = set()
        for b in TF.bindings():
            if b.role == "roles/pubsub.publisher" and any("google_pubsub_topic.results." in t for t in b.targets):
                self.assertEqual(b.rtype, "google_pubsub_topic_iam_member")
                publishers |= b.member_accounts
        self.assertEqual(publishers, {"db_backup", "storage_backup", "restore", "prune", "health", "monitor"})

    def test_storage_backup_reads_each_source_bucket(self):
        b = TF.resource("google_storage_bucket_iam_member", "source_reader")
        self.assertIn("source_bucket_names", b["for_each"])
        self.assertEqual(b["role"], "roles/storage.objectViewer")
        self.assertEqual(service_account_refs(b["member"]), {"storage_backup"})


class SchedulerTest(unittest.TestCase):
    def test_each_scheduler_job_targets_an_existing_job_or_the_monitor(self):
        jobs = TF.of_type("google_cloud_run_v2_job")
        services = TF.of_type("google_cloud_run_v2_service")
        scheduled_jobs, service_calls = set(), set()
        schedulers = TF.of_type("google_cloud_scheduler_job")
        self.assertTrue(schedulers)
        api = TF.locals["run_jobs_api"]
        self.assertEqual(api, "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs")
        for name, body in schedulers.items():
            with self.subTest(scheduler=name):
                self.assertEqual(body["time_zone"], "${var.timezone}")
                target = block(body, "http_target")
                self.assertEqual(target.get("http_method"), "POST")
                uri = target["uri"]
                has_oauth, has_oidc = bool(blocks(target, "oauth_token")), bool(blocks(target, "oidc_token"))
                self.assertTrue(has_oauth != has_oidc, "exactly one of oauth_token / oidc_token")
                if has_oauth:
                    m = re.fullmatch(r"\$\{local\.run_jobs_api\}/\$\{google_cloud_run_v2_job\.([a-z_]+)\.name\}:run", uri)
                    self.assertIsNotNone(m, f"{uri} is not a Run Admin API jobs/NAME:run call by reference")
                    self.assertIn(m.group(1), jobs)
                    scheduled_jobs.add(m.group(1))
                    token = block(target, "oauth_token")
                else:
                    m = re.fullmatch(r"\$\{google_cloud_run_v2_service\.([a-z_]+)\.uri\}/check", uri)
                    self.assertIsNotNone(m, uri)
                    self.assertIn(m.group(1), services)
                    service_calls.add(m.group(1))
                    token = block(target, "oidc_token")
                    self.assertEqual(token["audience"], f"${{google_cloud_run_v2_service.{m.group(1)}.uri}}")
                self.assertEqual(service_account_refs(token["service_account_email"]), {"scheduler"})
        self.assertEqual(scheduled_jobs, SCHEDULED_JOBS)
        self.assertNotIn("restore", scheduled_jobs)
        self.assertEqual(service_calls, {"monitor"})

    def test_scheduler_may_run_exactly_the_scheduled_jobs(self):
        b = TF.resource("google_cloud_run_v2_job_iam_member", "scheduler_runs_job")
        self.assertEqual(b["role"], "roles/run.invoker")
        self.assertEqual({ref_name(v, "google_cloud_run_v2_job") for v in b["for_each"].values()}, SCHEDULED_JOBS)
        for other in TF.bindings():
            if "scheduler" in other.member_accounts:
                self.assertEqual(other.role, "roles/run.invoker", other.rname)


class PubSubTest(unittest.TestCase):
    def test_push_subscription_uses_oidc_and_dead_letters(self):
        pushes = {n: s for n, s in TF.of_type("google_pubsub_subscription").items() if blocks(s, "push_config")}
        self.assertEqual(set(pushes), {"monitor_push"})
        for name, sub in pushes.items():
            with self.subTest(subscription=name):
                push = block(sub, "push_config")
                self.assertEqual(push["push_endpoint"], "${google_cloud_run_v2_service.monitor.uri}/pubsub")
                oidc = block(push, "oidc_token")
                self.assertEqual(service_account_refs(oidc["service_account_email"]), {"pubsub_push"})
                self.assertEqual(oidc["audience"], "${google_cloud_run_v2_service.monitor.uri}")
                dlp = block(sub, "dead_letter_policy")
                self.assertEqual(dlp["dead_letter_topic"], "${google_pubsub_topic.dead_letter.id}")
        dead_letter_subs = [s for s in TF.of_type("google_pubsub_subscription").values()
                            if s["topic"] == "${google_pubsub_topic.dead_letter.id}"]
        self.assertEqual(len(dead_letter_subs), 1)


class SecretsTest(unittest.TestCase):
    def _env_sources(self, body: dict, kind: str) -> tuple[list[dict], list[str]]:
        c = container(body, kind)
        static = blocks(c, "env")
        dynamic = [d["for_each"] for d in dynamic_blocks(c, "env")]
        return static, dynamic

    def test_secrets_only_through_secret_key_ref(self):
        for name, (kind, body) in all_workloads().items():
            static, dynamic = self._env_sources(body, kind)
            for env in static:
                with self.subTest(workload=name, env=env.get("name")):
                    if env["name"] in SECRET_ENV_NAMES:
                        self.assertNotIn("value", env, "secret given as a plain value")
                        ref = block(block(env, "value_source"), "secret_key_ref")
                        self.assertIsNotNone(ref_name(ref["secret"], "google_secret_manager_secret"))
                        self.assertEqual(ref["version"], "latest")
            for for_each in dynamic:
                local = re.search(r"local\.([a-z_]+)", for_each).group(1)
                keys = self._local_env_keys(local)
                self.assertFalse(keys & SECRET_ENV_NAMES, f"{name}: {local} carries a secret as plain env")
        for fname, parsed in TF.files.items():
            for s in walk_strings(parsed):
                self.assertNotEqual(s, "secret_data", f"{fname}: secret values do not belong in Terraform")

    def _local_env_keys(self, local: str, depth: int = 0) -> set[str]:
        value = TF.locals[local]
        if isinstance(value, dict):
            return set(value)
        keys: set[str] = set()
        # merge(local.a, local.b, { ... }) as an expression string
        for inner in re.findall(r"local\.([a-z_]+)", value):
            if depth < 5:
                keys |= self._local_env_keys(inner, depth + 1)
        keys |= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", value))
        return keys

    def test_programs_get_the_secrets_they_need(self):
        expect = {"db_backup": {"PGPASSWORD"}, "restore": {"PGPASSWORD"}, "monitor": {"SLACK_WEBHOOK_URL"}}
        for name, (kind, body) in all_workloads().items():
            static, _ = self._env_sources(body, kind)
            got = {e["name"] for e in static if e["name"] in SECRET_ENV_NAMES}
            self.assertEqual(got, expect.get(name, set()), name)

    def test_secret_accessors_are_per_secret_and_per_account(self):
        readers: dict[str, set[str]] = {}
        for b in TF.bindings():
            if b.role == "roles/secretmanager.secretAccessor":
                self.assertEqual(b.rtype, "google_secret_manager_secret_iam_member")
                secret = ref_name(" ".join(b.targets), "google_secret_manager_secret")
                readers.setdefault(secret, set()).update(b.member_accounts)
        self.assertEqual(readers, {"db_password": {"db_backup", "restore"}, "slack_webhook": {"monitor"}})

    def test_program_environment(self):
        common = self._local_env_keys("common_env")
        self.assertTrue({"LIFEBOAT_DESTINATION", "BACKUP_BUCKET_NAME", "BACKUP_SOURCE", "LIFEBOAT_RESULTS_TOPIC",
                         "GOOGLE_CLOUD_PROJECT", "BACKUP_TIMEZONE", "BACKUP_RETENTION_DAYS", "BACKUP_ALERT_EMAILS",
                         "RUST_LOG"} <= common, common)
        self.assertTrue({"PGHOST", "PGPORT", "PGUSER", "BACKUP_DATABASES", "BACKUP_COMPRESSION"}
                        <= self._local_env_keys("db_backup_env"))
        self.assertIn("SOURCE_BUCKETS", self._local_env_keys("storage_backup_env"))
        self.assertTrue({"BACKUP_KEEP_LAST", "BACKUP_KEEP_DAILY", "BACKUP_KEEP_WEEKLY", "BACKUP_KEEP_MONTHLY"}
                        <= self._local_env_keys("prune_env"))
        self.assertTrue({"BACKUP_MAX_AGE", "ALERT_REMINDER_INTERVAL", "LIFEBOAT_ALLOWED_INVOKERS"}
                        <= self._local_env_keys("monitor_env"))
        self.assertEqual(service_account_refs(TF.locals["monitor_env"]), {"pubsub_push", "scheduler"})
        wiring = {"db_backup": "db_backup_env", "storage_backup": "storage_backup_env", "restore": "restore_env",
                  "prune": "prune_env", "health": "health_env", "monitor": "monitor_env"}
        for name, (kind, body) in all_workloads().items():
            _, dynamic = self._env_sources(body, kind)
            self.assertEqual(len(dynamic), 1, name)
            self.assertIn(f"local.{wiring[name]}", dynamic[0])

    def test_cloud_sql_volume_for_database_jobs(self):
        self.assertEqual(TF.locals["pg_host"],
                         '${local.use_cloudsql ? "/cloudsql/${var.database_instance_connection_name}" : var.database_host}')
        for name in ("db_backup", "restore"):
            with self.subTest(job=name):
                tmpl = runtime_template(TF.resource("google_cloud_run_v2_job", name), "job")
                vols = dynamic_blocks(tmpl, "volumes")
                self.assertTrue(vols)
                content = block(vols[0], "content")
                self.assertEqual(block(content, "cloud_sql_instance")["instances"],
                                 ["${var.database_instance_connection_name}"])
                mounts = dynamic_blocks(container(TF.resource("google_cloud_run_v2_job", name), "job"), "volume_mounts")
                self.assertEqual(block(mounts[0], "content")["mount_path"], "/cloudsql")


class MonitoringTest(unittest.TestCase):
    def test_alert_on_failed_job_executions_by_email(self):
        policies = TF.of_type("google_monitoring_alert_policy")
        failed = [p for p in policies.values()
                  if any("run.googleapis.com/job/completed_execution_count" in block(c, "condition_threshold")["filter"]
                         and '\\"failed\\"' in block(c, "condition_threshold")["filter"]
                         for c in blocks(p, "conditions") if blocks(c, "condition_threshold"))]
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0]["notification_channels"], "${local.notification_channels}")
        channels = TF.resource("google_monitoring_notification_channel", "email")
        self.assertEqual(channels["type"], "email")
        self.assertIn("var.alert_emails", channels["for_each"])
        for name, p in policies.items():
            self.assertEqual(p["notification_channels"], "${local.notification_channels}", name)


class OutputsTest(unittest.TestCase):
    def test_outputs(self):
        for name in ("backup_bucket", "results_topic", "job_names", "backup_now_commands", "restore_commands"):
            self.assertIn(name, TF.outputs)
        now = TF.outputs["backup_now_commands"]["value"]
        self.assertTrue(now["db_backup"].startswith("gcloud run jobs execute ${google_cloud_run_v2_job.db_backup.name}"))
        restore = TF.outputs["restore_commands"]["value"]
        self.assertTrue(all(v.startswith("gcloud run jobs execute ${google_cloud_run_v2_job.restore.name}")
                            for v in restore.values()))
        self.assertIn("--args=list,--database,", restore["list_backups"])
        self.assertIn("--target", restore["restore_database"])
        self.assertIn("--target-prefix", restore["restore_bucket"])


if __name__ == "__main__":
    unittest.main()
