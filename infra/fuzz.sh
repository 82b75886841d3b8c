#!/usr/bin/env bash
# Bounded fuzzing of lifeboat's parsers (cargo fuzz / libFuzzer): the Pub/Sub push envelope, the
# database manifest, the snapshot header and parts, the configuration. Not part of the test
# command; run it by hand or on a schedule.
#
#   infra/fuzz.sh                 every target, FUZZ_SECONDS (60) each
#   infra/fuzz.sh config 300      one target, 5 minutes
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). libFuzzer's instrumentation needs nightly
# compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks them (set here). Sanitizer:
# FUZZ_SANITIZER (default none: the targets are safe Rust, and without AddressSanitizer the
# build is faster and each run does more inputs; `address` to add it).
# Findings land in fuzz/artifacts/<target>/; each one becomes a regression test in
# shared/tests/parsers.rs before it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1
seconds="${2:-${FUZZ_SECONDS:-60}}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] && targets=("$1") || targets=(push_envelope db_manifest snapshot_part config)

cargo fuzz build -s "$sanitizer"
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: ${seconds}s" >&2
  if ! cargo fuzz run -s "$sanitizer" "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -max_len=65536 -print_final_stats=1; then
    echo "== $t: FOUND A CRASH (see fuzz/artifacts/$t/)" >&2
    failed=1
  fi
done
exit "$failed"
