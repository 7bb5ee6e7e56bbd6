"""A repository in a directory (local disk or a mounted file system).

Writes go to a temporary file in the same directory, are fsynced and then
renamed into place, and the directory is fsynced: after a crash an object is
either complete or absent.  Create-if-absent uses link(2), which fails when
the name exists, so two racing writers cannot both win.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import uuid
from pathlib import Path
from typing import Iterator

from drorch.errors import NotFoundError, StorageError
from drorch.storage.base import AlreadyExists, ObjectInfo, check_key, check_prefix
from drorch.storage.posix_access import gid_of, owner_of, whoami
from drorch.storage.posix_files import Appender, Flusher, fsync_dir

TMP_MARK = ".tmp-"


class PosixStorage:
    """Objects are private to the writing user (0600, directories 0700), or,
    with `group`, shared with that group (0660, directories 2770 so new
    entries inherit the group): how a backup user and the postgres user that
    runs archive_command share one repository."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True, group: str | None = None):
        self.root = Path(path)
        self.location = str(self.root)
        self.fsync = fsync
        self.gid = gid_of(group) if group else None
        self.file_mode, self.dir_mode = (0o660, 0o2770) if group else (0o600, 0o700)
        self._unsynced: set[Path] = set()  # directories of put(sync=False) objects
        self._unsynced_lock = threading.Lock()
        self._flusher = Flusher()

    # -- helpers -------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _error(self, action: str, key: str, exc: OSError) -> StorageError:
        hint = None
        message = f"cannot {action} {self._path(key)}: {exc.strerror}"
        if exc.errno in (errno.EACCES, errno.EPERM):
            message = f"user {whoami()} cannot {action} {self._path(key)}: {exc.strerror}{owner_of(self._path(key))}"
            hint = (f"let user {whoami()} read and write {self.root}: run drorch and archive_command as one "
                    "user, or give the repository a shared `group:` (both users in that group)")
        elif exc.errno == errno.ENOSPC:
            hint = f"free space on the file system of {self.root}"
        return StorageError(message, hint)

    def _makedirs(self, directory: Path) -> None:
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                continue
            self._share(path, self.dir_mode)
            if self.fsync:
                fsync_dir(path.parent)

    def _share(self, target, mode: int) -> None:
        """Set the group (if any) and the mode explicitly: the umask must not decide."""
        if self.gid is not None:
            os.chown(target, -1, self.gid)
        os.chmod(target, mode)

    def _create(self, tmp: Path) -> int:
        # A concurrent delete() removes directories that just became empty
        # (ours included, at any moment): make them again and retry.
        for attempt in range(20):
            try:
                self._makedirs(tmp.parent)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                self._share(fd, self.file_mode)
                return fd
            except FileNotFoundError:
                if attempt == 19:
                    raise
        raise AssertionError("unreachable")

    # -- the interface --------------------------------------------------------

    def put(self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
        try:
            fd = self._create(tmp)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync and sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise AlreadyExists(f"{path} already exists") from None
                finally:
                    os.unlink(tmp)
            else:
                os.replace(tmp, path)
            self._placed(path, sync)
        except AlreadyExists:
            raise
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise self._error("write", key, exc) from None

    def _placed(self, path: Path, sync: bool) -> None:
        """An object was renamed into place: durable now, or by the next sync()."""
        if not self.fsync:
            return
        if sync:
            try:
                fsync_dir(path.parent)
            except FileNotFoundError:
                pass  # a concurrent delete removed the object and its directory
        else:
            self._flusher.add(path)
            with self._unsynced_lock:
                self._unsynced.add(path.parent)

    def open_append(self, key: str) -> "Appender":
        """An object written piece by piece (a pack as it fills, with no buffer of its
        size in memory); invisible under its key until commit(), durable by sync()."""
        path = self._path(key)
        tmp = path.with_name(f".{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
        try:
            return Appender(self, key, path, tmp, self._create(tmp))
        except OSError as exc:
            raise self._error("write", key, exc) from None

    def sync(self) -> None:
        """Make every put(sync=False) so far durable (files, then their directories).
        The files have been fsynced in the background meanwhile, so this is mostly waiting."""
        failed = self._flusher.wait()
        with self._unsynced_lock:
            directories, self._unsynced = self._unsynced, set()
        if failed is not None:
            path, exc = failed
            raise self._error("sync", os.path.relpath(path, self.root), exc) from None
        for directory in sorted(directories):
            if directory.is_dir():
                fsync_dir(directory)

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"{self._path(key)} does not exist") from None
        except OSError as exc:
            raise self._error("read", key, exc) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self._path(key)} does not exist") from None
        except OSError as exc:
            raise self._error("read", key, exc) from None
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise NotFoundError(f"{self._path(key)} does not exist")
            chunks, done = [], 0
            while done < length:
                chunk = os.pread(fd, length - done, offset + done)
                if not chunk:
                    break
                chunks.append(chunk)
                done += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error("stat", key, exc) from None
        if not stat.S_ISREG(st.st_mode):
            return None  # a directory: a prefix of other keys, not an object
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix names (keys are paths).
        head, _, _ = check_prefix(prefix).rpartition("/")
        start = self.root / head if head else self.root
        if not start.is_dir():
            return iter(())
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel + "/"
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                key = rel + name
                if name.startswith(".") or not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                found.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return iter(sorted(found, key=lambda info: info.key))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise self._error("delete", key, exc) from None
        self._remove_empty(path.parent)

    def _remove_empty(self, directory: Path) -> None:
        """Drop directories left empty, up to the root."""
        while directory != self.root:
            try:
                directory.rmdir()
            except OSError:
                break
            directory = directory.parent

    def discard_partial(self, prefix: str) -> int:
        """Remove the half-written objects (temporary files) a dead writer left in the
        directory `prefix` names — the caller knows that writer is gone (expire of a
        run that never committed).  Returns how many."""
        directory = self.root / check_prefix(prefix).rstrip("/")
        removed = 0
        try:
            names = [p for p in directory.iterdir() if p.name.startswith(".") and TMP_MARK in p.name]
        except (FileNotFoundError, NotADirectoryError):
            return 0
        for path in names:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
        self._remove_empty(directory)
        return removed

    def is_empty(self) -> bool:
        """Nothing there but, at most, our own temporary files (a writer racing us)."""
        try:
            return not any(not (p.name.startswith(".") and TMP_MARK in p.name) for p in self.root.iterdir())
        except FileNotFoundError:
            return True
        except NotADirectoryError:
            return False
