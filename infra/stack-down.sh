#!/usr/bin/env bash
# Stop what infra/stack-up.sh started: the emulators and the Slack stand-in it launched
# (by their pid files in infra/.run/), and PostgreSQL only if stack-up itself started the
# cluster (recorded in infra/.run/postgres.started). A PostgreSQL server that was already
# running, and anything else on the same ports, is left alone. Safe to run again.
#
#   infra/stack-down.sh               stop everything stack-up started
#   infra/stack-down.sh --keep-postgres
set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN_DIR="$INFRA_DIR/.run"

keep_postgres=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --keep-postgres) keep_postgres=1; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "stack-down: unknown argument: $1" >&2; exit 2 ;;
    esac
done

log() { printf 'stack-down: %s\n' "$*" >&2; }

[[ -d "$RUN_DIR" ]] || { log "nothing to stop (no $RUN_DIR)"; exit 0; }
# Not while a stack-up is half-way through.
exec 9>"$RUN_DIR/stack.lock"
if command -v flock >/dev/null; then flock 9; fi

# running PID: alive and not a zombie (an exited daemon stays a zombie until init reaps it).
running() {
    local stat
    stat="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$stat" && "${stat%% *}" != Z ]]
}

# stop_daemon NAME MARKER: stop the process in .run/NAME.pid if it is still ours (its
# command line contains MARKER: a pid may have been reused since), SIGTERM then SIGKILL.
stop_daemon() {
    local name="$1" marker="$2" pidfile="$RUN_DIR/$1.pid" pid
    [[ -s "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    if ! running "$pid"; then
        log "$name: not running (stale pid $pid)"
    elif ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"; then
        log "$name: pid $pid is no longer $name; leaving it alone"
    else
        log "$name: stopping pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then
            log "$name: still alive after 10 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

stop_daemon slack slack_standin.py
stop_daemon sentry slack_standin.py
stop_daemon pubsub pubsub_emulator.py
stop_daemon fake-gcs fake-gcs-server

if [[ -s "$RUN_DIR/postgres.started" ]]; then
    if [[ -n "$keep_postgres" ]]; then
        log "postgres: keeping cluster $(cat "$RUN_DIR/postgres.started") (--keep-postgres)"
    else
        read -r ver name <"$RUN_DIR/postgres.started"
        SUDO=""
        [[ "$(id -u)" == 0 ]] || SUDO="sudo"
        log "postgres: stopping cluster $ver/$name (stack-up started it)"
        if [[ -d /run/systemd/system ]]; then
            $SUDO pg_ctlcluster "$ver" "$name" stop || true
        else
            $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop || true
        fi
        rm -f "$RUN_DIR/postgres.started"
    fi
else
    log "postgres: not started by stack-up; leaving it alone"
fi
log "done"
