"""Leases: how long a lock record stays valid, and the safe take-over of an expired one.

A lock record (FORMAT.md, "Locks") says until when it holds (`expires`); its
holder renews it while it works.  Another process may take it over only once
it has expired by more than the allowed clock skew, or when its holder is a
process of this host that no longer exists.

Only two storage operations are needed: create-if-absent and delete.  Taking
over token T goes through a marker, `locks/_takeover.T.N`, created if absent:
of all processes that saw T expired, exactly one creates the marker and may
delete the old record; everybody then races for the lock with create-if-absent
again, so at most one process holds it.  A marker whose creator died is stale
after one lease period; the next taker uses N+1.

What this relies on (as every lease does): clocks within `skew()` of each
other (NTP), and no process stalling longer than that between checking a
record and acting on it.  A holder that could not renew in time knows it has
lost the lease and stops before its commit point.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import datetime, timedelta

from drorch.errors import NotFoundError
from drorch.repo.repository import Repository
from drorch.storage.base import AlreadyExists
from drorch.timefmt import iso, parse_iso, utcnow

DEFAULT_TTL = timedelta(seconds=60)
MARKER_PREFIX = "locks/_takeover."  # '_' never starts a source name: no clash with locks/<source>
STALE_MARKER = timedelta(days=1)  # markers this old are garbage whoever made them


def skew(ttl: timedelta) -> timedelta:
    """The clock difference between hosts a lease tolerates."""
    return min(timedelta(seconds=10), ttl / 4)


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process (to tell a reused pid apart)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return None


def new_record(purpose: str, token: str, ttl: timedelta, now: datetime, since: str | None = None) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": process_start(os.getpid()),
            "user": getpass.getuser(), "since": since or iso(now), "purpose": purpose, "token": token,
            "ttl": ttl.total_seconds(), "renewed": iso(now), "expires": iso(now + ttl)}


def record_ttl(record: dict) -> timedelta:
    try:
        return timedelta(seconds=float(record.get("ttl", DEFAULT_TTL.total_seconds())))
    except (TypeError, ValueError):
        return DEFAULT_TTL


def expires(record: dict) -> datetime | None:
    """When the record stops holding; None for records without a lease (held until released)."""
    try:
        return parse_iso(record["expires"]) if record.get("expires") else None
    except Exception:  # noqa: BLE001 - a garbled time counts as no lease
        return None


def lapsed(record: dict, now: datetime | None = None) -> bool:
    """Expired by more than the clock skew: any host may now take it over."""
    until = expires(record)
    return until is not None and (now or utcnow()) > until + skew(record_ttl(record))


def local_holder_gone(record: dict) -> bool:
    """The holder is a process of this host that no longer exists (or a reused pid)."""
    if record.get("host") != socket.gethostname():
        return False
    pid = record.get("pid")
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by another user
    started = record.get("pid_start")
    return started is not None and process_start(pid) != started


def holder_alive(record: dict, now: datetime | None = None) -> bool:
    """The record still holds: its lease runs and, on this host, its process exists.
    A holder on another host without a lease time counts as alive (we cannot tell)."""
    return not (local_holder_gone(record) or lapsed(record, now))


def _marker_key(token: str, n: int) -> str:
    return f"{MARKER_PREFIX}{token}.{n}"


def take_over(repo: Repository, key: str, stale: dict, mine: dict, log) -> bool:
    """Remove the lock record `stale` (lapsed, or its local holder gone) at key,
    if we win the right to.  True: the record is gone (try to create ours);
    False: someone else is taking it over, or it came back to life."""
    token = str(stale.get("token"))
    markers = _markers(repo, token)
    now = utcnow()
    for record in markers.values():
        if not lapsed(record, now) and not local_holder_gone(record):
            return False  # another process is taking it over right now
    marker = _marker_key(token, max(markers, default=-1) + 1)
    try:
        repo.put_plain_json(marker, mine, if_absent=True)
    except AlreadyExists:
        return False
    try:
        current = _read(repo, key)
        if current is not None and current.get("token") == token:
            if holder_alive(current):  # renewed at the last moment, or a live process after all
                return False
            log.warning("taking over the lock %s of %s pid %s (since %s): %s", key, current.get("host"),
                        current.get("pid"), current.get("since"),
                        "its process is gone" if local_holder_gone(current) else
                        f"its lease expired at {current.get('expires')}")
            repo.storage.delete(key)
        return True
    finally:
        for n in list(markers) + [int(marker.rsplit(".", 1)[1])]:
            repo.storage.delete(_marker_key(token, n))
        _remove_stale_markers(repo, now)


def _markers(repo: Repository, token: str) -> dict[int, dict]:
    found = {}
    prefix = f"{MARKER_PREFIX}{token}."
    for info in repo.storage.list(prefix):
        number = info.key[len(prefix):]
        record = _read(repo, info.key)
        if number.isdigit() and record is not None:
            found[int(number)] = record
    return found


def _remove_stale_markers(repo: Repository, now: datetime) -> None:
    for info in list(repo.storage.list(MARKER_PREFIX)):
        if now.timestamp() - info.mtime > STALE_MARKER.total_seconds():
            repo.storage.delete(info.key)


def _read(repo: Repository, key: str) -> dict | None:
    try:
        return repo.get_plain_json(key)
    except NotFoundError:
        return None
