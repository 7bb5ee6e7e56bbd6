#!/bin/sh
# post_backup hook: one line per committed backup in a log file (and syslog),
# for whatever watches it.  A failure here never turns the backup bad.
#   DRORCH_HOOK_LOG  the log file (default /var/log/drorch/backups.log)
set -u
log=${DRORCH_HOOK_LOG:-/var/log/drorch/backups.log}
line="$(date -u +%Y-%m-%dT%H:%M:%SZ) backup ok source=$DRORCH_SOURCE label=$DRORCH_BACKUP_LABEL type=$DRORCH_TYPE size=${DRORCH_SIZE_BYTES:-} stored=${DRORCH_STORED_BYTES:-} files=${DRORCH_FILES:-}"
mkdir -p "$(dirname "$log")" && echo "$line" >> "$log" || { echo "cannot write $log"; exit 1; }
command -v logger >/dev/null 2>&1 && logger -t drorch -p user.info "$line" 2>/dev/null
echo "$line"
