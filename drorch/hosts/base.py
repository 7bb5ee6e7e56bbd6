"""The host interface: what drorch needs of a machine it backs up or restores to.

`local` is this machine; `ssh` (a later issue) is another one.  Paths are
`str` (os.fsdecode form, so non-UTF-8 names survive).
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Protocol

from drorch.fsmeta import Entry


class WriteHandle(Protocol):
    def pwrite(self, data: bytes, offset: int) -> None: ...
    def close(self) -> None: ...


class Host(Protocol):
    name: str
    is_root: bool  # may set owners on files it writes

    # -- reading ------------------------------------------------------------
    def walk(self, root: str, prune: Callable[[str, bool], bool],
             one_file_system: bool = False) -> Iterator[tuple[str, os.stat_result, str | None]]:
        """(path, lstat, symlink target) for root and everything below it, a
        directory before its contents, names in byte order.  prune(path, is_dir)
        True skips the path (and, for a directory, what is inside)."""

    def lstat(self, path: str) -> os.stat_result | None: ...
    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes: ...
    def user_name(self, uid: int) -> str | None: ...
    def group_name(self, gid: int) -> str | None: ...

    # -- writing ------------------------------------------------------------
    def listdir(self, path: str) -> list[str] | None:
        """Names in a directory; None when it does not exist."""

    def makedirs(self, path: str) -> None: ...
    def open_write(self, path: str, size: int, truncate: bool = True) -> WriteHandle: ...
    def symlink(self, target: str, path: str) -> None: ...
    def hardlink(self, existing: str, path: str) -> None: ...
    def mknod(self, path: str, entry: Entry) -> None: ...
    def set_meta(self, path: str, entry: Entry) -> None: ...
    def remove(self, path: str) -> None:
        """Remove a file, link or directory tree; missing is fine."""
