"""Just enough of a tar reader for GNU tar's output (`--format=gnu` or
`--format=posix`): regular files with their names (long names included) and
the stat tar took before reading each (mode, owner ids, size, mtime, and with
pax headers mtime and ctime to the nanosecond), read from a stream without
reading past the end-of-archive block."""

from __future__ import annotations

import re
from typing import Callable, Iterator

from drorch.hosts.findstat import decimal_ns, fsdecode

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
REGULAR = (b"0", b"\0", b"7")


def _number(field: bytes) -> int:
    try:  # the usual field: octal digits, then NUL (or a space)
        return int(field[:-1], 8)
    except ValueError:
        pass
    if field[:1] and field[0] & 0x80:  # GNU base-256 for big sizes
        value = int.from_bytes(field, "big")
        return value - (1 << (8 * len(field) - 1))
    text = field.split(b"\0", 1)[0]
    return int(text, 8) if text.strip() else 0


def _text(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def pax_records(data: bytes) -> dict[bytes, bytes]:
    """A pax extended header's "LEN key=value\n" records (values are raw bytes:
    GNU tar writes a non-UTF-8 path as it is)."""
    out, pos = {}, 0
    while pos < len(data) and data[pos] != 0:
        space = data.index(b" ", pos)
        end = pos + int(data[pos:space])
        key, _, value = data[space + 1:end - 1].partition(b"=")
        out[key] = value
        pos = end
    return out


class TarReader:
    """Members of a tar stream: members() yields the regular files.  Reads in 1 MiB
    chunks; leftover() is what came after the end-of-archive block."""

    def __init__(self, read: Callable[[int], bytes]):
        self._read = read
        self._buf = b""
        self._off = 0

    def _ensure(self, n: int) -> None:
        if len(self._buf) - self._off >= n:
            return
        parts, have = [self._buf[self._off:]], len(self._buf) - self._off
        while have < n:
            chunk = self._read(max(1 << 20, n - have))
            if not chunk:
                raise EOFError("the tar stream ended early")
            parts.append(chunk)
            have += len(chunk)
        self._buf, self._off = b"".join(parts), 0

    def _exactly(self, n: int) -> bytes:
        self._ensure(n)
        out = self._buf[self._off:self._off + n]
        self._off += n
        return out

    def _skip(self, n: int) -> None:
        while n:
            step = min(n, 1 << 20)
            self._ensure(step)
            self._off += step
            n -= step

    def leftover(self) -> bytes:
        return self._buf[self._off:]

    def members(self, limit: int) -> Iterator[tuple[str, bytes, int, int, int, int, int, int | None]]:
        """(path, first `limit` bytes, size, permission bits, uid, gid, mtime_ns,
        ctime_ns or None) of each regular file, in archive order.  ctime is known
        only from a pax header; without one, mtime is the header's whole seconds."""
        long_name: bytes | None = None
        pax: dict[bytes, bytes] = {}
        while True:
            self._ensure(BLOCK)
            start = self._off
            header = self._buf[start:start + BLOCK]
            self._off = start + BLOCK
            if header == _ZERO_BLOCK:
                return  # end of archive (the caller drains the padding)
            kind, size = header[156:157], _number(header[124:136])
            padded = -(-size // BLOCK) * BLOCK
            if kind == b"L":  # GNU long name: the next member's name
                long_name = _text(self._exactly(padded)[:size])
                continue
            if kind == b"x":  # pax header: the next member's exact values
                pax = pax_records(self._exactly(padded)[:size])
                continue
            if kind not in REGULAR:  # long link names, global headers, directories ...: not needed
                if kind not in (b"K", b"g"):
                    long_name, pax = None, {}
                self._skip(padded)
                continue
            if pax:
                size = int(pax.get(b"size", size))
                padded = -(-size // BLOCK) * BLOCK
            name = pax.get(b"path") or (long_name if long_name is not None else _ustar_name(header))
            stat = _header_stat(header, pax)
            long_name, pax = None, {}
            keep = min(size, limit)
            if keep == size and len(self._buf) - self._off >= padded:  # the usual case: all buffered
                data = self._buf[self._off:self._off + size]
                self._off += padded
            else:
                data = self._exactly(keep)
                self._skip(padded - keep)
            yield fsdecode(name), data, size, *stat


def _header_stat(header: bytes, pax: dict[bytes, bytes]) -> tuple[int, int, int, int, int | None]:
    """(permission bits, uid, gid, mtime_ns, ctime_ns or None) of a member."""
    mtime, ctime = pax.get(b"mtime"), pax.get(b"ctime")
    return (_number(header[100:108]) & 0o7777,
            int(pax[b"uid"]) if b"uid" in pax else _number(header[108:116]),
            int(pax[b"gid"]) if b"gid" in pax else _number(header[116:124]),
            decimal_ns(mtime) if mtime else _number(header[136:148]) * 1_000_000_000,
            decimal_ns(ctime) if ctime else None)


def _ustar_name(header: bytes) -> bytes:
    name = _text(header[0:100])
    if header[257:263] == b"ustar\0":  # POSIX ustar (GNU's own magic is "ustar  ", no prefix)
        prefix = _text(header[345:500])
        if prefix:
            return prefix + b"/" + name
    return name


# GNU tar's messages about one file, with `--quoting-style=c` under LC_ALL=C:
# `tar: "NAME": what happened` (tar's name as it was run), NAME C-escaped
# (bytes >= 0x80 in octal).
_ABOUT_FILE = re.compile(rb'^[^"]*?: "((?:[^"\\]|\\.)*)": ', re.S)
_ESCAPE = re.compile(rb"\\([0-7]{1,3}|.)", re.S)
_ESCAPES = {b"a": b"\a", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_NOT_ABOUT_A_FILE = b": Exiting with failure status due to previous errors"


def _unescape(match: re.Match) -> bytes:
    code = match.group(1)
    if code[:1].isdigit():
        return bytes([int(code, 8) & 0xFF])
    return _ESCAPES.get(code, code)


def named_in_warnings(stderr: bytes) -> set[str] | None:
    """Every file GNU tar said something about ("file changed as we read it",
    "File shrank by N bytes; padding with zeros", read errors, "Cannot stat"):
    its data in the archive is not to be trusted.  None when a line names no
    file this can decode: then no file of the request is to be trusted."""
    named = set()
    for line in stderr.split(b"\n"):
        if not line or line.endswith(_NOT_ABOUT_A_FILE):
            continue
        match = _ABOUT_FILE.match(line)
        if match is None:
            return None
        named.add(fsdecode(_ESCAPE.sub(_unescape, match.group(1))))
    return named
