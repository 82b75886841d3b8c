"""Structural checks of terraform/ (no terraform binary: python-hcl2 parses the files).

They pin down the security and wiring rules of issue 6 so a later edit cannot silently drop
them: no public principals, a hardened backup bucket, one service account per program with
least privilege, schedulers that point at jobs that exist, secrets only through Secret Manager.
The Cloud Run jobs and their schedules are one for_each resource each (issue 9); the checks
read their instances (_hcl.Terraform.instances), and the `moved` blocks that carry deployments
made before that.
"""

from __future__ import annotations

import re
import unittest

import _hcl
from _hcl import block, blocks, dynamic_blocks, service_account_refs, walk_strings

# Cloud Run job name (= key in local.jobs = binary name) -> its own service account resource.
PROGRAM_JOBS = {
    "db-backup": "db_backup",
    "storage-backup": "storage_backup",
    "restore": "restore",
    "prune": "prune",
    "health": "health",
    "drill": "drill",
}
SCHEDULED_JOBS = {"db-backup", "storage-backup", "prune", "health", "drill"}
DATABASE_JOBS = {"db-backup", "restore", "drill"}
SECRET_ENV_NAMES = {"PGPASSWORD", "SLACK_WEBHOOK_URL", "BACKUP_ENCRYPTION_IDENTITY", "DRILL_PGPASSWORD"}

# Addresses of deployments made before issue 9 -> where their state lives now (terraform/moved.tf).
OLD_ADDRESSES = {
    "google_cloud_run_v2_job.db_backup": 'google_cloud_run_v2_job.job["db-backup"]',
    "google_cloud_run_v2_job.storage_backup": 'google_cloud_run_v2_job.job["storage-backup"]',
    "google_cloud_run_v2_job.restore": 'google_cloud_run_v2_job.job["restore"]',
    "google_cloud_run_v2_job.prune": 'google_cloud_run_v2_job.job["prune"]',
    "google_cloud_run_v2_job.health": 'google_cloud_run_v2_job.job["health"]',
    "google_cloud_scheduler_job.db_backup": 'google_cloud_scheduler_job.job["db-backup"]',
    "google_cloud_scheduler_job.storage_backup[0]": 'google_cloud_scheduler_job.job["storage-backup"]',
    "google_cloud_scheduler_job.prune": 'google_cloud_scheduler_job.job["prune"]',
    "google_cloud_scheduler_job.health": 'google_cloud_scheduler_job.job["health"]',
}

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


def job_ref(value: str) -> str | None:
    """'${google_cloud_run_v2_job.job["prune"].name}' -> 'prune' (the key of the job instance)."""
    m = re.search(r'google_cloud_run_v2_job\.job\["([^"]+)"\]', value)
    return m.group(1) if m else None


def jobs() -> dict[str, dict]:
    """The Cloud Run job instances, by program name."""
    return TF.instances("google_cloud_run_v2_job", "job")


def container(job_or_service: dict, kind: str) -> dict:
    if kind == "job":
        tmpl = block(block(job_or_service, "template"), "template")
    else:
        tmpl = block(job_or_service, "template")
    return block(tmpl, "containers")


def runtime_template(body: dict, kind: str) -> dict:
    return block(block(body, "template"), "template") if kind == "job" else block(body, "template")


def all_workloads() -> dict[str, tuple[str, dict]]:
    """Every Cloud Run job instance (by program name) and service (by resource name = program name)."""
    assert set(TF.of_type("google_cloud_run_v2_job")) == {"job"}, "the jobs are one for_each resource"
    out = {name: ("job", body) for name, body in jobs().items()}
    out.update({name: ("service", body) for name, body in TF.of_type("google_cloud_run_v2_service").items()})
    return out


class ParseTest(unittest.TestCase):
    def test_every_tf_file_parses(self):
        names = set(TF.files)
        for expected in ("versions.tf", "variables.tf", "main.tf", "bucket.tf", "pubsub.tf", "run.tf",
                         "scheduler.tf", "iam.tf", "secrets.tf", "monitoring.tf", "outputs.tf", "moved.tf"):
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
                    if b.rtype.startswith("google_cloud_run_v2_service_iam") and b.role == "roles/run.invoker"
                    and b.rname.startswith("monitor_")]
        self.assertEqual({a for b in invokers for a in b.member_accounts}, {"scheduler", "pubsub_push"})
        for b in invokers:
            self.assertTrue(b.member_accounts, f"{b.rname}: invoker must be a service account of this module")

    def test_console_requires_iam_and_is_invoked_by_its_admins_and_viewers_only(self):
        console = TF.resource("google_cloud_run_v2_service", "console")
        self.assertIs(console.get("invoker_iam_disabled", False), False)
        invoker = TF.resource("google_cloud_run_v2_service_iam_member", "console_invoker")
        self.assertEqual(invoker["for_each"], "${local.console_members}")
        self.assertEqual(invoker["role"], "roles/run.invoker")
        members = TF.locals["console_members"]
        self.assertIn("var.console_admins", members)
        self.assertIn("var.console_viewers", members)
        self.assertNotIn("allUsers", members)

    def test_console_starts_only_the_backup_prune_and_restore_jobs(self):
        self.assertEqual(sorted(TF.locals["console_jobs"]), ["db-backup", "prune", "restore", "storage-backup"])
        grant = TF.resource("google_cloud_run_v2_job_iam_member", "console_runs_job")
        self.assertEqual(grant["role"], "roles/run.jobsExecutorWithOverrides")
        self.assertEqual(grant["for_each"], "${toset(local.console_jobs)}")
        self.assertEqual(service_account_refs(grant["member"]), {"console"})
        overrides = [b for b in TF.bindings() if b.role == "roles/run.jobsExecutorWithOverrides"]
        self.assertEqual({a for b in overrides for a in b.member_accounts}, {"console"})


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
        clients = set()
        for b in TF.bindings():
            if b.role == "roles/cloudsql.client":
                clients |= b.member_accounts
                cond = block(b.body, "condition")
                self.assertIn("sqladmin.googleapis.com/Instance", cond["expression"])
                self.assertIn("instances/", cond["expression"])
        # drill only while it restores on the backed-up server (no drill_database_host).
        self.assertEqual(clients, {"db_backup", "restore", "drill"})
        self.assertIn("!local.drill_own_server",
                      TF.resource("google_project_iam_member", "drill_cloudsql_client")["for_each"])


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
                # A map entry copied from another must not keep the other's identity.
                self.assertEqual(sa_name, PROGRAM_JOBS.get(name, name), f"{name} runs as {sa_name}")
                seen[sa_name] = name
        self.assertEqual(len(seen), 8)

    def test_job_names_and_binaries(self):
        instances = jobs()
        self.assertEqual(set(instances), set(PROGRAM_JOBS))
        for job_name, body in instances.items():
            with self.subTest(job=job_name):
                self.assertEqual(body["name"], job_name)
                self.assertEqual(container(body, "job")["name"], job_name)
                self.assertEqual(container(body, "job")["command"], [f"/usr/local/bin/{job_name}"])
                self.assertEqual(container(body, "job")["image"], "${var.image}")
        monitor = TF.resource("google_cloud_run_v2_service", "monitor")
        self.assertEqual(monitor["name"], "monitor")
        self.assertEqual(container(monitor, "service")["command"], ["/usr/local/bin/monitor"])
        self.assertEqual(set(TF.of_type("google_cloud_run_v2_service")), {"monitor", "console"})
        console = TF.resource("google_cloud_run_v2_service", "console")
        self.assertEqual(container(console, "service")["command"], ["/usr/local/bin/console"])

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
                    expected = {"db_backup": "db/", "storage_backup": "storage/", "drill": "/drills/"}[
                        next(iter(b.member_accounts))]
                    self.assertIn(expected, expr)

    def test_drill_creates_records_only_and_deletes_nothing(self):
        # Records in a drills/ folder of a backup or snapshot: never a manifest, a dump or a blob.
        grants = [b for b in TF.bindings() if "drill" in b.member_accounts
                  and "google_storage_bucket.backups." in " ".join(b.targets)]
        self.assertEqual(sorted(b.role for b in grants), ["roles/storage.objectCreator", "roles/storage.objectViewer"])
        creator = next(b for b in grants if b.role == "roles/storage.objectCreator")
        expr = block(creator.body, "condition")["expression"]
        self.assertIn('resource.name.extract("/drills/{record}").endsWith(".json")', expr)
        self.assertIn("db/", expr)
        self.assertIn("storage/", expr)

    def test_results_topic_publishers(self):
        publishers = set()
        for b in TF.bindings():
            if b.role == "roles/pubsub.publisher" and any("google_pubsub_topic.results." in t for t in b.targets):
                self.assertEqual(b.rtype, "google_pubsub_topic_iam_member")
                publishers |= b.member_accounts
        self.assertEqual(publishers, {"db_backup", "storage_backup", "restore", "prune", "health", "monitor", "console",
                                      "drill"})

    def test_storage_backup_reads_each_source_bucket(self):
        b = TF.resource("google_storage_bucket_iam_member", "source_reader")
        self.assertIn("source_bucket_names", b["for_each"])
        self.assertEqual(b["role"], "roles/storage.objectViewer")
        self.assertEqual(service_account_refs(b["member"]), {"storage_backup"})


class SchedulerTest(unittest.TestCase):
    def test_each_scheduler_job_targets_an_existing_job_or_the_monitor(self):
        job_instances = jobs()
        services = TF.of_type("google_cloud_run_v2_service")
        scheduled_jobs, service_calls = set(), set()
        self.assertEqual(set(TF.of_type("google_cloud_scheduler_job")), {"job", "monitor_check"})
        schedulers = dict(TF.instances("google_cloud_scheduler_job", "job"))
        schedulers["monitor_check"] = TF.resource("google_cloud_scheduler_job", "monitor_check")
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
                    m = re.fullmatch(r'\$\{local\.run_jobs_api\}/\$\{google_cloud_run_v2_job\.job\["([a-z-]+)"\]\.name\}:run', uri)
                    self.assertIsNotNone(m, f"{uri} is not a Run Admin API jobs/NAME:run call by reference")
                    self.assertIn(m.group(1), job_instances)
                    self.assertEqual(m.group(1), name, "a job's scheduler starts that job")
                    self.assertEqual(body["name"], f"${{var.name_prefix}}-{name}")
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

    def test_schedules(self):
        # Each scheduled job on its own variable, and only storage-backup depends on there being
        # something to do (it stays defined, and runnable by the scheduler, without source buckets).
        settings = TF.for_each_map("${local.job_settings}")
        self.assertEqual({n for n, j in settings.items() if j["schedule"] is not None}, SCHEDULED_JOBS)
        for name in SCHEDULED_JOBS:
            with self.subTest(job=name):
                self.assertEqual(settings[name]["schedule"], f"${{var.{PROGRAM_JOBS[name]}_schedule}}")
                self.assertIn(f"{PROGRAM_JOBS[name]}_schedule", TF.variables)
                expected = "${length(var.source_buckets) > 0}" if name == "storage-backup" else True
                self.assertEqual(settings[name]["schedule_enabled"], expected)
        descriptions = {n: b["description"] for n, b in TF.instances("google_cloud_scheduler_job", "job").items()}
        self.assertEqual(descriptions, {
            "db-backup": "Start the db-backup Cloud Run job",
            "storage-backup": "Start the storage-backup Cloud Run job",
            "prune": "Start the prune Cloud Run job",
            "health": "Start the health Cloud Run job (daily freshness report)",
            "drill": "Start the drill Cloud Run job",
        })
        self.assertEqual(TF.variables["db_backup_schedule"]["default"], "0 2 * * *")
        self.assertEqual(TF.variables["storage_backup_schedule"]["default"], "30 3 * * *")
        self.assertEqual(TF.variables["prune_schedule"]["default"], "0 5 * * *")
        self.assertEqual(TF.variables["health_schedule"]["default"], "0 7 * * *")
        # Drills after the backups and before the health report.
        self.assertEqual(TF.variables["drill_schedule"]["default"], "0 6 * * *")

    def test_scheduler_may_run_exactly_the_scheduled_jobs(self):
        b = TF.resource("google_cloud_run_v2_job_iam_member", "scheduler_runs_job")
        self.assertEqual(b["role"], "roles/run.invoker")
        runs = TF.for_each_map(b["for_each"])
        self.assertEqual(set(runs), SCHEDULED_JOBS)
        self.assertEqual({k: job_ref(v) for k, v in runs.items()}, {k: k for k in SCHEDULED_JOBS})
        self.assertEqual(b["name"], "${each.value}")
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
                keys = self._env_keys(for_each)
                self.assertFalse(keys & SECRET_ENV_NAMES, f"{name}: {for_each} carries a secret as plain env")
        for fname, parsed in TF.files.items():
            for s in walk_strings(parsed):
                self.assertNotEqual(s, "secret_data", f"{fname}: secret values do not belong in Terraform")

    def _env_keys(self, value, depth: int = 0) -> set[str]:
        """Environment variable names of a map: a literal, local.NAME, or an expression such as
        merge(local.a, local.b, { ... }) or a for expression over one."""
        if isinstance(value, dict):
            return set(value)
        keys: set[str] = set()
        for inner in re.findall(r"local\.([a-z_]+)", value):
            if depth < 5:
                keys |= self._env_keys(TF.locals[inner], depth + 1)
        keys |= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", value))
        return keys

    def _workload_env_keys(self, name: str) -> set[str]:
        kind, body = all_workloads()[name]
        _, dynamic = self._env_sources(body, kind)
        self.assertEqual(len(dynamic), 1, f"{name}: one dynamic block of plain env")
        return self._env_keys(dynamic[0])

    def test_programs_get_the_secrets_they_need(self):
        # The identity that decrypts dumps: restore (and drill) only, never the backup job.
        expect = {
            "db-backup": {"PGPASSWORD"},
            "restore": {"PGPASSWORD", "BACKUP_ENCRYPTION_IDENTITY"},
            # (every branch: PGPASSWORD on the backed-up server, DRILL_PGPASSWORD on a drill server)
            "drill": {"PGPASSWORD", "BACKUP_ENCRYPTION_IDENTITY", "DRILL_PGPASSWORD"},
            "monitor": {"SLACK_WEBHOOK_URL"},
        }
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
        self.assertEqual(readers, {"db_password": {"db_backup", "restore", "drill"}, "slack_webhook": {"monitor"},
                                   "backup_encryption_identity": {"restore", "drill"},
                                   "drill_db_password": {"drill"}})
        # The production password reaches drill only while it restores on the production server.
        self.assertEqual(TF.resource("google_secret_manager_secret_iam_member", "drill_db_password_accessor")["for_each"],
                         "${local.drill_own_server ? {} : {drill = google_service_account.drill.member}}")

    def test_program_environment(self):
        common = self._env_keys("${local.common_env}")
        self.assertTrue({"LIFEBOAT_DESTINATION", "BACKUP_BUCKET_NAME", "BACKUP_SOURCE", "LIFEBOAT_RESULTS_TOPIC",
                         "GOOGLE_CLOUD_PROJECT", "BACKUP_TIMEZONE", "BACKUP_RETENTION_DAYS", "BACKUP_ALERT_EMAILS",
                         "RUST_LOG"} <= common, common)
        db = {"PGHOST", "PGPORT", "PGUSER", "BACKUP_DATABASES", "BACKUP_COMPRESSION"}
        # The recipients (public keys) go where dumps are written and where freshness is judged.
        freshness = {"BACKUP_MAX_AGE", "BACKUP_MAX_UNVERIFIED_AGE", "ALERT_REMINDER_INTERVAL",
                     "BACKUP_ENCRYPTION_RECIPIENTS"}
        own = {
            "db-backup": db | {"BACKUP_ENCRYPTION_RECIPIENTS"},
            "restore": db,
            "drill": db | {"SOURCE_BUCKETS", "DRILL_PGHOST", "DRILL_PGPORT", "DRILL_PGUSER", "DRILL_SAMPLE_OBJECTS"},
            "storage-backup": {"SOURCE_BUCKETS"},
            "prune": {"BACKUP_KEEP_LAST", "BACKUP_KEEP_DAILY", "BACKUP_KEEP_WEEKLY", "BACKUP_KEEP_MONTHLY"},
            "health": freshness,
            "monitor": freshness | {"LIFEBOAT_ALLOWED_INVOKERS", "LIFEBOAT_PUSH_INVOKERS"},
            "console": freshness | {"BACKUP_DATABASES", "SOURCE_BUCKETS", "LIFEBOAT_ADMINS", "LIFEBOAT_VIEWERS",
                                    "LIFEBOAT_REGION"},
        }
        self.assertEqual(set(all_workloads()), set(own))
        for name, expected in own.items():
            with self.subTest(workload=name):
                keys = self._workload_env_keys(name)
                self.assertTrue(common <= keys, f"{name} lacks {common - keys}")
                self.assertTrue(expected <= keys, f"{name} lacks {expected - keys}")
                if name not in DATABASE_JOBS:
                    # (the list of databases is what a reader of freshness expects, not a connection)
                    self.assertFalse(keys & (db - expected), f"{name} gets the database settings")
        self.assertEqual(service_account_refs(TF.locals["monitor_env"]), {"pubsub_push", "scheduler"})
        # Per-endpoint allow-lists: each identity in its own list, never both in one.
        lists = {k: service_account_refs(v) for k, v in
                 re.findall(r"\b(LIFEBOAT_(?:ALLOWED|PUSH)_INVOKERS)\s*=\s*([^,}]+)", TF.locals["monitor_env"])}
        self.assertEqual(lists, {"LIFEBOAT_ALLOWED_INVOKERS": {"scheduler"}, "LIFEBOAT_PUSH_INVOKERS": {"pubsub_push"}})

    def test_cloud_sql_volume_for_database_jobs(self):
        self.assertEqual(TF.locals["pg_host"],
                         '${local.use_cloudsql ? "/cloudsql/${var.database_instance_connection_name}" : var.database_host}')
        for name, body in jobs().items():
            tmpl = runtime_template(body, "job")
            vols = dynamic_blocks(tmpl, "volumes")
            mounts = dynamic_blocks(container(body, "job"), "volume_mounts")
            vpc = dynamic_blocks(tmpl, "vpc_access")
            preconditions = [p["condition"] for lc in blocks(body, "lifecycle") for p in blocks(lc, "precondition")]
            with self.subTest(job=name):
                if name not in DATABASE_JOBS:
                    self.assertFalse(vols or mounts or vpc or blocks(tmpl, "volumes") or blocks(tmpl, "vpc_access"),
                                     f"{name} does not connect to the database")
                    continue
                self.assertEqual(len(vols), 1)
                self.assertEqual(vols[0]["for_each"], '${local.use_cloudsql ? ["cloudsql"] : []}')
                content = block(vols[0], "content")
                self.assertEqual(block(content, "cloud_sql_instance")["instances"],
                                 ["${var.database_instance_connection_name}"])
                self.assertEqual(mounts[0]["for_each"], '${local.use_cloudsql ? ["cloudsql"] : []}')
                self.assertEqual(block(mounts[0], "content")["mount_path"], "/cloudsql")
                self.assertEqual(vpc[0]["for_each"], '${local.use_vpc ? ["vpc"] : []}')
                self.assertEqual(block(vpc[0], "content")["egress"], "PRIVATE_RANGES_ONLY")
                self.assertIn('${var.database_instance_connection_name != "" || var.database_host != ""}',
                              preconditions, "planning must fail without a database connection")


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
        # The failed-execution alert covers every job, a job added later included.
        self.assertIn("${join(\"|\", local.lifeboat_jobs)}", block(blocks(failed[0], "conditions")[0],
                                                                  "condition_threshold")["filter"])
        self.assertEqual(TF.locals["lifeboat_jobs"], "${[for job in google_cloud_run_v2_job.job : job.name]}")


class OutputsTest(unittest.TestCase):
    def test_outputs(self):
        for name in ("backup_bucket", "results_topic", "job_names", "backup_now_commands", "restore_commands"):
            self.assertIn(name, TF.outputs)
        now = {k: TF.resolve_local_lookups(v) for k, v in TF.outputs["backup_now_commands"]["value"].items()}
        for key, job in (("db_backup", "db-backup"), ("storage_backup", "storage-backup"), ("health", "health"),
                         ("prune_dry_run", "prune")):
            self.assertTrue(now[key].startswith(f'gcloud run jobs execute ${{google_cloud_run_v2_job.job["{job}"].name}} '
                                                "${local.gcloud_flags} --wait"), now[key])
        self.assertTrue(now["prune_dry_run"].endswith("--args=--dry-run"))
        restore = {k: TF.resolve_local_lookups(v) for k, v in TF.outputs["restore_commands"]["value"].items()}
        self.assertTrue(all(v.startswith('gcloud run jobs execute ${google_cloud_run_v2_job.job["restore"].name} '
                                         "${local.gcloud_flags} --wait --args=")
                            for v in restore.values()), restore)
        self.assertIn("--args=list,--database,", restore["list_backups"])
        self.assertIn("--target", restore["restore_database"])
        self.assertIn("--target-prefix", restore["restore_bucket"])

    def test_job_names_output_keeps_its_keys(self):
        # Scripts read `terraform output job_names`: its keys stay the underscored ones.
        value = TF.outputs["job_names"]["value"]
        self.assertEqual(value, '${{for name, job in google_cloud_run_v2_job.job : replace(name, "-", "_") => job.name}}')


class JobSettingsTest(unittest.TestCase):
    """What each job gets once local.job_defaults are filled in: timeouts, retries, size."""

    EXPECTED = {
        # job: (timeout, max_retries, cpu, memory)
        "db-backup": ("${var.db_backup_timeout}", "${var.job_max_retries}",
                      "${var.db_backup_resources.cpu}", "${var.db_backup_resources.memory}"),
        "storage-backup": ("${var.storage_backup_timeout}", "${var.job_max_retries}", "1", "1Gi"),
        "restore": ("${var.restore_timeout}", 0, "${var.db_backup_resources.cpu}", "${var.db_backup_resources.memory}"),
        "prune": ("3600s", "${var.job_max_retries}", "1", "512Mi"),
        "health": ("900s", "${var.job_max_retries}", "1", "512Mi"),
        "drill": ("${var.drill_timeout}", 0, "${var.db_backup_resources.cpu}", "${var.db_backup_resources.memory}"),
    }

    def test_runtime_settings(self):
        instances = jobs()
        self.assertEqual(set(instances), set(self.EXPECTED))
        for name, (timeout, retries, cpu, memory) in self.EXPECTED.items():
            with self.subTest(job=name):
                body = instances[name]
                self.assertEqual(body["deletion_protection"], "${var.deletion_protection}")
                outer = block(body, "template")
                self.assertEqual((outer["task_count"], outer["parallelism"]), (1, 1))
                tmpl = runtime_template(body, "job")
                self.assertEqual(tmpl["timeout"], timeout)
                self.assertEqual(tmpl["max_retries"], retries)
                self.assertEqual(tmpl["execution_environment"], "EXECUTION_ENVIRONMENT_GEN2")
                limits = block(container(body, "job"), "resources")["limits"]
                self.assertEqual((limits["cpu"], limits["memory"]), (cpu, memory))
                ignored = block(body, "lifecycle")["ignore_changes"]
                self.assertIn("${template[0].template[0].containers[0].image}", ignored,
                              "cloudbuild.yaml rolls out images; terraform must not roll them back")

    def test_jobs_wait_for_their_grants(self):
        # depends_on is one list for all instances: it must hold every grant a job's first run needs.
        deps = set(TF.resource("google_cloud_run_v2_job", "job")["depends_on"])
        for grant in ("google_secret_manager_secret_iam_member.db_password_accessor",
                      "google_secret_manager_secret_iam_member.backup_encryption_identity_accessor",
                      "google_storage_bucket_iam_member.backups_reader",
                      "google_storage_bucket_iam_member.db_backup_creator",
                      "google_storage_bucket_iam_member.storage_backup_creator",
                      "google_storage_bucket_iam_member.prune_deleter",
                      "google_storage_bucket_iam_member.drill_backups_reader",
                      "google_storage_bucket_iam_member.drill_records_creator",
                      "google_secret_manager_secret_iam_member.drill_db_password_accessor",
                      "google_secret_manager_secret_iam_member.drill_identity_accessor",
                      "google_secret_manager_secret_iam_member.drill_db_password_reader"):
            self.assertIn(f"${{{grant}}}", deps)

    def test_cloudbuild_rolls_out_every_job(self):
        # cloudbuild.yaml cannot read the Terraform: its job list must name exactly the jobs.
        text = (_hcl.REPO / "cloudbuild.yaml").read_text(encoding="utf-8")
        listed = re.search(r"^\s*_JOBS:\s*(.+)$", text, re.M).group(1).split("#")[0].split()
        self.assertEqual(sorted(listed), sorted(jobs()))
        services = re.search(r"^\s*_SERVICES:\s*(.+)$", text, re.M).group(1).split("#")[0].split()
        self.assertEqual(set(services), set(TF.of_type("google_cloud_run_v2_service")))


class MovedTest(unittest.TestCase):
    """Deployments made before the for_each resources keep their objects (terraform/moved.tf)."""

    def test_every_old_address_is_moved(self):
        moves = {m["from"]: m["to"] for m in TF.moved}
        self.assertEqual(len(moves), len(TF.moved), "one moved block per old address")
        for old, new in OLD_ADDRESSES.items():
            with self.subTest(address=old):
                self.assertEqual(moves.get(old), new, f"{old} needs `moved {{ from = {old}, to = {new} }}`")

    def test_moves_lead_to_instances_that_exist(self):
        for m in TF.moved:
            with self.subTest(address=m["from"]):
                target = re.fullmatch(r'(\w+)\.(\w+)\["([^"]+)"\]', m["to"])
                self.assertIsNotNone(target, m["to"])
                rtype, rname, key = target.groups()
                self.assertIn(key, TF.instances(rtype, rname))
                source = re.fullmatch(r"(\w+)\.(\w+)(\[\d+\])?", m["from"])
                self.assertIsNotNone(source, m["from"])
                self.assertEqual(source.group(1), rtype, "a move keeps the resource type")
                self.assertNotIn((source.group(1), source.group(2)), TF.resources,
                                 f"{m['from']} is still defined: Terraform refuses the move")


if __name__ == "__main__":
    unittest.main()
