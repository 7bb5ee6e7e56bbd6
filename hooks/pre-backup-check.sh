#!/bin/sh
# pre_backup hook: say no to a backup while the source is in maintenance, or
# when the backup host is short of space for the job's temporary files.
#   DRORCH_MAINTENANCE_FILE  a file whose presence means "no backups now"
#                            (default /etc/drorch/maintenance.<source>)
#   DRORCH_MIN_FREE_MB       free megabytes needed in $TMPDIR (default 1024)
# Exit 0: go ahead.  Exit non-zero: the backup is not taken (and recorded as failed).
set -u
source_name=${DRORCH_SOURCE:?run by drorch as a hook}
flag=${DRORCH_MAINTENANCE_FILE:-/etc/drorch/maintenance.$source_name}
if [ -e "$flag" ]; then
    echo "$source_name is in maintenance ($flag exists: $(head -c 200 "$flag" 2>/dev/null)); no backup now"
    exit 1
fi
need=${DRORCH_MIN_FREE_MB:-1024}
tmp=${TMPDIR:-/tmp}
free=$(df -Pm "$tmp" | awk 'NR == 2 {print $4}')
if [ "${free:-0}" -lt "$need" ]; then
    echo "only ${free} MB free in $tmp, $need MB needed"
    exit 1
fi
echo "ok: $source_name not in maintenance, ${free} MB free in $tmp; $DRORCH_TYPE backup $DRORCH_BACKUP_LABEL may run"
exit 0
