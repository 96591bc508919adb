#!/usr/bin/env bash
# The whole test suite of cloudmap-sd (README command 2; .ci/run calls it).
#
#   scripts/test.sh            install the test stack if needed, then run every gate:
#                              rustfmt, clippy, unit + integration tests (moto server,
#                              Prometheus), the end-to-end demo in --check mode, and the
#                              Terraform module tests (validate, checkov, apply on moto),
#                              and the container image (built with podman, run on moto)
#
# Builds go to CARGO_TARGET_DIR (default: ~/.cache/cloudmap-sd/target, outside the
# clone, so a second run on the same machine rebuilds only what changed).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cloudmap-sd/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
die() { printf 'test: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"

step "test stack: moto server, Prometheus"
bash scripts/stack.sh install
eval "$(bash scripts/stack.sh env)"

started=$(date +%s)
step "cargo fmt --check"
cargo fmt --all -- --check || die "the tree is not formatted: run cargo fmt"

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log="$CARGO_TARGET_DIR/test-output.txt"
: >"$log"

step "cargo test --workspace (unit and integration)"
if ! cargo test --workspace --all-targets --locked 2>&1 | tee -a "$log"; then
    die "cargo test failed (output above)"
fi

step "end-to-end demo (scripts/demo.sh --check)"
bash scripts/demo.sh --check

step "terraform: fmt, validate, checkov, plan/apply against moto (scripts/terraform-test.sh)"
if ! bash scripts/terraform-test.sh 2>&1 | tee -a "$log"; then
    die "terraform tests failed (output above)"
fi

step "container image: build with podman, run against moto (scripts/image-test.sh)"
if ! bash scripts/image-test.sh 2>&1 | tee -a "$log"; then
    die "container image tests failed (output above)"
fi

# One summary line over every test binary and script.
awk '
    /^test result:/ { p += $4; f += $6 }
    /^[a-z]+: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
    END { printf "\ntests: %d passed, %d failed\n", p, f }
' "$log"
printf 'suite time: %ss\n' "$(( $(date +%s) - started ))"
