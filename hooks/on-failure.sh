#!/bin/sh
# on_failure hook: record a failed backup where operators look (a log file and
# syslog at err), e.g. for a monitoring system that does not take webhooks.
#   DRORCH_HOOK_LOG  the log file (default /var/log/drorch/backups.log)
set -u
log=${DRORCH_HOOK_LOG:-/var/log/drorch/backups.log}
line="$(date -u +%Y-%m-%dT%H:%M:%SZ) backup FAILED source=$DRORCH_SOURCE label=${DRORCH_BACKUP_LABEL:-} phase=${DRORCH_PHASE:-} error=${DRORCH_ERROR:-}"
mkdir -p "$(dirname "$log")" && echo "$line" >> "$log" || { echo "cannot write $log"; exit 1; }
command -v logger >/dev/null 2>&1 && logger -t drorch -p user.err "$line" 2>/dev/null
echo "$line"
