"""Compare a restored tree with the manifest's entries: every entry is there
with its type, content (SHA-256, as the entry records it), size, mode, owner,
modification time and link target.  Reads through the host, so it works where
the restore wrote."""

from __future__ import annotations

import hashlib
import os
import stat as statmod
from concurrent.futures import ThreadPoolExecutor

from drorch.fsmeta import DIR, FILE, HARDLINK, SYMLINK, Entry, type_of
from drorch.hosts.base import Host

READ_CHUNK = 1 << 20


def check_tree(host: Host, target: str, entries: list[Entry], skip: tuple[str, ...] = (),
               workers: int | None = None) -> tuple[int, list[str]]:
    """(entries checked, problems).  skip: paths (and what is below them) the
    source rewrites when it finishes a restore (e.g. postgresql.auto.conf)."""
    root = target.rstrip("/")
    found = {path[len(root) + 1:]: (st, link) for path, st, link in host.walk(root, lambda p, d: False)}
    wanted = [e for e in entries if not any(e.path == s or e.path.startswith(s + "/") for s in skip)]
    problems: list[str] = []
    files = []
    for entry in wanted:
        trouble = _meta_problem(host, entry, found)
        if trouble:
            problems.append(f"/{entry.path}: {trouble}")
        elif entry.type == FILE:
            files.append(entry)
    with ThreadPoolExecutor(workers or max(2, os.cpu_count() or 2), thread_name_prefix="drorch-tree") as pool:
        for entry, digest in zip(files, pool.map(lambda e: _content_checksum(host, f"{root}/{e.path}", e), files)):
            if digest != entry.checksum:
                problems.append(f"/{entry.path}: content differs from the backup (SHA-256 {digest[:16]}..., "
                                f"the backup has {str(entry.checksum)[:16]}...)")
    return len(wanted), problems


def _meta_problem(host: Host, entry: Entry, found: dict) -> str | None:
    if entry.path not in found:
        return "missing"
    st, link = found[entry.path]
    kind = type_of(st.st_mode)
    expected = FILE if entry.type == HARDLINK else entry.type
    if kind != expected:
        return f"is a {kind}, the backup has a {entry.type}"
    if entry.type == HARDLINK:
        first = found.get(entry.target)
        if first is None or first[0].st_ino != st.st_ino:
            return f"is not a hard link of /{entry.target}"
        return None
    if entry.type == SYMLINK:
        return None if link == entry.target else f"points to {link!r}, the backup has {entry.target!r}"
    if statmod.S_IMODE(st.st_mode) != entry.mode:
        return f"mode {statmod.S_IMODE(st.st_mode):04o}, the backup has {entry.mode:04o}"
    if entry.type == FILE and st.st_size != entry.size:
        return f"has {st.st_size} bytes, the backup has {entry.size}"
    if entry.type != DIR and st.st_mtime_ns != entry.mtime_ns:  # directories change as files land in them
        return "modification time differs from the backup"
    if host.is_root and not _same_owner(host, st, entry):
        return f"owner {host.user_name(st.st_uid) or st.st_uid}, the backup has {entry.user or entry.uid}"
    return None


def _same_owner(host: Host, st: os.stat_result, entry: Entry) -> bool:
    """Restore maps owners by name, then by number."""
    return (entry.user is not None and host.user_name(st.st_uid) == entry.user) or st.st_uid == entry.uid


def _content_checksum(host: Host, path: str, entry: Entry) -> str:
    """The entry checksum of the file as restored (FORMAT.md, Entries)."""
    if entry.bs == 0:
        digest = hashlib.sha256()
        offset = 0
        while chunk := host.read(path, offset, READ_CHUNK):
            digest.update(chunk)
            offset += len(chunk)
        return digest.hexdigest()
    digests = []
    for offset in range(0, entry.size, entry.bs):
        digests.append(hashlib.sha256(host.read(path, offset, entry.bs)).digest())
    return hashlib.sha256(b"".join(digests)).hexdigest()
