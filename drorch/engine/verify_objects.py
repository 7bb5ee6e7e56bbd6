"""Verify levels `structure` and `read`: what a backup needs from the repository.

structure: the manifests of the backup and its chain parse, its entries match
the manifest's checksum, and every object it needs — its own packs, the packs
of its chain that its entries reference, and the archive files (WAL) that make
it consistent — exists with the expected size.  Listing and stat only, apart
from the entries (which say what is needed).

read: every blob the backup needs is downloaded (in parallel, one range read
per run of nearby blobs), decoded and checked against its SHA-256 and size;
archive files are decoded and checked by their source kind's rule.

Problems are kept per object (a blob, a pack, a manifest), each naming the
object and, at the end, every backup of the source that needs it.  A blob or
object checked once is not checked again for another backup of the same run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from drorch.engine.pipeline import checksum_of
from drorch.engine.progress import Progress
from drorch.engine.restore_data import coalesce  # the same range reads as a restore
from drorch.engine.verify_archive import ArchiveRule
from drorch.errors import DrorchError, IntegrityError, NotFoundError
from drorch.fsmeta import FILE
from drorch.repo import layout
from drorch.repo.catalog import Catalog
from drorch.repo.manifest import Manifest, read_entries
from drorch.repo.repository import Repository

log = logging.getLogger(__name__)


@dataclass
class Problem:
    key: str  # the object concerned
    offset: int | None  # a blob at this offset in it; None: the object as a whole
    text: str  # what is wrong with it
    level: str = "structure"  # the level that found it: structure | read
    needed_by: set[str] = field(default_factory=set)  # labels of the backups that need it

    def message(self) -> str:
        return f"{self.key} {self.text} (needed by {', '.join(sorted(self.needed_by)) or '-'})"


@dataclass
class Needs:
    """What one backup needs: objects with their expected sizes, blobs by pack key."""

    objects: dict[str, int | None] = field(default_factory=dict)  # key -> size (None: any size)
    extents: dict[str, int] = field(default_factory=dict)  # pack key -> end of the last blob used
    blobs: dict[str, dict[int, tuple]] = field(default_factory=lambda: defaultdict(dict))  # key -> offset -> use
    archive: list[tuple[str, str]] = field(default_factory=list)  # (name, key)


class ObjectChecker:
    """Structure and read checks of some backups of one source, sharing what was checked."""

    def __init__(self, repo: Repository, catalog: Catalog, source: str, rule: ArchiveRule | None,
                 *, workers: int | None = None, progress: Progress | None = None):
        self.repo, self.catalog, self.source, self.rule = repo, catalog, source, rule
        self.workers = workers or max(4, os.cpu_count() or 2)
        self.progress = progress or Progress()
        self.problems: dict[tuple[str, int | None], Problem] = {}
        self._listings: dict[str, dict[str, int]] = {}  # label -> key -> size
        self._stats: dict[str, int | None] = {}
        self._read_ok: set[tuple[str, int | None]] = set()
        self._named: set[tuple[str, int | None]] = set()  # problems whose dependents are known
        self._lock = threading.Lock()

    # -- results -----------------------------------------------------------------

    def problem(self, key: str, offset: int | None, text: str, label: str, level: str = "structure") -> None:
        with self._lock:
            found = self.problems.setdefault((key, offset), Problem(key, offset, text, level))
            found.needed_by.add(label)

    def problems_of(self, label: str, level: str | None = None) -> list[Problem]:
        return [p for p in self.problems.values() if label in p.needed_by and level in (None, p.level)]

    # -- structure -----------------------------------------------------------------

    def structure(self, manifest: Manifest) -> Needs | None:
        """Check what manifest needs exists; returns its needs (None when its entries are unusable)."""
        label = manifest.label
        for parent in manifest.chain:
            key = layout.manifest_key(self.source, parent)
            try:
                self.catalog.manifest(self.source, parent)
            except DrorchError as exc:
                gone = isinstance(exc.__cause__, NotFoundError) or "no backup" in exc.message
                self.problem(key, None, "is missing: the chain is broken" if gone else
                             f"cannot be read: {exc.message}", label)
        needs = self._needs(manifest)
        if needs is None:
            return None
        for key, size in needs.objects.items():
            actual = self._size(key)
            if actual is None:
                self.problem(key, None, "is missing", label)
            elif size is not None and actual != size:
                self.problem(key, None, f"has {actual} bytes, the manifest says {size}", label)
        for key, end in needs.extents.items():
            actual = self._size(key)
            if actual is not None and actual < end:
                self.problem(key, None, f"has {actual} bytes, but blocks are referenced up to byte {end}", label)
        for name, key in needs.archive:
            if self._stat(key) is None:
                self.problem(key, None, f"is missing: {self.rule.what} {name} is needed to make the backup "
                                        "consistent", label)
        return needs

    def _needs(self, manifest: Manifest) -> Needs | None:
        label, needs = manifest.label, Needs()
        ref = manifest.data.get("entries") or {}
        needs.objects[ref.get("key") or layout.entries_key(self.source, label)] = ref.get("size")
        for pack in manifest.data.get("packs") or []:
            needs.objects[layout.pack_key(self.source, label, pack["n"])] = pack.get("size")
        try:
            entries = read_entries(self.repo, manifest)
        except DrorchError as exc:
            key = ref.get("key") or layout.entries_key(self.source, label)
            missing = isinstance(exc, NotFoundError)
            self.problem(key, None, "is missing" if missing else f"cannot be used: {exc.message}", label)
            return None
        allowed = set(manifest.chain) | {label}
        for entry in entries:
            if entry.type != FILE:
                continue
            if checksum_of(entry.blocks, entry.bs) != entry.checksum:
                self.problem(ref["key"], None, f"is inconsistent: the blocks of /{entry.path} do not make its "
                                               "checksum", label)
            for index, block in enumerate(entry.blocks):
                if block[0] not in allowed:
                    self.problem(ref["key"], None, f"references backup {block[0]} outside the chain "
                                                   f"(/{entry.path})", label)
                    continue
                key = layout.pack_key(self.source, block[0], block[1])
                needs.extents[key] = max(needs.extents.get(key, 0), block[2] + block[3])
                needs.blobs[key].setdefault(block[2], (block, entry.path, index))
        for key in needs.extents:
            needs.objects.setdefault(key, self._recorded_size(key))
        if self.rule is not None:
            needs.archive = [(name, self.rule.key(self.source, name))
                             for name in self.rule.required(manifest.source_facts)]
        manifest._entries = None  # read again when needed: entries of many backups can be large
        return needs

    def _recorded_size(self, pack_key: str) -> int | None:
        """The size the manifest of the pack's backup records (None if unknown)."""
        _, label, name = pack_key.rsplit("/", 2)
        try:
            manifest = self.catalog.manifest(self.source, label)
        except DrorchError:
            return None
        for pack in manifest.data.get("packs") or []:
            if layout.pack_key(self.source, label, pack["n"]) == pack_key:
                return pack.get("size")
        return None

    def _size(self, key: str) -> int | None:
        """Size of a data object, from one listing per backup (cheap on object storage)."""
        if key.startswith("data/"):
            label = key.split("/")[2]
            if label not in self._listings:
                self._listings[label] = {info.key: info.size for info in
                                         self.repo.storage.list(layout.data_prefix(self.source, label))}
            return self._listings[label].get(key)
        return self._stat(key)

    def _stat(self, key: str) -> int | None:
        if key not in self._stats:
            info = self.repo.storage.stat(key)
            self._stats[key] = None if info is None else info.size
        return self._stats[key]

    # -- read ----------------------------------------------------------------------

    def read(self, manifest: Manifest, needs: Needs) -> int:
        """Download and check every blob and archive file the backup needs; returns bytes read."""
        label = manifest.label
        todo = {}
        for key, blobs in needs.blobs.items():
            fresh = {o: use for o, use in blobs.items() if (key, o) not in self._read_ok
                     and (key, o) not in self.problems and (key, None) not in self.problems}
            if fresh:
                todo[key] = fresh
        self.progress.plan(nbytes=sum(use[0][3] for blobs in todo.values() for use in blobs.values()))
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="drorch-verify")
        try:
            futures = [pool.submit(self._read_pack, key, blobs, label) for key, blobs in sorted(todo.items())]
            total = sum(future.result() for future in futures)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        check = self.rule.checker(manifest.source_facts) if needs.archive else None
        for name, key in needs.archive:
            total += self._read_archive(name, key, manifest, check)
        return total

    def _read_pack(self, key: str, blobs: dict[int, tuple], label: str) -> int:
        context = layout.data_prefix(self.source, key.split("/")[2])
        items = sorted(blobs.values(), key=lambda use: use[0][2])
        total = 0
        for start, end, run in coalesce(items):
            try:
                data = self.repo.storage.get_range(key, start, end - start)
            except NotFoundError:
                self.problem(key, None, "is missing", label, "read")
                return total
            except DrorchError as exc:
                for block, path, index in run:
                    self.problem(key, block[2], f"cannot be read: {exc.message}", label, "read")
                continue
            total += len(data)
            for block, path, index in run:
                self._check_blob(key, data[block[2] - start: block[2] - start + block[3]], block, path, index,
                                 context, label)
            self.progress.add(nbytes=len(data))
        return total

    def _check_blob(self, key, blob, block, path, index, context, label) -> None:
        where = f"bytes {block[2]}-{block[2] + block[3]}"
        raw = None
        if len(blob) == block[3]:
            try:
                raw = self.repo.codec.decode(blob, context=context, what=f"{key} {where}")
            except IntegrityError:
                raw = None
        if raw is None or len(raw) != block[4] or hashlib.sha256(raw).hexdigest() != block[5]:
            self.problem(key, block[2], f"{where} fail their checksum (file /{path}, block {index})", label, "read")
        else:
            with self._lock:
                self._read_ok.add((key, block[2]))

    def _read_archive(self, name: str, key: str, manifest: Manifest, check) -> int:
        if (key, None) in self._read_ok or (key, None) in self.problems:
            if (key, None) in self.problems:
                self.problems[(key, None)].needed_by.add(manifest.label)
            return 0
        try:
            raw = self.repo.get_blob(key)
        except NotFoundError:
            self.problem(key, None, f"is missing: {self.rule.what} {name} is needed to make the backup "
                                    "consistent", manifest.label, "read")
            return 0
        except DrorchError as exc:
            self.problem(key, None, f"cannot be decoded: {exc.message}", manifest.label, "read")
            return 0
        trouble = check(name, raw)
        if trouble:
            self.problem(key, None, f"({self.rule.what} {name}) {trouble}", manifest.label, "read")
        else:
            self._read_ok.add((key, None))
        return len(raw)

    # -- every backup that needs a damaged object ------------------------------------------

    def name_dependents(self) -> None:
        """Add to each new problem every committed backup of the source that needs its
        object (not only the ones verified): what else a damaged object takes with it."""
        fresh = [key for key in self.problems if key not in self._named]
        if not fresh:
            return
        self._named.update(fresh)
        by_key = defaultdict(list)
        for key in fresh:
            by_key[key[0]].append(self.problems[key])
        damaged_labels = {key.split("/")[2] for key in by_key if key.startswith("data/")}
        for label in self.catalog.labels(self.source):
            try:
                manifest = self.catalog.manifest(self.source, label)
            except DrorchError:
                continue
            chain = set(manifest.chain) | {label}
            for parent in manifest.chain:
                for problem in by_key.get(layout.manifest_key(self.source, parent), []):
                    problem.needed_by.add(label)
            if self.rule is not None:
                for name in self.rule.required(manifest.source_facts):
                    for problem in by_key.get(self.rule.key(self.source, name), []):
                        problem.needed_by.add(label)
            if chain & damaged_labels:
                self._entries_dependents(manifest, by_key)

    def _entries_dependents(self, manifest: Manifest, by_key: dict) -> None:
        label = manifest.label
        for pack in manifest.data.get("packs") or []:
            for problem in by_key.get(layout.pack_key(self.source, label, pack["n"]), []):
                problem.needed_by.add(label)
        try:
            entries = read_entries(self.repo, manifest)
        except DrorchError:
            return  # its own problem, reported when it is verified
        for entry in entries:
            if entry.type != FILE:
                continue
            for block in entry.blocks:
                for problem in by_key.get(layout.pack_key(self.source, block[0], block[1]), ()):
                    if problem.offset is None or problem.offset == block[2]:
                        problem.needed_by.add(label)
        manifest._entries = None
