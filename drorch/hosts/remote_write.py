"""Writing to a remote host (restores with --target-host, Host.put).

New files are written under a temporary name in their directory and renamed
into place only when their size is right, so a transfer cut part-way never
leaves a half-written file under its real name.  Data blocks are written at
their offsets (safe to repeat after a lost connection).  Owners, modes and
times are queued by set_meta() and applied by flush() in a few batched
commands (chown, chmod, then `touch -d @sec.nanosec` for exact mtimes).
"""

from __future__ import annotations

import copy
import logging
import os
import posixpath
import secrets
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Iterable

from drorch.errors import HostError
from drorch.fsmeta import BLOCKDEV, CHARDEV, FIFO, SYMLINK, Entry
from drorch.hosts.findstat import touch_time
from drorch.hosts.shell import command

if TYPE_CHECKING:
    from drorch.hosts.remote import SshHost

log = logging.getLogger(__name__)
META_QUEUE = 4000  # set_meta calls kept before they are applied
PIPELINE = 400  # requests sent at once
PUT_CHUNK = 4 << 20
_STAGED = b'dd if="$i" '  # the request's data, staged by the shell loop


def _write_at(path: str, offset: int) -> bytes:
    return _STAGED + command(f"of={path}", "bs=1M", f"seek={offset}", "oflag=seek_bytes", "conv=notrunc",
                             "status=none")


def temporary_name(path: str) -> str:
    return posixpath.join(posixpath.dirname(path), f".drorch-{secrets.token_hex(8)}.tmp")


class RemoteWriteHandle:
    """One file being restored: blocks go to a temporary file, renamed on close."""

    def __init__(self, writer: "RemoteWriter", path: str, size: int, truncate: bool):
        self.writer, self.final, self.size = writer, path, size
        self.path = temporary_name(path) if truncate else path  # delta restores rewrite in place

    def pwrite(self, data: bytes, offset: int) -> None:
        self.writer.run(_write_at(self.path, offset), f"writing {self.final}", self.final, bytes(data))

    def close(self) -> None:
        if self.path != self.final:
            self.writer.finish_temporary(self.path, self.final, self.size)

    def discard(self) -> None:
        if self.path != self.final:
            self.writer.discard(self.path)


class RemoteWriter:
    def __init__(self, host: "SshHost"):
        self.host = host
        self._meta: list[tuple[str, Entry]] = []
        self._lock = threading.Lock()
        self._ids: tuple[dict[str, int], dict[str, int]] | None = None

    def run(self, line: bytes, what: str, path: str | None = None, data: bytes | None = None):
        self.flush()  # changes happen in the order they were asked for
        return self.host.check(self.host.call(lambda shell: shell.call(line, data)), what, path)

    # -- tree shape ----------------------------------------------------------------

    def listdir(self, path: str) -> list[str] | None:
        line = (b"if [ -d " + command(path) + b" ]; then printf D; "
                + command("find", "-H", path, "-mindepth", "1", "-maxdepth", "1", "-printf", r"%f\0")
                + b"; fi")
        out = self.run(line, f"listing {path}", path).stdout
        if not out.startswith(b"D"):
            return None
        return [os.fsdecode(name) for name in out[1:].split(b"\0")[:-1]]

    def makedirs(self, path: str) -> None:
        self.run(b"umask 022; " + command("mkdir", "-p", "--", path) + b"; s=$?; umask 077; [ $s = 0 ]",
                 f"creating {path}", path)

    def symlink(self, target: str, path: str) -> None:
        self.run(command("ln", "-sfn", "--", target, path), f"creating the symlink {path}", path)

    def hardlink(self, existing: str, path: str) -> None:
        self.run(command("ln", "-f", "--", existing, path), f"creating the hard link {path}", path)

    def mknod(self, path: str, entry: Entry) -> None:
        if entry.type == FIFO:
            line = command("rm", "-f", "--", path) + b"; " + command("mkfifo", "-m", "600", "--", path)
        elif entry.type in (CHARDEV, BLOCKDEV):
            kind = "c" if entry.type == CHARDEV else "b"
            line = command("rm", "-f", "--", path) + b"; " + command(
                "mknod", "-m", "600", "--", path, kind, os.major(entry.rdev or 0), os.minor(entry.rdev or 0))
        else:
            return
        self.run(line, f"creating {path}", path)

    def remove(self, path: str) -> None:
        self.run(command("rm", "-rf", "--", path), f"removing {path}", path)

    # -- files -----------------------------------------------------------------------

    def open_write(self, path: str, size: int, truncate: bool = True) -> RemoteWriteHandle:
        return RemoteWriteHandle(self, path, size, truncate)

    def finish_temporary(self, temporary: str, final: str, size: int, mode: int | None = None) -> None:
        """Rename temporary over final if it holds `size` bytes; else fail and remove it."""
        tmp, dest = command(temporary), command(final)
        chmod = command("chmod", f"0{mode:04o}", "--", temporary) + b" && " if mode is not None else b""
        check = (b'[ -e ' + tmp + b' ] || : >' + tmp + b'; s=$(wc -c <' + tmp + b') && if [ "$s" = '
                 + str(size).encode() + b' ]; then ' + chmod + b'mv -f -- ' + tmp + b' ' + dest
                 + b'; else echo "incomplete: $s bytes written of ' + str(size).encode()
                 + b'" >&2; rm -f -- ' + tmp + b'; false; fi')
        again = b'if [ -e ' + tmp + b' ]; then ' + check + b'; else [ -e ' + dest + b' ]; fi'
        attempts = []

        def operation(shell):
            attempts.append(1)  # a repeat may find the rename already done
            return shell.call(check if len(attempts) == 1 else again)
        self.flush()
        self.host.check(self.host.call(operation), f"finishing {final}", final)

    def discard(self, temporary: str) -> None:
        try:
            self.run(command("rm", "-f", "--", temporary), f"removing {temporary}")
        except HostError as exc:  # the restore reports the file as failed anyway
            log.warning("could not remove %s on %s: %s", temporary, self.host.name, exc)

    def put(self, path: str, chunks: Iterable[bytes], mode: int = 0o600) -> int:
        temporary = temporary_name(path)
        offset = 0
        try:
            for chunk in chunks:
                for start in range(0, len(chunk), PUT_CHUNK):
                    piece = bytes(chunk[start:start + PUT_CHUNK])
                    self.run(_write_at(temporary, offset), f"writing {path}", path, piece)
                    offset += len(piece)
            self.finish_temporary(temporary, path, offset, mode)
        except BaseException:
            self.discard(temporary)
            raise
        return offset

    # -- metadata ----------------------------------------------------------------------

    def set_meta(self, path: str, entry: Entry) -> None:
        with self._lock:
            self._meta.append((path, copy.copy(entry)))  # as it is now: callers may reuse the Entry
            full = len(self._meta) >= META_QUEUE
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            items, self._meta = self._meta, []
        if not items:
            return
        requests = self._meta_requests(items)
        for start in range(0, len(requests), PIPELINE):
            batch = requests[start:start + PIPELINE]
            for reply in self.host.call(lambda shell: shell.pipeline(batch)):
                self.host.check(reply, "setting owners, modes and times")

    def _meta_requests(self, items: list[tuple[str, Entry]]) -> list[tuple[bytes, bytes]]:
        """chown (as root), then chmod (not symlinks), then touch -h: one command per
        distinct owner, mode and mtime, each given its paths NUL-separated."""
        owners: dict[tuple[int, int], list[bytes]] = defaultdict(list)
        modes: dict[int, list[bytes]] = defaultdict(list)
        times: dict[int, list[bytes]] = defaultdict(list)
        root = self.host.is_root
        for path, entry in items:
            raw = os.fsencode(path)
            if root:
                owners[self._ids_of(entry)].append(raw)
            if entry.type != SYMLINK:
                modes[entry.mode].append(raw)
            times[entry.mtime_ns].append(raw)
        xargs = b'xargs -0 -r '
        requests = [(xargs + b"chown -h %d:%d -- <\"$i\"" % ids, _nul(paths)) for ids, paths in owners.items()]
        requests += [(xargs + b"chmod 0%04o -- <\"$i\"" % mode, _nul(paths)) for mode, paths in modes.items()]
        requests += [(xargs + b"touch -h -d " + touch_time(ns).encode() + b" -- <\"$i\"", _nul(paths))
                     for ns, paths in times.items()]
        return requests

    def _ids_of(self, entry: Entry) -> tuple[int, int]:
        """Owner by name on the target host when it has that name (as LocalHost does)."""
        if self._ids is None:
            self._ids = self._load_ids()
        users, groups = self._ids
        return users.get(entry.user or "", entry.uid), groups.get(entry.group or "", entry.gid)

    def _load_ids(self) -> tuple[dict[str, int], dict[str, int]]:
        line = b"(getent passwd || cat /etc/passwd) 2>/dev/null; printf '\\0'; (getent group || cat /etc/group) 2>/dev/null"
        out = self.run(line, "reading users and groups").stdout
        passwd, _, group = out.partition(b"\0")
        return _id_map(passwd), _id_map(group)


def _nul(paths: list[bytes]) -> bytes:
    return b"".join(p + b"\0" for p in paths)


def _id_map(text: bytes) -> dict[str, int]:
    ids = {}
    for line in text.splitlines():
        fields = line.split(b":")
        if len(fields) >= 3 and fields[2].isdigit():
            ids.setdefault(os.fsdecode(fields[0]), int(fields[2]))
    return ids
