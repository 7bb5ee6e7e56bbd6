"""The backup data path: read -> hash -> compress -> pack -> write, in threads.

The main thread walks the source and submits work in the walk's order; a
bounded number of tasks is in flight at once, so memory does not grow with
the size of the data.  Small files go in batches, large files as blocks
(each block hashed, compared with the parent's block at the same index, and
stored only when it differs).  Worker errors stop the pipeline and are
raised to the caller.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from drorch.engine.memory import one_malloc_arena
from drorch.engine.packer import Packer
from drorch.engine.progress import Progress
from drorch.fsmeta import FILE, Entry
from drorch.repo import layout
from drorch.repo.repository import Repository
from drorch.sources.base import Source

log = logging.getLogger(__name__)
BATCH_BYTES = 1 << 20
BATCH_FILES = 128
TORN_RETRIES = 2


@dataclass
class PipelineStats:
    read_bytes: int = 0
    new_files: int = 0
    changed_files: int = 0
    unchanged_files: int = 0
    torn_files: int = 0
    warnings: list[str] = field(default_factory=list)


def checksum_of(blocks: list, bs: int) -> str:
    """The entry checksum (FORMAT.md): the block's own for one-block files,
    the SHA-256 of the block digests otherwise."""
    if bs == 0:
        return blocks[0][5] if blocks else hashlib.sha256(b"").hexdigest()
    return hashlib.sha256(b"".join(bytes.fromhex(b[5]) for b in blocks)).hexdigest()


class _LargeFile:
    __slots__ = ("entry", "ref", "remaining", "lock")

    def __init__(self, entry: Entry, ref: Entry | None, blocks: int):
        self.entry, self.ref, self.remaining = entry, ref, blocks
        self.lock = threading.Lock()


class Pipeline:
    def __init__(self, repo: Repository, source: Source, label: str, packer: Packer,
                 progress: Progress, *, checksum_all: bool = False, workers: int | None = None):
        self.repo, self.source, self.label, self.packer = repo, source, label, packer
        self.progress = progress
        self.checksum_all = checksum_all
        self.block_size = repo.block_size
        # a remote source reads several blocks, and bigger batches of small files, per request
        self.blocks_per_read = max(1, getattr(source, "read_unit", 0) // self.block_size)
        self.batch_files, self.batch_bytes = getattr(source, "read_batch", (BATCH_FILES, BATCH_BYTES))
        self._inspect = getattr(source, "inspect", None)
        self._source_read_small = getattr(source, "read_small", None)
        self.context = layout.data_prefix(source.name, label)  # what every pack blob is bound to
        self.stats = PipelineStats()
        self._stats_lock = threading.Lock()
        workers = workers or max(2, os.cpu_count() or 2)
        one_malloc_arena()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="drorch-store")
        self._slots = threading.BoundedSemaphore(workers * 3)
        self._batch: list[tuple[Entry, Entry | None]] = []
        self._batch_bytes = 0
        self._streams: list[Entry] = []
        self._error: BaseException | None = None

    # -- submitting (main thread) --------------------------------------------------

    def add(self, entry: Entry, ref: Entry | None) -> None:
        """Schedule one scanned entry; ref is the parent backup's entry of that path."""
        self._raise_if_failed()
        if entry.type != FILE:
            return
        usable_ref = ref if ref is not None and ref.type == FILE and ref.checksum else None
        if usable_ref and not self.checksum_all and entry.same_stat(usable_ref):
            entry.checksum, entry.bs, entry.blocks = ref.checksum, ref.bs, list(ref.blocks)
            self._count("unchanged_files")
            self.progress.add(files=1, nbytes=entry.size)
            return
        self._count("changed_files" if usable_ref else "new_files")
        if entry.size <= self.block_size:
            self._batch.append((entry, usable_ref))
            self._batch_bytes += entry.size
            if self._batch_bytes >= self.batch_bytes or len(self._batch) >= self.batch_files:
                self._submit_batch()
            return
        count = -(-entry.size // self.block_size)
        entry.bs, entry.blocks = self.block_size, [None] * count
        state = _LargeFile(entry, usable_ref, count)
        for index in range(0, count, self.blocks_per_read):
            self._submit(self._store_block, state, index, min(self.blocks_per_read, count - index))

    def add_generated(self, entry: Entry, data: bytes) -> None:
        """Store bytes the source produced (not read from the host)."""
        entry.size = len(data)
        entry.bs, entry.blocks = 0, [self._store(data, None, 0)] if data else []
        entry.checksum = checksum_of(entry.blocks, 0)
        self.progress.add(files=1, nbytes=len(data))

    def add_stream(self, entry: Entry, chunks) -> None:
        """Store a stream the source produces (e.g. pg_dump's output) as blocks,
        compressed in the workers while the stream is still being read."""
        bs = self.block_size
        entry.bs, entry.blocks, entry.size = bs, [], 0
        buffer = bytearray()
        for chunk in chunks:
            buffer += chunk
            while len(buffer) >= bs:
                self._submit_stream_block(entry, bytes(buffer[:bs]))
                del buffer[:bs]
        if buffer:
            self._submit_stream_block(entry, bytes(buffer))
        self._streams.append(entry)

    def _submit_stream_block(self, entry: Entry, data: bytes) -> None:
        index = len(entry.blocks)
        entry.blocks.append(None)
        entry.size += len(data)
        self._submit(self._store_stream_block, entry, index, data)

    def _store_stream_block(self, entry: Entry, index: int, data: bytes) -> None:
        entry.blocks[index] = self._store(data, None, index)
        self.progress.add(nbytes=len(data))

    def drain(self) -> PipelineStats:
        """Wait for every submitted read; the packer stays open for add_generated()."""
        try:
            if self._batch:
                self._submit_batch()
        finally:
            self._pool.shutdown(wait=True)
        self._raise_if_failed()
        for entry in self._streams:
            entry.checksum = checksum_of(entry.blocks, entry.bs)
            self.progress.add(files=1)
        return self.stats

    def abort(self) -> None:
        self._error = self._error or RuntimeError("aborted")
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit_batch(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        start = getattr(self.source, "start_read_many", None)
        if start is None:
            self._submit(self._store_batch, batch)
            return
        # the read goes to the host now (once a slot bounds what is in flight), so
        # the host reads batch after batch while the workers store earlier ones
        self._submit(self._store_batch, batch,
                     before=lambda: start([entry for entry, _ in batch], self.block_size + 1))

    def _submit(self, fn, *args, before=None) -> None:
        self._slots.acquire()
        self._raise_if_failed()
        if before is not None:
            try:
                args = (*args, before())
            except BaseException:
                self._slots.release()
                raise
        future = self._pool.submit(self._guard, fn, *args)
        future.add_done_callback(lambda _: self._slots.release())

    def _guard(self, fn, *args) -> None:
        if self._error is not None:
            return
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            if self._error is None:
                self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # -- work (worker threads) ------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        with self._stats_lock:
            self.stats.warnings.append(message)

    def _store(self, data: bytes, ref_block: tuple | None, index: int, sha: str | None = None,
               entry: Entry | None = None, offset: int = 0) -> tuple:
        """One block: reuse the parent's when identical, else encode and pack it."""
        if self._inspect is not None and entry is not None:
            self._inspect(entry, offset, data)
        sha = sha or hashlib.sha256(data).hexdigest()
        if ref_block is not None and ref_block[5] == sha and ref_block[4] == len(data):
            return tuple(ref_block)
        parts = self.repo.codec.encode_parts(data, context=self.context)
        pack, offset = self.packer.add(*parts)
        return (self.label, pack, offset, sum(map(len, parts)), len(data), sha)

    def _store_batch(self, batch: list[tuple[Entry, Entry | None]], pending=None) -> None:
        read_many = getattr(self.source, "read_many", None)
        if pending is not None:  # sent ahead by _submit_batch
            first = pending()
        else:
            first = read_many([entry for entry, _ in batch], self.block_size + 1) if read_many else {}
        tally = [0, 0, 0]  # bytes read, files and bytes stored: counted once per batch
        try:
            for entry, ref in batch:
                try:
                    self._store_whole(entry, ref, tally, first.pop(entry.path, None))
                except FileNotFoundError:
                    self._vanished(entry)
                except PermissionError as exc:
                    self._unreadable(entry, exc)
        finally:
            self._count("read_bytes", tally[0])
            self.progress.add(files=tally[1], nbytes=tally[2])

    def _store_whole(self, entry: Entry, ref: Entry | None, tally: list, first: tuple | None = None) -> None:
        data = self._read_consistent(entry, tally, first)
        if data is None:
            return
        if len(data) > self.block_size:  # grew since the walk: store it in blocks
            self._store_streamed(entry, ref)
            return
        ref_block = ref.blocks[0] if ref is not None and ref.bs == 0 and ref.blocks else None
        entry.bs = 0
        entry.blocks = [self._store(data, ref_block, 0, entry=entry)] if data else []
        entry.checksum = checksum_of(entry.blocks, 0)
        tally[1] += 1
        tally[2] += len(data)

    def _read_consistent(self, entry: Entry, tally: list, first: tuple | None = None) -> bytes | None:
        """Read a small file (at most one block and a byte, so a file that grew
        cannot fill memory); re-read it if it changed meanwhile, and flag it
        torn if it keeps changing.  first: (bytes, stat after) from a batched
        read_many, used as the first attempt."""
        limit = self.block_size + 1
        if not self.source.detect_torn:
            data = first[0] if first is not None else self.source.read(entry, 0, limit)
            tally[0] += len(data)
            entry.size = len(data)
            return data
        for attempt in range(TORN_RETRIES + 1):
            data, now = first if first is not None and attempt == 0 else self._read_small(entry, limit)
            tally[0] += len(data)
            if len(data) > self.block_size:
                entry.size = len(data)
                return data
            if now is None:
                self._vanished(entry)
                return None
            if _unchanged(entry, now) and len(data) == entry.size and not (
                    _racy(now) and self._read_small(entry, limit)[0] != data):
                return data
            _take_stat(entry, now)
            if attempt == TORN_RETRIES:
                self._torn(entry)
                entry.size = len(data)
                return data
        raise AssertionError("unreachable")

    def _read_small(self, entry: Entry, limit: int) -> tuple[bytes, "os.stat_result | Entry | None"]:
        """The file's bytes and its stat after the read (None: gone, or no longer a file)."""
        if self._source_read_small is not None:
            data, st = self._source_read_small(entry, limit)
            return data, st if st is not None and stat.S_ISREG(st.st_mode) else None
        data = self.source.read(entry, 0, limit)
        now = self.source.restat(entry)
        return data, now if now is not None and now.type == FILE else None

    def _store_streamed(self, entry: Entry, ref: Entry | None) -> None:
        """Read a file block by block in this thread, until a read is not torn."""
        bs = self.block_size
        for attempt in range(TORN_RETRIES + 1):
            now = self.source.restat(entry)
            if now is None:
                self._vanished(entry)
                return
            _take_stat(entry, now)
            blocks, offset = [], 0
            while offset < entry.size:
                try:
                    data = self.source.read(entry, offset, min(bs, entry.size - offset))
                except FileNotFoundError:
                    self._vanished(entry)
                    return
                if not data:
                    break
                self._count("read_bytes", len(data))
                blocks.append(self._store(data, _ref_block(ref, bs, len(blocks)), len(blocks),
                                          entry=entry, offset=offset))
                offset += len(data)
            after = self.source.restat(entry)
            if not self.source.detect_torn or (
                    after is not None and after.same_stat(entry) and offset == entry.size
                    and not (_racy(after) and not self._same_again(entry, blocks))):
                break
            if attempt == TORN_RETRIES:
                self._torn(entry)
                break
        entry.bs, entry.blocks, entry.size = bs, blocks, offset
        entry.checksum = checksum_of(blocks, bs)
        self.progress.add(files=1)

    def _store_block(self, state: _LargeFile, index: int, count: int = 1) -> None:
        """Read `count` blocks from block `index` on and store each."""
        entry = state.entry
        offset = index * entry.bs
        try:
            data = self.source.read(entry, offset, min(count * entry.bs, entry.size - offset))
        except FileNotFoundError:
            data = None
        except PermissionError as exc:
            data = None
            if not entry.flags:
                self._unreadable(entry, exc)
        if data is not None:
            self._count("read_bytes", len(data))
            for i in range(count):  # (a file that shrank gives short or empty blocks, as one by one)
                block = data[i * entry.bs:(i + 1) * entry.bs]
                entry.blocks[index + i] = self._store(block, _ref_block(state.ref, entry.bs, index + i), index + i,
                                                      entry=entry, offset=offset + i * entry.bs)
            self.progress.add(nbytes=len(data))
        with state.lock:
            state.remaining -= count
            last = state.remaining == 0
        if last:
            self._finish_large(state)

    def _finish_large(self, state: _LargeFile) -> None:
        entry = state.entry
        if entry.flags:  # unreadable
            return
        complete = None not in entry.blocks and all(
            b[4] == min(entry.bs, entry.size - i * entry.bs) for i, b in enumerate(entry.blocks))
        if self.source.detect_torn:
            now = self.source.restat(entry)
            if now is None:
                self._vanished(entry)
                return
            if not complete or not now.same_stat(entry) or (
                    _racy(now) and not self._same_again(entry, entry.blocks)):
                self._store_streamed(entry, state.ref)  # rare: changed while it was read
                return
        elif None in entry.blocks:
            self._vanished(entry)
            return
        entry.size = sum(block[4] for block in entry.blocks)
        entry.checksum = checksum_of(entry.blocks, entry.bs)
        self.progress.add(files=1)

    def _same_again(self, entry: Entry, blocks: list) -> bool:
        """Read a file once more and compare it, block by block, with what was stored."""
        offset = 0
        for block in blocks:
            data = self.source.read(entry, offset, block[4])
            if hashlib.sha256(data).hexdigest() != block[5]:
                return False
            offset += len(data)
        return len(self.source.read(entry, offset, 1)) == 0

    def _vanished(self, entry: Entry) -> None:
        entry.flags = ["vanished"]
        self._warn(f"skipped /{entry.path}: removed during the backup")

    def _unreadable(self, entry: Entry, exc: OSError) -> None:
        entry.flags = ["vanished"]
        self._warn(f"skipped /{entry.path}: cannot read it ({exc.strerror}); run the backup as a "
                   "user that may read it, or exclude it")

    def _torn(self, entry: Entry) -> None:
        entry.flags = ["torn"]
        self._count("torn_files")
        self._warn(f"/{entry.path} kept changing while it was read; the stored copy may be "
                   "inconsistent (flagged torn)")


RACY_NS = 2_000_000_000


def _racy(now) -> bool:
    """Modified so recently that a change within the file system's timestamp
    granularity could hide behind an unchanged mtime: the read is confirmed by
    reading again (git calls such entries "racily clean").  now: an Entry or
    an os.stat_result."""
    mtime, ctime = _times(now)
    return time.time_ns() - max(mtime, ctime) < RACY_NS


def _times(now) -> tuple[int, int]:
    if isinstance(now, Entry):
        return now.mtime_ns, now.ctime_ns
    return now.st_mtime_ns, now.st_ctime_ns


def _unchanged(entry: Entry, now) -> bool:
    """Nothing suggests the content changed since the walk (now: Entry or os.stat_result).
    st_ino 0 means not known (an SSH host's batched read takes the stat from tar's
    headers, which have no inode): size, mtime and ctime decide (docs/hosts.md)."""
    if isinstance(now, Entry):
        return now.same_stat(entry)
    return (now.st_size == entry.size and now.st_mtime_ns == entry.mtime_ns
            and now.st_ctime_ns == entry.ctime_ns and now.st_ino in (entry.ino, 0))


def _ref_block(ref: Entry | None, bs: int, index: int) -> tuple | None:
    if ref is None or ref.bs != bs or index >= len(ref.blocks):
        return None
    return ref.blocks[index]


def _take_stat(entry: Entry, now) -> None:
    if not isinstance(now, Entry):
        entry.size, entry.mtime_ns, entry.ctime_ns = now.st_size, now.st_mtime_ns, now.st_ctime_ns
        entry.ino, entry.mode = now.st_ino or entry.ino, stat.S_IMODE(now.st_mode)
        return
    entry.size, entry.mtime_ns, entry.ctime_ns, entry.ino = now.size, now.mtime_ns, now.ctime_ns, now.ino
    entry.mode = now.mode
