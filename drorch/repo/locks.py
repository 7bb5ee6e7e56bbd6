"""Per-source locks kept in the repository (FORMAT.md, "Locks").

One backup or expire of a source at a time.  A lock left behind by a process
of this host that no longer exists is taken over; a live one makes the
caller fail fast with who holds it.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time
import uuid

from drorch.errors import LockedError, NotFoundError
from drorch.repo import layout
from drorch.repo.repository import Repository
from drorch.storage.base import AlreadyExists
from drorch.timefmt import iso, utcnow

log = logging.getLogger(__name__)


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process (to tell a reused pid apart)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return None


def holder_alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another host's process: we cannot tell, so it counts as alive
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    started = holder.get("pid_start")
    return started is None or process_start(pid) == started


class SourceLock:
    def __init__(self, repo: Repository, source: str, purpose: str):
        self.repo = repo
        self.source = source
        self.purpose = purpose
        self.key = layout.lock_key(source)
        self.token = uuid.uuid4().hex
        self.held = False

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
                return self
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"source {self.source} is locked by {holder.get('host')} pid {holder.get('pid')} "
                    f"since {holder.get('since')} ({holder.get('purpose')})",
                    "wait for that run to finish; if that process is gone from another host, "
                    f"remove {self.repo.location}/{self.key} after checking")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _try(self) -> dict | None:
        """Take the lock; return the live holder's record when we cannot."""
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": process_start(os.getpid()),
                "user": getpass.getuser(), "since": iso(utcnow()), "purpose": self.purpose,
                "token": self.token}
        for _ in range(3):
            try:
                self.repo.put_plain_json(self.key, mine, if_absent=True)
                return None
            except AlreadyExists:
                pass
            holder = self.read()
            if holder is None:
                continue  # released meanwhile: try again
            if holder_alive(holder):
                return holder
            # Dead holder on this host: take over, unless someone else just did.
            if (self.read() or {}).get("token") == holder.get("token"):
                log.warning("taking over the lock of %s left by dead pid %s (since %s)",
                            self.source, holder.get("pid"), holder.get("since"))
                self.repo.storage.delete(self.key)
        return self.read() or {"host": "?", "pid": "?", "since": "?", "purpose": "?"}

    def release(self) -> None:
        if not self.held:
            return
        holder = self.read()
        if holder and holder.get("token") == self.token:
            self.repo.storage.delete(self.key)
        self.held = False

    def __enter__(self) -> "SourceLock":
        return self.acquire() if not self.held else self

    def __exit__(self, *exc: object) -> None:
        self.release()
