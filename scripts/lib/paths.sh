# shellcheck shell=bash
# Where the scripts keep what outlives a clone (source it): one cache directory per
# user, so a fresh clone (CI) reuses the Python venv and the cargo build directory of
# the last run instead of building them again.
#
#   CLOUDMAP_SD_CACHE   the cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/cloudmap-sd)
#   CLOUDMAP_SD_VENV    the Python venv with moto server, boto3 and the test tools
#                       (default: $CLOUDMAP_SD_CACHE/venv)
#   CARGO_TARGET_DIR    cargo's build directory (default: $CLOUDMAP_SD_CACHE/target)
#
# Every path is made absolute, and exported, so the tools the scripts start see the
# same ones.

CLOUDMAP_SD_CACHE=${CLOUDMAP_SD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloudmap-sd}
CLOUDMAP_SD_VENV=${CLOUDMAP_SD_VENV:-$CLOUDMAP_SD_CACHE/venv}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CLOUDMAP_SD_CACHE/target}
[[ $CLOUDMAP_SD_CACHE == /* ]] || CLOUDMAP_SD_CACHE="$PWD/$CLOUDMAP_SD_CACHE"
[[ $CLOUDMAP_SD_VENV == /* ]] || CLOUDMAP_SD_VENV="$PWD/$CLOUDMAP_SD_VENV"
[[ $CARGO_TARGET_DIR == /* ]] || CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR"
export CLOUDMAP_SD_CACHE CLOUDMAP_SD_VENV CARGO_TARGET_DIR
