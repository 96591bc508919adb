#!/usr/bin/env bash
# Build the cloudmap-sd container image with podman, without pulling any base image.
#
#   scripts/image.sh            build the static release binary, pack it with the host's
#                               CA bundle into a FROM-scratch image (Dockerfile.local)
#   scripts/image.sh binary     only build the static release binary (podman not needed);
#                               the suite starts it early, beside other steps
#   scripts/image.sh help
#
# Environment:
#   IMAGE             image name (default: localhost/cloudmap-sd:<Cargo.toml version>)
#   CARGO_TARGET_DIR  cargo's build directory (default: ~/.cache/cloudmap-sd/target)
#   CA_BUNDLE         PEM CA bundle to put in the image
#                     (default: /etc/ssl/certs/ca-certificates.crt)
#
# Installs podman, buildah, runc and ca-certificates with apt-get when they are missing
# and it runs as root; otherwise it says what to install. With an ordinary Docker engine
# that can pull images, `docker build .` (the multi-stage Dockerfile) does all of this.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
# shellcheck source=scripts/lib/paths.sh
source "$REPO_ROOT/scripts/lib/paths.sh"
readonly RUST_TARGET=x86_64-unknown-linux-gnu
readonly CONTAINERFILE="$REPO_ROOT/Dockerfile.local"
# Optimise the image's binary for size: with the release profile's default (3) it is
# half as big again (25 MB rather than 17), too big for the 25 MB image budget. The
# Dockerfile does the same.
readonly OPT_LEVEL=s

say() { printf 'image: %s\n' "$*"; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

case ${1:-} in
    "" | binary) ;;
    -h | --help | help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
esac

is_root() { [[ $(id -u) -eq 0 ]]; }

apt_updated=0
apt_install() {
    # apt_install PKG...: install Debian packages, or explain how when that is impossible.
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        local why="not running as root"
        command -v apt-get >/dev/null 2>&1 || why="apt-get is not available"
        die "missing: $* ($why). Install it with:
    sudo apt-get update && sudo apt-get install -y --no-install-recommends $*
then run scripts/image.sh again."
    fi
    if [[ $apt_updated -eq 0 ]]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    say "apt-get install -y --no-install-recommends $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        || die "apt-get install $* failed"
}

ensure_tools() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"
    local missing=() tool
    for tool in podman buildah runc; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        say "not on PATH: ${missing[*]}"
        apt_install podman buildah runc
        for tool in podman buildah runc; do
            command -v "$tool" >/dev/null 2>&1 || die "$tool is still not on PATH after apt-get install"
        done
    fi
    if [[ -z ${CA_BUNDLE:-} && ! -s /etc/ssl/certs/ca-certificates.crt ]]; then
        say "no CA bundle at /etc/ssl/certs/ca-certificates.crt"
        apt_install ca-certificates
    fi
    podman info >/dev/null 2>&1 || die "podman is installed but does not work here (podman info failed):
$(podman info 2>&1 | tail -n 5)"
}

package_version() {
    # The version of the [package] in Cargo.toml.
    awk '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version *=/ { gsub(/.*= *"|".*/, ""); print; exit }' \
        "$REPO_ROOT/Cargo.toml"
}

source_revision() {
    # Commit of the working tree (read-only git), "-dirty" when it has changes.
    local rev
    rev=$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null) || { echo unknown; return 0; }
    if ! git -C "$REPO_ROOT" --no-optional-locks diff --quiet HEAD -- 2>/dev/null; then
        rev="$rev-dirty"
    fi
    echo "$rev"
}

mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }

check_static() {
    # check_static FILE: fail unless FILE is a statically linked executable.
    local bin=$1 out
    out=$(ldd "$bin" 2>&1 || true)
    case $out in
        *"not a dynamic executable"* | *"statically linked"*) ;;
        *) die "$bin is dynamically linked; ldd says:
$out" ;;
    esac
    if command -v file >/dev/null 2>&1; then
        out=$(file -b "$bin")
        case $out in
            *"static-pie linked"* | *"statically linked"*) ;;
            *) die "$bin is not static; file says: $out" ;;
        esac
    fi
    say "static: $(ldd "$bin" 2>&1 | tr -d '\t' | head -n 1)"
}

# build_binary: the static release binary, the one way the image's binary is built;
# prints its path.
build_binary() {
    local bin started
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"
    mkdir -p "$CARGO_TARGET_DIR"
    say "cargo build --release --locked --bin cloudmap-sd --target $RUST_TARGET (crt-static, opt-level $OPT_LEVEL, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
    started=$(date +%s)
    (
        cd "$REPO_ROOT"
        RUSTFLAGS='-C target-feature=+crt-static' \
            CARGO_PROFILE_RELEASE_OPT_LEVEL="$OPT_LEVEL" \
            cargo build --release --locked --bin cloudmap-sd --target "$RUST_TARGET"
    ) >&2 || die "cargo build failed (output above)"
    say "cargo build took $(($(date +%s) - started))s" >&2
    bin="$CARGO_TARGET_DIR/$RUST_TARGET/release/cloudmap-sd"
    [[ -x $bin ]] || die "cargo build succeeded but $bin is missing"
    check_static "$bin" >&2
    printf '%s\n' "$bin"
}

main() {
    if [[ ${1:-} == binary ]]; then
        build_binary >/dev/null
        return 0
    fi
    ensure_tools

    local version revision image ca bin ctx
    version=$(package_version)
    [[ -n $version ]] || die "no version in $REPO_ROOT/Cargo.toml"
    revision=$(source_revision)
    image=${IMAGE:-localhost/cloudmap-sd:$version}
    ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    [[ -s $ca ]] || die "CA bundle $ca is missing or empty"
    grep -q 'BEGIN CERTIFICATE' "$ca" || die "CA bundle $ca holds no PEM certificate"
    [[ -f $CONTAINERFILE ]] || die "$CONTAINERFILE is missing"

    bin=$(build_binary)

    ctx=$(mktemp -d "${TMPDIR:-/tmp}/cloudmap-sd-image.XXXXXX")
    # shellcheck disable=SC2064  # expand now: ctx is local
    trap "rm -rf '$ctx'" EXIT
    install -m 0755 "$bin" "$ctx/cloudmap-sd"
    install -m 0644 "$ca" "$ctx/ca-certificates.crt"

    local previous
    previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    say "podman build -f Dockerfile.local -t $image (version $version, revision $revision)"
    podman build --quiet --pull=never --format docker \
        --file "$CONTAINERFILE" \
        --build-arg "VERSION=$version" \
        --build-arg "REVISION=$revision" \
        --tag "$image" \
        "$ctx" >/dev/null || die "podman build failed (output above)"

    local size id
    size=$(podman image inspect --format '{{.Size}}' "$image")
    id=$(podman image inspect --format '{{.Id}}' "$image")
    if [[ -n $previous && $previous != "$id" ]]; then
        # The previous build of this tag is now untagged: drop it unless a container uses it.
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
    say "built $image (id ${id:0:12})"
    say "binary $(mb "$(stat -c %s "$bin")"), CA bundle $(mb "$(stat -c %s "$ca")")"
    say "size $(mb "$size") ($size bytes)"
}

main "$@"
