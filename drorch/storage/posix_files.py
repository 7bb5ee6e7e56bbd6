"""How PosixStorage writes files durably: an object appended piece by piece,
the background fsync of objects put without waiting, and fsync of files and
directories."""

from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drorch.storage.posix import PosixStorage


class Appender:
    """An object written piece by piece into a temporary file beside its key, renamed
    into place by commit() (PosixStorage.open_append)."""

    def __init__(self, storage: PosixStorage, key: str, path: Path, tmp: Path, fd: int):
        self.storage, self.key, self.path, self.tmp, self.fd = storage, key, path, tmp, fd

    def write(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            self.abort()
            raise self.storage._error("write", self.key, exc) from None

    def commit(self) -> None:
        """Into place under its key (durability deferred to the storage's sync())."""
        try:
            os.close(self.fd)
            self.fd = -1
            os.replace(self.tmp, self.path)
            self.storage._placed(self.path, sync=False)
        except OSError as exc:
            self.abort()
            raise self.storage._error("write", self.key, exc) from None

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


class Flusher:
    """fsync()s the files put(sync=False) wrote, in a thread of its own, as they
    come: the barrier before a commit then finds them on disk.  Left to the
    kernel, a backup's packs would stay in the page cache until that barrier
    (writeback starts at a tenth of the RAM), and the backup would wait for all
    of them at its end.  At most `backlog` files wait: a slow disk slows the writers."""

    def __init__(self, backlog: int = 8):
        self.backlog = backlog
        self._cond = threading.Condition()
        self._queue: deque[Path] = deque()  # the head is being synced
        self._running = False
        self._failed: tuple[Path, OSError] | None = None

    def add(self, path: Path) -> None:
        with self._cond:
            while len(self._queue) >= self.backlog:
                self._cond.wait()
            self._queue.append(path)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="drorch-fsync", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._running = False
                    self._cond.notify_all()
                    return
                path = self._queue[0]
            failed = None
            try:
                fsync_file(path)
            except FileNotFoundError:
                pass  # deleted since: nothing to keep
            except OSError as exc:
                failed = exc
            with self._cond:
                self._queue.popleft()
                if failed is not None and self._failed is None:
                    self._failed = (path, failed)
                self._cond.notify_all()

    def wait(self) -> tuple[Path, OSError] | None:
        """Until every file added so far is synced; the first failure since the last wait."""
        with self._cond:
            while self._queue:
                self._cond.wait()
            failed, self._failed = self._failed, None
        return failed


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
