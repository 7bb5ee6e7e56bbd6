"""The lease on a topology: one runner acts on it at a time.

A record `runbooks/leases/<topology>` (plain JSON: run, host, pid, times;
nothing of the data) is created if absent and renewed by a thread while the
run acts.  Another runner takes it over only when it expired (its holder
stopped renewing) or when its holder was a process of this host that no
longer exists (a runner killed mid-run, then resumed).
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from drorch.errors import DrorchError, LockedError, NotFoundError
from drorch.runbook.journal import lease_key
from drorch.storage.base import AlreadyExists
from drorch.timefmt import iso, parse_iso, utcnow

log = logging.getLogger(__name__)


def _process_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _dead_here(holder: dict) -> bool:
    """The holder was a process of this host that is gone (or whose pid was reused)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return holder.get("pid_start") not in (None, _process_start(holder["pid"]))


class TopologyLease:
    def __init__(self, repo, topology: str, run_id: str, ttl: timedelta):
        self.repo, self.topology, self.run_id, self.ttl = repo, topology, run_id, ttl
        self.key = lease_key(topology)
        self.token = uuid.uuid4().hex
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        now = utcnow()
        return {"topology": self.topology, "run": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                "pid_start": _process_start(os.getpid()), "user": getpass.getuser(), "token": self.token,
                "renewed": iso(now), "expires": iso(now + self.ttl)}

    def read(self) -> dict | None:
        try:
            return self.repo.get_plain_json(self.key)
        except NotFoundError:
            return None

    def acquire(self) -> "TopologyLease":
        for _ in range(3):
            try:
                self.repo.put_plain_json(self.key, self._record(), if_absent=True)
                self._start()
                return self
            except AlreadyExists:
                pass
            holder = self.read()
            if holder is None:
                continue
            expired = parse_iso(holder.get("expires", "1970-01-01T00:00:00Z")) < utcnow()
            if expired or _dead_here(holder):
                why = "expired" if expired else f"its process {holder.get('pid')} is gone"
                log.warning("taking over the lease on %s held by run %s (%s)", self.topology, holder.get("run"), why)
                if (self.read() or {}).get("token") == holder.get("token"):
                    self.repo.storage.delete(self.key)
                continue
            raise LockedError(
                f"topology {self.topology} is being acted on by run {holder.get('run')} on {holder.get('host')} "
                f"pid {holder.get('pid')} (lease renewed {holder.get('renewed')}, until {holder.get('expires')})",
                "wait for that run; if its runner died on another host, the lease expires by itself")
        raise LockedError(f"could not take the lease on topology {self.topology}", "try again")

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="drorch-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = max(0.5, self.ttl.total_seconds() / 3)
        while not self._stop.wait(interval):
            try:
                holder = self.read()
                if holder is None or holder.get("token") != self.token:
                    self.lost = f"the lease on {self.topology} was taken by run {(holder or {}).get('run')}"
                    return
                self.repo.put_plain_json(self.key, self._record())
            except DrorchError as exc:
                log.warning("cannot renew the lease on %s: %s", self.topology, exc)

    def check(self) -> None:
        """Before each step: stop if another runner took over."""
        if self.lost:
            raise LockedError(self.lost, "another runner acts on this topology now; this run stops here")

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        try:
            holder = self.read()
            if holder and holder.get("token") == self.token:
                self.repo.storage.delete(self.key)
        except DrorchError as exc:
            log.warning("cannot release the lease on %s: %s", self.topology, exc)
