"""Structural checks of the container build: infra/Dockerfile, .dockerignore, cloudbuild.yaml.

hadolint (run by infra/check-deploy.sh) lints the Dockerfile for general mistakes; these checks
hold the project's own rules: multi-stage, non-root, no `latest`, PostgreSQL client >= 17 from
the PostgreSQL repository without Perl, the six binaries, and a Cloud Build config whose
substitutions Cloud Build will accept.
"""

from __future__ import annotations

import json
import pathlib
import re
import unittest

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "infra" / "Dockerfile"
BINARIES = ("db-backup", "storage-backup", "restore", "prune", "health", "monitor", "console", "drill")
MIN_PG_MAJOR = 17


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = DOCKERFILE.read_text(encoding="utf-8")
        cls.ins = dockerfile_instructions(cls.text)
        cls.stages = stages(cls.ins)
        cls.args = {}
        for word, rest in cls.ins:
            if word == "ARG" and "=" in rest:
                k, _, v = rest.partition("=")
                cls.args.setdefault(k.strip(), v.strip())

    def resolve(self, s: str) -> str:
        return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: self.args.get(m.group(1), m.group(0)), s)

    def test_multi_stage(self):
        self.assertGreaterEqual(len(self.stages), 2)
        final_from = self.stages[-1][0][1]
        self.assertRegex(self.resolve(final_from), r"^debian:[a-z]+-slim\b", "slim Debian runtime")

    def test_base_images_are_pinned(self):
        stage_names = set()
        for stage in self.stages:
            image, *rest = stage[0][1].split()
            if "AS" in [r.upper() for r in rest]:
                stage_names.add(rest[-1])
            resolved = self.resolve(image)
            with self.subTest(image=image):
                if resolved in stage_names or image in stage_names:
                    continue
                self.assertNotIn("$", resolved, f"unresolved ARG in {image}")
                self.assertTrue(":" in resolved or "@sha256:" in resolved, f"{resolved} has no tag")
                self.assertFalse(resolved.endswith(":latest"), f"{resolved} uses latest")

    def test_runs_as_non_root(self):
        users = [rest for word, rest in self.stages[-1] if word == "USER"]
        self.assertTrue(users, "final stage must set USER")
        user = users[-1].split(":")[0]
        self.assertNotIn(user, {"root", "0"})

    def test_exec_form_entrypoint_and_cmd(self):
        for word, rest in self.ins:
            if word in ("CMD", "ENTRYPOINT", "SHELL"):
                with self.subTest(instruction=word):
                    self.assertIsInstance(json.loads(rest), list, f"{word} must use the JSON (exec) form")

    def test_postgresql_client_from_pgdg(self):
        major = int(self.args["PG_MAJOR"])
        self.assertGreaterEqual(major, MIN_PG_MAJOR)
        self.assertIn("apt.postgresql.org", self.text)
        self.assertIn('postgresql-client-${PG_MAJOR}', self.text)
        final = " ".join(f"{w} {rest}" for w, rest in self.stages[-1])
        self.assertNotRegex(final, r"apt-get install[^;&|]*postgresql-",
                            "the runtime stage must not install the client packages (they pull in Perl)")
        self.assertIn("perl", final, "the runtime stage checks that Perl did not creep in")
        self.assertRegex(final, r"COPY --from=\S+ /out/bin/ /usr/lib/postgresql/\$\{PG_MAJOR\}/bin/")
        self.assertIn("LIFEBOAT_PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin", final)

    def test_apt_installs_without_recommends(self):
        for word, rest in self.ins:
            if word == "RUN" and "apt-get install" in rest:
                for cmd in re.findall(r"apt-get install[^;&|]*", rest):
                    with self.subTest(cmd=cmd[:60]):
                        self.assertIn("--no-install-recommends", cmd)
                        self.assertIn("-y", cmd)

    def test_release_build_of_all_binaries(self):
        self.assertIn("cargo build --release --locked --workspace --bins", self.text)
        final = " ".join(f"{w} {rest}" for w, rest in self.stages[-1])
        self.assertRegex(final, r"COPY --from=builder /out/ /usr/local/bin/")
        builder = " ".join(rest for s in self.stages for w, rest in s if "builder" in s[0][1])
        for binary in BINARIES:
            self.assertIn(binary, builder)

    def test_dependency_layer_is_cached(self):
        # manifests-only layer built before the sources are copied
        text = self.text
        self.assertLess(text.index("COPY --from=planner /skeleton/"), text.index("FROM deps AS builder"))


class DockerignoreTest(unittest.TestCase):
    def test_excludes_build_output_and_git(self):
        lines = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
                 if l.strip() and not l.startswith("#")]
        self.assertEqual(lines[0], "*", "allow-list: exclude everything first")
        self.assertIn("**/target/", lines)
        for needed in ("!Cargo.toml", "!Cargo.lock", "!shared/", "!functions/", "!tests/"):
            self.assertIn(needed, lines)
        self.assertNotIn("!.git", lines)


class CloudBuildTest(unittest.TestCase):
    BUILTINS = {"PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION", "COMMIT_SHA", "SHORT_SHA",
                "REVISION_ID", "REPO_NAME", "BRANCH_NAME", "TAG_NAME", "REF_NAME", "TRIGGER_NAME",
                "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT"}

    @classmethod
    def setUpClass(cls):
        cls.text = (REPO / "cloudbuild.yaml").read_text(encoding="utf-8")
        cls.body = "\n".join(l.split(" #")[0] if not l.lstrip().startswith("#") else ""
                             for l in cls.text.splitlines())
        block = cls.text.split("substitutions:", 1)[1].split("\n\n", 1)[0]
        cls.defined = set(re.findall(r"^\s+(_[A-Z0-9_]+):", block, re.M))

    def test_every_dollar_is_a_known_substitution_or_escaped(self):
        # Cloud Build rejects a build whose config names an unknown substitution ($tag instead of $$tag).
        for m in re.finditer(r"\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*|.)", self.body):
            token = m.group(1)
            with self.subTest(token=token):
                if token == "$":
                    continue
                name = token.strip("{}")
                if name.startswith("_"):
                    self.assertIn(name, self.defined, f"${token} is not declared under substitutions")
                else:
                    self.assertIn(name, self.BUILTINS, f"${token}: escape shell variables as $$")

    def test_builds_pushes_and_rolls_out(self):
        self.assertIn("--file=infra/Dockerfile", self.text)
        self.assertIn("docker push", self.text)
        self.assertIn("$SHORT_SHA", self.text)
        self.assertIn("-docker.pkg.dev/$PROJECT_ID/${_REPOSITORY}/", self.text)
        self.assertRegex(self.text, r"gcloud run jobs update \"\$\$job\" --image=")
        self.assertRegex(self.text, r"gcloud run services update \"\$\$service\" --image=")
        def listed(name):
            return re.search(rf"^\s*{name}:\s*(.+)$", self.text, re.M).group(1).split("#")[0].split()

        # The deployer rolls out what it may act as; prune, restore, drill (reads dumps with the identity) and the console (which
        # starts them with overrides) are printed for an operator (terraform/artifact.tf).
        self.assertEqual(set(listed("_JOBS")), {"db-backup", "storage-backup", "health"})
        self.assertEqual(set(listed("_SERVICES")), {"monitor"})
        self.assertEqual(set(listed("_OPERATOR_JOBS")), {"prune", "restore", "drill"})
        self.assertEqual(set(listed("_OPERATOR_SERVICES")), {"console"})
        self.assertRegex(self.text, r"for job in \$\{_OPERATOR_JOBS\}; do\n\s+echo \"  gcloud run jobs update \$\$job --image=")
        # The message before the operator's commands names every one of them.
        announce = re.search(r'echo "Roll out ([^"]+) yourself', self.text)
        self.assertIsNotNone(announce)
        for name in listed("_OPERATOR_JOBS") + listed("_OPERATOR_SERVICES"):
            self.assertIn(name, announce.group(1))
        self.assertIn("CLOUD_LOGGING_ONLY", self.text)


class RunbookTest(unittest.TestCase):
    def test_runbook_covers_the_operations(self):
        text = (REPO / "docs" / "runbook.md").read_text(encoding="utf-8").lower()
        for needle in ("terraform apply", "gcloud run jobs execute db-backup", "--args=list",
                       "--args=db,", "--args=bucket,", "backup failed", "backup stale", "suspicious",
                       "prune refused", "recovered", "gcloud secrets versions add", "slack", "password",
                       "restore drills", "gcloud run jobs execute drill", "lifeboat_drill_"):
            self.assertIn(needle, text)

    def test_runbook_names_what_the_operator_rolls_out(self):
        # The deployer may not act as prune, restore, drill or the console (terraform/artifact.tf):
        # "Later deployments" gives the operator's command for each.
        text = (REPO / "docs" / "runbook.md").read_text(encoding="utf-8")
        for job in ("prune", "restore", "drill"):
            self.assertIn(f"gcloud run jobs update {job} --image=$IMAGE", text)
        self.assertIn("gcloud run services update console --image=$IMAGE", text)

    def test_runbook_says_who_may_do_what_for_every_identity(self):
        # One row per service account in "Who may do what", drill's included: it reads like
        # restore, creates its records only, deletes nothing.
        text = (REPO / "docs" / "runbook.md").read_text(encoding="utf-8")
        section = text.split("## Who may do what", 1)[1].split("\n## ", 1)[0]
        rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `PREFIX-([a-z-]+)` \|.*$", section, re.M)}
        self.assertEqual(set(rows), {"db-backup", "storage-backup", "restore", "drill", "prune", "health",
                                     "monitor", "console", "scheduler", "pubsub-push", "deployer"})
        for name, row in rows.items():
            self.assertEqual(row.count("|"), 8, f"{name}: seven columns")
        drill = [c.strip() for c in rows["drill"].strip("|").split("|")]
        restore = [c.strip() for c in rows["restore"].strip("|").split("|")]
        self.assertEqual(drill[1], restore[1], "drill lists what restore lists")
        self.assertIn("drills/", drill[3])
        self.assertEqual(drill[4], "–", "drill deletes nothing")
        self.assertEqual(drill[5], "–", "drill holds nothing on the state bucket")
        self.assertIn("drill", rows["deployer"].split("nothing on", 1)[1])


if __name__ == "__main__":
    unittest.main()
