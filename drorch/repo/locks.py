"""Per-source locks kept in the repository (FORMAT.md, "Locks").

One backup, expire or copy of a source at a time, across processes and hosts
sharing the repository.  A lock is a lease (lease.py): created with
create-if-absent, renewed by a background thread while its holder works, and
taken over only once it has lapsed, or at once when its holder was a process
of this host that no longer exists.  A live holder makes the caller fail fast
with who holds it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta

from drorch.errors import LockedError, NotFoundError, StorageError
from drorch.repo import layout, lease
from drorch.repo.lease import holder_alive, process_start  # noqa: F401  (used by catalog and tests)
from drorch.repo.repository import Repository
from drorch.storage.base import AlreadyExists
from drorch.timefmt import utcnow

log = logging.getLogger(__name__)


def _log_lost(lock: "SourceLock", why: str) -> None:
    log.error("lost the lock of %s: %s; the run stops before its commit", lock.source, why)


class SourceLock:
    #: lease period of new locks; the daemon sets it from its policy (daemon.lease)
    default_ttl: timedelta = lease.DEFAULT_TTL
    #: called (from the renewal thread) when the lease is lost; the daemon's jobs abort on it
    on_lost = staticmethod(_log_lost)

    def __init__(self, repo: Repository, source: str, purpose: str, ttl: timedelta | None = None):
        self.repo = repo
        self.source = source
        self.purpose = purpose
        self.key = layout.lock_key(source)
        self.token = uuid.uuid4().hex
        self.ttl = ttl or self.default_ttl
        self.held = False
        self.lost = threading.Event()
        self._record: dict = {}
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def read(self) -> dict | None:
        try:
            return self.repo.get_plain_json(self.key)
        except NotFoundError:
            return None

    def acquire(self, wait: float = 0.0) -> "SourceLock":
        deadline = time.monotonic() + wait
        while True:
            holder = self._try()
            if holder is None:
                self.held = True
                self._start_renewing()
                return self
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"source {self.source} is locked by {holder.get('host')} pid {holder.get('pid')} "
                    f"since {holder.get('since')} ({holder.get('purpose')}"
                    + (f", lease until {holder['expires']})" if holder.get("expires") else ")"),
                    "wait for that run to finish; a lock whose holder is gone is taken over once its "
                    f"lease expires (or remove {self.repo.location}/{self.key} after checking)")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _try(self) -> dict | None:
        """Take the lock; return the live holder's record when we cannot."""
        for _ in range(4):
            now = utcnow()
            mine = lease.new_record(self.purpose, self.token, self.ttl, now)
            try:
                self.repo.put_plain_json(self.key, mine, if_absent=True)
                self._record = mine
                return None
            except AlreadyExists:
                pass
            holder = self.read()
            if holder is None:
                continue  # released meanwhile: try again
            if holder.get("token") == self.token:  # our own put, whose answer was lost
                self._record = holder
                return None
            if holder_alive(holder, now):
                return holder
            if not lease.take_over(self.repo, self.key, holder, mine, log):
                return self.read() or holder
        return self.read() or {"host": "?", "pid": "?", "since": "?", "purpose": "?"}

    # -- the lease ------------------------------------------------------------------

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease-{self.source}", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        period = self.ttl.total_seconds() / 3
        while not self._stop.wait(period):
            try:
                self.renew()
            except StorageError as exc:  # try again; the lease covers a few misses
                log.warning("could not renew the lock of %s: %s", self.source, exc.message)
            if self.lost.is_set():
                return

    def renew(self) -> None:
        """Extend the lease, unless it is already too late (we stalled) or someone took it."""
        now = utcnow()
        until = lease.expires(self._record)
        if until is not None and now > until - lease.skew(self.ttl):
            return self._lose(f"the lease ran out at {self._record.get('expires')} before it was renewed")
        current = self.read()
        if current is None or current.get("token") != self.token:
            holder = f"{current.get('host')} pid {current.get('pid')}" if current else "nobody"
            return self._lose(f"the lock record is gone or replaced (now held by {holder})")
        record = lease.new_record(self.purpose, self.token, self.ttl, now, since=self._record.get("since"))
        self.repo.put_plain_json(self.key, record)
        self._record = record

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            self.lost.set()
            type(self).on_lost(self, why)

    def ensure_held(self) -> None:
        """Raise unless the lease is still ours: call before a commit point."""
        now = utcnow()
        until = lease.expires(self._record)
        if not self.lost.is_set() and until is not None and now > until - lease.skew(self.ttl):
            self._lose(f"the lease ran out at {self._record.get('expires')}")
        if self.lost.is_set():
            raise LockedError(f"source {self.source}: this process lost its lock (lease) and stopped "
                              "before committing; nothing of this run is listed",
                              "it was stalled longer than the lease (daemon.lease); the next run starts over")

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        self.held = False
        if self.lost.is_set():
            return  # not ours any more: leave it to whoever took it over
        until = lease.expires(self._record)
        if until is not None and utcnow() > until - lease.skew(self.ttl):
            return  # lapsed: it may be being taken over; deleting it now could delete the taker's
        holder = self.read()
        if holder and holder.get("token") == self.token:
            self.repo.storage.delete(self.key)

    def __enter__(self) -> "SourceLock":
        return self.acquire() if not self.held else self

    def __exit__(self, *exc: object) -> None:
        self.release()
