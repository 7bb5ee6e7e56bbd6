"""This machine, through the os module."""

from __future__ import annotations

import errno
import getpass
import grp
import os
import pwd
import secrets
import shutil
import stat as statmod
import subprocess
import tempfile
from functools import lru_cache
from typing import BinaryIO, Callable, Iterable, Iterator

from drorch.errors import HostError, SourceError
from drorch.fsmeta import BLOCKDEV, CHARDEV, FIFO, SYMLINK, Entry
from drorch.hosts.base import RunResult, StdinData
from drorch.hosts.commands import as_argv, describe, drive, with_user

_NOATIME = getattr(os, "O_NOATIME", 0)
READ_CHUNK = 8 << 20


class LocalWriteHandle:
    def __init__(self, path: str, size: int, truncate: bool = True, owners: bool = False):
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if truncate else 0)
        self.fd = os.open(path, flags, 0o600)
        self.owners = owners
        if not truncate:  # a new (or emptied) file gets its size from the writes
            os.ftruncate(self.fd, size)

    def pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def finish(self, entry: Entry) -> None:
        """Set the entry's owner, mode and mtime through the open file, then close it:
        no path lookups, and in the worker that wrote it, not in a pass at the end."""
        try:
            _apply_meta(self.fd, entry, self.owners)
        finally:
            os.close(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    discard = close  # the restore removes the file by name


class LocalProcess:
    """A command on this machine (stderr goes to a temporary file, so a chatty
    command never blocks on a full pipe)."""

    def __init__(self, argv: list[str], switch: dict | None = None):
        self.argv = argv
        self._stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, **(switch or {}))
        except OSError as exc:
            self._stderr.close()
            raise HostError(f"cannot run {describe(argv)} on this machine: {exc.strerror}",
                            "check that the program is installed and on PATH") from None

    def read(self, n: int = -1) -> bytes:
        return self.proc.stdout.read(n) if n != -1 else self.proc.stdout.read()

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)

    def close_stdin(self) -> None:
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait(self, timeout: float | None = None) -> RunResult:
        try:
            self.close_stdin()
        except BrokenPipeError:
            pass
        rest = self.proc.stdout.read()
        status = self.proc.wait(timeout)
        self._stderr.seek(0)
        err = self._stderr.read()
        self._stderr.close()
        return RunResult(status, rest, err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


def _switch_to(user: str) -> dict:
    """Popen arguments that run a command as user (this process is root)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise HostError(f"there is no OS user {user} on this machine",
                        "check the user names in the policy (os_user)") from None
    env = {**os.environ, "HOME": entry.pw_dir, "USER": user, "LOGNAME": user}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}


class LocalHost:
    name = "local"

    def __init__(self) -> None:
        self.is_root = os.geteuid() == 0
        self.login = getpass.getuser()

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def flush(self) -> None:
        pass

    # -- commands -------------------------------------------------------------

    def start(self, argv: list[str] | str, *, shell: bool = False, user: str | None = None) -> LocalProcess:
        if user is not None and user != self.login and self.is_root:
            return LocalProcess(as_argv(argv, shell), _switch_to(user))  # root needs no sudo here
        return LocalProcess(with_user(as_argv(argv, shell), user, self.login))

    def run(self, argv: list[str] | str, *, stdin: StdinData = None, timeout: float | None = None,
            shell: bool = False, user: str | None = None) -> RunResult:
        process = self.start(argv, shell=shell, user=user)
        return drive(process, stdin, timeout, f"{describe(process.argv)} (on this machine)")

    # -- reading ------------------------------------------------------------

    def walk(self, root: str, prune: Callable[[str, bool], bool],
             one_file_system: bool = False) -> Iterator[tuple[str, os.stat_result, str | None]]:
        st = self.lstat(root)
        if st is None:
            return
        yield root, st, os.readlink(root) if statmod.S_ISLNK(st.st_mode) else None
        if statmod.S_ISDIR(st.st_mode):
            yield from self._walk_dir(root, st.st_dev, prune, one_file_system)

    def _walk_dir(self, path: str, dev: int, prune, one_file_system: bool):
        try:
            with os.scandir(path) as it:
                children = sorted(it, key=lambda e: os.fsencode(e.name))
        except FileNotFoundError:
            return  # removed while we walked
        except PermissionError as exc:
            raise SourceError(f"cannot list {path}: {exc.strerror}",
                              "run the backup as a user that may read it, or exclude it") from None
        for child in children:
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            is_dir = statmod.S_ISDIR(st.st_mode)
            if prune(child.path, is_dir):
                continue
            target = os.readlink(child.path) if statmod.S_ISLNK(st.st_mode) else None
            yield child.path, st, target
            if is_dir and not (one_file_system and st.st_dev != dev):
                yield from self._walk_dir(child.path, dev, prune, one_file_system)

    def lstat(self, path: str) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        fd = _open_read(path)
        try:
            return read_at(fd, offset, length)
        finally:
            os.close(fd)

    def read_small(self, path: str, size: int, limit: int) -> tuple[bytes, os.stat_result | None]:
        """A whole file of about `size` bytes (at most `limit`) and its fstat after
        the read, in four system calls: (b"", None) when it is gone (or is no
        longer a regular file but a symlink).  Each call releases the GIL, and
        getting it back is what small files cost in a threaded pipeline."""
        try:  # O_NONBLOCK: a FIFO put in the file's place must not hang the backup
            fd = _open_read(path, os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return b"", None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return b"", None
            raise
        try:
            try:
                data = os.pread(fd, min(size + 1, limit), 0)
            except OSError as exc:
                if exc.errno != errno.ESPIPE:
                    raise
                return b"", None  # not a regular file any more
            if size < len(data) < limit:  # it grew: the rest, up to limit
                data += read_at(fd, len(data), limit - len(data))
            return data, os.fstat(fd)
        finally:
            os.close(fd)

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        handle = os.fdopen(_open_read(path), "rb")
        if offset:
            handle.seek(offset)
        return handle

    @staticmethod
    @lru_cache(maxsize=4096)
    def user_name(uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return None

    @staticmethod
    @lru_cache(maxsize=4096)
    def group_name(gid: int) -> str | None:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return None

    # -- writing ------------------------------------------------------------

    def listdir(self, path: str) -> list[str] | None:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None

    def makedirs(self, path: str) -> None:
        os.makedirs(path, mode=0o755, exist_ok=True)

    def put(self, path: str, chunks: Iterable[bytes], mode: int = 0o600) -> int:
        temporary = os.path.join(os.path.dirname(path) or ".", f".drorch-{secrets.token_hex(8)}.tmp")
        written = 0
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    written += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise
        return written

    def open_write(self, path: str, size: int, truncate: bool = True) -> LocalWriteHandle:
        """Open a file for writing at offsets; truncate=False keeps its bytes
        (delta restores rewrite only the blocks that differ)."""
        return LocalWriteHandle(path, size, truncate, owners=self.is_root)

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def hardlink(self, existing: str, path: str) -> None:
        os.link(existing, path, follow_symlinks=False)

    def mknod(self, path: str, entry: Entry) -> None:
        if entry.type == FIFO:
            os.mkfifo(path, 0o600)
        elif entry.type in (CHARDEV, BLOCKDEV):
            kind = statmod.S_IFCHR if entry.type == CHARDEV else statmod.S_IFBLK
            os.mknod(path, 0o600 | kind, entry.rdev or 0)

    def set_meta(self, path: str, entry: Entry) -> None:
        _apply_meta(path, entry, self.is_root)

    def remove(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if statmod.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _apply_meta(target: str | int, entry: Entry, owners: bool) -> None:
    """Owner (when allowed), mode and mtime of a path (a symlink itself) or an open file."""
    by_path = isinstance(target, str)
    nofollow = {"follow_symlinks": False} if by_path else {}
    if owners:
        os.chown(target, _uid(entry.user, entry.uid), _gid(entry.group, entry.gid), **nofollow)
    if entry.type != SYMLINK:  # chmod after chown: chown clears setuid bits
        os.chmod(target, entry.mode)
    os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns), **nofollow)


def read_at(fd: int, offset: int, length: int | None) -> bytes:
    """Up to length bytes from offset (None: to the end).  Reads are sized by
    the file's size, not by length: callers ask for "a block and a byte" of
    files that are mostly far smaller, and a buffer of a block per file costs
    an mmap, a munmap and a TLB shootdown in every thread, each time."""
    expect = max(os.fstat(fd).st_size - offset, 0)
    goal = length if length is not None else float("inf")
    chunks, done = [], 0
    while done < goal:
        # one byte more than the size, so a file that grew meanwhile is seen longer
        ask = int(min(goal - done, READ_CHUNK, expect - done + 1 if done <= expect else READ_CHUNK))
        chunk = os.pread(fd, ask, offset + done)
        if not chunk:
            break
        chunks.append(chunk)
        done += len(chunk)
        if len(chunk) < ask and done >= expect:
            break  # a short read at (or past) the size: the end (short reads before it: read on)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _open_read(path: str, flags: int = 0) -> int:
    if _NOATIME:
        try:
            return os.open(path, os.O_RDONLY | _NOATIME | flags)
        except PermissionError:
            pass  # O_NOATIME needs ownership (or root); read without it
    return os.open(path, os.O_RDONLY | flags)


@lru_cache(maxsize=4096)
def _uid(name: str | None, uid: int) -> int:
    if name:
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            pass
    return uid


@lru_cache(maxsize=4096)
def _gid(name: str | None, gid: int) -> int:
    if name:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            pass
    return gid
