"""The storage interface: bytes by key, nothing about backups.

Keys are '/'-separated relative paths of safe characters.  Every driver
(posix now, s3 later) implements these few operations; everything else is
built on them.  A put is atomic: a reader sees the whole object or nothing.

Optional, for drivers that have them (callers look with getattr):
- `locked_until(key) -> datetime | None`: when Object Lock lets the object go;
- `cleanup_interrupted(older_than) -> int`: remove what interrupted writes
  left behind (e.g. multipart uploads), returning how many.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterator, Protocol

from drorch.errors import NotFoundError, StorageError  # noqa: F401  (re-exported for drivers)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch


class AlreadyExists(StorageError):
    """put(..., if_absent=True) found the key already there."""


class TransientError(StorageError):
    """A failure that may pass if the same request is sent again (throttling,
    a 5xx, a reset connection, a timeout).  Drivers raise it; retrying.py
    retries it and turns it into a StorageError when it keeps happening."""


class ObjectLocked(StorageError):
    """delete() refused: the object is under Object Lock retention (or a legal
    hold) and cannot be removed before `until` (None: until the hold is lifted)."""

    def __init__(self, key: str, until: datetime | None, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.key = key
        self.until = until


class Storage(Protocol):
    #: where this storage lives, for messages (a path or s3://bucket/prefix)
    location: str

    def put(self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True) -> None:
        """Store data under key atomically.  With if_absent, fail with
        AlreadyExists instead of replacing an existing object.  sync=False
        may defer durability until the next sync() (bulk data before a commit)."""

    def sync(self) -> None:
        """Make every earlier put durable (a barrier before a commit point)."""

    def get(self, key: str) -> bytes:
        """The whole object; NotFoundError if missing."""

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """length bytes from offset; NotFoundError if missing."""

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and time of an object, or None if it does not exist."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order."""

    def delete(self, key: str) -> None:
        """Remove an object; a missing key is not an error."""

    def is_empty(self) -> bool:
        """True when the location holds nothing at all (not even foreign files)."""


def check_key(key: str) -> str:
    if not key or key.startswith("/") or key.endswith("/") or "\\" in key or "\0" in key:
        raise ValueError(f"invalid storage key {key!r}")
    if any(part in ("", ".", "..") or part.startswith(".") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")  # '.'-names are the drivers' own
    return key


def check_prefix(prefix: str) -> str:
    """A list() prefix: a key, a key's start, or empty."""
    if prefix and (prefix.startswith("/") or "\\" in prefix or "\0" in prefix or
                   any(part in (".", "..") for part in prefix.split("/")[:-1]) or
                   prefix.split("/")[-1] in ("..",)):
        raise ValueError(f"invalid storage prefix {prefix!r}")
    return prefix
