"""Retry a storage's transient failures (tenacity), and only those.

A driver raises TransientError for what may pass when the same request is
sent again (throttling, 5xx, resets, timeouts); everything else goes to the
caller at once.  Waits grow exponentially with full jitter, each capped at
max_delay, for at most `attempts` tries; then the last error is raised as a
StorageError that says how long it was tried.  Every attempt sends the whole
request again (the whole body of a put: a multipart upload starts over).

A conditional put whose first attempt landed but whose answer was lost (a
reset after the write) fails its retry with AlreadyExists; when the object
there is byte for byte ours, the put succeeded and is reported so.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from drorch.errors import StorageError
from drorch.storage.base import AlreadyExists, ObjectInfo, TransientError

log = logging.getLogger(__name__)


class RetryingStorage:
    def __init__(self, inner, *, attempts: int = 8, first_delay: float = 0.1, max_delay: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.inner = inner
        self.location = inner.location
        self.attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._sleep = sleep

    def _call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        retrying = Retrying(retry=retry_if_exception_type(TransientError),
                            stop=stop_after_attempt(self.attempts),
                            wait=wait_random_exponential(multiplier=self.first_delay, max=self.max_delay),
                            sleep=self._sleep, before_sleep=_log_retry, reraise=True)
        try:
            return retrying(fn, *args, **kwargs)
        except TransientError as exc:
            raise StorageError(f"{exc.message} (gave up after {self.attempts} attempts in "
                               f"{time.monotonic() - started:.1f}s)", exc.hint) from None

    # -- the interface ----------------------------------------------------------------

    def put(self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True) -> None:
        failed_before = False

        def attempt() -> None:
            nonlocal failed_before
            try:
                self.inner.put(key, data, if_absent=if_absent, sync=sync)
            except AlreadyExists:
                if failed_before and self._holds(key, data):
                    log.info("%s%s: an earlier attempt had written it", self.location, key)
                    return
                raise
            except TransientError:
                failed_before = True
                raise

        self._call(attempt)

    def _holds(self, key: str, data: bytes) -> bool:
        try:
            return self.inner.get(key) == bytes(data)
        except StorageError as exc:
            if isinstance(exc, TransientError):
                raise
            return False

    def sync(self) -> None:
        self._call(self.inner.sync)

    def get(self, key: str) -> bytes:
        return self._call(self.inner.get, key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._call(self.inner.get_range, key, offset, length)

    def stat(self, key: str) -> ObjectInfo | None:
        return self._call(self.inner.stat, key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # A failed page restarts the listing: the result is always one whole listing.
        return iter(self._call(lambda: list(self.inner.list(prefix))))

    def delete(self, key: str) -> None:
        self._call(self.inner.delete, key)

    def is_empty(self) -> bool:
        return self._call(self.inner.is_empty)

    def __getattr__(self, name: str) -> Any:
        """A driver's optional operations (locked_until, cleanup_interrupted), retried too."""
        value = getattr(self.inner, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self._call(value, *args, **kwargs)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info("retrying after a transient error (attempt %d, waiting %.1fs): %s",
             state.attempt_number, state.next_action.sleep if state.next_action else 0, exc)
