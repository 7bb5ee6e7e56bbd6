"""Just enough of a tar reader for GNU tar's output (`--format=gnu`): regular
files with their names (long names included), read from a stream without
reading past the end-of-archive block."""

from __future__ import annotations

import os
from typing import Callable, Iterator

BLOCK = 512
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
    """Members of a tar stream: (path, first `limit` bytes, full size) for regular files."""

    def __init__(self, read: Callable[[int], bytes]):
        self._read = read

    def _exactly(self, n: int) -> bytes:
        parts, left = [], n
        while left:
            chunk = self._read(min(left, 1 << 20))
            if not chunk:
                raise EOFError("the tar stream ended early")
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n:
            n -= len(self._exactly(min(n, 1 << 20)))

    def members(self, limit: int) -> Iterator[tuple[str, bytes, int]]:
        long_name: bytes | None = None
        while True:
            header = self._exactly(BLOCK)
            if header == bytes(BLOCK):
                return  # end of archive (the caller drains the padding)
            kind, size = header[156:157], _number(header[124:136])
            padded = -(-size // BLOCK) * BLOCK
            if kind == b"L":  # GNU long name: the next member's name
                long_name = _text(self._exactly(padded)[:size])
                continue
            if kind in (b"K", b"x", b"g"):  # long link names, pax headers: not needed
                self._skip(padded)
                continue
            name = long_name if long_name is not None else _ustar_name(header)
            long_name = None
            if kind not in REGULAR:
                self._skip(padded)
                continue
            keep = min(size, limit)
            data = self._exactly(keep)
            self._skip(padded - keep)
            yield os.fsdecode(name), data, size


def _ustar_name(header: bytes) -> bytes:
    name = _text(header[0:100])
    if header[257:263] == b"ustar\0":  # POSIX ustar (GNU's own magic is "ustar  ", no prefix)
        prefix = _text(header[345:500])
        if prefix:
            return prefix + b"/" + name
    return name
