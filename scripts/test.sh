#!/usr/bin/env bash
# The whole test suite of cloudmap-sd (README command 2; .ci/run calls it).
#
#   scripts/test.sh            install the test stack if needed, then run every gate:
#                              rustfmt, clippy (-D warnings), unit + integration tests (moto server,
#                              Prometheus), the end-to-end demo in --check mode, and the
#                              Terraform module tests (validate, checkov, apply on moto),
#                              and the container image (built with podman, run on moto)
#
# Builds go to CARGO_TARGET_DIR (default: ~/.cache/cloudmap-sd/target, outside the
# clone, so a second run on the same machine rebuilds only what changed).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

# shellcheck source=scripts/lib/paths.sh
source "$REPO_ROOT/scripts/lib/paths.sh"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CARGO_TARGET_DIR"

# step NAME: prints a heading and records when NAME began (for the closing times).
declare -a step_names=() step_starts=()
step() {
    printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"
    step_names+=("$*")
    step_starts+=("$(date +%s)")
}
# The wall time of each step, at the end.
step_times() {
    local i end
    printf '\nstep times:\n'
    for i in "${!step_names[@]}"; do
        end=${step_starts[$((i + 1))]:-$(date +%s)}
        printf '  %5ss  %s\n' "$((end - step_starts[i]))" "${step_names[i]}"
    done
}
die() { printf 'test: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"

step "test stack: moto server, Prometheus"
bash scripts/stack.sh install
eval "$(bash scripts/stack.sh env)"

started=$(date +%s)
step "cargo fmt --check"
cargo fmt --all -- --check || die "the tree is not formatted: run cargo fmt"

# Clippy, -D warnings, over every target (examples included), without a third
# compile of the dependencies. `cargo clippy` type-checks every dependency again in
# check mode, besides the debug build the tests and the demo share (the AWS SDK:
# minutes). Here clippy-driver is the compiler of the workspace members only
# (RUSTC_WORKSPACE_WRAPPER, as `cargo clippy` runs it) in a build with the test
# build's own dependencies, so those are compiled once, for both. Cargo keys the
# members' artifacts by the wrapper: the tests below run what rustc built, never what
# clippy-driver built (it turns MIR optimisation and the debug null and alignment
# checks off, and is not meant to make artifacts). CLIPPY_ARGS is how cargo-clippy
# hands its `-- ARGS` to clippy-driver.
step "clippy -D warnings over every target (clippy-driver as the workspace's compiler)"
clippy_driver=$(command -v clippy-driver) && "$clippy_driver" -V >/dev/null 2>&1 \
    || die "clippy-driver does not run: install clippy (rustup component add clippy)"
RUSTC_WORKSPACE_WRAPPER="$clippy_driver" \
    CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
    cargo test --workspace --all-targets --no-run --locked

log="$CARGO_TARGET_DIR/test-output.txt"
: >"$log"

# The library's unit tests, the binaries' and the one integration-test binary
# (tests/integration/). Examples (the benchmark) are left to clippy above: they are
# built and linted, not run, here. Most integration tests wait on moto and Prometheus, so three
# run at once on two cores.
step "cargo test --workspace (unit and integration)"
if ! cargo test --workspace --lib --bins --tests --locked -- --test-threads 3 2>&1 | tee -a "$log"; then
    die "cargo test failed (output above)"
fi

step "end-to-end demo (scripts/demo.sh --check)"
bash scripts/demo.sh --check

# The image's static release binary builds while the Terraform tests run (they wait on
# moto and terraform more than on the CPU); the image step below then finds it built.
release_log="$CARGO_TARGET_DIR/release-build.txt"
bash scripts/image.sh binary >"$release_log" 2>&1 &
release_pid=$!

step "terraform: fmt, validate, checkov, plan/apply against moto (scripts/terraform-test.sh)"
if ! bash scripts/terraform-test.sh 2>&1 | tee -a "$log"; then
    wait "$release_pid" || true
    die "terraform tests failed (output above)"
fi

step "static release binary for the image (scripts/image.sh binary, built beside the Terraform tests)"
if ! wait "$release_pid"; then
    cat "$release_log"
    die "the release build failed (output above)"
fi
tail -n 2 "$release_log"

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
step_times
printf 'suite time: %ss\n' "$(( $(date +%s) - started ))"
