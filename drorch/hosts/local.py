"""This machine, through the os module."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat as statmod
from functools import lru_cache
from typing import Callable, Iterator

from drorch.errors import SourceError
from drorch.fsmeta import BLOCKDEV, CHARDEV, FIFO, SYMLINK, Entry

_NOATIME = getattr(os, "O_NOATIME", 0)


class LocalWriteHandle:
    def __init__(self, path: str, size: int, truncate: bool = True):
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if truncate else 0)
        self.fd = os.open(path, flags, 0o600)
        if size or not truncate:
            os.ftruncate(self.fd, size)

    def pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def close(self) -> None:
        os.close(self.fd)


class LocalHost:
    name = "local"

    def __init__(self) -> None:
        self.is_root = os.geteuid() == 0

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
            if length is None:
                chunks = []
                while True:
                    chunk = os.pread(fd, 1 << 20, offset)
                    if not chunk:
                        return b"".join(chunks)
                    chunks.append(chunk)
                    offset += len(chunk)
            data = os.pread(fd, length, offset)
            while len(data) < length:  # short reads happen on some file systems
                more = os.pread(fd, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
            return data
        finally:
            os.close(fd)

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

    def open_write(self, path: str, size: int, truncate: bool = True) -> LocalWriteHandle:
        """Open a file for writing at offsets; truncate=False keeps its bytes
        (delta restores rewrite only the blocks that differ)."""
        return LocalWriteHandle(path, size, truncate)

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
        link = entry.type == SYMLINK
        if self.is_root:
            uid = _uid(entry.user, entry.uid)
            gid = _gid(entry.group, entry.gid)
            os.chown(path, uid, gid, follow_symlinks=False)
        if not link:  # chmod after chown: chown clears setuid bits
            os.chmod(path, entry.mode)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)

    def remove(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if statmod.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _open_read(path: str) -> int:
    if _NOATIME:
        try:
            return os.open(path, os.O_RDONLY | _NOATIME)
        except PermissionError:
            pass  # O_NOATIME needs ownership (or root); read without it
    return os.open(path, os.O_RDONLY)


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
