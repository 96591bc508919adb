#!/usr/bin/env bash
# The cloudmap-sd benchmark (examples/bench.rs): API calls per cycle, cycle wall and
# CPU time, peak RSS, output size, time to target, and what reading the file costs a
# real Prometheus (file_sd scans and scan seconds per change, its memory, bytes per
# target for each --meta-labels), and the http_sd endpoint under load from a second
# process, for 100 and 1000 Cloud Map services. Plain tables on stdout, progress on
# stderr. Part `prometheus` needs Prometheus (scripts/stack.sh).
#
#   scripts/bench.sh [--against fake|moto] [--services 100,1000] [--tasks 10]
#                    [--namespaces 10] [--hosts 20] [--ttt-runs 5] [--ttt-interval 5s]
#                    [--parts cycles,ttt,prometheus,http-sd] [--prometheus-changes 5]
#                    [--sd-requests 2000] [--sd-concurrency 8]
#
#   scripts/bench.sh --against fake --services 100,1000   in-process fake (instant answers)
#   scripts/bench.sh --against moto --services 100,1000   moto server via the SDK adapters
#   scripts/bench.sh --help                               every flag
#
# Locates moto server through scripts/stack.sh (installs the venv when --against moto
# needs it and it is missing). Builds in release mode into CARGO_TARGET_DIR (default:
# ~/.cache/cloudmap-sd/target); the first release build of the AWS SDK crates takes
# a while.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

eval "$(bash scripts/stack.sh env)"
if [[ " $* " == *" moto "* || " $* " == *"=moto "* ]] && [[ ! -x $CLOUDMAP_SD_MOTO_SERVER ]]; then
    bash scripts/stack.sh tools
fi

# shellcheck source=scripts/lib/paths.sh
source "$REPO_ROOT/scripts/lib/paths.sh"
mkdir -p "$CARGO_TARGET_DIR"

exec cargo run --release --quiet --example bench -- "$@"
