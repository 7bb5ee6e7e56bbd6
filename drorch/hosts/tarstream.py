"""Just enough of a tar reader for GNU tar's output (`--format=gnu`): regular
files with their names (long names included), read from a stream without
reading past the end-of-archive block."""

from __future__ import annotations

from typing import Callable, Iterator

from drorch.hosts.findstat import fsdecode

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
REGULAR = (b"0", b"\0", b"7")


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for big sizes
        value = int.from_bytes(field, "big")
        return value - (1 << (8 * len(field) - 1))
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _text(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


class TarReader:
    """Members of a tar stream: (path, first `limit` bytes, full size) for regular files.
    Reads in 1 MiB chunks; leftover() is what came after the end-of-archive block."""

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

    def members(self, limit: int) -> Iterator[tuple[str, bytes, int]]:
        long_name: bytes | None = None
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
            if kind not in REGULAR:  # long link names, pax headers, directories ...: not needed
                if kind not in (b"K", b"x", b"g"):
                    long_name = None
                self._skip(padded)
                continue
            name = long_name if long_name is not None else _ustar_name(header)
            long_name = None
            keep = min(size, limit)
            if keep == size and len(self._buf) - self._off >= padded:  # the usual case: all buffered
                data = self._buf[self._off:self._off + size]
                self._off += padded
            else:
                data = self._exactly(keep)
                self._skip(padded - keep)
            yield fsdecode(name), data, size


def _ustar_name(header: bytes) -> bytes:
    name = _text(header[0:100])
    if header[257:263] == b"ustar\0":  # POSIX ustar (GNU's own magic is "ustar  ", no prefix)
        prefix = _text(header[345:500])
        if prefix:
            return prefix + b"/" + name
    return name
