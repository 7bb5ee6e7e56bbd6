"""A host reached over SSH, with the same interface as LocalHost.

File operations run as short commands in persistent shells (shell.py) on
the one shared connection (ssh.py): a walk is one `find`, small files are
read by the batch in one `tar` (its pax headers carry the stat before each
read, its warnings name the files that changed while read), large
files block by block with `dd`.  A connection lost in the middle of an
operation is made again and the operation repeated (every file operation is
written to be safe to repeat); commands given to run() are not repeated.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as statmod
import threading
from typing import Callable, Iterable, Iterator

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from drorch.errors import HostError, HostUnreachableError, SourceError
from drorch.fsmeta import Entry
from drorch.hosts.base import RunResult, StdinData
from drorch.hosts.commands import as_argv, describe, drive, with_user
from drorch.hosts.findstat import Found, id_names, make_stat, parse_stream, sort_key
from drorch.hosts.remote_exec import RemoteProcess, exec_text
from drorch.hosts.remote_write import RemoteWriter
from drorch.hosts.readahead import ReadAhead
from drorch.hosts.shell import RECV, Reply, ShellPool, ShellSession, command
from drorch.hosts.ssh import Dropped, SshConfig, SshConnection
from drorch.hosts.tarstream import TarReader, named_in_warnings

log = logging.getLogger(__name__)
ATTEMPTS = 5  # of one operation, across lost connections
STREAM_BLOCK = 4 << 20
READ_AHEAD_SHELLS = 2  # shells that run sent-ahead batches (readahead.py)
_FIND = b' -printf "$F"'
# pax headers carry the stat tar took before reading each file (mtime and ctime
# to the ns); C-quoted names (the shell loop runs with LC_ALL=C) make its
# warnings exact to parse; 32 KiB records (-b 64) let sshd send full 32 KiB packets
# (tar's default 10 KiB writes gave ≈ 20 KiB ones: more of paramiko's per-packet work)
_TAR = (b'tar -c -f - -b 64 -P --no-recursion --hard-dereference --format=posix '
        b'--pax-option=delete=atime --quoting-style=c --null -T "$i"')


def os_error(text: str, path: str) -> OSError | None:
    """The OSError a local call would have raised, from a command's stderr."""
    for needle, kind, code in (("No such file or directory", FileNotFoundError, errno.ENOENT),
                               ("Permission denied", PermissionError, errno.EACCES),
                               ("Not a directory", NotADirectoryError, errno.ENOTDIR)):
        if needle in text:
            return kind(code, os.strerror(code), path)
    return None


class SshHost:
    read_unit = 4 << 20  # large files are read in requests of this size (fewer round trips)
    read_batch = (1024, 8 << 20)  # small files per read_many (files, bytes): each request forks a few processes

    def __init__(self, config: SshConfig):
        self.config = config
        self.name = config.name
        self.connection = SshConnection(config)
        self.shells = ShellPool(self.connection, config.become)
        self.writer = RemoteWriter(self)
        self._users: dict[int, str | None] = {}
        self._groups: dict[int, str | None] = {}
        self._readaheads: list[ReadAhead] = []
        self._sent = 0
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------

    def connect(self) -> None:
        """Log in and start a shell now (checks host key, key, and become)."""
        self.call(lambda shell: None)

    @property
    def is_root(self) -> bool:
        if self.shells.uid is None:
            self.connect()
        return self.shells.uid == 0

    def close(self) -> None:
        with self._lock:
            readaheads, self._readaheads = self._readaheads, []
        for readahead in readaheads:
            readahead.close()
        self.shells.close()
        self.connection.close()

    def call(self, operation: Callable[[ShellSession], object]):
        """operation(shell) in a pooled shell, repeated on a new connection if
        this one is lost (so operation must be safe to repeat)."""
        retrying = Retrying(retry=retry_if_exception_type(Dropped), stop=stop_after_attempt(ATTEMPTS),
                            wait=wait_exponential(multiplier=0.2, max=5), reraise=True,
                            before_sleep=lambda state: log.warning(
                                "%s: %s; trying again", self.name, state.outcome.exception()))
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(operation)
        except Dropped as exc:
            raise HostUnreachableError(
                f"lost the connection to host {self.config.where} {ATTEMPTS} times: {exc}",
                "check the network and sshd on that host; nothing half-done was kept, run it again") from None

    def _once(self, operation):
        with self.shells.session() as shell:
            try:
                return operation(shell)
            except Dropped:
                self.connection.lost(shell.channel.transport)
                raise

    def check(self, reply, what: str, path: str | None = None):
        """Raise for a failed reply: the OSError a local call would raise, or HostError."""
        if reply.status == 0:
            return reply
        text = reply.error_text()
        if path is not None and (error := os_error(text, path)):
            raise error
        raise HostError(f"host {self.name}: {what} failed (exit {reply.status}): {text[:2000]}",
                        "see the message above; it came from the host")

    # -- commands --------------------------------------------------------------------

    def start(self, argv: list[str] | str, *, shell: bool = False, user: str | None = None,
              timeout: float | None = None) -> RemoteProcess:
        argv = as_argv(argv, shell)
        if timeout:
            argv = ["timeout", "-k", "10", f"{timeout:g}", *argv]
        argv = with_user(argv, user or self.config.become, self.config.user)
        what = f"{describe(argv)} on host {self.name}"
        retrying = Retrying(retry=retry_if_exception_type(Dropped), stop=stop_after_attempt(ATTEMPTS),
                            wait=wait_exponential(multiplier=0.2, max=5), reraise=True)
        try:
            channel = retrying(self.connection.open_exec, exec_text(argv))
        except Dropped as exc:
            raise HostUnreachableError(f"cannot start {what}: {exc}", "check the host and the network") from None
        return RemoteProcess(channel, what)

    def run(self, argv: list[str] | str, *, stdin: StdinData = None, timeout: float | None = None,
            shell: bool = False, user: str | None = None) -> RunResult:
        process = self.start(argv, shell=shell, user=user, timeout=timeout)
        return drive(process, stdin, timeout, process.what, grace=15)

    # -- reading ---------------------------------------------------------------------

    def walk(self, root: str, prune: Callable[[str, bool], bool],
             one_file_system: bool = False) -> Iterator[tuple[str, os.stat_result, str | None]]:
        if self.config.max_channels >= 2:  # the batched reads after a walk find their shells ready:
            with self._lock:  # the first lane takes the walk's, the others open theirs meanwhile
                for lane in self._read_ahead_lanes()[1:]:
                    lane.warm()
        found = self.call(lambda shell: self._find(shell, root, one_file_system))
        found.sort(key=lambda f: sort_key(f.path))
        self._learn_names({f.st.st_uid for f in found}, {f.st.st_gid for f in found})
        skipping: str | None = None
        for item in found:
            if skipping is not None and item.path.startswith(skipping):
                continue
            skipping = None
            is_dir = statmod.S_ISDIR(item.st.st_mode)
            if item.path != root and prune(item.path, is_dir):
                skipping = item.path.rstrip("/") + "/" if is_dir else None
                continue
            yield item.path, self._with_rdev(item), item.target

    def _find(self, shell: ShellSession, root: str, one_file_system: bool) -> list[Found]:
        _absolute(root)
        line = command("find", root) + (b" -xdev" if one_file_system else b"") + _FIND
        reply = shell.request(line)
        found = list(parse_stream(iter(lambda: reply.read(RECV), b"")))
        reply.finish()
        problems = [text for text in reply.error_text().splitlines()
                    if text and "No such file or directory" not in text]  # removed while walked
        if reply.status != 0 and problems:
            raise SourceError(f"cannot list everything under {root} on host {self.name}: "
                              + "; ".join(problems[:5]),
                              "run the backup as a user that may read it (become:), or exclude it")
        return found

    def _learn_names(self, uids: set[int], gids: set[int]) -> None:
        """User and group names of these ids on the host, in one request (None: no name)."""
        uids, gids = uids - set(self._users), gids - set(self._groups)
        if not uids and not gids:
            return
        line = _getent(b"passwd", uids) + b"printf '\\0'; " + _getent(b"group", gids) + b"true"
        out = self.call(lambda shell: shell.call(line)).stdout
        users, _, groups = out.partition(b"\0")
        known_users, known_groups = id_names(users), id_names(groups)
        self._users.update({uid: known_users.get(uid) for uid in uids})
        self._groups.update({gid: known_groups.get(gid) for gid in gids})

    def _with_rdev(self, item: Found) -> os.stat_result:
        if not (statmod.S_ISCHR(item.st.st_mode) or statmod.S_ISBLK(item.st.st_mode)):
            return item.st
        reply = self.check(self.call(lambda shell: shell.call(command("stat", "-c", "%t %T", "--", item.path))),
                           "stat", item.path)
        major, minor = (int(x, 16) for x in reply.stdout.split())
        values = list(item.st[:10])
        extra = {k: getattr(item.st, k) for k in ("st_atime", "st_mtime", "st_ctime", "st_atime_ns",
                                                   "st_mtime_ns", "st_ctime_ns")}
        return os.stat_result(values, {**extra, "st_rdev": os.makedev(major, minor)})

    def lstat(self, path: str) -> os.stat_result | None:
        found = self.stat_many([path])
        return found[path].st if path in found else None

    def stat_many(self, paths: list[str]) -> dict[str, Found]:
        """lstat of several paths in one round trip (missing ones left out)."""
        for path in paths:
            _absolute(path)

        def operation(shell: ShellSession) -> dict[str, Found]:
            reply = shell.request(command("find", *paths, "-maxdepth", "0") + _FIND)
            found = {f.path: f for f in parse_stream(iter(lambda: reply.read(RECV), b""))}
            reply.finish()
            for text in reply.error_text().splitlines():
                if "Permission denied" in text:
                    raise PermissionError(errno.EACCES, text, paths[0])
            return found
        return self.call(operation)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        _absolute(path)
        if length is None:
            line = command("cat", "--", path) if offset == 0 else command("tail", "-c", f"+{offset + 1}", "--", path)
        elif length == 0:
            line = command("test", "-r", path)
        else:
            line = command("dd", f"if={path}", "bs=1M", f"skip={offset}", f"count={length}",
                           "iflag=skip_bytes,count_bytes", "status=none")

        def operation(shell: ShellSession) -> bytes:
            reply = shell.request(line)
            data = reply.read()
            self.check(reply.finish(), f"reading {path}", path)
            return data
        return self.call(operation)

    def read_many(self, paths: list[str], limit: int) -> dict[str, tuple[bytes, os.stat_result]]:
        """The first `limit` bytes of each file, in one request (one tar), with
        the stat tar took before it read the file; a file that tar saw change
        while it read it (or said anything else about) is left out, as are
        unreadable ones.  The stat has no inode number (st_ino 0: tar does not
        record it); size, mtime and ctime to the ns are exact."""
        if not paths:
            return {}
        line, listing, parse = self._batch_request(paths, limit)
        return self.call(lambda shell: parse(shell.request(line, listing)))

    def start_read_many(self, paths: list[str], limit: int) -> Callable[[], dict]:
        """read_many, sent now on a shell that runs such requests back to back
        (readahead.py); call the result for the answer."""
        if not paths:
            return dict
        if self.config.max_channels < 2:  # the dedicated shell would starve everything else
            return lambda: self.read_many(paths, limit)
        line, listing, parse = self._batch_request(paths, limit)
        with self._lock:
            lanes = self._read_ahead_lanes()
            self._sent += 1
            lane = lanes[self._sent % len(lanes)]
        return lane.submit(line, listing, parse).result

    def _read_ahead_lanes(self) -> list[ReadAhead]:
        """(called with _lock held) two shells: the host's two cores both run tar."""
        if not self._readaheads:
            self._readaheads = [ReadAhead(self.connection, self.shells, ATTEMPTS)
                                for _ in range(min(READ_AHEAD_SHELLS, self.config.max_channels - 1))]
        return self._readaheads

    @staticmethod
    def _batch_request(paths: list[str], limit: int):
        """(command line, staged path list, reply parser) of one read_many batch."""
        listing = b"".join(os.fsencode(_absolute(p)) + b"\0" for p in paths)

        def parse(reply: Reply) -> dict[str, tuple[bytes, os.stat_result]]:
            got = {}
            for name, data, size, mode, uid, gid, mtime_ns, ctime_ns in TarReader(reply.read).members(limit):
                if ctime_ns is not None:  # (always there from GNU tar; else read it one by one)
                    got[name] = (data, make_stat(statmod.S_IFREG | mode, 0, 0, 1, uid, gid, size,
                                                 mtime_ns, ctime_ns))
            reply.finish()  # the archive's padding, then tar's status and stderr
            distrusted = named_in_warnings(reply.stderr)
            if distrusted is None:  # a message naming no file we can tell: trust none of them
                log.debug("tar said %r; reading the batch one by one", reply.error_text()[:500])
                return {}
            for name in distrusted:  # changed while read, shrank (zero padded), read errors
                got.pop(name, None)
            return got
        return _TAR, listing, parse

    def open_read(self, path: str, offset: int = 0) -> "RemoteReadStream":
        return RemoteReadStream(self, path, offset)

    def user_name(self, uid: int) -> str | None:
        if uid not in self._users:  # (a walk learns them all at once)
            self._learn_names({uid}, set())
        return self._users.get(uid)

    def group_name(self, gid: int) -> str | None:
        if gid not in self._groups:
            self._learn_names(set(), {gid})
        return self._groups.get(gid)

    # -- writing (remote_write.py) ---------------------------------------------------

    def listdir(self, path: str) -> list[str] | None:
        return self.writer.listdir(path)

    def makedirs(self, path: str) -> None:
        self.writer.makedirs(path)

    def put(self, path: str, chunks: Iterable[bytes], mode: int = 0o600) -> int:
        return self.writer.put(path, chunks, mode)

    def open_write(self, path: str, size: int, truncate: bool = True):
        return self.writer.open_write(path, size, truncate)

    def symlink(self, target: str, path: str) -> None:
        self.writer.symlink(target, path)

    def hardlink(self, existing: str, path: str) -> None:
        self.writer.hardlink(existing, path)

    def mknod(self, path: str, entry: Entry) -> None:
        self.writer.mknod(path, entry)

    def set_meta(self, path: str, entry: Entry) -> None:
        self.writer.set_meta(path, entry)

    def remove(self, path: str) -> None:
        self.writer.remove(path)

    def flush(self) -> None:
        self.writer.flush()


class RemoteReadStream:
    """A remote file read block by block: each block is one request, repeated
    from its own offset if the connection is lost."""

    def __init__(self, host: SshHost, path: str, offset: int = 0):
        self.host, self.path, self.offset = host, path, offset
        self._buffer = b""
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            chunks = []
            while chunk := self.read(STREAM_BLOCK):
                chunks.append(chunk)
            return b"".join(chunks)
        if not self._buffer and not self._eof:
            self._buffer = self.host.read(self.path, self.offset, STREAM_BLOCK)
            self.offset += len(self._buffer)
            self._eof = len(self._buffer) < STREAM_BLOCK
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def close(self) -> None:
        self._buffer, self._eof = b"", True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _getent(database: bytes, ids: set[int]) -> bytes:
    """`getent DATABASE ID...; ` (nothing without ids: getent would list every entry)."""
    return b"getent " + database + b"".join(b" %d" % i for i in sorted(ids)) + b"; " if ids else b""


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise HostError(f"remote paths must be absolute, not {path!r}")
    return path
