"""Restore's writing side: blocks read from packs (ranged reads), checked against
their SHA-256 and written into the files restore.py prepared.  A block that fails
its check fails only its file (`fail`: the file is discarded and named)."""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import TYPE_CHECKING, Callable

from drorch.engine.progress import Progress
from drorch.errors import DrorchError, IntegrityError, NotFoundError, RestoreError
from drorch.fsmeta import Entry
from drorch.hosts.base import Host
from drorch.repo import layout
from drorch.repo.manifest import Manifest
from drorch.repo.repository import Repository

if TYPE_CHECKING:
    from drorch.engine.restore import RestoreResult

log = logging.getLogger("drorch.engine.restore")  # the name restore's messages always had
RANGE_GAP = 256 << 10  # read across gaps smaller than this
RANGE_MAX = 8 << 20  # but never more than this at once


class PackWriter:
    """Writes the blocks of files, grouped by pack, from the restore's worker threads."""

    def __init__(self, repo: Repository, manifest: Manifest, host: Host, result: RestoreResult, progress: Progress,
                 path_of: Callable[[str], str]):
        self.repo, self.manifest, self.host, self.result, self.progress = repo, manifest, host, result, progress
        self.path_of = path_of  # an entry's path -> its path under the target
        self._lock = threading.Lock()
        self.meta_on_close = True  # the host's write handles set a file's metadata as they close it

    def restore_pack(self, key: tuple[str, int], items: list) -> None:
        """Write the given blocks of one pack: (block, entry, FileOut, offset in the file) each."""
        label, pack = key
        object_key = layout.pack_key(self.manifest.source, label, pack)
        context = layout.data_prefix(self.manifest.source, label)
        items.sort(key=lambda item: item[0][2])
        for start, end, run in coalesce(items):
            try:
                data = self.repo.storage.get_range(object_key, start, end - start)
            except NotFoundError:
                for block, entry, out, _ in run:
                    self.fail(entry, out, f"its data object {object_key} is missing from the repository")
                continue
            except DrorchError as exc:
                for block, entry, out, _ in run:
                    self.fail(entry, out, f"cannot read {object_key}: {exc.message}")
                continue
            view, files, written = memoryview(data), 0, 0
            for block, entry, out, offset in run:
                if entry.path in self.result.failures:
                    continue
                size, closed = self._write_block(view, start, block, entry, out, offset, object_key, context)
                files, written = files + closed, written + size
            self.progress.add(files=files, nbytes=written)
            with self._lock:
                self.result.bytes_written += written

    def _write_block(self, data, start, block, entry, out, offset, object_key, context) -> tuple[int, int]:
        """Check and write one block: (bytes written, 1 if that finished its file)."""
        blob = data[block[2] - start: block[2] - start + block[3]]
        try:
            raw = (self.repo.codec.decode(blob, context=context, what=object_key)
                   if len(blob) == block[3] else None)
        except IntegrityError:
            raw = None
        if raw is None or len(raw) != block[4] or hashlib.sha256(raw).hexdigest() != block[5]:
            self.fail(entry, out, f"block at offset {offset} fails its checksum "
                                  f"(object {object_key}, bytes {block[2]}-{block[2] + block[3]})")
            return 0, 0
        if out.remaining == 1 and out.handle is None:  # the only block (most files): no one to share with
            handle = out.handle = self.host.open_write(self.path_of(entry.path), entry.size)
            handle.pwrite(raw, offset)
            out.remaining = 0
            self.finish(handle, entry)
            return len(raw), 1
        with self._lock:
            if out.handle is None:
                out.handle = self.host.open_write(self.path_of(entry.path), entry.size)
        out.handle.pwrite(raw, offset)
        with self._lock:
            out.remaining -= 1
            done = out.remaining == 0
        if done:
            self.finish(out.handle, entry)
        return len(raw), int(done)

    def finish(self, handle, entry: Entry) -> None:
        """Close a file that is complete, setting its metadata on the way when the host can."""
        finish = getattr(handle, "finish", None)
        if finish is None:
            handle.close()
            self.meta_on_close = False  # the metadata pass sets it
        else:
            finish(entry)

    def fail(self, entry: Entry, out: "FileOut | None", why: str) -> None:
        with self._lock:
            if entry.path in self.result.failures:
                return
            self.result.failures[entry.path] = why
            if out is not None and out.handle is not None:
                out.handle.discard()
                out.handle = _Closed()
        log.error("restore of /%s failed: %s", entry.path, why)


class FileOut:
    """One file being written: its handle once open, and how many blocks are to go."""

    __slots__ = ("handle", "remaining")

    def __init__(self, handle, remaining: int):
        self.handle, self.remaining = handle, remaining


class _Closed:
    def pwrite(self, data: bytes, offset: int) -> None:
        pass

    def close(self) -> None:
        pass

    discard = close


def coalesce(items: list):
    """Group blobs (sorted by offset) into ranges worth one read each."""
    run: list = []
    start = end = 0
    for item in items:
        offset, length = item[0][2], item[0][3]
        if run and (offset - end > RANGE_GAP or offset + length - start > RANGE_MAX):
            yield start, end, run
            run = []
        if not run:
            start = end = offset
        run.append(item)
        end = max(end, offset + length)
    if run:
        yield start, end, run


def entry_chunks(repo: Repository, source: str, entry: Entry):
    """The bytes of one file entry, block by block, each checked against its SHA-256."""
    for index, block in enumerate(entry.blocks):
        key = layout.pack_key(source, block[0], block[1])
        try:
            blob = repo.storage.get_range(key, block[2], block[3])
        except NotFoundError:
            raise RestoreError(f"/{entry.path}: its data object {key} is missing from the repository",
                               "run `drorch verify`; restore from another backup or a copy") from None
        raw = repo.codec.decode(blob, context=layout.data_prefix(source, block[0]), what=key)
        if hashlib.sha256(raw).hexdigest() != block[5]:
            raise RestoreError(f"/{entry.path}: block {index} fails its checksum (object {key})",
                               "the repository is damaged: run `drorch verify`")
        yield raw
