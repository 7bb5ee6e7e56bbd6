#!/usr/bin/env bash
# The main job on the embedded default: back up a demo tree to a local
# directory repository (full), change it, take an incr and a diff, verify the
# latest by restoring it into a sandbox, list the backups, restore the latest
# into a fresh directory and show it is identical.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
policy="$here/demo-policy.yaml"
work=/tmp/drorch-demo
data=$work/data

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
tree_listing() {  # type, path, mode, size (files), mtime, link target: everything a restore must keep
  (cd "$1" && find . -printf '%y %p %m %T@ %l\n' -type f -printf 'size %p %s\n' | LC_ALL=C sort)
}

rm -rf "$work"
mkdir -p "$data"/{etc/app,var/log,empty/dir}
step "a demo tree in $data"
printf 'listen = 0.0.0.0\n' > "$data/etc/app/app.conf"
printf 'secret\n' > "$data/etc/app/key"; chmod 600 "$data/etc/app/key"
for i in $(seq 1 200); do printf 'line %s\n' "$i" > "$data/var/log/app.$i.log"; done
head -c 8388608 /dev/urandom > "$data/var/big.bin"
ln -s app/app.conf "$data/etc/current.conf"
ln "$data/etc/app/app.conf" "$data/etc/app/app.conf.hardlink"
touch "$data/$(printf 'odd name \xff')" "$data/ünïcödé.txt"
du -sh "$data"

step "drorch policy check"
drorch policy check "$policy"
step "full backup"
drorch backup --policy "$policy" --source demo-files --type full

step "change some files, then an incremental backup"
printf 'listen = 127.0.0.1\n' >> "$data/etc/app/app.conf"
dd if=/dev/urandom of="$data/var/big.bin" bs=1M seek=3 count=1 conv=notrunc status=none
rm "$data/var/log/app.7.log"
drorch backup --policy "$policy" --source demo-files --type incr

step "change more, then a differential backup"
printf 'new\n' > "$data/var/log/app.201.log"
drorch backup --policy "$policy" --source demo-files --type diff

step "prove the latest backup restores: drorch verify (restored into a sandbox, every file compared)"
drorch verify --policy "$policy" --source demo-files --latest --level restore

step "drorch list (with each backup's last verification)"
drorch list --policy "$policy"

step "restore the latest backup into a fresh directory"
drorch restore --policy "$policy" --source demo-files --target "$work/restore"

step "compare: source tree vs restored tree"
if diff <(tree_listing "$data") <(tree_listing "$work/restore$data") >/dev/null \
   && diff -r --no-dereference "$data" "$work/restore$data"; then
  echo "IDENTICAL: contents, types, modes, mtimes and link targets of $(tree_listing "$data" | grep -vc '^size') entries"
else
  echo "DIFFERENT:"; diff <(tree_listing "$data") <(tree_listing "$work/restore$data") || true
  exit 1
fi
