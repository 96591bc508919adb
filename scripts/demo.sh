#!/usr/bin/env bash
# cloudmap-sd end to end on this machine, with no AWS account, everything real:
# moto server (Cloud Map, ECS, EC2) -> cloudmap-sd -> file_sd JSON (targets and EC2
# hosts) -> Prometheus, which scrapes real /metrics on the addresses the tasks and
# hosts registered and remote-writes to a second Prometheus standing in for AMP;
# cloudmap-sd watches that remote write and probes the stand-in.
#
#   scripts/demo.sh           run until Ctrl-C (one task is started and stopped
#                             while you watch)
#   scripts/demo.sh --churn   start and stop a task again and again (every 20s)
#   scripts/demo.sh --check   verify the whole demo, stop everything, exit 0 or 1
#   scripts/demo.sh --bin PATH   use this cloudmap-sd binary instead of building one
#
# State, logs and the files go to <repo>/.demo/ (created fresh each run). The
# binaries are built with cargo into $CARGO_TARGET_DIR (default:
# $HOME/.cache/cloudmap-sd/target, the directory scripts/test.sh uses too).
# Only loopback addresses are used: 127.0.0.1 on free ports, and a random
# 127.X.Y.0/24 for the tasks and hosts.
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

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

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
    printf 'demo: --check and --churn do not go together (--check churns once, and checks it)\n' >&2
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

# Both binaries (the sidecar and the seeder the tests and the benchmark share), built
# with the dependencies' features of `cargo test --workspace`, so the suite and the
# demo share one debug build of every dependency. A plain `cargo build --bins` leaves
# the dev-dependencies out, and with them features they turn on in shared crates
# (tokio's test-util): tokio and the whole AWS SDK above it would be compiled again.
# Building the examples (the benchmark) too makes cargo resolve features as for the
# tests.
command -v cargo >/dev/null 2>&1 || fail build "cargo is not on PATH: install Rust (rustup) first"
say "building: cargo build --workspace --bins --examples (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$REPO_ROOT" && cargo build --workspace --bins --examples --locked) \
    || fail build "cargo build --workspace --bins --examples failed (output above)"
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
mkdir -p "$STATE/targets" "$STATE/tsdb" "$STATE/amp-tsdb"
printf '%s\n' "$$" >"$STATE/demo.pid"
TARGETS_FILE="$STATE/targets/cloudmap-sd.json"
HOSTS_FILE="$STATE/targets/ec2-hosts.json"

read -r MOTO_PORT SIDECAR_PORT PROM_PORT AMP_PORT METRICS_PORT APP_PORT ECS_EXPORTER_PORT \
    ADMIN_PORT NODE_PORT < <("$PY" "$UTIL" ports 9) \
    || fail setup "could not pick free ports on 127.0.0.1"
# The tasks' and hosts' own addresses: a /24 of the loopback network of its own, so
# that demos running side by side (or anything on 127.0.0.1) never collide.
NET="127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))"
MOTO_URL="http://127.0.0.1:$MOTO_PORT"
SIDECAR_ADDR="127.0.0.1:$SIDECAR_PORT"
SIDECAR_URL="http://$SIDECAR_ADDR"
PROM_URL="http://127.0.0.1:$PROM_PORT"
AMP_URL="http://127.0.0.1:$AMP_PORT"

# ---------------------------------------------------------------- moto server

start moto "$STATE/moto.log" "$CLOUDMAP_SD_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
wait_for moto 30 "HTTP answer on $MOTO_URL" "$PY" "$UTIL" http-status --any "$MOTO_URL/moto-api/"
"$PY" "$UTIL" post "$MOTO_URL/moto-api/reset" || fail moto "POST $MOTO_URL/moto-api/reset failed"

# ---------------------------------------------------------------- the tasks' world

# One process seeds the topology (EC2 hosts, ECS clusters and tasks, Cloud Map) and
# then stands in for the tasks and hosts: /metrics on each address they registered.
# It also runs the harness's proxy in front of moto, the sidecar's AWS endpoint (it
# answers DescribeTasks as ECS does where moto does not).
say "seeding scripts/demo-topology.json into moto, then serving the tasks' /metrics"
start fleet "$STATE/fleet.log" "$SEED" --endpoint "$MOTO_URL" \
    --topology "$REPO_ROOT/scripts/demo-topology.json" --summary-json "$STATE/seed.json" --serve \
    --var "NET=$NET" --var "SIDECAR_PORT=$SIDECAR_PORT" --var "PROMETHEUS_PORT=$PROM_PORT" \
    --var "METRICS_PORT=$METRICS_PORT" --var "APP_PORT=$APP_PORT" \
    --var "ECS_EXPORTER_PORT=$ECS_EXPORTER_PORT" --var "ADMIN_PORT=$ADMIN_PORT" \
    --var "NODE_PORT=$NODE_PORT"
wait_for fleet 60 "the seeded topology ($STATE/seed.json)" test -s "$STATE/seed.json"
sed 's/^/  /' "$STATE/fleet.log"
AWS_URL=$("$PY" "$UTIL" json "$STATE/seed.json" aws_endpoint) \
    || fail fleet "no aws_endpoint in $STATE/seed.json"

# ---------------------------------------------------------------- Prometheus and the AMP stand-in

yaml_quote() { local s=${1//\'/\'\'}; printf "'%s'" "$s"; }
cat >"$STATE/prometheus.yml" <<EOF
# Written by scripts/demo.sh: the Prometheus of the task. It reads the targets and the
# EC2 hosts cloudmap-sd writes, and remote-writes to the AMP stand-in, with the
# external labels AMP de-duplicates HA pairs by.
global:
  scrape_interval: 2s
  scrape_timeout: 2s
  external_labels:
    cluster: demo
    __replica__: demo-0
scrape_configs:
  - job_name: cloudmap-sd
    file_sd_configs:
      - files:
          - $(yaml_quote "$TARGETS_FILE")
  - job_name: ec2-hosts
    file_sd_configs:
      - files:
          - $(yaml_quote "$HOSTS_FILE")
remote_write:
  - url: $AMP_URL/api/v1/write
    queue_config:
      batch_send_deadline: 1s
EOF
cat >"$STATE/amp.yml" <<EOF
# Written by scripts/demo.sh: a Prometheus that only receives remote writes, as AMP.
global: {}
EOF
LOG_OF[promtool]="$STATE/promtool.log"
for config in prometheus.yml amp.yml; do
    "$PROMTOOL" check config "$STATE/$config" >>"$STATE/promtool.log" 2>&1 \
        || fail promtool "promtool check config $STATE/$config rejected the generated config"
done
say "promtool check config: $STATE/prometheus.yml and amp.yml are valid"

start amp "$STATE/amp.log" "$PROMETHEUS" --config.file="$STATE/amp.yml" \
    --storage.tsdb.path="$STATE/amp-tsdb" --web.listen-address="127.0.0.1:$AMP_PORT" \
    --web.enable-remote-write-receiver
start prometheus "$STATE/prometheus.log" "$PROMETHEUS" \
    --config.file="$STATE/prometheus.yml" \
    --storage.tsdb.path="$STATE/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT"

# ---------------------------------------------------------------- the sidecar

# The demo's own AWS settings only: no profile, no shared config, no other
# endpoint overrides, no CLOUDMAP_SD_* flags from the caller's environment.
declare -a CLEAN_ENV=(-u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN)
while IFS= read -r var; do
    CLEAN_ENV+=(-u "$var")
done < <(compgen -e | grep -E '^(CLOUDMAP_SD_|AWS_ENDPOINT_URL_)' || true)
# (AWS_DEFAULT_REGION for version 1 of the aws cli, which reads no AWS_REGION.)
readonly DEMO_AWS="AWS_ENDPOINT_URL=$AWS_URL AWS_REGION=$REGION AWS_DEFAULT_REGION=$REGION \
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true"
# shellcheck disable=SC2086 # DEMO_AWS is a list of NAME=VALUE words
start cloudmap-sd "$STATE/cloudmap-sd.log" env "${CLEAN_ENV[@]}" $DEMO_AWS \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    "$BIN" run --output "$TARGETS_FILE" --interval 2s --listen "$SIDECAR_ADDR" \
    --ec2-hosts-output "$HOSTS_FILE" --ec2-hosts-port "$NODE_PORT" \
    --prometheus-url "$PROM_URL" --prometheus-config "$STATE/prometheus.yml" \
    --remote-write-watch-interval 2s --amp-probe-interval 30s

# ---------------------------------------------------------------- readiness

wait_for amp 30 "200 from $AMP_URL/-/ready" "$PY" "$UTIL" http-status "$AMP_URL/-/ready"
wait_for prometheus 30 "200 from $PROM_URL/-/ready" "$PY" "$UTIL" http-status "$PROM_URL/-/ready"
wait_for cloudmap-sd 90 "200 from $SIDECAR_URL/-/ready" "$PY" "$UTIL" http-status "$SIDECAR_URL/-/ready"
[[ -s $TARGETS_FILE ]] || fail cloudmap-sd "ready, but $TARGETS_FILE does not exist or is empty"
say "cloudmap-sd is ready and wrote $TARGETS_FILE"

# The UI pages this Prometheus really serves (Debian's 2.42 has only /classic/...).
UI=$("$PY" "$UTIL" ui "$PROM_URL") || fail prometheus "cannot tell which UI pages $PROM_URL serves"
eval "$UI"

# ---------------------------------------------------------------- what to look at

q() { printf '%q' "$1"; }
EXPORTS="export $DEMO_AWS; unset AWS_PROFILE AWS_SESSION_TOKEN"
declare -a COMMANDS=(
    "$(q "$BIN") once --output $(q "$STATE/once.json") --ec2-hosts-output $(q "$STATE/once-hosts.json") --ec2-hosts-port $NODE_PORT"
    "$(q "$BIN") check --output $(q "$TARGETS_FILE") --ec2-hosts-output $(q "$HOSTS_FILE") --prometheus-config $(q "$STATE/prometheus.yml")"
    "aws servicediscovery list-services --query 'Services[].[Name,Id]' --output text"
    "aws ecs list-tasks --cluster demo-apps --query 'taskArns' --output text"
    "aws ec2 describe-instances --query 'Reservations[].Instances[].[InstanceId,PrivateIpAddress]' --output text"
    "curl -s $(q "$SIDECAR_URL/sd/targets")"
)
declare -a URLS=("$PROM_URL$UI_TARGETS" "$PROM_URL$UI_SD" "$PROM_URL$UI_GRAPH" "$AMP_URL$UI_GRAPH"
    "$SIDECAR_URL/metrics" "$SIDECAR_URL/-/ready" "$SIDECAR_URL/sd/targets")
AMP_QUERY="$AMP_URL${UI_GRAPH/g0.expr=up/g0.expr=demo_requests_total}"
URLS+=("$AMP_QUERY")

cat <<EOF

cloudmap-sd demo is running (everything in $STATE)

  Prometheus           $PROM_URL$UI_TARGETS
    the targets page: job cloudmap-sd holds what cloudmap-sd found in Cloud Map,
    every target UP (real /metrics) but db-proxy's 2 admin targets, DOWN on purpose:
    nothing listens on its METRICS_PORT_admin, as when a tag names the wrong port.
    Job ec2-hosts: the EC2 hosts file, one node exporter per host.
                       $PROM_URL$UI_SD
    each target's labels: ecs_launch_type, ecs_task_revision, ec2_name (the host's Name tag)
  AMP stand-in         $AMP_QUERY
    a second Prometheus receiving the remote write: the demo's samples, with the
    external labels cluster="demo" and __replica__
  cloudmap-sd          $SIDECAR_URL/metrics
    cloudmap_sd_targets, cloudmap_sd_remote_write_state{state="ok"} 1 (it reads
    Prometheus's remote-write queues), cloudmap_sd_amp_probe_result{result="accepted"} 1
    (a signed empty write to the stand-in), cloudmap_sd_skipped_endpoints
                       $SIDECAR_URL/-/ready
                       $SIDECAR_URL/sd/targets
    the same targets over http_sd (the file's bytes), for http_sd_configs
  files                $TARGETS_FILE
                       $HOSTS_FILE
    rewritten atomically, and only when something changed
  broken on purpose    internal.local/legacy has METRICS_PORT=http: no target, a warning in
                       $STATE/cloudmap-sd.log; db-proxy's admin endpoint (above)
  moto server          $MOTO_URL (Cloud Map, ECS, EC2); cloudmap-sd reaches it through
                       $AWS_URL, the test proxy that fixes two ECS answers moto gets wrong
  logs                 $STATE/{cloudmap-sd,prometheus,amp,fleet,moto}.log

Try it (paste into a shell; the export points that shell's AWS tools at the demo):
  $EXPORTS
EOF
printf '  %s\n' "${COMMANDS[@]}"

# What --check reads: the demo's URLs, files and commands.
export DEMO_SUMMARY="$STATE/seed.json" DEMO_PROMETHEUS="$PROM_URL" DEMO_AMP="$AMP_URL" \
    DEMO_SIDECAR="$SIDECAR_ADDR" DEMO_SEED_BIN="$SEED" DEMO_TARGETS="$TARGETS_FILE" \
    DEMO_HOSTS="$HOSTS_FILE" DEMO_LOG="$STATE/cloudmap-sd.log" DEMO_EXPORTS="$EXPORTS" \
    DEMO_ONCE="$STATE/once.json"
"$PY" - "$STATE/context.json" "${#URLS[@]}" "${URLS[@]}" "${COMMANDS[@]}" <<'PY' \
    || fail setup "could not write $STATE/context.json"
import json, os, sys
out, n, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
env = os.environ
ctx = {
    "summary": env["DEMO_SUMMARY"], "prometheus": env["DEMO_PROMETHEUS"],
    "amp": env["DEMO_AMP"], "sidecar": env["DEMO_SIDECAR"], "seed_bin": env["DEMO_SEED_BIN"],
    "targets_file": env["DEMO_TARGETS"], "hosts_file": env["DEMO_HOSTS"],
    "sidecar_log": env["DEMO_LOG"], "exports": env["DEMO_EXPORTS"],
    "once_file": env["DEMO_ONCE"], "urls": rest[:n], "commands": rest[n:],
}
with open(out, "w", encoding="utf-8") as f:
    json.dump(ctx, f, indent=2)
PY

if [[ $CHECK -eq 1 ]]; then
    echo
    say "checking (up to 120s: Prometheus picks up file_sd changes within ~5s, scrapes every 2s)"
    if "$PY" "$UTIL" check --ctx "$STATE/context.json" --timeout 120; then
        say "check passed"
        exit 0
    fi
    printf 'demo: check FAILED; logs in %s: cloudmap-sd.log prometheus.log amp.log fleet.log moto.log\n' \
        "$STATE" >&2
    exit 1
fi

echo
say "watch $PROM_URL$UI_TARGETS: a web task starts, is scraped for 15s, and stops"
"$PY" "$UTIL" churn --ctx "$STATE/context.json" --hold 15 \
    || say "the churn step had a problem (above)"
if [[ $CHURN -eq 1 ]]; then
    say "from now on a web task starts and stops every 20s (log: $STATE/churn.log)"
    start churn "$STATE/churn.log" "$PY" "$UTIL" churn --ctx "$STATE/context.json" \
        --hold 10 --every 20
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
