"""Append blobs to pack objects and write each pack when it is full.

Thread-safe: workers append under a lock; the worker that fills a pack
writes it outside the lock, so packs are written in parallel.  A storage
that can append (posix) gets each blob as it comes, into a pack that is put
in place when full: no pack-sized buffer in memory.
"""

from __future__ import annotations

import threading

from drorch.faults import checkpoint
from drorch.repo import layout
from drorch.repo.repository import Repository


WRITE_AT = 1 << 20  # appended blobs are written to the pack in pieces of about this size


class Packer:
    def __init__(self, repo: Repository, source: str, label: str, *, fault_point: str = "after-first-pack"):
        self.repo = repo
        self.fault_point = fault_point
        self.source = source
        self.label = label
        self.target = repo.pack_size
        self._capacity = self.target + repo.block_size + 4096
        self._lock = threading.Lock()
        self._append = getattr(repo.storage, "open_append", None)
        self._out = None  # the pack being appended to (storages that can)
        self._pending = bytearray()  # blobs not yet written to it
        self._buf = bytearray()
        self._fill = 0
        self._blobs = 0
        self._number = 0
        self.packs: list[dict] = []
        self.stored_bytes = 0

    def add(self, *parts: bytes) -> tuple[int, int]:
        """Append one blob, given as one or more parts (copied once, into the
        pack); returns (pack number, offset)."""
        sealed = None
        with self._lock:
            number, offset = self._number, self._fill
            if self._append is not None:
                if self._out is None:
                    self._out = self._append(self._key(number))
                for part in parts:
                    self._pending += part
                    self._fill += len(part)
                if len(self._pending) >= WRITE_AT:  # one write per megabyte, not one per small file
                    self._out.write(self._pending)
                    self._pending = bytearray()
            else:
                self._buffer(parts)
            self._blobs += 1
            if self._fill >= self.target:
                sealed = self._seal()
        if sealed:
            self._write(*sealed)
        return number, offset

    def _buffer(self, parts) -> None:
        # A blob is at most a block and its envelope: a pack's buffer is allocated
        # once at its final size, instead of growing by reallocation to 16 MB.
        if not self._buf:
            self._buf = bytearray(self._capacity)
        for part in parts:
            end = self._fill + len(part)
            if end <= len(self._buf):
                self._buf[self._fill:end] = part
            else:  # (larger than any blob the pipeline makes)
                del self._buf[self._fill:]
                self._buf += part
            self._fill = end

    def _key(self, number: int) -> str:
        return layout.pack_key(self.source, self.label, number)

    def _seal(self) -> tuple:
        if self._out is not None:
            if self._pending:
                self._out.write(self._pending)
                self._pending = bytearray()
            sealed = (self._number, self._out, self._fill, self._blobs)
        else:
            del self._buf[self._fill:]  # shrinks in place
            sealed = (self._number, self._buf, self._fill, self._blobs)
        self._number += 1
        self._buf, self._out, self._fill, self._blobs = bytearray(), None, 0, 0
        return sealed

    def _write(self, number: int, data, size: int, blobs: int) -> None:
        # Durability is deferred to the sync() before the commit (FORMAT.md, write order).
        if isinstance(data, bytearray):
            self.repo.storage.put(self._key(number), data, sync=False)
        else:
            data.commit()
        checkpoint(self.fault_point)
        with self._lock:
            self.packs.append({"n": number, "size": size, "blobs": blobs})
            self.stored_bytes += size

    def abort(self) -> None:
        """A failed run: the pack being appended to is removed, not left half written."""
        with self._lock:
            out, self._out = self._out, None
        if out is not None:
            out.abort()

    def flush(self) -> None:
        with self._lock:
            sealed = self._seal() if self._fill else None
        if sealed:
            self._write(*sealed)
        self.packs.sort(key=lambda p: p["n"])
