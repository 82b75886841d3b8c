#!/usr/bin/env bash
# The README's first command: runs lifeboat's main job locally on the embedded default.
# Makes sure PostgreSQL runs (installing it if missing), seeds a small sample database,
# backs it up with `db-backup --once` into the file:// default destination, shows what was
# written, then asks `health` what it thinks.
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
