"""Background writes for put(sync=False): the caller goes on while the bytes upload.

The storage interface lets a put(sync=False) defer durability to the next
sync() (FORMAT.md, write order: packs, then a barrier, then the manifest).
On object storage an upload takes a while; this wrapper hands such puts to
a few threads so the backup pipeline keeps reading and compressing
meanwhile.  Memory stays bounded: a put waits while max_pending_bytes are
already on their way.

What this process wrote stays readable at once: an operation on a key whose
upload is under way waits for it, list() and is_empty() wait for them all.
An upload's error is raised by sync() and by the next deferred put; the
uploads still queued behind it are dropped (the run has failed).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator

from drorch.storage.base import ObjectInfo, StorageError, check_key


class DeferredPuts:
    def __init__(self, inner, *, workers: int = 8, max_pending_bytes: int = 64 << 20):
        self.inner = inner
        self.location = inner.location
        self.max_pending_bytes = max_pending_bytes
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="drorch-upload")
        self._cond = threading.Condition()
        self._pending: dict[str, tuple[object, Future]] = {}
        self._pending_bytes = 0
        self._error: BaseException | None = None

    # -- writing ----------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True) -> None:
        check_key(key)
        self._wait_for(key)
        if sync or if_absent:
            self.inner.put(key, data, if_absent=if_absent, sync=sync)
            return
        size, token = len(data), object()
        with self._cond:
            self._raise_error(keep=True)
            while self._pending_bytes and self._pending_bytes + size > self.max_pending_bytes:
                self._cond.wait()
                self._raise_error(keep=True)
            self._pending_bytes += size
            self._pending[key] = (token, self._pool.submit(self._upload, key, data, size, token))

    def _upload(self, key: str, data: bytes, size: int, token: object) -> None:
        try:
            if self._error is not None:  # an upload failed: the run is lost, do not keep the endpoint busy
                raise StorageError(f"{self.location}{key} not written: an earlier upload failed")
            self.inner.put(key, data, sync=False)
        except BaseException as exc:
            with self._cond:
                self._error = self._error or exc
            raise
        finally:
            with self._cond:
                self._pending_bytes -= size
                if self._pending.get(key, (None,))[0] is token:
                    del self._pending[key]
                self._cond.notify_all()

    def _raise_error(self, keep: bool = False) -> None:
        """Raise an upload's error; sync() clears it, a deferred put leaves it for sync()."""
        if self._error is not None:
            error = self._error
            if not keep:
                self._error = None
            raise error

    def sync(self) -> None:
        """Wait for every upload; raise the first that failed; then the inner barrier."""
        self._wait_all()
        with self._cond:
            self._raise_error()
        self.inner.sync()

    def _wait_for(self, key: str) -> None:
        with self._cond:
            pending = self._pending.get(key)
        if pending is not None:
            pending[1].exception()  # wait; a failure is raised by sync()

    def _wait_all(self) -> None:
        with self._cond:
            while self._pending:
                self._cond.wait()

    # -- reading and deleting: what this process wrote is visible ------------------------

    def get(self, key: str) -> bytes:
        self._wait_for(key)
        return self.inner.get(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._wait_for(key)
        return self.inner.get_range(key, offset, length)

    def stat(self, key: str) -> ObjectInfo | None:
        self._wait_for(key)
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._wait_all()
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._wait_for(key)
        self.inner.delete(key)

    def is_empty(self) -> bool:
        self._wait_all()
        return self.inner.is_empty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
