"""The host interface: what drorch needs of a machine it backs up or restores to.

`local` (hosts/local.py) is this machine; `ssh` (hosts/remote.py over
hosts/ssh.py) is another one.  Paths are `str` (os.fsdecode form, so
non-UTF-8 names survive).  Commands are argv lists, never shell strings
unless shell=True is asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol, Union

from drorch.fsmeta import Entry

#: what a command reads on its stdin: bytes, chunks, or a binary file object
StdinData = Union[bytes, Iterable[bytes], BinaryIO, None]


@dataclass
class RunResult:
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def text(self) -> str:
        return self.stdout.decode(errors="replace")


class Process(Protocol):
    """A command started with Host.start(): stream its stdout, feed its stdin."""

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes of stdout (b"" at the end)."""

    def write(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def wait(self, timeout: float | None = None) -> RunResult:
        """Exit status and stderr (stdout holds what was not read)."""

    def kill(self) -> None: ...


class ReadStream(Protocol):
    def read(self, n: int = -1) -> bytes: ...
    def close(self) -> None: ...


class WriteHandle(Protocol):
    def pwrite(self, data: bytes, offset: int) -> None: ...
    def close(self) -> None:
        """Finish the file; raises if it is not complete (nothing half-written is kept)."""

    def discard(self) -> None:
        """Give up on the file (a failed restore); must not raise."""


class Host(Protocol):
    name: str
    is_root: bool  # may set owners on files it writes

    def connect(self) -> None:
        """Reach the host now (host key and login checked); a no-op when local."""

    def close(self) -> None: ...

    # -- commands -------------------------------------------------------------
    def run(self, argv: list[str] | str, *, stdin: StdinData = None, timeout: float | None = None,
            shell: bool = False, user: str | None = None) -> RunResult:
        """Run a command to its end.  A timeout kills it and raises HostError.  user:
        run it as that OS user (sudo -n -u); default: the host's `become`, else the login."""

    def start(self, argv: list[str] | str, *, shell: bool = False, user: str | None = None) -> Process:
        """Start a command whose output is streamed (e.g. a database's backup tool)."""

    # -- reading ------------------------------------------------------------
    def walk(self, root: str, prune: Callable[[str, bool], bool],
             one_file_system: bool = False) -> Iterator[tuple[str, os.stat_result, str | None]]:
        """(path, lstat, symlink target) for root and everything below it, a
        directory before its contents, names in byte order.  prune(path, is_dir)
        True skips the path (and, for a directory, what is inside)."""

    def lstat(self, path: str) -> os.stat_result | None: ...
    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes: ...
    def open_read(self, path: str, offset: int = 0) -> ReadStream:
        """A file's bytes as a stream (bounded memory, any size)."""
    def user_name(self, uid: int) -> str | None: ...
    def group_name(self, gid: int) -> str | None: ...

    # Optional (remote hosts): read_many(paths, limit) -> {path: (first `limit` bytes,
    # lstat after the read or None)} reads many small files in one round trip;
    # paths it could not read are left out (read() them to learn why).

    # -- writing ------------------------------------------------------------
    def listdir(self, path: str) -> list[str] | None:
        """Names in a directory; None when it does not exist."""

    def makedirs(self, path: str) -> None: ...
    def put(self, path: str, chunks: Iterable[bytes], mode: int = 0o600) -> int:
        """Write a whole file from a stream: to a temporary name, renamed when
        complete (a reader never sees half a file); returns the bytes written."""

    def open_write(self, path: str, size: int, truncate: bool = True) -> WriteHandle: ...
    def symlink(self, target: str, path: str) -> None: ...
    def hardlink(self, existing: str, path: str) -> None: ...
    def mknod(self, path: str, entry: Entry) -> None: ...
    def set_meta(self, path: str, entry: Entry) -> None: ...
    def remove(self, path: str) -> None:
        """Remove a file, link or directory tree; missing is fine."""

    def flush(self) -> None:
        """Apply changes a host may batch (remote set_meta); call before relying on them."""
