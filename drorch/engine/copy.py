"""Copy committed backups of one source to another repository (FORMAT.md, "Copies").

The target gets a self-contained copy: every backup the target lacks, in
label order (a parent always before its children), each written like a
backup — run record, packs, entries, then the manifest last, under the
target's source lock.  Blobs keep their compressed payload; only the
encryption envelope is redone (each repository has its own key), and every
blob is decompressed and checked against its SHA-256 on the way.  Blobs no
entry references (leftovers of files that vanished during the backup) are
not copied, so a copy's packs are new packs and its entries are rewritten
with the new block positions.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from drorch.engine.packer import Packer
from drorch.engine.progress import Progress
from drorch.errors import DrorchError, IntegrityError, RepositoryError
from drorch.faults import checkpoint
from drorch.fsmeta import FILE
from drorch.repo import layout
from drorch.repo.catalog import Catalog
from drorch.repo.locks import SourceLock
from drorch.repo.manifest import Manifest, read_entries, write_entries, write_manifest
from drorch.repo.repository import Repository
from drorch.storage.base import ObjectLocked
from drorch.timefmt import iso, utcnow

log = logging.getLogger(__name__)
IDENTITY = ("label", "source", "type", "parent", "started", "finished")


@dataclass
class CopyResult:
    source: str
    target: str  # the target's location
    copied: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already in the target
    read_bytes: int = 0
    written_bytes: int = 0
    blobs: int = 0


def run_copy(src: Repository, dst: Repository, source: str, *, progress: Progress | None = None,
             lock_wait: float = 0.0, workers: int | None = None) -> CopyResult:
    if src.id == dst.id:
        raise RepositoryError(f"{src.location} and {dst.location} are the same repository (id {src.id})",
                              "copy to a repository of its own")
    progress = progress or Progress()
    progress.phase = "lock"
    result = CopyResult(source, dst.location)
    with SourceLock(dst, source, "copy").acquire(wait=lock_wait) as lock:
        backups = Catalog(src).backups(source)
        dst_catalog = Catalog(dst)
        present = set(dst_catalog.labels(source))
        for manifest in backups:
            if manifest.label in present:
                _check_same(manifest, dst_catalog.manifest(source, manifest.label), dst.location)
                result.present.append(manifest.label)
        blocks = _BlockMap(dst, dst_catalog, source)
        for manifest in backups:
            if manifest.label in present:
                continue
            absent = [label for label in manifest.chain if label not in present]
            if absent:  # cannot happen while the source keeps chains whole; never write a broken copy
                raise RepositoryError(f"cannot copy {source} {manifest.label}: the target lacks {absent}",
                                      "the source repository is damaged: run `drorch verify`")
            copier = _CopyOne(src, dst, manifest, lock, blocks, progress, workers)
            copier.run()
            present.add(manifest.label)
            result.copied.append(manifest.label)
            result.read_bytes += copier.read_bytes
            result.written_bytes += copier.written_bytes
            result.blobs += copier.blobs
    return result


def _check_same(mine: Manifest, theirs: Manifest, location: str) -> None:
    differ = [key for key in IDENTITY if mine.data.get(key) != theirs.data.get(key)]
    if differ or mine.data["entries"]["count"] != theirs.data["entries"]["count"]:
        raise RepositoryError(
            f"{location} already holds a different backup {mine.source} {mine.label} "
            f"(it differs in {', '.join(differ) or 'entries'}); nothing was copied",
            "copy to a repository that holds only copies of this source's backups")


class _BlockMap:
    """(label, sha256, raw size) -> the block reference in the target, read from
    the target's own entries (a backup's blocks are all in its own entries)."""

    def __init__(self, dst: Repository, catalog: Catalog, source: str):
        self.dst, self.catalog, self.source = dst, catalog, source
        self._refs: dict[tuple[str, str, int], tuple] = {}
        self._loaded: set[str] = set()

    def add(self, block: tuple) -> None:
        self._refs[(block[0], block[5], block[4])] = tuple(block)

    def load(self, label: str, entries) -> None:
        for entry in entries:
            if entry.type == FILE:
                for block in entry.blocks:
                    if block[0] == label:
                        self.add(block)
        self._loaded.add(label)

    def find(self, block: tuple) -> tuple:
        label = block[0]
        if label not in self._loaded:
            self.load(label, read_entries(self.dst, self.catalog.manifest(self.source, label)))
        try:
            return self._refs[(label, block[5], block[4])]
        except KeyError:
            raise RepositoryError(f"the copy of {self.source} {label} in {self.dst.location} lacks a block "
                                  f"(sha256 {block[5]})", "the target repository is damaged: run "
                                  "`drorch verify` on it") from None


class _CopyOne:
    """Copy one backup whose chain the target already holds."""

    def __init__(self, src, dst, manifest, lock, blocks, progress, workers):
        self.src, self.dst, self.manifest, self.lock = src, dst, manifest, lock
        self.blocks, self.progress = blocks, progress
        self.workers = workers or max(2, min(4, os.cpu_count() or 2))
        self.source, self.label = manifest.source, manifest.label
        self.src_context = layout.data_prefix(self.source, self.label)
        self.read_bytes = self.written_bytes = self.blobs = 0
        self._lock = threading.Lock()
        self.phase = "begin"

    def run(self) -> None:
        run_key = layout.run_key(self.source, self.label)
        record = {"status": "running", "operation": "copy", "type": self.manifest.type,
                  "requested_type": self.manifest.data.get("requested_type"), "parent": self.manifest.parent,
                  "started": iso(utcnow()), "host": socket.gethostname(), "pid": os.getpid(),
                  "lock_token": self.lock.token, "phase": "begin", "from": self.src.id}
        for info in list(self.dst.storage.list(layout.data_prefix(self.source, self.label))):
            try:
                self.dst.storage.delete(info.key)  # leftovers of an interrupted copy (we hold the lock)
            except ObjectLocked:
                break  # under Object Lock: this copy writes new versions over them
        self.dst.put_json(run_key, record)
        checkpoint("copy-after-run-record")
        try:
            self._copy_and_commit()
        except BaseException as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            try:
                self.dst.put_json(run_key, {**record, "status": "failed", "phase": self.phase,
                                            "error": message, "failed": iso(utcnow())})
            except Exception as write_exc:  # noqa: BLE001 - the original error matters more
                log.error("could not record the failed copy of %s: %s", self.label, write_exc)
            raise
        try:
            self.dst.storage.delete(run_key)
        except DrorchError as exc:  # committed already; a stale run record is harmless
            log.warning("could not remove the run record of the copy of %s: %s", self.label, exc)
        log.info("%s: copied backup %s to %s", self.source, self.label, self.dst.location)

    def _remap_entries(self) -> tuple[list, dict[int, dict[int, list]]]:
        """The source's entries with references into the chain mapped to the target's
        blocks, and this backup's own blocks to copy: pack -> offset -> [(blocks, index, ref)]
        (filled in by _copy_pack)."""
        entries = []
        own: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        for entry in read_entries(self.src, self.manifest):
            if entry.type != FILE:
                entries.append(entry)
                continue
            new_blocks: list = [None] * len(entry.blocks)
            for index, block in enumerate(entry.blocks):
                if block[0] == self.label:
                    own[block[1]][block[2]].append((new_blocks, index, block))
                else:
                    new_blocks[index] = self.blocks.find(block)
            entries.append(replace(entry, blocks=new_blocks))
        return entries, own

    def _copy_packs(self, packer: Packer, own: dict[int, dict[int, list]]) -> None:
        sizes = {p["n"]: p["size"] for p in self.manifest.data.get("packs") or []}
        self.progress.plan(nbytes=sum(sizes.get(n, 0) for n in own))
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="drorch-copy")
        try:
            for future in [pool.submit(self._copy_pack, packer, n, uses) for n, uses in sorted(own.items())]:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # packs not started yet are not copied for nothing
            packer.abort()
            raise
        pool.shutdown(wait=True)
        packer.flush()

    def _copy_and_commit(self) -> None:
        self.phase = self.progress.phase = "copy"
        entries, own = self._remap_entries()
        packer = Packer(self.dst, self.source, self.label, fault_point="copy-after-first-pack")
        self._copy_packs(packer, own)
        self.phase = self.progress.phase = "commit"
        checkpoint("copy-before-entries")
        entries_ref = write_entries(self.dst, self.source, self.label, entries)
        self.dst.storage.sync()  # every pack durable before the commit point
        data = {key: value for key, value in self.manifest.data.items() if key != "format"}
        data.update(entries=entries_ref, packs=packer.packs,
                    stats={**self.manifest.stats, "stored_bytes": packer.stored_bytes + entries_ref["size"]},
                    copy={"from": self.src.id, "copied": iso(utcnow()),
                          "entries_sha256": self.manifest.data["entries"]["sha256"]})
        checkpoint("copy-before-manifest")
        self.lock.ensure_held()
        write_manifest(self.dst, data)
        checkpoint("copy-after-manifest")
        self.written_bytes += packer.stored_bytes + entries_ref["size"]
        self.read_bytes += self.manifest.data["entries"]["size"]
        self.blocks.load(self.label, entries)

    def _copy_pack(self, packer: Packer, number: int, uses: dict[int, list]) -> None:
        """Every referenced blob of one source pack: open, check, re-seal, pack."""
        key = layout.pack_key(self.source, self.label, number)
        data = self.src.storage.get(key)
        dst_context = layout.data_prefix(self.source, self.label)
        same_envelope = not self.src.encrypted and not self.dst.encrypted
        for offset in sorted(uses):
            first = uses[offset][0][2]
            length, raw_size, sha = first[3], first[4], first[5]
            blob = data[offset:offset + length]
            what = f"{self.src.location}: {key} bytes {offset}-{offset + length}"
            inner = self.src.codec.unseal(blob, self.src_context, what=what) if len(blob) == length else b""
            raw = self.src.codec.decompress(inner, what=what) if inner else b""
            if len(blob) != length or len(raw) != raw_size or hashlib.sha256(raw).hexdigest() != sha:
                raise IntegrityError(f"{what} fails its checksum: the source backup {self.label} is damaged; "
                                     "nothing of it was committed to the target",
                                     "run `drorch verify` on the source repository")
            out = blob if same_envelope else self.dst.codec.seal(inner, dst_context)
            pack, new_offset = packer.add(out)
            ref = (self.label, pack, new_offset, len(out), raw_size, sha)
            for blocks, index, _ in uses[offset]:
                blocks[index] = ref
        with self._lock:
            self.blobs += len(uses)
            self.read_bytes += len(data)
        self.progress.add(nbytes=len(data))
