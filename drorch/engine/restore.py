"""Restore one backup into a target directory on a host.

Phases: check the target, lay down directories, write file data (grouped by
pack, in parallel, every block checked against its SHA-256), create links
and special files, then set metadata (directories last, deepest first).
A block that fails its check fails only its file: the file is removed and
named in the error; every other file is restored.  This module prepares
(target, tree shape, which blocks to write); restore_data.py writes the blocks.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from drorch.engine.memory import gc_paused, one_malloc_arena
from drorch.engine.pipeline import checksum_of
from drorch.engine.progress import Progress
from drorch.engine.selection import materialise_hardlinks, select_entries
from drorch.engine.restore_data import FileOut, PackWriter, entry_chunks
from drorch.errors import RestoreError
from drorch.fsmeta import DIR, FILE, HARDLINK, SYMLINK, Entry, join_under
from drorch.hosts.base import Host
from drorch.repo.manifest import Manifest, read_entries
from drorch.repo.repository import Repository
from drorch.sources.base import RestoreOptions, Source

CHUNK_FILES = 2048  # files prepared before the workers are given them


@dataclass
class RestoreResult:
    source: str
    label: str
    type: str
    target: str
    files: int = 0
    bytes_written: int = 0
    unchanged_files: int = 0  # --delta: already right
    removed: int = 0  # --delta: not in the backup
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase, when the source reports them


def run_restore(repo: Repository, source: Source, manifest: Manifest, options: RestoreOptions,
                host: Host, *, progress: Progress | None = None, workers: int | None = None) -> RestoreResult:
    if getattr(source, "restores_chain", False):  # tool streams applied in order (MariaDB)
        from drorch.engine.chain_restore import run_chain_restore

        return run_chain_restore(repo, source, manifest, options, host)
    with gc_paused():
        return _run_restore(repo, source, manifest, options, host, progress, workers)


def _run_restore(repo, source, manifest, options, host, progress, workers) -> RestoreResult:
    started = time.monotonic()
    one_malloc_arena()
    progress = progress or Progress()
    all_entries = read_entries(repo, manifest)
    entries = materialise_hardlinks(select_entries(all_entries, options.include), all_entries)
    check_target(host, options)
    source.prepare_restore(options, manifest.source_facts, host)
    tree = _TreeRestore(repo, manifest, host, options, progress, workers)
    result = tree.run(entries)
    if result.failures:
        lines = "\n".join(f"  /{path}: {why}" for path, why in sorted(result.failures.items()))
        raise RestoreError(
            f"{len(result.failures)} file(s) of backup {manifest.label} ({manifest.source}) could not be "
            f"restored and were removed from {options.target}:\n{lines}",
            "the repository is damaged: run `drorch verify`; the other files were restored "
            "(use --include to restore a subset)")
    progress.phase = "finish"
    source.finish_restore(options, manifest.source_facts, host)
    host.flush()  # what the source changed, too (a remote host batches metadata)
    result.seconds = time.monotonic() - started
    return result


def run_database_restore(repo: Repository, source, manifest: Manifest, database: str, into: str | None,
                         table: str | None = None) -> float:
    """Restore one database of a logical backup into a server (as `into`)."""
    path = source.dump_path(database)
    entry = next((e for e in read_entries(repo, manifest) if e.path == path), None)
    if entry is None:
        have = ", ".join(manifest.source_facts.get("databases") or []) or "none"
        raise RestoreError(f"backup {manifest.label} holds no dump of database {database!r} (it has: {have})")
    return source.restore_database(database, into or database, entry_chunks(repo, manifest.source, entry), table)


def check_target(host: Host, options: RestoreOptions) -> None:
    """Refuse a non-empty target unless --force or --delta (nothing is touched)."""
    if options.force and options.delta:
        raise RestoreError("give --force or --delta, not both", exit_code=2)
    names = host.listdir(options.target)
    if names is None:
        if host.lstat(options.target) is not None:
            raise RestoreError(f"restore target {options.target} exists and is not a directory",
                               "choose a directory (it is created if missing)")
        return
    if names and not (options.force or options.delta):
        raise RestoreError(
            f"restore target {options.target} is not empty ({len(names)} entries); nothing was written",
            "restore into an empty or new directory, or pass --delta (rewrite what differs and remove "
            "what is not in the backup) or --force (overwrite)")


class _TreeRestore:
    def __init__(self, repo, manifest, host, options, progress, workers):
        self.repo, self.manifest, self.host, self.options = repo, manifest, host, options
        self.progress = progress
        self.workers = workers or max(2, os.cpu_count() or 2)
        self.result = RestoreResult(manifest.source, manifest.label, manifest.type, options.target)
        self.existing = options.force or options.delta
        self._dirs: set[str] = set()  # directories known to exist
        self.writer = PackWriter(repo, manifest, host, self.result, progress, self.path)

    def path(self, entry_path: str) -> str:
        return join_under(self.options.target, entry_path)

    def run(self, entries: list[Entry]) -> RestoreResult:
        self.host.makedirs(self.options.target)
        if self.options.delta:
            self._remove_extras(entries)
        for rel, location in self.options.links.items():  # written through, not replaced
            self.host.makedirs(location)
            path = self.path(rel)
            st = self.host.lstat(path)
            if st is None or stat.S_ISLNK(st.st_mode):
                self.host.remove(path)
                self.host.makedirs(posixpath.dirname(path))
                self.host.symlink(location, path)
        self.progress.phase = "directories"
        for entry in entries:
            if entry.type == DIR:
                self._ensure_dir(self.path(entry.path))
        files = [e for e in entries if e.type == FILE]
        self.progress.plan(files=len(files), nbytes=sum(e.size for e in files))
        self.progress.phase = "data"
        self._write_files(files)
        self.progress.phase = "links"
        for entry in entries:
            if entry.type not in (DIR, FILE) and entry.path not in self.result.failures:
                self._make_other(entry)
        self.progress.phase = "metadata"
        for entry in entries:
            if entry.type not in (DIR, HARDLINK) and entry.path not in self.result.failures \
                    and not (entry.type == FILE and self.writer.meta_on_close):
                self.host.set_meta(self.path(entry.path), entry)
        for entry in reversed(entries):
            if entry.type == DIR:
                self.host.set_meta(self.path(entry.path), entry)
        self.host.flush()  # a remote host batches metadata changes
        return self.result

    # -- tree shape ----------------------------------------------------------------

    def _ensure_dir(self, path: str) -> None:
        if path[len(self.options.target.rstrip("/")) + 1:] in self.options.links:
            return  # a symlink the source asked for (e.g. a mapped tablespace)
        st = self.host.lstat(path)
        if st is not None and not _is_dir(st):
            self.host.remove(path)  # a file or symlink where the backup has a directory
        self.host.makedirs(path)
        self._dirs.add(path)

    def _prepare_path(self, path: str) -> None:
        """Make room for a new non-directory entry at path."""
        self._parent(path)
        if self.existing and self.host.lstat(path) is not None:
            self.host.remove(path)

    def _parent(self, path: str) -> None:
        """The directory of path exists (entries without a directory entry above them:
        paths under a files source's root, files a source generated)."""
        parent = posixpath.dirname(path)
        if parent not in self._dirs:
            if self.host.lstat(parent) is None:
                self.host.makedirs(parent)
            self._dirs.add(parent)

    def _remove_extras(self, entries: list[Entry]) -> None:
        """--delta: remove what the backup does not hold (within what is restored)."""
        wanted = {e.path for e in entries}
        keep_dirs = {posixpath.dirname(p) for p in wanted}
        while "" not in keep_dirs and keep_dirs:
            keep_dirs |= {posixpath.dirname(p) for p in keep_dirs}
        target = self.options.target.rstrip("/")
        for path, st, _ in list(self.host.walk(target, lambda p, d: False)):
            rel = path[len(target) + 1:]
            if not rel or rel in wanted or (rel in keep_dirs and _is_dir(st)):
                continue
            if self.options.include and not any(p == rel or p.startswith(rel + "/") or
                                                rel.startswith(p + "/") for p in wanted):
                continue  # outside the selection: not ours to remove
            if self.host.lstat(path) is not None:
                self.host.remove(path)
                self.result.removed += 1

    def _make_other(self, entry: Entry) -> None:
        path = self.path(entry.path)
        self._prepare_path(path)
        if entry.type == SYMLINK:
            self.host.symlink(entry.target, path)
        elif entry.type == HARDLINK:
            self.host.hardlink(self.path(entry.target), path)
        else:
            self.host.mknod(path, entry)

    # -- file data ----------------------------------------------------------------

    def _write_files(self, files: list[Entry]) -> None:
        """Files are handed to the workers in chunks as they are prepared, so creating the
        first files overlaps preparing the rest (file creation is the bound of a restore of
        many small files).  Blocks of one pack are grouped within a chunk (ranged reads)."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="drorch-restore") as pool:
            futures = []
            for start in range(0, len(files), CHUNK_FILES):
                groups = self._prepare(files[start:start + CHUNK_FILES])
                futures += [pool.submit(self.writer.restore_pack, key, groups.pop(key))
                            for key in sorted(groups)]
            for future in futures:
                future.result()
        for entry_path in self.result.failures:
            self.host.remove(self.path(entry_path))

    def _prepare(self, files: list[Entry]) -> dict[tuple[str, int], list]:
        """Directories, checks and --delta comparisons of some files: their blocks to write, by pack."""
        groups: dict[tuple[str, int], list] = defaultdict(list)
        for entry in files:
            path = self.path(entry.path)
            self._parent(path)
            if checksum_of(entry.blocks, entry.bs) != entry.checksum:
                self.result.failures[entry.path] = "its manifest entry is inconsistent (checksum)"
                continue
            todo, handle = self._blocks_to_write(entry, path)
            if todo is None:
                self.host.set_meta(path, entry)  # --delta: the bytes are right, maybe not the rest
                self.result.unchanged_files += 1
                self.progress.add(files=1, nbytes=entry.size)
                continue
            self.result.files += 1
            if not todo:
                self.writer.finish(self.host.open_write(path, entry.size), entry)
                self.progress.add(files=1)
                continue
            out = FileOut(handle, len(todo))
            for index in todo:
                block = entry.blocks[index]
                groups[(block[0], block[1])].append((block, entry, out, index * entry.bs))
        return groups

    def _blocks_to_write(self, entry: Entry, path: str) -> tuple[list[int] | None, object]:
        """Indexes of the blocks to write (None when --delta finds the file already
        right), and the handle --delta opened to rewrite some of them."""
        everything = list(range(len(entry.blocks)))
        st = self.host.lstat(path) if self.existing else None
        if st is None:
            return everything, None
        if not (self.options.delta and _is_file(st) and st.st_size == entry.size):
            self.host.remove(path)
            return everything, None
        differ = []
        for index, block in enumerate(entry.blocks):
            data = self.host.read(path, index * entry.bs, block[4])
            if hashlib.sha256(data).hexdigest() != block[5]:
                differ.append(index)
        if not differ:
            return None, None
        return differ, self.host.open_write(path, entry.size, truncate=False)


def _is_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)


def _is_file(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)
