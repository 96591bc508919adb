#!/usr/bin/env bash
# Tests of the Terraform modules under terraform/:
#   1. terraform fmt -check -recursive
#   2. offline init (from the provider mirror on this machine) + validate, every module,
#      example and test configuration
#   3. checkov, offline: no failed check, every skip has a reason
#   4. plan + apply of terraform/tests/moto against a moto server started here, the
#      created resources read back and checked (plus, from moto's request recording,
#      what apply sent where moto stores nothing), a second plan shows no drift, and
#      the init container's script run locally against a fake task metadata endpoint
#      (compact and indented JSON)
#   5. cloudmap-sd (CLOUDMAP_SD_BIN, or a cargo build output) discovers the target that
#      the scrape-target module created, and run with the environment of a task
#      definition that has EC2 hosts by tag writes both files, which Prometheus's
#      promtool reads in their own jobs (relabel rules applied); run with the
#      environment of the discovery-service module it serves /sd/* behind the token
#      of the secret the module created
#   6. terraform destroy
#   7. a plan of terraform/tests/moto/refusals: every bad input refused with its
#      message
# Ends with "terraform: N passed, M failed". Exit status 0 only when nothing failed.
#
# Needs: terraform on PATH, the provider mirror (a folder holding
# registry.terraform.io/hashicorp/aws), python3. Installs checkov, moto[server]==5.1.6,
# boto3 and PyYAML into <repo>/.venv when missing, and busybox with apt-get when root.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TF_SRC="$REPO/terraform"
# shellcheck source=scripts/lib/paths.sh
source "$REPO/scripts/lib/paths.sh"
VENV="$CLOUDMAP_SD_VENV"

WORK=""
MOTO_PID=""

say() { printf '%s\n' "$*"; }
# shellcheck source=scripts/lib/steps.sh
source "$REPO/scripts/lib/steps.sh"
die() {
  say "terraform-test: $*" >&2
  say "terraform: $passed passed, $((failed + 1)) failed"
  exit 1
}

cleanup() {
  if [[ -n "$MOTO_PID" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------

command -v terraform >/dev/null 2>&1 ||
  die "terraform is not on PATH (Terraform >= 1.5 is needed; this machine image ships 1.11)"

find_plugin_dir() {
  local d
  while IFS= read -r d; do
    if [[ -d "$d/hashicorp/aws" ]]; then
      dirname "$d"
      return 0
    fi
  done < <(find / -maxdepth 3 -type d -name registry.terraform.io 2>/dev/null | sort)
  return 1
}
PLUGIN_DIR=$(find_plugin_dir) ||
  die "no provider mirror found: no folder registry.terraform.io/hashicorp/aws within 3 levels of / (the registry is not reachable, so init must be offline)"

command -v python3 >/dev/null 2>&1 || die "python3 is not on PATH"

say "terraform: $(terraform version -json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["terraform_version"])' 2>/dev/null || terraform version | head -n 1)"
say "provider mirror: $PLUGIN_DIR"

export TF_CLI_CONFIG_FILE=/dev/null
export TF_IN_AUTOMATION=1
export TF_INPUT=0
export CHECKPOINT_DISABLE=1
# Never let a stray profile or real credentials reach the moto run.
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL

ensure_venv() {
  # The venv with moto pinned (scripts/stack.sh owns that), plus this script's tools.
  bash "$REPO/scripts/stack.sh" tools checkov PyYAML
  [[ -x "$VENV/bin/checkov" ]] || die "$VENV/bin/checkov is missing after the install"
}
ensure_venv || die "could not prepare $VENV (scripts/stack.sh tools checkov PyYAML)"
PY="$VENV/bin/python"

# Work on a copy: init, plan and apply write .terraform/, lock files and state there,
# never into the repository.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/terraform-test.XXXXXX")
cp -R "$TF_SRC" "$WORK/terraform"
find "$WORK/terraform" \( -name .terraform -o -name '*.tfstate*' -o -name .terraform.lock.hcl \) -prune -exec rm -rf {} +
TF="$WORK/terraform"

# ---------------------------------------------------------------------------
# 1. fmt
# ---------------------------------------------------------------------------

step_fmt() {
  terraform fmt -check -recursive -diff "$TF_SRC"
}
run_step "fmt -check -recursive terraform/" step_fmt || true

# ---------------------------------------------------------------------------
# 2. init + validate for every configuration
# ---------------------------------------------------------------------------

step_validate() {
  local dir=$1
  (
    cd "$TF/$dir"
    terraform init -backend=false -input=false -no-color -plugin-dir="$PLUGIN_DIR" >"$WORK/init.log" 2>&1 || {
      cat "$WORK/init.log"
      exit 1
    }
    terraform validate -no-color
  )
}

mapfile -t TF_DIRS < <(cd "$TF" && find . -name '*.tf' -not -path '*/.terraform/*' -exec dirname {} \; | sed 's|^\./||' | sort -u)
for dir in "${TF_DIRS[@]}"; do
  run_step "init + validate ${dir}" step_validate "$dir" || true
done

# ---------------------------------------------------------------------------
# 2b. docs/deploy.md lists exactly the modules' inputs and outputs
# ---------------------------------------------------------------------------

step_docs() {
  "$PY" - "$TF_SRC" "$REPO/docs/deploy.md" <<'EOF'
import glob, os, re, sys
src, doc = sys.argv[1], sys.argv[2]
if not os.path.exists(doc):
    sys.exit(f"{doc} is missing")

def declared(module_dir, kind):
    names = set()
    for f in glob.glob(os.path.join(module_dir, "*.tf")):
        names |= set(re.findall(r'^%s\s+"([^"]+)"' % kind, open(f).read(), re.M))
    return names

sections, current = {}, None
for line in open(doc):
    if line.startswith("#"):
        current = line.strip("# \n")
        continue
    m = re.match(r"\|\s*`([A-Za-z0-9_]+)`\s*\|", line)
    if m and current:
        sections.setdefault(current, set()).add(m.group(1))

expect = {
    "Module inputs": declared(src, "variable"),
    "Module outputs": declared(src, "output"),
    "scrape-target inputs": declared(os.path.join(src, "modules/scrape-target"), "variable"),
    "scrape-target outputs": declared(os.path.join(src, "modules/scrape-target"), "output"),
    "discovery-role inputs": declared(os.path.join(src, "modules/discovery-role"), "variable"),
    "discovery-role outputs": declared(os.path.join(src, "modules/discovery-role"), "output"),
    "discovery-service inputs": declared(os.path.join(src, "modules/discovery-service"), "variable"),
    "discovery-service outputs": declared(os.path.join(src, "modules/discovery-service"), "output"),
    "adot-collector inputs": declared(os.path.join(src, "modules/adot-collector"), "variable"),
    "adot-collector outputs": declared(os.path.join(src, "modules/adot-collector"), "output"),
}
bad = 0
for title, names in expect.items():
    got = sections.get(title, set())
    missing, stale = sorted(names - got), sorted(got - names)
    for n in missing:
        print(f"  FAIL {title}: `{n}` is in the code but not in the table")
    for n in stale:
        print(f"  FAIL {title}: `{n}` is in the table but not in the code")
    if not missing and not stale:
        print(f"  ok   {title}: {len(names)} names")
    bad += len(missing) + len(stale)
sys.exit(1 if bad else 0)
EOF
}
run_step "docs/deploy.md tables match the modules' inputs and outputs" step_docs || true

# ---------------------------------------------------------------------------
# 3. checkov
# ---------------------------------------------------------------------------

step_checkov() {
  local rc=0
  "$VENV/bin/checkov" -d "$TF_SRC" --framework terraform --skip-download --compact -o json \
    >"$WORK/checkov.json" 2>"$WORK/checkov.err" || rc=$?
  "$PY" - "$WORK/checkov.json" "$rc" <<'EOF'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    data = json.load(open(path))
except ValueError:
    print(open(path).read()[-4000:])
    sys.exit("checkov printed no JSON report")
reports = data if isinstance(data, list) else [data]
bad = 0
for r in reports:
    s = r.get("summary", {})
    print(f"checkov {r.get('check_type')}: {s.get('passed')} passed, {s.get('failed')} failed, "
          f"{s.get('skipped')} skipped, {s.get('parsing_errors')} parsing errors, {s.get('resource_count')} resources")
    bad += s.get("parsing_errors", 0)
    res = r.get("results", {})
    for c in res.get("failed_checks", []):
        bad += 1
        print(f"  FAILED {c['check_id']} {c['check_name']}: {c['resource']} in {c['file_path']}")
    seen = set()
    for c in res.get("skipped_checks", []):
        reason = (c.get("check_result", {}).get("suppress_comment") or "").strip()
        key = (c["check_id"], c["file_path"], reason)
        if key in seen:
            continue
        seen.add(key)
        print(f"  skip {c['check_id']} in {c['file_path']}: {reason or 'NO REASON'}")
        if not reason or reason.lower() == "no comment provided":
            bad += 1
            print("  FAILED: that skip has no reason")
if bad or rc != 0:
    sys.exit(f"checkov: {bad} problem(s), exit status {rc}")
EOF
}
run_step "checkov (offline)" step_checkov || true

# ---------------------------------------------------------------------------
# 4. plan + apply against moto server
# ---------------------------------------------------------------------------

MOTO_DIR="$TF/tests/moto"
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_moto() {
  local port
  port=$(free_port)
  MOTO_URL="http://127.0.0.1:$port"
  # The recorder (off until step_plan_apply starts it) keeps its file in $WORK.
  MOTO_RECORDER_FILEPATH="$WORK/moto-recording.jsonl" \
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
  MOTO_PID=$!
  export MOTO_URL
  local _
  for _ in $(seq 1 60); do
    if "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/moto-api/', timeout=1)" "$MOTO_URL" 2>/dev/null; then
      say "moto server $MOTO_URL (pid $MOTO_PID)"
      return 0
    fi
    kill -0 "$MOTO_PID" 2>/dev/null || break
    sleep 0.5
  done
  cat "$WORK/moto.log"
  return 1
}

# POST to moto's own API, e.g. moto_api recorder/start-recording.
moto_api() {
  "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=b"", method="POST"), timeout=10).read()' \
    "$MOTO_URL/moto-api/$1"
}

tf_moto() {
  (cd "$MOTO_DIR" && terraform "$@" -input=false -no-color -var "moto_endpoint=$MOTO_URL")
}

step_plan_apply() {
  tf_moto plan -out="$WORK/apply.tfplan" >"$WORK/plan.log" 2>&1 || {
    cat "$WORK/plan.log"
    return 1
  }
  grep -E '^Plan:' "$WORK/plan.log"
  # Record the requests of the apply: moto accepts some parameters without storing
  # them (the EC2 service's placementStrategy), so verify.py checks what was sent.
  moto_api recorder/reset-recording && moto_api recorder/start-recording || return 1
  (cd "$MOTO_DIR" && terraform apply -input=false -no-color "$WORK/apply.tfplan") >"$WORK/apply.log" 2>&1 || {
    cat "$WORK/apply.log"
    return 1
  }
  moto_api recorder/stop-recording || return 1
  grep -E '^Apply complete' "$WORK/apply.log"
  (cd "$MOTO_DIR" && terraform output -json) >"$WORK/outputs.json"
}

step_resources() { "$PY" "$MOTO_DIR/verify.py" resources "$WORK/outputs.json"; }

step_drift() {
  tf_moto plan -out="$WORK/again.tfplan" >"$WORK/plan2.log" 2>&1 || {
    cat "$WORK/plan2.log"
    return 1
  }
  (cd "$MOTO_DIR" && terraform show -json "$WORK/again.tfplan") >"$WORK/again.json"
  "$PY" "$MOTO_DIR/verify.py" drift "$WORK/again.json"
}

step_init_script() {
  # The init container runs busybox's sh, sed and wget (the Prometheus image's);
  # verify.py runs the script with them too when busybox is here.
  if ! command -v busybox >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      say "installing busybox (apt-get)"
      if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox >"$WORK/apt.log" 2>&1; then
        tail -n 5 "$WORK/apt.log"
        say "apt-get install busybox failed; install busybox and run again"
        return 1
      fi
    else
      say "busybox is missing and cannot be installed here (not root or no apt-get): install busybox and run again"
      return 1
    fi
  fi
  "$PY" "$MOTO_DIR/verify.py" init-script "$WORK/outputs.json"
}

find_sidecar_bin() {
  local c
  if [[ -n "${CLOUDMAP_SD_BIN:-}" ]]; then
    printf '%s\n' "$CLOUDMAP_SD_BIN"
    return 0
  fi
  for c in ${CARGO_TARGET_DIR:+"$CARGO_TARGET_DIR/debug/cloudmap-sd"} \
    "$HOME/.cache/cloudmap-sd/target/debug/cloudmap-sd" \
    "$REPO/target/debug/cloudmap-sd"; do
    if [[ -x "$c" ]]; then
      printf '%s\n' "$c"
      return 0
    fi
  done
  return 1
}

step_discover() {
  local bin
  if ! bin=$(find_sidecar_bin); then
    say "no cloudmap-sd binary: set CLOUDMAP_SD_BIN, or build it first with"
    say "  cargo build --bin cloudmap-sd"
    say "(looked in \$CARGO_TARGET_DIR/debug, \$HOME/.cache/cloudmap-sd/target/debug and $REPO/target/debug)"
    return 1
  fi
  if [[ ! -x "$bin" ]]; then
    say "CLOUDMAP_SD_BIN=$bin is not an executable file; build it with: cargo build --bin cloudmap-sd"
    return 1
  fi
  say "cloudmap-sd binary: $bin"
  "$PY" "$MOTO_DIR/verify.py" discover "$WORK/outputs.json" "$bin"
}

step_hosts() {
  local bin
  bin=$(find_sidecar_bin) || return 1
  "$PY" "$MOTO_DIR/verify.py" hosts "$WORK/outputs.json" "$bin"
}

step_service() {
  local bin
  bin=$(find_sidecar_bin) || return 1
  "$PY" "$MOTO_DIR/verify.py" service "$WORK/outputs.json" "$bin"
}

REFUSALS_DIR="$TF/tests/moto/refusals"
step_refusals() {
  local rc=0
  (cd "$REFUSALS_DIR" && terraform plan -json -input=false -var "moto_endpoint=$MOTO_URL") \
    >"$WORK/refusals.json" 2>"$WORK/refusals.err" || rc=$?
  if [[ $rc -eq 0 ]]; then
    say "the plan of tests/moto/refusals succeeded; it must fail"
    return 1
  fi
  "$PY" "$MOTO_DIR/verify.py" refusals "$WORK/refusals.json" || {
    tail -n 20 "$WORK/refusals.err"
    return 1
  }
}

step_destroy() {
  tf_moto destroy -auto-approve >"$WORK/destroy.log" 2>&1 || {
    cat "$WORK/destroy.log"
    return 1
  }
  grep -E '^Destroy complete' "$WORK/destroy.log"
}

# The moto steps depend on each other: after the first failure the rest do not run.
moto_steps=(
  "moto: start server|start_moto"
  "moto: plan + apply terraform/tests/moto|step_plan_apply"
  "moto: created resources match the modules' contract|step_resources"
  "moto: second plan shows no drift|step_drift"
  "init container script: __replica__ from task metadata, volume ownership|step_init_script"
  "cloudmap-sd discovers the module-created target|step_discover"
  "EC2 hosts file: sidecar with the module's environment, promtool reads both jobs|step_hosts"
  "discovery service: its environment serves /sd/* with the secret's token|step_service"
  "moto: destroy|step_destroy"
  "moto: bad inputs refused at plan (tests/moto/refusals)|step_refusals"
)
if [[ ! -d "$MOTO_DIR" ]] || ! (cd "$MOTO_DIR" && test -d .terraform); then
  run_step "moto: terraform/tests/moto initialised" false || true
else
  for entry in "${moto_steps[@]}"; do
    name=${entry%%|*}
    fn=${entry##*|}
    if ! run_step "$name" "$fn"; then
      # Destroy still runs when apply got that far, to exercise it and free moto state.
      if [[ "$fn" != start_moto && "$fn" != step_plan_apply && "$fn" != step_destroy && "$fn" != step_refusals ]]; then
        run_step "moto: destroy" step_destroy || true
      fi
      break
    fi
  done
fi

# ---------------------------------------------------------------------------

finish_steps terraform
