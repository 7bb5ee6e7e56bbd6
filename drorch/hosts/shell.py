"""Persistent shells on a remote host: many small commands without a new
login shell each.

Opening an SSH exec channel starts the user's login shell (with its rc
files: 5-100 ms), so file operations go through a few long-lived `sh`
loops instead.  A request is three lines: a fresh random token, the size of
the data that follows, and one line of shell.  The loop first stages the
data in a file ($i) -- all of it, or the shell exits, so data can never be
read as commands -- then runs the line with stdin from /dev/null.  The
reply is the command's stdout, then NUL, the token, its exit status and the
length of its stderr, then the stderr.  The token (128 random bits) cannot
be guessed by file content, so stdout can be any bytes.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import threading
from contextlib import contextmanager
from typing import Iterator

from drorch.errors import HostError
from drorch.hosts.ssh import Channel, Dropped, SshConnection

RECV = 1 << 20
# A shell's reply silent this long (or io_timeout, if shorter) counts as a lost
# connection: its commands are short file operations that stream as they go
# (a walk prints every entry), so silence means a stuck channel or host, and
# the operation is better repeated on a new connection than waited for.
SILENCE = 120.0

#: find -printf fields of one entry (findstat.py parses them), NUL-separated.  No %u/%g:
#: find looks names up for every entry (5x slower); remote.py asks getent once per id.
FIND_FORMAT = r"%y\0%m\0%U\0%G\0%s\0%T@\0%C@\0%i\0%n\0%D\0%p\0%l\0"

LOOP = r"""
LC_ALL=C; export LC_ALL
umask 077
nl='
'
F='%s'; export F
d=$(mktemp -d) || exit 111
e="$d/err"
trap 'rm -rf "$d"' EXIT HUP TERM
i="$d/in"
printf 'drorch-shell-ready %%s\n' "$(id -u)"
while IFS= read -r drorch_token && IFS= read -r drorch_size && IFS= read -r drorch_command; do
  if [ "$drorch_size" != 0 ]; then
    dd of="$i" bs="$drorch_size" count=1 iflag=fullblock status=none 2>"$e"
    if [ "$(wc -c <"$i")" != "$drorch_size" ]; then
      echo "drorch: could not stage $drorch_size bytes in $d: $(cat "$e")" >&2
      exit 112
    fi
  fi
  eval "$drorch_command" 2>"$e" </dev/null
  drorch_status=$?
  if [ -s "$e" ]; then drorch_n=$(wc -c <"$e"); else drorch_n=0; fi
  printf '\0%%s %%d %%d\n' "$drorch_token" "$drorch_status" "$drorch_n"
  [ "$drorch_n" = 0 ] || cat "$e"
done
""" % FIND_FORMAT

_SAFE = re.compile(rb"^[A-Za-z0-9@%+=:,./_-]+$")


def q(value: str | bytes | int) -> bytes:
    """Quote one word for the remote sh, on one line (a newline in a name
    becomes "$nl"); str paths are encoded back to their original bytes."""
    if isinstance(value, int):
        return str(value).encode()
    raw = os.fsencode(value) if isinstance(value, str) else value
    if raw and _SAFE.match(raw):
        return raw
    quoted = b"'" + raw.replace(b"'", b"'\\''") + b"'"
    return quoted.replace(b"\n", b"'\"$nl\"'")


def command(*words: str | bytes | int) -> bytes:
    return b" ".join(q(w) for w in words)


class Reply:
    """The stdout of one request as a stream, then its status and stderr."""

    def __init__(self, session: "ShellSession", token: bytes):
        self._session = session
        self._marker = b"\0" + token + b" "
        self._scanned = 0  # buf[:_scanned] holds no start of the marker
        self._pos = 0  # buf[:_pos] was read already
        self._end: int | None = None  # where stdout ends in the buffer
        self.status: int | None = None
        self.stdout = b""  # what finish() found left of stdout
        self.stderr = b""

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes of stdout (all with n=-1); b"" at its end."""
        if n < 0:
            self._compact()
            return self._read_all()
        buf = self._session.buf
        if self._end is None:
            self._search()  # (a pipelined reply may be in the buffer already)
        while self._end is None and self._scanned <= self._pos:
            self._session.fill_raw()
            self._search()
        limit = self._end if self._end is not None else self._scanned
        take = min(n, limit - self._pos)
        with memoryview(buf) as view:  # one copy (a bytearray slice would be a second)
            data = bytes(view[self._pos:self._pos + take])
        self._pos += take
        if self._pos >= 1 << 20:
            self._compact()
        return data

    def _compact(self) -> None:
        """Drop what was read from the front of the buffer (not on every small read:
        deleting from the front of a bytearray moves the rest)."""
        if self._pos:
            del self._session.buf[:self._pos]
            self._scanned = max(0, self._scanned - self._pos)
            if self._end is not None:
                self._end -= self._pos
            self._pos = 0

    def _read_all(self) -> bytes:
        """The rest of stdout, with one copy of the data (the bulk path of reads)."""
        session, marker = self._session, self._marker
        if self._end is None:
            self._search()
        if self._end is not None:
            data = bytes(session.buf[:self._end])
            del session.buf[:self._end]
            self._end = self._scanned = 0
            return data
        parts, total, end = [bytes(session.buf)], len(session.buf), -1
        session.buf.clear()
        while end < 0:
            chunk = session.recv()
            tail = _tail(parts, len(marker) - 1)
            found = (tail + chunk[:len(marker) - 1]).find(marker)
            if found >= 0:
                end = total - len(tail) + found
            elif (found := chunk.find(marker)) >= 0:
                end = total + found
            parts.append(chunk)
            total += len(chunk)
        keep, rest = [], []
        for part in parts:  # cut at the marker: before it is stdout, the rest stays buffered
            if end >= len(part):
                keep.append(part)
                end -= len(part)
            else:
                keep.append(part[:end])
                rest.append(part[end:])
                end = 0
        session.buf += b"".join(rest)
        self._end = self._scanned = 0
        return b"".join(keep)

    def _search(self) -> None:
        buf = self._session.buf
        found = buf.find(self._marker, self._scanned)
        if found >= 0:
            self._end = self._scanned = found
        else:
            self._scanned = max(self._scanned, len(buf) - len(self._marker) + 1)

    def finish(self) -> "Reply":
        """Keep what is left of stdout (in .stdout), then read the status and stderr."""
        self.stdout = self.read()
        buf = self._session.buf
        while b"\n" not in buf[len(self._marker):]:
            self._session.fill_raw()
        line_end = buf.index(b"\n", len(self._marker))
        status, length = buf[len(self._marker):line_end].split()
        del buf[:line_end + 1]
        length = int(length)
        while len(buf) < length:
            self._session.fill_raw()
        self.stderr = bytes(buf[:length])
        del buf[:length]
        self.status = int(status)
        self._session.busy = False
        return self

    def error_text(self) -> str:
        return self.stderr.decode(errors="replace").strip()


def _tail(parts: list[bytes], n: int) -> bytes:
    """The last n bytes of parts joined."""
    out = b""
    for part in reversed(parts):
        out = part[-(n - len(out)):] + out if n > len(out) else out
        if len(out) >= n:
            break
    return out


class ShellSession:
    def __init__(self, channel: Channel, where: str, become: str | None = None, user: str | None = None):
        self.channel = channel
        self.where = where
        self.become, self.user = become, user
        self.buf = bytearray()
        self.busy = False
        self.uid = self._ready()

    def _ready(self) -> int:
        line = b""
        while not line.endswith(b"\n"):
            chunk = self.channel.recv(1)
            if not chunk and not self.channel.connection_alive:
                self.channel.close()
                raise Dropped(f"connection to {self.where} lost while a shell started")
            if not chunk:
                err = b""
                while self.channel.stderr_ready():
                    err += self.channel.recv_stderr(65536)
                self.channel.close()
                text = err.decode(errors="replace").strip() or "it exited at once"
                if self.become and "sudo" in text:
                    raise HostError(f"host {self.where}: become: {self.become} failed: {text}",
                                    f"let {self.user} run commands as {self.become} without a password "
                                    f"on that host, e.g. in /etc/sudoers.d/drorch: "
                                    f"`{self.user} ALL=({self.become}) NOPASSWD: ALL`")
                raise HostError(f"host {self.where}: cannot start a shell there: {text}",
                                "check that /bin/sh and mktemp work for the login user on that host")
            line += chunk
        words = line.split()
        if len(words) != 2 or words[0] != b"drorch-shell-ready":
            self.channel.close()
            raise HostError(f"host {self.where}: the shell printed {line[:200]!r} before starting",
                            "make the login user's shell rc files silent for non-interactive shells")
        return int(words[1])

    def recv(self) -> bytes:
        chunk = self.channel.recv(RECV)
        if chunk:
            return chunk
        err = b""
        while self.channel.stderr_ready():
            err += self.channel.recv_stderr(65536)
        if b"drorch: could not stage" in err:
            self.channel.close()
            raise HostError(f"host {self.where}: {err.decode(errors='replace').strip()}",
                            "free space in the host's temporary directory (TMPDIR or /tmp)")
        raise Dropped(f"connection to {self.where} closed in the middle of a reply")

    def fill_raw(self) -> None:
        self.buf += self.recv()

    def send(self, line: bytes, data: bytes | None = None, token: bytes | None = None) -> bytes:
        if b"\n" in line:
            raise ValueError("a request is one line")
        token = token or secrets.token_hex(16).encode()
        self.busy = True
        self.channel.sendall(b"%s\n%d\n%s\n" % (token, len(data or b""), line) + (data or b""))
        return token

    def request(self, line: bytes, data: bytes | None = None) -> Reply:
        """Send one command line; the command finds `data` in the file $i."""
        return Reply(self, self.send(line, data))

    def call(self, line: bytes, data: bytes | None = None) -> Reply:
        """A request read to its end."""
        return self.request(line, data).finish()

    def pipeline(self, requests: list[tuple[bytes, bytes | None]]) -> list[Reply]:
        """Several requests sent at once, then their replies (small replies only:
        they wait in the channel's window until read)."""
        tokens = [self.send(line, data) for line, data in requests]
        return [Reply(self, token).finish() for token in tokens]

    @property
    def alive(self) -> bool:
        return not self.busy and not self.channel.closed

    def close(self) -> None:
        self.channel.close()


class ShellPool:
    """Idle shells for reuse; at most the connection's channel budget."""

    def __init__(self, connection: SshConnection, become: str | None):
        self.connection = connection
        self.where = connection.config.where
        self.become = become
        loop = ["sh", "-c", LOOP]
        if become:
            loop = ["sudo", "-n", "-u", become, "--", *loop]
        self._start = " ".join(shlex.quote(word) for word in loop).encode()
        self._idle: list[ShellSession] = []
        self._lock = threading.Lock()
        connection.reclaimers.append(self._close_one_idle)
        self.uid: int | None = None

    @contextmanager
    def session(self) -> Iterator[ShellSession]:
        shell = self.take()
        try:
            yield shell
        finally:  # a shell whose reply was read to its end is reusable, even after an error
            self.give_back(shell)

    def _take(self) -> ShellSession | None:
        with self._lock:
            while self._idle:
                shell = self._idle.pop()
                if shell.alive:
                    return shell
                shell.close()
        return None

    def take(self) -> ShellSession:
        """A shell for the caller alone, idle or new (it counts against the channel
        budget until closed or given back)."""
        return self._take() or self._open()

    def give_back(self, shell: ShellSession) -> None:
        """A shell from take() that is done: reused if its last reply was read to its end."""
        if shell.alive:
            with self._lock:
                self._idle.append(shell)
        else:
            shell.close()

    def _open(self) -> ShellSession:
        channel = self.connection.open_exec(self._start)
        channel.set_timeout(min(SILENCE, self.connection.config.io_timeout))
        shell = ShellSession(channel, self.where, self.become, self.connection.config.user)
        self.uid = shell.uid
        return shell

    def _close_one_idle(self) -> bool:
        with self._lock:
            shell = self._idle.pop(0) if self._idle else None
        if shell is None:
            return False
        shell.close()
        return True

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for shell in idle:
            shell.close()
