#!/bin/sh
# Runs once per task, as root, before cloudmap-sd and Prometheus start (POSIX sh;
# busybox in the Prometheus image). Everything it needs comes from the environment:
#   PROMETHEUS_CONFIG  prometheus.yml with REPLICA_PLACEHOLDER where __replica__ goes
#   REPLICA_PLACEHOLDER  the placeholder string
#   RUN_AS             uid:gid that cloudmap-sd and Prometheus run as
#   CONFIG_DIR FILE_SD_DIR DATA_DIR  mount points of the three task volumes
#   ECS_CONTAINER_METADATA_URI_V4    set by the ECS agent in every container
set -eu

# 1. Task volumes start out owned by root. Hand the writable ones to the runtime user:
#    cloudmap-sd writes FILE_SD_DIR, Prometheus writes DATA_DIR and reads FILE_SD_DIR.
chown "$RUN_AS" "$FILE_SD_DIR" "$DATA_DIR"
chmod 0750 "$FILE_SD_DIR" "$DATA_DIR"

# 2. A value unique to this task for the __replica__ external label: the task ID, the
#    last part of the TaskARN in the task metadata. The hostname is the fallback.
#    The agent answers with one line of compact JSON; the sed also takes the
#    pretty-printed form.
#    At most 5 s: wget -T where wget lists it, else `timeout`. A busybox built without
#    wget timeout support crashes on -T (Debian's busybox before 1.36.1-5 does).
fetch() {
  if wget --help 2>&1 | grep -q -e '-T[ ,]'; then
    wget -q -T 5 -O - "$1"
  elif command -v timeout >/dev/null 2>&1; then
    timeout 5 wget -q -O - "$1"
  else
    wget -q -O - "$1"
  fi
}
replica=""
if [ -n "${ECS_CONTAINER_METADATA_URI_V4:-}" ]; then
  task_arn=$(fetch "${ECS_CONTAINER_METADATA_URI_V4}/task" 2>/dev/null |
    sed -n 's/.*"TaskARN"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1) || task_arn=""
  replica=${task_arn##*/}
fi
if [ -z "$replica" ]; then
  echo "init: task metadata unavailable, using the hostname as __replica__" >&2
  replica=$(hostname)
fi
case "$replica" in
  *[!A-Za-z0-9._-]* | "")
    echo "init: unusable replica value '$replica'" >&2
    exit 1
    ;;
esac

# 3. Render prometheus.yml atomically; Prometheus only reads it.
tmp="$CONFIG_DIR/.prometheus.yml.tmp"
printf '%s\n' "$PROMETHEUS_CONFIG" | sed "s/$REPLICA_PLACEHOLDER/$replica/g" >"$tmp"
chmod 0444 "$tmp"
mv -f "$tmp" "$CONFIG_DIR/prometheus.yml"

if command -v promtool >/dev/null 2>&1; then
  promtool check config --syntax-only "$CONFIG_DIR/prometheus.yml"
fi
echo "init: prometheus.yml written, __replica__=$replica, volumes owned by $RUN_AS"
