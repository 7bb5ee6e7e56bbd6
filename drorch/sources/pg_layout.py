"""Which files of a PostgreSQL data directory a base backup takes (PostgreSQL's
documentation, "Making a Base Backup Using the Low Level API", and what
pg_basebackup leaves out), and which files hold checksummed data pages."""

from __future__ import annotations

import posixpath
import re

# Files never copied (anywhere / at the top of the data directory).
EXCLUDE_ANYWHERE = {"pg_internal.init"}
EXCLUDE_TOP = {"postmaster.pid", "postmaster.opts", "backup_label", "backup_label.old", "tablespace_map",
               "tablespace_map.old", "backup_manifest", "recovery.signal", "standby.signal",
               "postgresql.auto.conf.tmp", "current_logfiles.tmp", "global/pg_control"}
# Directories kept, their contents not (PostgreSQL recreates or does not need them).
EMPTY_DIRS = {"pg_wal", "pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots",
              "pg_stat_tmp", "pg_subtrans"}
KEEP_IN_EMPTY = {"pg_wal/archive_status"}  # ... except this directory, kept empty
TEMP_RELATION = re.compile(r"^t\d+_\d+(_(fsm|vm|init))?(\.\d+)?$")
RELATION = re.compile(r"^(\d+)(_(fsm|vm|init))?(\.(\d+))?$")
DATA_DIRS = re.compile(r"^(base/\d+|global|pg_tblspc/\d+/[^/]+/\d+)$")


def excluded(rel: str, is_dir: bool) -> bool:
    """True when rel (relative to the data directory) is not part of a base backup."""
    name = posixpath.basename(rel)
    if rel in EXCLUDE_TOP or name in EXCLUDE_ANYWHERE or name.startswith("pgsql_tmp"):
        return True
    parent = posixpath.dirname(rel)
    if parent in EMPTY_DIRS and rel not in KEEP_IN_EMPTY:
        return True
    if parent in KEEP_IN_EMPTY:
        return True
    return not is_dir and TEMP_RELATION.match(name) is not None and DATA_DIRS.match(parent) is not None


def relation(rel: str) -> tuple[str, int] | None:
    """(relfilenode with fork, segment number) for a file of data pages, else None."""
    parent, name = posixpath.split(rel)
    if not DATA_DIRS.match(parent):
        return None
    match = RELATION.match(name)
    if not match:
        return None
    return match.group(1) + (match.group(2) or ""), int(match.group(5) or 0)


def unlogged_to_skip(paths: list[str]) -> set[str]:
    """Forks of unlogged relations other than the init fork (PostgreSQL resets
    them from the init fork at startup)."""
    inits = {posixpath.join(posixpath.dirname(p), posixpath.basename(p)[:-5])
             for p in paths if p.endswith("_init") and relation(p)}
    skip = set()
    for path in paths:
        rel = relation(path)
        if not rel or path.endswith("_init"):
            continue
        node = rel[0].split("_")[0]
        if posixpath.join(posixpath.dirname(path), node) in inits:
            skip.add(path)
    return skip
