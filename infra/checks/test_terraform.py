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
SECRET_ENV_NAMES = {"PGPASSWORD", "SLACK_WEBHOOK_URL", "BACKUP_ENCRYPTION_IDENTITY", "SENTRY_DSN", "DRILL_PGPASSWORD"}

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

# The programs that judge freshness: each must be told which sources to expect (issue 11).
# drill too: it reads what it must verify the same way.
FRESHNESS_READERS = {"health", "monitor", "console", "drill"}
EXPECTED_SOURCE_VARS = {"BACKUP_DATABASES": "var.databases", "SOURCE_BUCKETS": "var.source_buckets"}

# What a storage role lets a request do, for the grants on lifeboat's buckets.
ROLE_OPERATIONS = {
    "roles/storage.objectViewer": {"get", "list"},
    "roles/storage.objectCreator": {"create"},
    "roles/storage.objectUser": {"get", "list", "create", "delete"},
    "roles/storage.objectAdmin": {"get", "list", "create", "delete"},
    "roles/storage.admin": {"get", "list", "create", "delete"},
}
PERMISSION_OPERATIONS = {"storage.objects.get": "get", "storage.objects.list": "list",
                         "storage.objects.create": "create", "storage.objects.delete": "delete"}

# Placeholders of the condition texts once their locals are written out: bucket "B" (backups)
# or "S" (state), no backup_prefix.
CONDITION_PLACEHOLDERS = {
    "objects_resource_prefix": "projects/_/buckets/B/objects/",
    "state_objects_resource_prefix": "projects/_/buckets/S/objects/",
    "object_root": "",
}


def expand_locals(text: str, depth: int = 0) -> str:
    """A condition expression with its ${local.NAME} pieces written out (the prefixes become the
    CONDITION_PLACEHOLDERS)."""
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name in CONDITION_PLACEHOLDERS:
            return CONDITION_PLACEHOLDERS[name]
        value = TF.local_value(name)
        assert isinstance(value, str) and depth < 10, f"local.{name} is not a condition piece"
        return expand_locals(value, depth + 1)
    out = re.sub(r"\$\{local\.(\w+)\}", one, text)
    assert "${" not in out, f"cannot evaluate {out!r}"
    return out


def cel_extract(value: str, template: str) -> str:
    """CEL extract() of IAM Conditions: the text that the one {placeholder} of `template` stands
    for, at the first match of the text before it; up to the first occurrence of the text after
    it (or the end of `value` when nothing follows the placeholder); "" when there is no match."""
    m = re.fullmatch(r"([^{}]*)\{\w+\}([^{}]*)", template)
    assert m, f"unsupported extract template {template!r}"
    before, after = m.groups()
    start = value.find(before)
    if start < 0:
        return ""
    rest = value[start + len(before):]
    if not after:
        return rest
    end = rest.find(after)
    return rest[:end] if end >= 0 else ""


def condition_allows(expression: str | None, bucket: str, operation: str, name: str) -> bool:
    """Evaluates an IAM condition (the CEL subset lifeboat writes: ||, &&, parentheses,
    resource.name.startsWith/endsWith, resource.name.extract("…{x}…") followed by
    startsWith/endsWith, api.getAttribute(objectListPrefix).startsWith) for one request: `list`
    with prefix `name` (resource.name is then the bucket), any other operation on the object
    `name`. No condition: allowed."""
    if expression is None:
        return True
    cel = expand_locals(expression)
    resource = f"projects/_/buckets/{bucket}" if operation == "list" else f"projects/_/buckets/{bucket}/objects/{name}"
    list_prefix = name if operation == "list" else ""
    py = cel.replace("||", " or ").replace("&&", " and ")
    py = py.replace('api.getAttribute("storage.googleapis.com/objectListPrefix", "")', "LIST_PREFIX")
    py = re.sub(r'resource\.name\.extract\(("[^"]*")\)', r"EXTRACT(RESOURCE, \1)", py)
    py = py.replace("resource.name", "RESOURCE").replace(".startsWith(", ".startswith(").replace(".endsWith(", ".endswith(")
    known = re.sub(r"\.(startswith|endswith)\(|\bEXTRACT\(", "", py)
    assert not re.search(r"[A-Za-z_.]+\(", known), f"unknown function in {cel!r}"
    return bool(eval(py, {"__builtins__": {}},  # noqa: S307
                     {"RESOURCE": resource, "LIST_PREFIX": list_prefix, "EXTRACT": cel_extract}))


def bucket_grants(bucket_resource: str) -> list[tuple[str, set[str], str | None]]:
    """(service account, operations, condition) of every grant on google_storage_bucket.NAME."""
    custom_roles = TF.of_type("google_project_iam_custom_role")
    out = []
    for b in TF.bindings():
        if b.rtype != "google_storage_bucket_iam_member":
            continue
        if f"google_storage_bucket.{bucket_resource}." not in " ".join(b.targets):
            continue
        roles = [b.role]
        if b.role == "${each.value}":  # a for_each over roles (toset([...]))
            roles = re.findall(r'"(roles/[^"]+)"', b.body["for_each"])
        ops: set[str] = set()
        for role in roles:
            custom = ref_name(role, "google_project_iam_custom_role")
            if custom:
                ops |= {PERMISSION_OPERATIONS[p] for p in custom_roles[custom]["permissions"]}
            else:
                assert role in ROLE_OPERATIONS, f"{b.rname}: unexpected role {role}"
                ops |= ROLE_OPERATIONS[role]
        cond = b.conditions[0]["expression"] if b.conditions else None
        for account in b.member_accounts:
            out.append((account, ops, cond))
    return out


def bucket_access(bucket_resource: str, bucket: str, requests: dict[str, tuple[str, str]]) -> dict[str, set[str]]:
    """Which of the named requests (label -> (operation, name)) each service account may make."""
    access: dict[str, set[str]] = {}
    for account, ops, cond in bucket_grants(bucket_resource):
        allowed = access.setdefault(account, set())
        for label, (op, name) in requests.items():
            if op in ops and condition_allows(cond, bucket, op, name):
                allowed.add(label)
    return access


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

    def test_writers_are_limited_to_their_prefix(self):
        for b in TF.bindings():
            if b.role == "roles/storage.objectCreator" and "google_storage_bucket.backups." in " ".join(b.targets):
                with self.subTest(binding=b.rname):
                    expr = expand_locals(block(b.body, "condition")["expression"])
                    expected = {"db_backup": ["db/"], "storage_backup": ["storage/"],
                                "drill": ["db/", "storage/", "/drills/"]}[next(iter(b.member_accounts))]
                    for piece in expected:
                        self.assertIn(piece, expr)

    def test_drill_creates_records_only_and_deletes_nothing(self):
        # Records in a drills/ folder of a backup or snapshot: never a manifest, a dump or a blob.
        # It reads through the same grant as restore (backups_full_reader), never its own.
        grants = [b for b in TF.bindings() if "drill" in b.member_accounts
                  and "google_storage_bucket.backups." in " ".join(b.targets)]
        self.assertEqual(sorted((b.rname, b.role) for b in grants),
                         [("backups_full_reader", "roles/storage.objectViewer"),
                          ("drill_records_creator", "roles/storage.objectCreator")])
        for b in grants:
            self.assertTrue(b.conditions, f"{b.rname}: unconditioned on the backup bucket")
        creator = next(b for b in grants if b.role == "roles/storage.objectCreator")
        expr = expand_locals(block(creator.body, "condition")["expression"])
        self.assertIn('resource.name.extract("/drills/{record}").endsWith(".json")', expr)
        self.assertIn("objects/db/", expr)
        self.assertIn("objects/storage/", expr)
        # Nothing anywhere that could delete or overwrite.
        for b in TF.bindings():
            if "drill" in b.member_accounts:
                with self.subTest(binding=b.rname):
                    self.assertNotIn(b.role, DELETE_CAPABLE_STORAGE_ROLES)
                    self.assertIsNone(ref_name(b.role, "google_project_iam_custom_role"), b.role)

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
        """The static env blocks, and the for_each of each dynamic env block of plain values
        (a dynamic block of secret references is checked by the Sentry test)."""
        c = container(body, kind)
        static = blocks(c, "env")
        dynamic = [d["for_each"] for d in dynamic_blocks(c, "env") if "value" in block(d, "content")]
        return static, dynamic

    def _secret_env_blocks(self, body: dict, kind: str) -> list[dict]:
        return [d for d in dynamic_blocks(container(body, kind), "env") if "value_source" in block(d, "content")]

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
                                   "drill_db_password": {"drill"},
                                   "sentry_dsn": {"db_backup", "storage_backup", "restore", "prune", "health",
                                                  "monitor", "console", "drill"}})
        # drill reads the production password only while it restores on the backed-up server.
        drill_prod = TF.resource("google_secret_manager_secret_iam_member", "drill_db_password_accessor")
        self.assertRegex(drill_prod["for_each"], r"^\$\{local\.drill_own_server \? \{\} :")
        self.assertEqual(TF.locals["drill_own_server"], '${var.drill_database_host != ""}')
        plain = TF.resource("google_secret_manager_secret_iam_member", "db_password_accessor")
        self.assertNotIn("drill", TF.for_each_map(plain["for_each"]))

    def test_sentry_dsn_is_optional_and_reaches_every_program_from_its_secret(self):
        # Issue 11, optional Sentry: a secret only when enabled, SENTRY_DSN from it on every job
        # and service, readable by the programs' own service accounts only.
        self.assertIs(TF.variables["sentry_enabled"]["default"], False)
        secret = TF.resource("google_secret_manager_secret", "sentry_dsn")
        self.assertEqual(secret["count"], "${var.sentry_enabled ? 1 : 0}")
        self.assertEqual(TF.locals["sentry_secret_env"],
                         "${var.sentry_enabled ? {SENTRY_DSN = google_secret_manager_secret.sentry_dsn[0].secret_id} : {}}")
        for name, (kind, body) in all_workloads().items():
            with self.subTest(workload=name):
                sentry = [d for d in self._secret_env_blocks(body, kind) if d["for_each"] == "${local.sentry_secret_env}"]
                self.assertEqual(len(sentry), 1, f"{name} gets no SENTRY_DSN")
                ref = block(block(block(sentry[0], "content"), "value_source"), "secret_key_ref")
                self.assertEqual((ref["secret"], ref["version"]), ("${env.value}", "latest"))
                self.assertEqual(block(sentry[0], "content")["name"], "${env.key}")
                _, plain = self._env_sources(body, kind)
                self.assertNotIn("SENTRY_DSN", self._env_keys(plain[0]), f"{name}: SENTRY_DSN as plain env")
        accessor = TF.resource("google_secret_manager_secret_iam_member", "sentry_dsn_accessor")
        self.assertEqual(accessor["for_each"], "${var.sentry_enabled ? local.runtime_service_accounts : {}}")
        runtime = service_account_refs(TF.locals["runtime_service_accounts"])
        workload_accounts = {ref_name(runtime_template(b, k)["service_account"], "google_service_account")
                             for k, b in all_workloads().values()}
        self.assertEqual(runtime, workload_accounts)
        self.assertFalse(runtime & {"scheduler", "pubsub_push", "deployer"})

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
            "health": freshness | set(EXPECTED_SOURCE_VARS),
            "monitor": freshness | set(EXPECTED_SOURCE_VARS) | {"LIFEBOAT_ALLOWED_INVOKERS", "LIFEBOAT_PUSH_INVOKERS"},
            "console": freshness | set(EXPECTED_SOURCE_VARS) | {"LIFEBOAT_ADMINS", "LIFEBOAT_VIEWERS",
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

    def _env_value(self, value, key: str, depth: int = 0) -> str | None:
        """The expression an env map gives `key`: the last of merge(...)'s maps that sets it."""
        if isinstance(value, dict):
            return value.get(key)
        found = None
        for m in re.finditer(r"local\.([a-z_]+)|\b" + re.escape(key) + r"\s*=\s*((?:[^,}\n(]|\([^)]*\))+)", value):
            if m.group(1) and depth < 6:
                inner = self._env_value(TF.locals[m.group(1)], key, depth + 1)
                found = inner if inner is not None else found
            elif m.group(2):
                found = m.group(2).strip()
        return found

    def test_every_reader_of_freshness_expects_the_deployed_sources(self):
        # Issue 11: a database or bucket whose first backup never succeeds is reported missing
        # only by a reader that was told to expect it. Every reader of freshness (health,
        # monitor, console, drill) gets BACKUP_DATABASES and SOURCE_BUCKETS from
        # the same variables that db-backup and storage-backup are given.
        readers = FRESHNESS_READERS & set(all_workloads())
        self.assertEqual(readers, FRESHNESS_READERS)
        for name in sorted(readers):
            kind, body = all_workloads()[name]
            _, dynamic = self._env_sources(body, kind)
            for var, source in EXPECTED_SOURCE_VARS.items():
                with self.subTest(workload=name, env=var):
                    value = self._env_value(dynamic[0], var)
                    self.assertIsNotNone(value, f"{name} is not told {var}: a never-backed-up source goes unreported")
                    self.assertIn(source, value)
        # ... and the writers are given the same lists.
        self.assertIn("var.databases", self._env_value(TF.locals["db_env"], "BACKUP_DATABASES"))
        settings = TF.for_each_map("${local.job_settings}")
        self.assertIn("var.source_buckets", self._env_value(settings["storage-backup"]["env"], "SOURCE_BUCKETS"))

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


# Requests on the backup bucket (no backup_prefix) that tell the programs' access apart.
BACKUP_REQUESTS = {
    "list db/": ("list", "db/main/"),
    "list storage/": ("list", "storage/media/"),
    "list all": ("list", ""),
    "get dump": ("get", "db/main/app/20261126T020000Z-0a1b2c3d/dump.pgc.zst"),
    "get encrypted dump": ("get", "db/main/app/20261126T020000Z-0a1b2c3d/dump.pgc.zst.age"),
    "get manifest": ("get", "db/main/app/20261126T020000Z-0a1b2c3d/manifest.json"),
    "get drill record": ("get", "db/main/app/20261126T020000Z-0a1b2c3d/drills/20261127T040000Z.json"),
    "get snapshot header": ("get", "storage/media/snapshots/20261126T033000Z-0a1b2c3d/header.json"),
    "get snapshot part": ("get", "storage/media/snapshots/20261126T033000Z-0a1b2c3d/part-00000-of-00001.jsonl.zst"),
    "get blob": ("get", "storage/media/blobs/5d41402abc4b2a76b9719d911017c592-5"),
    "get other": ("get", "notes.txt"),
    "create db/": ("create", "db/main/app/20261126T020000Z-0a1b2c3d/dump.pgc.zst"),
    "create drill record": ("create", "db/main/app/20261126T020000Z-0a1b2c3d/drills/20261127T040000Z.json"),
    "create snapshot drill record": ("create", "storage/media/snapshots/20261126T033000Z-0a1b2c3d/drills/20261127T040000Z.json"),
    "create manifest": ("create", "db/main/app/20261126T020000Z-0a1b2c3d/manifest.json"),
    "create drills/ non-record": ("create", "db/main/app/20261126T020000Z-0a1b2c3d/drills/20261127T040000Z.txt"),
    "create drill record elsewhere": ("create", "drills/20261127T040000Z.json"),
    "create storage/": ("create", "storage/media/blobs/5d41402abc4b2a76b9719d911017c592-5"),
    "create state/": ("create", "state/monitor/incidents.json"),
    "delete dump": ("delete", "db/main/app/20261126T020000Z-0a1b2c3d/dump.pgc.zst"),
    "delete blob": ("delete", "storage/media/blobs/5d41402abc4b2a76b9719d911017c592-5"),
    "delete other": ("delete", "notes.txt"),
}
STATE_REQUESTS = {
    "list monitor": ("list", "state/monitor/messages/"),
    "get incidents": ("get", "state/monitor/incidents.json"),
    "create incidents": ("create", "state/monitor/incidents.json"),
    "delete message": ("delete", "state/monitor/messages/0a1b"),
    "list claims": ("list", "state/storage-backup/executions/media/"),
    "get claim": ("get", "state/storage-backup/executions/media/storage-backup-x7k2p.json"),
    "create claim": ("create", "state/storage-backup/executions/media/storage-backup-x7k2p.json"),
    "delete claim": ("delete", "state/storage-backup/executions/media/storage-backup-x7k2p.json"),
    "list all": ("list", ""),
}


class LeastPrivilegeTest(unittest.TestCase):
    """Issue 11: each program reaches only the objects its code reads, writes or deletes."""

    def test_condition_evaluator_tells_requests_apart(self):
        # The checks below rest on this small CEL evaluator: it must see prefixes and suffixes.
        expr = "${local.list_db} || (${local.object_db} && ${local.is_json})"
        self.assertTrue(condition_allows(expr, "B", "list", "db/main/"))
        self.assertFalse(condition_allows(expr, "B", "list", ""))
        self.assertFalse(condition_allows(expr, "B", "list", "storage/"))
        self.assertTrue(condition_allows(expr, "B", "get", "db/x/manifest.json"))
        self.assertFalse(condition_allows(expr, "B", "get", "db/x/dump.pgc.zst"))
        self.assertFalse(condition_allows(expr, "S", "get", "db/x/manifest.json"), "another bucket")
        self.assertTrue(condition_allows(None, "B", "get", "anything"))
        # extract(): what follows the first /drills/ ("" without one).
        self.assertEqual(cel_extract("db/x/drills/1.json", "/drills/{record}"), "1.json")
        self.assertEqual(cel_extract("db/x/manifest.json", "/drills/{record}"), "")
        self.assertEqual(cel_extract("a/b/c", "a/{x}/"), "b")
        # drill's grants, request by request (the conditions as deployed).
        drill = [(ops_, cond) for account, ops_, cond in bucket_grants("backups") if account == "drill"]
        self.assertTrue(drill)

        def drill_may(op: str, name: str, bucket: str = "B") -> bool:
            return any(op in ops_ and condition_allows(cond, bucket, op, name) for ops_, cond in drill)

        self.assertTrue(drill_may("get", "db/x/y/z/dump.pgc.zst.age"), "reads a dump")
        self.assertTrue(drill_may("get", "storage/b/blobs/5d41402abc4b2a76b9719d911017c592-5"), "reads a blob")
        self.assertTrue(drill_may("list", "db/x/"))
        self.assertTrue(drill_may("create", "db/x/y/z/drills/20261202T000000Z.json"), "creates its record")
        self.assertTrue(drill_may("create", "storage/b/snapshots/s/drills/20261202T000000Z.json"))
        self.assertFalse(drill_may("create", "db/x/y/z/manifest.json"), "creates no manifest")
        self.assertFalse(drill_may("create", "db/x/y/z/dump.pgc.zst"), "creates no dump")
        self.assertFalse(drill_may("create", "db/x/y/z/drills/20261202T000000Z.txt"))
        self.assertFalse(drill_may("create", "drills/20261202T000000Z.json"), "outside db/ and storage/")
        self.assertFalse(drill_may("delete", "db/x/y/z/drills/20261202T000000Z.json"), "deletes nothing")
        self.assertFalse(drill_may("delete", "db/x/y/z/dump.pgc.zst"))
        self.assertFalse(drill_may("list", ""), "lists db/ and storage/ only")
        self.assertFalse(drill_may("get", "notes.txt"))
        self.assertFalse(drill_may("get", "state/monitor/incidents.json"))

    def test_backup_bucket_access_follows_what_each_program_reads(self):
        lists = {"list db/", "list storage/"}
        expected = {
            # the manifests of earlier backups (the previous size, for progress); creates under db/
            "db_backup": {"list db/", "get manifest", "create db/", "create drill record", "create manifest",
                          "create drills/ non-record"},
            # the previous snapshot's header, summaries and parts; creates blobs and snapshots
            "storage_backup": {"list storage/", "get snapshot header", "get snapshot part", "create storage/",
                               "create snapshot drill record"},
            # everything it restores from
            "restore": lists | {"get dump", "get encrypted dump", "get manifest", "get drill record",
                                "get snapshot header", "get snapshot part", "get blob"},
            # plans from the listing, reads headers and parts (blob references), deletes
            "prune": lists | {"get manifest", "get drill record", "get snapshot header", "get snapshot part",
                              "delete dump", "delete blob"},
            # freshness from the listing, plus drill records without their outcome in metadata
            "health": lists | {"get manifest", "get drill record", "get snapshot header"},
            "monitor": lists | {"get manifest", "get drill record", "get snapshot header"},
            # manifests, headers and drill records for its pages
            "console": lists | {"get manifest", "get drill record", "get snapshot header"},
        }
        # restores dumps into a scratch database and reads back blobs (what restore reads);
        # records the outcome beside the backup or snapshot (create-only: …/drills/*.json); never
        # a manifest, a dump or a blob of its own, and no delete
        expected["drill"] = expected["restore"] | {"create drill record", "create snapshot drill record"}
        access = bucket_access("backups", "B", BACKUP_REQUESTS)
        self.assertEqual(access, expected)

    def test_only_restore_and_drill_read_dumps_and_blobs(self):
        access = bucket_access("backups", "B", BACKUP_REQUESTS)
        for what in ("get dump", "get encrypted dump", "get blob"):
            with self.subTest(request=what):
                readers = {a for a, allowed in access.items() if what in allowed}
                self.assertEqual(readers, {"restore", "drill"})
        # ... through the one grant that reads everything under db/ and storage/.
        full = TF.resource("google_storage_bucket_iam_member", "backups_full_reader")
        self.assertEqual(set(TF.for_each_map(full["for_each"])), {"restore", "drill"})

    def test_only_prune_deletes_backups(self):
        access = bucket_access("backups", "B", BACKUP_REQUESTS)
        deleters = {a for a, allowed in access.items() if allowed & {"delete dump", "delete blob", "delete other"}}
        self.assertEqual(deleters, {"prune"})
        self.assertNotIn("delete other", access["prune"])
        # Nobody writes monitor state (or anything else overwritable) into the backup bucket.
        self.assertFalse({a for a, allowed in access.items() if "create state/" in allowed})

    def test_no_unconditioned_access_to_the_backup_bucket(self):
        for account, ops, cond in bucket_grants("backups"):
            with self.subTest(account=account, operations=sorted(ops)):
                self.assertIsNotNone(cond, f"{account} holds {sorted(ops)} on the whole backup bucket")
                self.assertFalse(condition_allows(cond, "B", "list", ""), f"{account} may list the whole bucket")

    def test_health_monitor_and_console_read_metadata_only(self):
        # They judge freshness (and show pages): names from the listing, *.json records; never a
        # dump, a snapshot part or a blob, and no write or delete.
        metadata = {"list db/", "list storage/", "get manifest", "get drill record", "get snapshot header"}
        access = bucket_access("backups", "B", BACKUP_REQUESTS)
        for account in ("health", "monitor", "console"):
            with self.subTest(account=account):
                self.assertEqual(access[account], metadata)
        for account, ops, _ in bucket_grants("backups"):
            if account in {"health", "monitor", "console"}:
                self.assertEqual(ops, {"get", "list"}, account)

    def test_state_bucket_access(self):
        self.assertEqual(bucket_access("state", "S", STATE_REQUESTS), {
            "monitor": {"list monitor", "get incidents", "create incidents", "delete message"},
            "storage_backup": {"list claims", "get claim", "create claim"},
        })
        # drill (like restore, prune, health, console) holds nothing on the state bucket.
        self.assertFalse({a for a, _, _ in bucket_grants("state")} & {"drill", "restore", "prune", "health", "console"})

    def test_deployer_may_not_act_as_prune_restore_or_drill(self):
        # Issue 11: the deployer builds and rolls out, but holds nothing on prune, restore, drill
        # (which reads every dump and decrypts it with the identity) or the console (which starts
        # prune and restore with overrides), and may act as no other service account.
        deployer = [b for b in TF.bindings() if "deployer" in b.member_accounts]
        self.assertTrue(deployer)
        forbidden = set(TF.locals["operator_rollout"])
        self.assertEqual(forbidden, {"prune", "restore", "drill", "console"})
        acts_as: set[str] = set()
        for b in deployer:
            with self.subTest(binding=b.rname):
                if b.role in ("roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator",
                              "roles/iam.workloadIdentityUser"):
                    self.assertEqual(b.role, "roles/iam.serviceAccountUser")
                    acts_as |= service_account_refs(b.targets)
                    continue
                if b.rtype.startswith("google_cloud_run_v2_"):
                    self.assertEqual(b.role, "roles/run.developer")
                    target = " ".join(b.targets) + " " + str(b.body.get("for_each", ""))
                    names = set(re.findall(r'google_cloud_run_v2_job\.job\["([^"]+)"\]', target))
                    names |= set(re.findall(r"google_cloud_run_v2_service\.(\w+)\.", target))
                    if "local.deployer_jobs" in target:
                        names |= set(TF.locals["deployer_jobs"])
                    self.assertTrue(names, f"{b.rname}: cannot tell which workloads it covers")
                    self.assertFalse(names & forbidden, f"{b.rname} gives the deployer {names & forbidden}")
                    continue
                self.assertIn(b.role, {"roles/artifactregistry.writer", "roles/logging.logWriter",
                                       "roles/storage.objectViewer"}, b.rname)
                if b.role == "roles/storage.objectViewer":
                    self.assertIn("google_storage_bucket.build_staging", " ".join(b.targets))
        self.assertEqual(acts_as, {"db_backup", "storage_backup", "health", "monitor"})
        self.assertFalse(acts_as & {"prune", "restore", "drill", "console"})
        self.assertTrue(set(TF.locals["deployer_jobs"]).isdisjoint(forbidden))
        self.assertTrue(set(TF.locals["deployer_services"]).isdisjoint(forbidden))
        # What it rolls out, it may act as (or the rollout fails).
        self.assertEqual({PROGRAM_JOBS.get(n, n) for n in TF.locals["deployer_jobs"] + TF.locals["deployer_services"]},
                         acts_as)


class ImmutabilityTest(unittest.TestCase):
    """Issue 11: backups are write-once for the retention period; what must change sooner lives
    in the state bucket."""

    def test_backup_bucket_retention_policy_defaults_to_the_retention_period(self):
        b = TF.resource("google_storage_bucket", "backups")
        policy = dynamic_blocks(b, "retention_policy")
        self.assertEqual(len(policy), 1)
        self.assertEqual(policy[0]["for_each"],
                         "${local.retention_policy_days > 0 ? [local.retention_policy_days] : []}")
        content = block(policy[0], "content")
        self.assertEqual(content["retention_period"], "${retention_policy.value * 86400}")
        self.assertEqual(content["is_locked"], "${var.retention_policy_locked}")
        self.assertEqual(TF.locals["retention_policy_days"],
                         "${coalesce(var.retention_policy_days, var.retention_days)}")
        self.assertIsNone(TF.variables["retention_policy_days"]["default"], "default: the retention period")
        self.assertIs(TF.variables["retention_policy_locked"]["default"], False, "locking is deliberate")
        self.assertIn("deliberate", TF.variables["retention_policy_locked"]["description"])

    def test_state_bucket_holds_what_changes_sooner(self):
        s = TF.resource("google_storage_bucket", "state")
        self.assertEqual(s["name"], "${local.state_bucket_name}")
        self.assertEqual(TF.locals["state_bucket_name"],
                         '${coalesce(var.state_bucket_name, "${var.backup_bucket_name}-state")}')
        self.assertIs(block(s, "versioning")["enabled"], False)
        self.assertFalse(blocks(s, "retention_policy") or dynamic_blocks(s, "retention_policy"),
                         "the state is replaced and deleted: no retention policy")
        self.assertTrue(dynamic_blocks(s, "encryption"), "the customer-managed key when there is one")
        deletes = {p for r in blocks(s, "lifecycle_rule") if block(r, "action")["type"] == "Delete"
                   for p in block(r, "condition").get("matches_prefix", [])}
        self.assertEqual(deletes, {"${local.object_root}state/storage-backup/",
                                   "${local.object_root}state/monitor/messages/"})
        for r in blocks(s, "lifecycle_rule"):
            if block(r, "action")["type"] == "Delete":
                self.assertIn("matches_prefix", block(r, "condition"), "never delete the incident state by age")
        # Every program is told where the state lives (the state bucket, same prefix).
        self.assertEqual(TF.locals["common_env"]["LIFEBOAT_STATE_DESTINATION"], "${local.state_destination}")
        self.assertIn("gs://${local.state_bucket_name}", TF.locals["state_destination"])
        self.assertIn("var.backup_prefix", TF.locals["state_destination"])


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
                      "google_secret_manager_secret_iam_member.sentry_dsn_accessor",
                      "google_storage_bucket_iam_member.backups_metadata_reader",
                      "google_storage_bucket_iam_member.backups_full_reader",
                      "google_storage_bucket_iam_member.db_backup_reader",
                      "google_storage_bucket_iam_member.storage_backup_reader",
                      "google_storage_bucket_iam_member.prune_reader",
                      "google_storage_bucket_iam_member.db_backup_creator",
                      "google_storage_bucket_iam_member.storage_backup_creator",
                      "google_storage_bucket_iam_member.storage_backup_state",
                      "google_storage_bucket_iam_member.prune_deleter",
                      "google_storage_bucket_iam_member.drill_records_creator",
                      "google_secret_manager_secret_iam_member.drill_db_password_accessor",
                      "google_secret_manager_secret_iam_member.drill_db_password_reader"):
            self.assertIn(f"${{{grant}}}", deps)
        # Every grant a job's service account holds on a bucket is waited for.
        job_accounts = {PROGRAM_JOBS.get(n, n.replace("-", "_")) for n in jobs()}
        for b in TF.bindings():
            if b.rtype == "google_storage_bucket_iam_member" and b.member_accounts & job_accounts \
                    and any("google_storage_bucket." in t for t in b.targets):
                self.assertIn(f"${{{b.rtype}.{b.rname}}}", deps, b.rname)

    def test_cloudbuild_rolls_out_every_job(self):
        # cloudbuild.yaml cannot read the Terraform: between what the deployer rolls out and what
        # it leaves to an operator, its lists name exactly the jobs and services, each once.
        text = (_hcl.REPO / "cloudbuild.yaml").read_text(encoding="utf-8")

        def listed(name: str) -> list[str]:
            return re.search(rf"^\s*{name}:\s*(.+)$", text, re.M).group(1).split("#")[0].split()

        self.assertEqual(sorted(listed("_JOBS")), sorted(TF.locals["deployer_jobs"]))
        self.assertEqual(sorted(listed("_SERVICES")), sorted(TF.locals["deployer_services"]))
        operator = listed("_OPERATOR_JOBS") + listed("_OPERATOR_SERVICES")
        self.assertEqual(sorted(operator), sorted(TF.locals["operator_rollout"]))
        self.assertEqual(sorted(listed("_JOBS") + listed("_OPERATOR_JOBS")), sorted(jobs()))
        self.assertEqual(sorted(listed("_SERVICES") + listed("_OPERATOR_SERVICES")),
                         sorted(TF.of_type("google_cloud_run_v2_service")))


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
