#!/usr/bin/env bash
# Checks the console's JSON API against its OpenAPI document (docs/console.openapi.yaml) with
# schemathesis, a property-based API tester: it generates requests from the document (valid
# ones and invalid ones) against a running console on the local stack and checks every
# answer: no 5xx, only documented status codes, the documented content type, bodies that match
# the documented schemas. infra/test.sh runs it; it needs the local stack's PostgreSQL (run
# `eval "$(infra/stack-up.sh)"` first) and the built binaries (cargo build).
#
# schemathesis is pinned in infra/requirements-schemathesis.txt and lives in its own venv,
# infra/.venv-schemathesis. The run's figures are printed at the end (schemathesis's summary)
# and its JUnit report is left in target/api-check/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'api-check: %s\n' "$*" >&2; }
die() { printf 'api-check: error: %s\n' "$*" >&2; exit 1; }

VENV=infra/.venv-schemathesis
PINS=infra/requirements-schemathesis.txt
EXAMPLES="${LIFEBOAT_API_CHECK_EXAMPLES:-15}"

[[ -n "${PGHOST:-}" ]] || die 'PGHOST is not set: run eval "$(infra/stack-up.sh)" first'
[[ -x target/debug/console && -x target/debug/db-backup ]] || die "target/debug/console is not built: run cargo build --workspace"

# --- the tool --------------------------------------------------------------------------------
if ! [[ -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
    log "creating venv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
want="$({ cat "$PINS"; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$VENV/.lifeboat-stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    log "installing schemathesis into $VENV (first time: ~30 s)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$PINS" >&2
    echo "$want" >"$VENV/.lifeboat-stamp"
fi

# --- a console on the local stack --------------------------------------------------------------
work="$(mktemp -d)"
db="lifeboat_api_check_$$"
token="api-check-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
console_pid=""
cleanup() {
    if [[ -n "$console_pid" ]]; then kill "$console_pid" 2>/dev/null || true; wait "$console_pid" 2>/dev/null || true; fi
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "CREATE TABLE t AS SELECT generate_series(1, 100) AS i" >/dev/null
run_env=(env -i "PATH=$PATH" "HOME=$work" "PGHOST=$PGHOST" "PGPORT=${PGPORT:-5432}" "PGUSER=${PGUSER:-postgres}"
    "LIFEBOAT_DESTINATION=file://$work/backups" "BACKUP_DATABASES=$db" "LIFEBOAT_API_TOKEN=$token")
log "one backup of $db, so the reads have something to show"
"${run_env[@]}" target/debug/db-backup --once >"$work/seed.log" 2>&1 || { cat "$work/seed.log" >&2; die "db-backup failed"; }

"${run_env[@]}" PORT=0 target/debug/console >"$work/console.log" 2>&1 &
console_pid=$!
port=""
for _ in $(seq 100); do
    # (the log may be coloured: strip the escape sequences first)
    port="$(sed -e 's/\x1b\[[0-9;]*m//g' "$work/console.log" | sed -n 's/.*serving.*addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' | head -n 1)"
    [[ -n "$port" ]] && break
    kill -0 "$console_pid" 2>/dev/null || { cat "$work/console.log" >&2; die "the console exited"; }
    sleep 0.1
done
[[ -n "$port" ]] || { cat "$work/console.log" >&2; die "the console never said where it listens"; }
log "console on 127.0.0.1:$port (database $db)"

# --- the check ---------------------------------------------------------------------------------
# The real database for its reads and for "back up now" (so the 202 answers are checked too);
# the restores keep generated names, so they never write into a database of this server.
cat >"$work/schemathesis.toml" <<TOML
[[operations]]
include-path = "/api/databases/{database}/backups"
parameters = { database = "$db" }

[[operations]]
include-path = "/api/databases/{database}/backup"
parameters = { database = "$db" }
TOML
mkdir -p target/api-check
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
status=0
"$VENV/bin/st" --config-file "$work/schemathesis.toml" run docs/console.openapi.yaml \
    --url "http://127.0.0.1:$port" \
    --header "Authorization: Bearer $token" \
    --checks "$checks" \
    --phases examples,coverage,fuzzing \
    --max-examples "$EXAMPLES" \
    --workers 1 \
    --seed 20261202 \
    --generation-database none \
    --request-timeout 30 \
    --no-color \
    --report junit --report-junit-path target/api-check/junit.xml || status=$?
if grep -q ' 5[0-9][0-9] ' "$work/console.log" 2>/dev/null; then
    log "the console logged server errors:"; grep ' 5[0-9][0-9] ' "$work/console.log" >&2 || true
fi
((status == 0)) || { tail -n 40 "$work/console.log" >&2; die "schemathesis found problems (above)"; }
log "checks: $checks; JUnit report: target/api-check/junit.xml"
