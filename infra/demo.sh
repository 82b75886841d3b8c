#!/usr/bin/env bash
# The README's first command: runs lifeboat's main job locally on the embedded default.
# Makes sure PostgreSQL runs (installing it if missing), seeds a small sample database,
# backs it up with `db-backup --once` into the file:// default destination, shows what was
# written, asks `health` what it thinks, and ends by starting the `console` on 127.0.0.1 (in the
# background, over the same backups) and printing its URL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
command -v cargo >/dev/null || { echo "demo: cargo is not installed: install Rust 1.95 or newer (rustup.rs)" >&2; exit 1; }

step "PostgreSQL"
eval "$(infra/stack-up.sh --only postgres)"

step "build"
cargo build --locked --bins

DB=lifeboat_demo
step "sample database $DB"
if ! psql -X -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    createdb "$DB"
fi
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f infra/demo-seed.sql

DEST_DIR="$HOME/.local/share/lifeboat/backups"
unset LIFEBOAT_DESTINATION BACKUP_BUCKET_NAME
export BACKUP_DATABASES="$DB" RUST_LOG="${RUST_LOG:-info}"

step "db-backup --once  (destination: file://$DEST_DIR, the embedded default)"
target/debug/db-backup --once

step "what was written"
latest=$(find "$DEST_DIR/db/main/$DB" -name manifest.json -printf '%h\n' 2>/dev/null | sort | tail -n 1)
[ -n "$latest" ] || { echo "demo: no manifest found under $DEST_DIR" >&2; exit 1; }
ls -l "$latest"
echo
sed -n '1,40p' "$latest/manifest.json"

step "health --once"
target/debug/health --once

step "console"
RUN_DIR=infra/.run
mkdir -p "$RUN_DIR"
PORT="${LIFEBOAT_CONSOLE_PORT:-8765}"
if [[ -s "$RUN_DIR/console.pid" ]] && kill -0 "$(cat "$RUN_DIR/console.pid")" 2>/dev/null; then
    kill "$(cat "$RUN_DIR/console.pid")"   # the console of an earlier demo: restart it on this build
    sleep 0.5
fi
if [[ ! -s "$RUN_DIR/console.token" ]]; then
    (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$RUN_DIR/console.token")
fi
export LIFEBOAT_API_TOKEN="$(cat "$RUN_DIR/console.token")"
PORT="$PORT" setsid target/debug/console </dev/null >"$RUN_DIR/console.log" 2>&1 &
echo $! >"$RUN_DIR/console.pid"
for _ in $(seq 50); do
    grep -q "serving" "$RUN_DIR/console.log" 2>/dev/null && break
    kill -0 "$(cat "$RUN_DIR/console.pid")" 2>/dev/null || { cat "$RUN_DIR/console.log" >&2; echo "demo: the console did not start" >&2; exit 1; }
    sleep 0.1
done
echo
echo "The console runs in the background (log: $RUN_DIR/console.log; stop it: kill \$(cat $RUN_DIR/console.pid))."
echo "Open it (the token after # stays in your browser; actions need it):"
echo
echo "    http://127.0.0.1:$PORT/#token=$LIFEBOAT_API_TOKEN"
