#!/bin/sh
# post_verify hook: keep a line per verification (level, result, time it took).
#   DRORCH_HOOK_LOG  the log file (default /var/log/drorch/verifications.log)
set -u
log=${DRORCH_HOOK_LOG:-/var/log/drorch/verifications.log}
line="$(date -u +%Y-%m-%dT%H:%M:%SZ) verify ${DRORCH_VERIFY_RESULT:-?} source=$DRORCH_SOURCE label=${DRORCH_BACKUP_LABEL:-} level=${DRORCH_VERIFY_LEVEL:-} seconds=${DRORCH_VERIFY_SECONDS:-} error=${DRORCH_ERROR:-}"
mkdir -p "$(dirname "$log")" && echo "$line" >> "$log" || { echo "cannot write $log"; exit 1; }
echo "$line"
