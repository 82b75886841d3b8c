"""Load terraform/*.tf with python-hcl2 into plain Python values for the structural checks.

python-hcl2 (>= 7) keeps HCL's quoting: labels and string literals come back as '"text"',
expressions as '${...}', blocks as lists of dicts marked '__is_block__'. This module strips
the quotes and the markers so the checks read like the Terraform they test:

    tf = load()
    bucket = tf.resource("google_storage_bucket", "backups")
    bucket["public_access_prevention"]   -> "enforced"
    blocks(bucket, "soft_delete_policy") -> [{"retention_duration_seconds": "${...}"}]

Resources with `for_each` over a map of locals (the Cloud Run jobs, their schedules) are
expanded into one body per instance, so a check reads an instance like the block it would be
written as without for_each:

    tf.instances("google_cloud_run_v2_job", "job")["restore"]
      -> {"name": "restore", "template": [...{"max_retries": 0, ...}], ...}

That takes a small evaluator for the few expression shapes lifeboat uses (see for_each_map and
_bind); anything else raises UnsupportedExpression rather than being guessed at.

bc-python-hcl2 (checkov's fork, which installs the same `hcl2` module) returns another shape
and is refused with a clear message: the checks run in infra/.venv, checkov in its own venv.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, Iterator

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


class UnsupportedExpression(ValueError):
    """An expression the checks cannot evaluate: extend _hcl rather than weaken a check."""


def expression(value: str) -> str | None:
    """'${X}' -> 'X' for a whole-string expression; None for a literal or a template."""
    if value.startswith("${") and value.endswith("}") and _closing_brace(value, 1) == len(value) - 1:
        return value[2:-1]
    return None


def _closing_brace(text: str, start: int) -> int:
    """Index of the brace closing the one at text[start] (braces inside strings are counted too,
    which is right for the balanced templates HCL allows)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _as_expression(value: Any) -> str:
    """A value of a map entry written as HCL expression text (to stand where each.value.F stood)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        inner = expression(value)
        return inner if inner is not None else json.dumps(value)
    raise UnsupportedExpression(f"cannot write {value!r} into an expression")


def _as_template(value: Any) -> str:
    """A value of a map entry written where a template had ${each.value.F}."""
    if isinstance(value, str):
        return value
    return _as_expression(value)


# `for K, V in SOURCE : K => VALUE` with an optional `if CONDITION`, the way python-hcl2 writes it.
_FOR = re.compile(r"\{for (\w+), (\w+) in ([\w.]+) : \1 => (.+?)(?: if (.+))?\}")


def _fold(text: str) -> Any:
    """Fold the literals a map entry leaves behind: `true && X` -> X, `false && C ? A : []` -> [],
    `!true || X` -> X, `!false || X` -> True, coalesce(null | "a", "b") -> "a" or "b"."""
    inner = expression(text)
    if inner is None:
        return text
    m = re.fullmatch(r'coalesce\((null|"(?:[^"\\]|\\.)*"), ("(?:[^"\\]|\\.)*")\)', inner)
    if m:
        first, second = m.groups()
        return json.loads(second if first == "null" or first == '""' else first)
    if re.fullmatch(r"false && [^?]+\? .+ : \[\]", inner):
        return []
    if inner.startswith("!false || "):
        return True
    for prefix in ("true && ", "!true || "):
        if inner.startswith(prefix):
            return "${" + inner[len(prefix):] + "}"
    return text


def _bind(value: Any, key: str, entry: dict, resolve: Callable[[Any], Any]) -> Any:
    """Replace each.key and each.value.PATH in value by what they are for one instance.
    Where an argument is each.value.PATH alone, resolve() may replace it by what it names
    (local.NAME of a literal map: that map, so a dynamic block over it can be expanded)."""
    if isinstance(value, dict):
        return {k: _bind(v, key, entry, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [_bind(v, key, entry, resolve) for v in value]
    if not isinstance(value, str) or "each." not in value:
        return value

    def lookup(path: str) -> Any:
        current: Any = entry
        parts = [p for p in path.split(".") if p]
        for i, part in enumerate(parts):
            if isinstance(current, dict):
                if part not in current:
                    raise UnsupportedExpression(f"each.value.{path}: no attribute {part!r} in {current!r}")
                current = current[part]
            elif isinstance(current, str) and expression(current) is not None:
                return "${" + expression(current) + "." + ".".join(parts[i:]) + "}"
            else:
                raise UnsupportedExpression(f"each.value.{path} in {current!r}")
        return current

    if value == "${each.key}":
        return key
    whole = re.fullmatch(r"\$\{each\.value((?:\.[\w-]+)*)\}", value)
    if whole:
        return resolve(lookup(whole.group(1)))
    # Interpolations in a template: ${each.key}, ${each.value.F}.
    text = value.replace("${each.key}", key)
    text = re.sub(r"\$\{each\.value((?:\.[\w-]+)*)\}", lambda m: _as_template(lookup(m.group(1))), text)
    # What is left stands inside an expression.
    text = re.sub(r"\beach\.key\b", json.dumps(key), text)
    text = re.sub(r"\beach\.value((?:\.[\w-]+)*)", lambda m: _as_expression(lookup(m.group(1))), text)
    return _fold(text)


def _expand_dynamic(value: Any) -> Any:
    """Turn `dynamic` blocks whose for_each is now a literal map or list into static blocks."""
    if isinstance(value, list):
        return [_expand_dynamic(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _expand_dynamic(v) for k, v in value.items() if k != "dynamic"}
    remaining = []
    for entry in blocks(value, "dynamic"):
        for name, dyn in entry.items():
            for_each = dyn.get("for_each")
            if isinstance(for_each, (dict, list)):
                items = list(for_each.items() if isinstance(for_each, dict) else enumerate(for_each))
                if not items:
                    continue
                content = block(dyn, "content")
                static = out.setdefault(name, [])
                if isinstance(static, dict):
                    static = out[name] = [static]
                for k, v in items:
                    static.append(_expand_dynamic(_bind_iterator(content, name, k, v)))
            else:
                remaining.append({name: _expand_dynamic(dyn)})
    if remaining:
        out["dynamic"] = remaining
    return out


def _bind_iterator(value: Any, name: str, k: Any, v: Any) -> Any:
    """Replace ${NAME.key} / ${NAME.value} of a dynamic block's content for one element."""
    if isinstance(value, dict):
        return {kk: _bind_iterator(vv, name, k, v) for kk, vv in value.items()}
    if isinstance(value, list):
        return [_bind_iterator(vv, name, k, v) for vv in value]
    if value == "${" + name + ".key}":
        return k
    if value == "${" + name + ".value}":
        return v
    if isinstance(value, str) and re.search(r"\b" + re.escape(name) + r"\.(key|value)\b", value):
        raise UnsupportedExpression(f"{value!r}: {name}.key/value inside a larger expression")
    return value


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
    moved: list[dict]  # {"from": address, "to": address}, addresses without ${ }

    def resource(self, rtype: str, name: str) -> dict:
        key = (rtype, name)
        assert key in self.resources, f"resource {rtype}.{name} is not defined"
        return self.resources[key]

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def local_value(self, name: str) -> Any:
        assert name in self.locals, f"local.{name} is not defined"
        return self.locals[name]

    def for_each_map(self, value: Any) -> dict[str, Any] | None:
        """A for_each value as key -> each.value, for the shapes lifeboat uses:

            { literal map }                 local.NAME
            { for K, V in local.NAME : K => V | merge(local.DEFAULTS, V) | EXPR [if COND] }
            { for K, V in TYPE.NAME  : K => EXPR }          (the instances of a resource)
            COND ? { for ... } : {}         (the instances when COND holds)
            COND ? local.NAME : {}          (likewise)

        None for anything else (toset(...), a variable, ...): the caller keeps the raw text.
        """
        if isinstance(value, dict):
            return value
        if not isinstance(value, str):
            return None
        inner = expression(value)
        if inner is None:
            return None
        m = re.fullmatch(r"local\.(\w+)", inner)
        if m:
            return self.for_each_map(self.local_value(m.group(1)))
        m = re.fullmatch(r"[^?]+ \? (\{.*\}|local\.\w+) : \{\}", inner)
        if m:
            return self.for_each_map("${" + m.group(1) + "}")
        m = _FOR.fullmatch(inner)
        if not m:
            return None
        kvar, vvar, source, result, condition = m.groups()
        if source.startswith("local."):
            entries = self.for_each_map("${" + source + "}")
            if entries is None:
                raise UnsupportedExpression(f"for_each source {source} in {value!r}")
        else:
            rtype, _, rname = source.partition(".")
            entries = {k: f"{rtype}.{rname}[{json.dumps(k)}]" for k in self.instance_keys(rtype, rname)}
        out: dict[str, Any] = {}
        for k, v in entries.items():
            if condition is not None and not self._holds(condition, vvar, v):
                continue
            out[k] = self._for_result(result, kvar, vvar, k, v)
        return out

    def _holds(self, condition: str, vvar: str, v: Any) -> bool:
        """`V.F != null`, `V.F == null`, `V.F`, `!V.F` for one element. A value that is an
        expression (not a literal) counts as true: the instance may exist."""
        m = re.fullmatch(r"(!?)" + re.escape(vvar) + r"\.(\w+)(?: (==|!=) null)?", condition)
        if not m or not isinstance(v, dict):
            raise UnsupportedExpression(f"for condition {condition!r}")
        negate, attr, op = m.groups()
        field = v.get(attr)
        if op == "!=":
            return field is not None
        if op == "==":
            return field is None
        if not isinstance(field, bool):
            return True  # an expression such as length(var.x) > 0: the instance may exist
        return field != bool(negate)

    def _for_result(self, result: str, kvar: str, vvar: str, k: str, v: Any) -> Any:
        if result == vvar:
            return v
        m = re.fullmatch(r"merge\(local\.(\w+), " + re.escape(vvar) + r"\)", result)
        if m:
            defaults = self.local_value(m.group(1))
            if not isinstance(defaults, dict) or not isinstance(v, dict):
                raise UnsupportedExpression(f"merge of {defaults!r} and {v!r}")
            return {**defaults, **v}
        # Any other expression of K and V: written out for this element (V must be an address,
        # or not used).
        if not isinstance(v, str) and re.search(r"(?<![.\w])" + re.escape(vvar) + r"\b", result):
            raise UnsupportedExpression(f"{result!r} over a map entry")

        def substitute(expr: str) -> str:
            expr = re.sub(r"(?<![.\w])" + re.escape(kvar) + r"\b", json.dumps(k), expr)
            return expr if not isinstance(v, str) else re.sub(r"(?<![.\w])" + re.escape(vvar) + r"\b", v, expr)

        if result.startswith('"') and result.endswith('"'):  # a template: only its interpolations
            return re.sub(r"\$\{([^}]*)\}", lambda m: "${" + substitute(m.group(1)) + "}", unquote(result))
        return "${" + substitute(result) + "}"

    def instance_keys(self, rtype: str, name: str) -> list[str]:
        body = self.resource(rtype, name)
        entries = self.for_each_map(body.get("for_each"))
        if entries is None:
            raise UnsupportedExpression(f"{rtype}.{name}: for_each {body.get('for_each')!r}")
        return list(entries)

    def instances(self, rtype: str, name: str) -> dict[str, dict]:
        """The instances of a for_each resource, each as the body it would have without for_each."""
        body = self.resource(rtype, name)
        entries = self.for_each_map(body.get("for_each"))
        if entries is None:
            raise UnsupportedExpression(f"{rtype}.{name}: for_each {body.get('for_each')!r}")
        out = {}
        for key, entry in entries.items():
            inst = {k: v for k, v in copy.deepcopy(body).items() if k != "for_each"}
            inst = _expand_dynamic(_bind(inst, key, entry, self._literal_local))
            inst["__address__"] = f"{rtype}.{name}[{json.dumps(key)}]"
            out[key] = inst
        return out

    def _literal_local(self, value: Any) -> Any:
        """local.NAME of a literal map -> that map. `COND ? local.A : local.B` of two literal maps
        (or nested conditionals whose every branch is one) -> their union: everything that may
        reach the instance (a check of who gets which secret must see every branch)."""
        if isinstance(value, str):
            m = re.fullmatch(r"\$\{local\.(\w+)\}", value)
            if m and isinstance(self.locals.get(m.group(1)), dict):
                return self.locals[m.group(1)]
            m = re.fullmatch(r"\$\{[^?]+ \? local\.(\w+) : local\.(\w+)\}", value)
            if m and all(isinstance(self.locals.get(n), dict) for n in m.groups()):
                return {**self.locals[m.group(2)], **self.locals[m.group(1)]}
            # Nested conditionals whose every branch is local.NAME of a literal map: the union.
            inner = expression(value)
            if inner is not None and "?" in inner and re.fullmatch(r"[\s()?:]*(local\.\w+[\s()?:]*)+", inner):
                leaves = [n for n, cond in re.findall(r"local\.(\w+)\s*(\?)?", inner) if not cond]
                if len(leaves) == inner.count("?") + 1 and all(isinstance(self.locals.get(n), dict) for n in leaves):
                    union: dict = {}
                    for n in reversed(leaves):
                        union.update(self.locals[n])
                    return union
        return value

    def resolve_local_lookups(self, text: str) -> str:
        """${local.MAP["key"]} inside a string -> the map's value there (a template string)."""
        def one(m: re.Match) -> str:
            entries = self.for_each_map("${local." + m.group(1) + "}")
            if entries is None or m.group(2) not in entries or not isinstance(entries[m.group(2)], str):
                raise UnsupportedExpression(m.group(0))
            return entries[m.group(2)]
        return re.sub(r'\$\{local\.(\w+)\["([^"]+)"\]\}', one, text)

    def bindings(self) -> list[Binding]:
        out = []
        for (rtype, rname), body in sorted(self.resources.items()):
            if not re.search(r"_iam_(member|binding|policy)$", rtype):
                continue
            for_each = body.get("for_each")
            if isinstance(for_each, str):  # a for expression over a map: its values where possible
                for_each = self.for_each_map(for_each) or for_each
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
    moved: list[dict] = []

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
        for entry in parsed.get("moved", []):
            moved.append({k: expression(entry[k]) or entry[k] for k in ("from", "to")})
    return Terraform(files, resources, data, variables, local_values, outputs, terraform_blocks, moved)
