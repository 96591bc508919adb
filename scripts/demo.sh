#!/usr/bin/env bash
# cloudmap-sd end to end on this machine, with no AWS account:
# moto server (Cloud Map) -> cloudmap-sd -> file_sd JSON -> Prometheus.
#
#   scripts/demo.sh           run until Ctrl-C
#   scripts/demo.sh --churn   also register/deregister a task every few seconds
#   scripts/demo.sh --check   verify the demo works, stop everything, exit 0 or 1
#   scripts/demo.sh --bin PATH   use this cloudmap-sd binary instead of building one
#
# State, logs and the targets file go to <repo>/.demo/ (created fresh each run).
# The binary is built with cargo into $CARGO_TARGET_DIR
# (default: $HOME/.cache/cloudmap-sd/target).
# Only 127.0.0.1 is used; free ports are picked at random.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly STATE="$REPO_ROOT/.demo"
# shellcheck source=scripts/lib/paths.sh
source "$REPO_ROOT/scripts/lib/paths.sh"
readonly PY="$CLOUDMAP_SD_VENV/bin/python"
readonly UTIL="$REPO_ROOT/scripts/demo_util.py"
readonly REGION=us-east-1

CHECK=0
CHURN=0
BIN=

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --check) CHECK=1 ;;
        --churn) CHURN=1 ;;
        --bin)
            [[ $# -ge 2 ]] || { printf 'demo: --bin needs a path\n' >&2; exit 64; }
            BIN=$2
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            printf 'demo: unknown argument: %s\n' "$1" >&2
            exit 64
            ;;
    esac
    shift
done
if [[ $CHECK -eq 1 && $CHURN -eq 1 ]]; then
    printf 'demo: --check and --churn do not go together (churn changes the target count)\n' >&2
    exit 64
fi

say() { printf 'demo: %s\n' "$*"; }

# ---------------------------------------------------------------- processes

declare -a STARTED=()      # component names, in start order
declare -A PID_OF=() LOG_OF=()

log_hint() {
    # log_hint COMPONENT: where its log is, and its last lines
    local log=${LOG_OF[$1]:-}
    [[ -n $log ]] || return 0
    printf '  log: %s\n' "$log" >&2
    if [[ -s $log ]]; then
        printf '  last lines:\n' >&2
        tail -n 15 "$log" | sed 's/^/    | /' >&2
    fi
}

fail() {
    # fail COMPONENT MESSAGE...
    local component=$1
    shift
    printf 'demo: FAILED: %s: %s\n' "$component" "$*" >&2
    log_hint "$component"
    exit 1
}

start() {
    # start COMPONENT LOGFILE CMD...: run CMD in its own session (so its whole process
    # group can be stopped), output to LOGFILE.
    local name=$1 log=$2
    shift 2
    LOG_OF[$name]=$log
    setsid "$@" >"$log" 2>&1 </dev/null &
    PID_OF[$name]=$!
    STARTED+=("$name")
    say "started $name (pid ${PID_OF[$name]}, log $log)"
}

alive() { [[ -n ${PID_OF[$1]:-} ]] && kill -0 "${PID_OF[$1]}" 2>/dev/null; }

reap() {
    # reap COMPONENT: wait for it (it has exited) and set EXIT_STATUS; not in a subshell,
    # which could not wait for this shell's children
    EXIT_STATUS=0
    wait "${PID_OF[$1]}" 2>/dev/null || EXIT_STATUS=$?
}

wait_for() {
    # wait_for COMPONENT TIMEOUT_S WHAT CMD...: until CMD succeeds, while COMPONENT runs
    local name=$1 timeout=$2 what=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ! alive "$name"; then
            reap "$name"
            fail "$name" "exited (status $EXIT_STATUS) before $what"
        fi
        if ((SECONDS >= deadline)); then
            fail "$name" "no $what after ${timeout}s"
        fi
        sleep 0.5
    done
}

stop_all() {
    # one at a time, in reverse start order: churn and Prometheus before the sidecar,
    # moto last; TERM to the whole process group, KILL after 10 s
    local i name pid deadline stopped=()
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        name=${STARTED[$i]}
        pid=${PID_OF[$name]}
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                say "$name (pid $pid) did not stop on TERM within 10s: killing it"
                kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        wait "$pid" 2>/dev/null || true
        # whatever it left behind in its process group
        kill -KILL -- "-$pid" 2>/dev/null || true
        stopped+=("$name")
    done
    ((${#stopped[@]} == 0)) || say "stopped ${stopped[*]}"
    STARTED=()
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    if [[ $(cat "$STATE/demo.pid" 2>/dev/null || true) == "$$" ]]; then
        rm -f "$STATE/demo.pid"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- prerequisites

command -v setsid >/dev/null 2>&1 || fail setup "setsid (util-linux) is not on PATH"

say "installing/checking the test stack (scripts/stack.sh install)"
"$REPO_ROOT/scripts/stack.sh" install || fail stack "scripts/stack.sh install failed (output above)"
PROMETHEUS=$(command -v prometheus) || fail stack "prometheus is not on PATH after scripts/stack.sh install"
PROMTOOL=$(command -v promtool) || fail stack "promtool is not on PATH after scripts/stack.sh install"

# A running demo owns .demo/: do not pull it from under it.
if [[ -f $STATE/demo.pid ]]; then
    other=$(cat "$STATE/demo.pid" 2>/dev/null || true)
    if [[ $other =~ ^[0-9]+$ ]] && [[ $other != "$$" ]] \
        && grep -qa 'demo.sh' "/proc/$other/cmdline" 2>/dev/null; then
        fail setup "another demo (pid $other) is running with $STATE: stop it first (Ctrl-C there, or kill $other)"
    fi
fi

# ---------------------------------------------------------------- build

# Both binaries (the sidecar and the seeder the tests and the benchmark share) in one
# workspace build: the same features as `cargo test --workspace`, so the suite and the
# demo share one debug build of every dependency.
command -v cargo >/dev/null 2>&1 || fail build "cargo is not on PATH: install Rust (rustup) first"
say "building: cargo build --workspace --bins (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$REPO_ROOT" && cargo build --workspace --bins --locked) \
    || fail build "cargo build --workspace --bins failed (output above)"
SEED="$CARGO_TARGET_DIR/debug/seed"
[[ -x $SEED ]] || fail build "cargo build succeeded but $SEED is missing"
if [[ -n $BIN ]]; then
    [[ $BIN == */* ]] || BIN=$(command -v "$BIN" || true)
    [[ -n $BIN && -x $BIN ]] || fail build "--bin: not an executable file"
    BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
    say "using $BIN"
else
    BIN="$CARGO_TARGET_DIR/debug/cloudmap-sd"
    [[ -x $BIN ]] || fail build "cargo build succeeded but $BIN is missing"
fi

# ---------------------------------------------------------------- state dir, ports

rm -rf "$STATE"
mkdir -p "$STATE/targets" "$STATE/tsdb"
printf '%s\n' "$$" >"$STATE/demo.pid"
TARGETS_FILE="$STATE/targets/cloudmap-sd.json"

read -r MOTO_PORT SIDECAR_PORT PROM_PORT < <("$PY" "$UTIL" ports 3) \
    || fail setup "could not pick free ports on 127.0.0.1"
MOTO_URL="http://127.0.0.1:$MOTO_PORT"
SIDECAR_ADDR="127.0.0.1:$SIDECAR_PORT"
SIDECAR_URL="http://$SIDECAR_ADDR"
PROM_URL="http://127.0.0.1:$PROM_PORT"

# ---------------------------------------------------------------- moto server

start moto "$STATE/moto.log" "$CLOUDMAP_SD_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
wait_for moto 30 "HTTP answer on $MOTO_URL" "$PY" "$UTIL" http-status --any "$MOTO_URL/moto-api/"
"$PY" "$UTIL" post "$MOTO_URL/moto-api/reset" || fail moto "POST $MOTO_URL/moto-api/reset failed"

say "seeding the demo topology (scripts/demo-topology.json)"
LOG_OF[seed]="$STATE/seed.log"
"$SEED" --endpoint "$MOTO_URL" --topology "$REPO_ROOT/scripts/demo-topology.json" \
    --var "SIDECAR_PORT=$SIDECAR_PORT" --var "PROMETHEUS_PORT=$PROM_PORT" \
    --summary-json "$STATE/seed.json" >"$STATE/seed.log" 2>&1 \
    || fail seed "seeding $MOTO_URL failed (log: $STATE/seed.log)"
sed 's/^/  /' "$STATE/seed.log"

# ---------------------------------------------------------------- the sidecar

# The demo's own AWS settings only: no profile, no shared config, no other
# endpoint overrides, no CLOUDMAP_SD_* flags from the caller's environment.
declare -a CLEAN_ENV=(-u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN)
while IFS= read -r var; do
    CLEAN_ENV+=(-u "$var")
done < <(compgen -e | grep -E '^(CLOUDMAP_SD_|AWS_ENDPOINT_URL_)' || true)

start cloudmap-sd "$STATE/cloudmap-sd.log" env "${CLEAN_ENV[@]}" \
    AWS_ENDPOINT_URL="$MOTO_URL" AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION" \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
    RUST_LOG="${RUST_LOG:-info}" \
    "$BIN" run --output "$TARGETS_FILE" --interval 5s --listen "$SIDECAR_ADDR"

# ---------------------------------------------------------------- Prometheus

yaml_quote() { local s=${1//\'/\'\'}; printf "'%s'" "$s"; }
cat >"$STATE/prometheus.yml" <<EOF
# Written by scripts/demo.sh: Prometheus reads the targets cloudmap-sd writes.
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
scrape_configs:
  - job_name: cloudmap-sd
    file_sd_configs:
      - files:
          - $(yaml_quote "$STATE/targets/*.json")
        refresh_interval: 5s
EOF
LOG_OF[promtool]="$STATE/promtool.log"
"$PROMTOOL" check config "$STATE/prometheus.yml" >"$STATE/promtool.log" 2>&1 \
    || fail promtool "promtool check config $STATE/prometheus.yml rejected the generated config"
say "promtool check config: $STATE/prometheus.yml is valid"

start prometheus "$STATE/prometheus.log" "$PROMETHEUS" \
    --config.file="$STATE/prometheus.yml" \
    --storage.tsdb.path="$STATE/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT"

# ---------------------------------------------------------------- readiness

wait_for cloudmap-sd 90 "200 from $SIDECAR_URL/-/ready" "$PY" "$UTIL" http-status "$SIDECAR_URL/-/ready"
[[ -s $TARGETS_FILE ]] || fail cloudmap-sd "ready, but $TARGETS_FILE does not exist or is empty"
say "cloudmap-sd is ready and wrote $TARGETS_FILE"
wait_for prometheus 30 "200 from $PROM_URL/-/ready" "$PY" "$UTIL" http-status "$PROM_URL/-/ready"
say "Prometheus is ready"

if [[ $CHURN -eq 1 ]]; then
    start churn "$STATE/churn.log" "$SEED" --endpoint "$MOTO_URL" --churn apps/web --churn-every 10s
fi

CHURN_LOG_LINE=
if [[ $CHURN -eq 1 ]]; then
    CHURN_LOG_LINE=$(printf '\n                     %s' "$STATE/churn.log")
fi
cat <<EOF

cloudmap-sd demo is running (state in $STATE)
  targets file       $TARGETS_FILE
  Prometheus         $PROM_URL/targets
                     $PROM_URL/api/v1/targets
  cloudmap-sd        $SIDECAR_URL/metrics
                     $SIDECAR_URL/-/ready
  moto server        $MOTO_URL   (AWS_ENDPOINT_URL for the aws cli or boto3)
  logs               $STATE/cloudmap-sd.log
                     $STATE/prometheus.log
                     $STATE/moto.log
                     $STATE/seed.log${CHURN_LOG_LINE}
EOF

if [[ $CHECK -eq 1 ]]; then
    echo
    say "checking (up to 60s: Prometheus picks up file_sd changes within ~5s, scrapes every 5s)"
    if "$PY" "$UTIL" check --file "$TARGETS_FILE" --summary "$STATE/seed.json" \
        --prometheus "$PROM_URL" --sidecar "$SIDECAR_ADDR" --timeout 60; then
        say "check passed"
        exit 0
    fi
    printf 'demo: check FAILED; logs:\n  cloudmap-sd: %s\n  prometheus:  %s\n  moto:        %s\n' \
        "$STATE/cloudmap-sd.log" "$STATE/prometheus.log" "$STATE/moto.log" >&2
    exit 1
fi

echo
say "press Ctrl-C to stop everything"
while true; do
    for name in "${STARTED[@]}"; do
        if ! alive "$name"; then
            reap "$name"
            fail "$name" "exited unexpectedly (status $EXIT_STATUS)"
        fi
    done
    sleep 1
done
