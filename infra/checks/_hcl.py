"""Load terraform/*.tf with python-hcl2 into plain Python values for the structural checks.

python-hcl2 (>= 7) keeps HCL's quoting: labels and string literals come back as '"text"',
expressions as '${...}', blocks as lists of dicts marked '__is_block__'. This module strips
the quotes and the markers so the checks read like the Terraform they test:

    tf = load()
    bucket = tf.resource("google_storage_bucket", "backups")
    bucket["public_access_prevention"]   -> "enforced"
    blocks(bucket, "soft_delete_policy") -> [{"retention_duration_seconds": "${...}"}]

bc-python-hcl2 (checkov's fork, which installs the same `hcl2` module) returns another shape
and is refused with a clear message: the checks run in infra/.venv, checkov in its own venv.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any, Iterator

import hcl2

REPO = pathlib.Path(__file__).resolve().parents[2]
# LIFEBOAT_TF_DIR lets the checks be pointed at a modified copy (to see that they catch a regression).
TF_DIR = pathlib.Path(os.environ.get("LIFEBOAT_TF_DIR", REPO / "terraform"))

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


def _check_parser() -> None:
    version = getattr(hcl2, "__version__", "0")
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < 7:
        raise RuntimeError(
            f"infra/checks needs python-hcl2 >= 7 (infra/.venv), but `hcl2` {version} was imported "
            f"from {hcl2.__file__}: probably bc-python-hcl2 (checkov's fork). Run the checks with "
            "infra/.venv/bin/python, not checkov's interpreter."
        )


def unquote(value: str) -> str:
    """'"a \\"b\\""' -> 'a "b"'; expressions ('${...}') and other text are returned unchanged."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r'\\(["\\ntr])', lambda m: _ESCAPES[m.group(1)], value[1:-1])
    return value


def normalize(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            unquote(k): normalize(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.startswith("__") and k.endswith("__"))
        }
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        return unquote(value)
    return value


def blocks(body: dict, name: str) -> list[dict]:
    """The nested blocks `name` of a body (static blocks only), always as a list."""
    value = body.get(name)
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)]


def block(body: dict, name: str) -> dict:
    """Exactly one nested block `name`; raises AssertionError otherwise."""
    found = blocks(body, name)
    assert len(found) == 1, f"expected one `{name}` block, found {len(found)}"
    return found[0]


def dynamic_blocks(body: dict, name: str) -> list[dict]:
    """The `dynamic "name" { for_each = ...; content { ... } }` entries of a body."""
    out = []
    for entry in blocks(body, "dynamic"):
        if name in entry:
            out.append(entry[name])
    return out


def walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_strings(v)
    elif isinstance(value, str):
        yield value


_SA_REF = re.compile(r"google_service_account\.([A-Za-z0-9_-]+)(?:\[[^\]]*\])?\.(?:member|email|name|id)\b")


def service_account_refs(value: Any) -> set[str]:
    """Names of google_service_account resources referenced anywhere inside value."""
    found: set[str] = set()
    for s in walk_strings(value):
        found.update(_SA_REF.findall(s))
    return found


@dataclasses.dataclass
class Binding:
    """One IAM grant resource, with for_each maps expanded where the grant uses each.value."""

    rtype: str
    rname: str
    role: str
    members: list[str]  # raw member expressions / literals
    targets: list[str]  # raw expressions of the resource the grant is on
    body: dict

    @property
    def member_accounts(self) -> set[str]:
        return service_account_refs(self.members)

    @property
    def conditions(self) -> list[dict]:
        return blocks(self.body, "condition")

    @property
    def level(self) -> str:
        # google_project_iam_member -> project, google_storage_bucket_iam_member -> storage_bucket
        return re.sub(r"^google_|_iam_(member|binding|policy)$", "", self.rtype)


@dataclasses.dataclass
class Terraform:
    files: dict[str, dict]
    resources: dict[tuple[str, str], dict]
    data: dict[tuple[str, str], dict]
    variables: dict[str, dict]
    locals: dict[str, Any]
    outputs: dict[str, dict]
    terraform_blocks: list[dict]

    def resource(self, rtype: str, name: str) -> dict:
        key = (rtype, name)
        assert key in self.resources, f"resource {rtype}.{name} is not defined"
        return self.resources[key]

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def bindings(self) -> list[Binding]:
        out = []
        for (rtype, rname), body in sorted(self.resources.items()):
            if not re.search(r"_iam_(member|binding|policy)$", rtype):
                continue
            for_each = body.get("for_each")
            if "member" in body:
                members = [body["member"]]
            elif "members" in body:
                members = list(body["members"])
            else:  # *_iam_policy: the members live in policy_data
                members = [body.get("policy_data", "")]
            if members == ["${each.value}"] and for_each is not None:
                members = list(for_each.values()) if isinstance(for_each, dict) else [str(for_each)]
            targets = [
                v
                for k, v in body.items()
                if k in ("bucket", "secret_id", "topic", "subscription", "name", "service_account_id",
                         "repository", "crypto_key_id", "project")
                and isinstance(v, str)
            ]
            if "${each.value}" in targets and for_each is not None:
                targets.remove("${each.value}")
                targets += list(for_each.values()) if isinstance(for_each, dict) else [str(for_each)]
            out.append(Binding(rtype, rname, str(body.get("role", "")), members, targets, body))
        return out


def load(tf_dir: pathlib.Path = TF_DIR) -> Terraform:
    _check_parser()
    files: dict[str, dict] = {}
    resources: dict[tuple[str, str], dict] = {}
    data: dict[tuple[str, str], dict] = {}
    variables: dict[str, dict] = {}
    local_values: dict[str, Any] = {}
    outputs: dict[str, dict] = {}
    terraform_blocks: list[dict] = []

    paths = sorted(tf_dir.glob("*.tf"))
    if not paths:
        raise FileNotFoundError(f"no .tf files in {tf_dir}")
    for path in paths:
        with path.open(encoding="utf-8") as f:
            parsed = normalize(hcl2.load(f))
        files[path.name] = parsed
        for entry in parsed.get("resource", []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    key = (rtype, name)
                    if key in resources:
                        raise ValueError(f"{rtype}.{name} defined twice ({path.name})")
                    body["__file__"] = path.name
                    resources[key] = body
        for entry in parsed.get("data", []):
            for dtype, named in entry.items():
                for name, body in named.items():
                    data[(dtype, name)] = body
        for entry in parsed.get("variable", []):
            for name, body in entry.items():
                variables[name] = body
        for entry in parsed.get("locals", []):
            for name, value in entry.items():
                if name in local_values:
                    raise ValueError(f"local.{name} defined twice ({path.name})")
                local_values[name] = value
        for entry in parsed.get("output", []):
            for name, body in entry.items():
                outputs[name] = body
        terraform_blocks.extend(parsed.get("terraform", []))
    return Terraform(files, resources, data, variables, local_values, outputs, terraform_blocks)
