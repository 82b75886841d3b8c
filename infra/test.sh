#!/usr/bin/env bash
# Runs every check and test of lifeboat, the same way CI does (.ci/run calls exactly this):
# starts the local stack (PostgreSQL, fake-gcs-server, Pub/Sub emulator, Slack and Sentry stand-ins),
# then format check, clippy with warnings as errors, rustdoc with warnings as errors, the deployment checks (Terraform,
# Dockerfile), a build, the console's API checked against its OpenAPI document (schemathesis), and
# every unit and integration test (the console's browser test drives headless Chromium).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'test: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed: install Rust ${RUST_VERSION:-1.95} or newer (rustup.rs)"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"

step "local stack"
eval "$(infra/stack-up.sh)"

step "browser for the console's browser test (chromium, chromedriver)"
infra/browser-up.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc -D warnings (broken intra-doc links after a move fail here)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "deployment checks (Terraform, Dockerfile)"
infra/check-deploy.sh

step "build (the e2e tests run the real binaries)"
cargo build --workspace --all-targets --locked

step "console API against docs/console.openapi.yaml (schemathesis)"
infra/api-check.sh

step "tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# cargo prints one summary per test binary (the last ones are empty doc-test runs); close with
# the total, so the last line says how many tests ran.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
