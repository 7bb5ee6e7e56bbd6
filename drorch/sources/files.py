"""The `files` source: paths on a host, with include/exclude globs."""

from __future__ import annotations

import fnmatch
import os
import posixpath
from typing import Iterator

from drorch.errors import SourceError
from drorch.fsmeta import DIR, FILE, HARDLINK, Entry, entry_from_stat
from drorch.hosts.base import Host
from drorch.sources.base import RestoreOptions, SourceEnd, Warn, read_hints, read_many_from, start_read_many_from


def matches(patterns: list[str], path: str, is_dir: bool) -> bool:
    """Glob rules: `name/` matches directories only; a pattern with a '/' in
    it is matched against the whole absolute path; otherwise against the
    base name, at any depth."""
    base = posixpath.basename(path)
    for pattern in patterns:
        if pattern.endswith("/"):
            if is_dir and _match(pattern.rstrip("/"), path, base):
                return True
        elif _match(pattern, path, base):
            return True
    return False


def _match(pattern: str, path: str, base: str) -> bool:
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.rstrip("/") + "/*")
    return fnmatch.fnmatchcase(base, pattern)


class FilesSource:
    kind = "files"
    detect_torn = True

    def __init__(self, name: str, host: Host, paths: list[str], include: list[str] | None = None,
                 exclude: list[str] | None = None, one_file_system: bool = False):
        self.name = name
        self.host = host
        self.paths = [posixpath.normpath(p) for p in paths]
        self.include = include or []
        self.exclude = exclude or []
        self.one_file_system = one_file_system
        self.read_unit, batch = read_hints(host)  # what a remote host reads per request
        if batch:
            self.read_batch = batch

    # -- backup ------------------------------------------------------------------

    def connect(self) -> None:
        self.host.connect()

    def begin(self, warn: Warn) -> dict:
        return {"paths": self.paths, "host": self.host.name}

    def _prune(self, path: str, is_dir: bool) -> bool:
        return matches(self.exclude, path, is_dir)

    def scan(self, warn: Warn) -> Iterator[Entry]:
        seen_paths: set[str] = set()
        inodes: dict[tuple[int, int], str] = {}
        pending_dirs: list[Entry] = []  # with include globs: directories wait for a match below
        for root in self.paths:
            if any(root == p or root.startswith(p.rstrip("/") + "/") for p in seen_paths):
                continue  # nested in a path already walked
            seen_paths.add(root)
            if self.host.lstat(root) is None:
                raise SourceError(f"source {self.name}: {root} does not exist on {self.host.name}",
                                  "fix `paths` in the policy, or create it")
            for path, st, target in self.host.walk(root, self._prune, self.one_file_system):
                entry = entry_from_stat(path.lstrip("/"), st, target)
                if entry is None:
                    warn(f"skipped {path}: sockets and other special files are not backed up")
                    continue
                entry.user = self.host.user_name(entry.uid)
                entry.group = self.host.group_name(entry.gid)
                if self.include and not self._included(path, entry, pending_dirs):
                    continue
                if entry.type == FILE and st.st_nlink > 1:
                    first = inodes.setdefault((st.st_dev, st.st_ino), entry.path)
                    if first != entry.path:
                        entry.type, entry.target, entry.size = HARDLINK, first, 0
                yield from pending_dirs
                pending_dirs.clear()
                yield entry

    def _included(self, path: str, entry: Entry, pending: list[Entry]) -> bool:
        if entry.type == DIR:
            while pending and not entry.path.startswith(pending[-1].path + "/"):
                pending.pop()  # a sibling subtree: the pending directory had no match
            if matches(self.include, path, True):
                return True
            pending.append(entry)
            return False
        while pending and not entry.path.startswith(pending[-1].path + "/"):
            pending.pop()
        return matches(self.include, path, False)

    def read(self, entry: Entry, offset: int = 0, length: int | None = None) -> bytes:
        return self.host.read("/" + entry.path, offset, length)

    def read_many(self, entries: list[Entry], limit: int) -> dict[str, tuple[bytes, Entry | None]]:
        return read_many_from(self.host, entries, limit, lambda entry: "/" + entry.path)

    def start_read_many(self, entries: list[Entry], limit: int):
        return start_read_many_from(self.host, entries, limit, lambda entry: "/" + entry.path)

    def read_small(self, entry: Entry, limit: int) -> tuple[bytes, os.stat_result | None]:
        """A whole small file and its stat after the read (None: gone), in as few
        system calls as the host can (the pipeline's per-file cost)."""
        path = "/" + entry.path
        read_small = getattr(self.host, "read_small", None)
        if read_small is not None:
            return read_small(path, entry.size, limit)
        try:
            data = self.host.read(path, 0, limit)
        except FileNotFoundError:
            return b"", None
        return data, self.host.lstat(path)

    def restat(self, entry: Entry) -> Entry | None:
        st = self.host.lstat("/" + entry.path)
        return None if st is None else entry_from_stat(entry.path, st)

    def end(self, warn: Warn) -> SourceEnd:
        return SourceEnd()

    def abort(self) -> None:
        pass

    # -- restore -----------------------------------------------------------------

    def prepare_restore(self, options: RestoreOptions, facts: dict, host: Host) -> None:
        pass

    def finish_restore(self, options: RestoreOptions, facts: dict, host: Host) -> None:
        pass
