"""Choosing what to restore: which backup, and which entries of it."""

from __future__ import annotations

import fnmatch
import posixpath
from datetime import datetime

from drorch.errors import RestoreError
from drorch.fsmeta import HARDLINK, Entry
from drorch.repo.catalog import Catalog
from drorch.repo.manifest import Manifest


def choose_backup(catalog: Catalog, source: str, label: str | None = None,
                  moment: datetime | None = None, lsn: str | None = None) -> Manifest:
    """--backup LABEL; --time T: the newest backup finished at or before T (for a
    database, consistent before T); --lsn L: the newest whose end LSN is at or
    before L; otherwise the latest."""
    if label and moment:
        raise RestoreError("give --backup or --time, not both", exit_code=2)
    if label:
        return catalog.manifest(source, label)
    if moment:
        return catalog.at_or_before(source, moment)
    if lsn:
        from drorch.sources.pg_wal import parse_lsn

        wanted = parse_lsn(lsn)
        fits = [m for m in catalog.backups(source)
                if m.source_facts.get("stop_lsn") and parse_lsn(m.source_facts["stop_lsn"]) <= wanted]
        if not fits:
            raise RestoreError(f"no backup of {source} ends at or before LSN {lsn}",
                               f"`drorch list --source {source}` shows the backups there are")
        return fits[-1]
    latest = catalog.latest(source)
    if latest is None:
        raise RestoreError(f"source {source} has no committed backup in {catalog.repo.location}",
                           f"take one with `drorch backup --source {source}`")
    return latest


def _glob_hit(pattern: str, path: str) -> bool:
    """A pattern matches an entry, or a directory above it (restoring a directory
    restores its contents).  Patterns may be written with or without the leading '/'."""
    pattern = pattern.lstrip("/").rstrip("/")
    probe = path
    while probe:
        if fnmatch.fnmatchcase(probe, pattern):
            return True
        probe = posixpath.dirname(probe)
    return False


def select_entries(entries: list[Entry], include: list[str]) -> list[Entry]:
    """Entries matching any include glob, plus the directories above them.
    A hard link whose first name is not selected becomes a copy of it."""
    if not include:
        return entries
    chosen = {e.path for e in entries if any(_glob_hit(p, e.path) for p in include)}
    if not chosen:
        raise RestoreError(f"--include {' '.join(include)} matches nothing in this backup",
                           "`drorch show --files` lists the paths it holds")
    for path in list(chosen):
        parent = posixpath.dirname(path)
        while parent and parent not in chosen:
            chosen.add(parent)
            parent = posixpath.dirname(parent)
    return [e for e in entries if e.path in chosen]


def materialise_hardlinks(entries: list[Entry], all_entries: list[Entry]) -> list[Entry]:
    """A hard link whose first name is not restored is restored as a file."""
    present = {e.path for e in entries}
    by_path = None
    out = []
    promoted: dict[str, str] = {}  # first name not restored -> the link that stands in for it
    for entry in entries:
        if entry.type == HARDLINK and entry.target not in present:
            if entry.target in promoted:
                entry = _copy(entry, target=promoted[entry.target])
            else:
                by_path = by_path or {e.path: e for e in all_entries}
                first = by_path[entry.target]
                promoted[entry.target] = entry.path
                entry = _copy(first, path=entry.path)
        out.append(entry)
    return out


def _copy(entry: Entry, **changes) -> Entry:
    fields = {name: getattr(entry, name) for name in entry.__slots__}
    fields.update(changes)
    return Entry(**fields)
