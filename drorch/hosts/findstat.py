"""Metadata of remote files from one `find -printf` (shell.FIND_FORMAT): type,
mode, owner, size, times to the nanosecond, inode, links, device, names,
symlink target; 14 NUL-terminated fields per entry."""

from __future__ import annotations

import os
import stat as statmod
from dataclasses import dataclass
from typing import Iterable, Iterator

FIELDS = 14
_TYPES = {b"f": statmod.S_IFREG, b"d": statmod.S_IFDIR, b"l": statmod.S_IFLNK, b"p": statmod.S_IFIFO,
          b"c": statmod.S_IFCHR, b"b": statmod.S_IFBLK, b"s": statmod.S_IFSOCK}


@dataclass(slots=True)
class Found:
    path: str
    st: os.stat_result
    target: str | None
    user: str | None
    group: str | None


def time_ns(text: bytes) -> int:
    """find's %T@ ("1700000000.1234567890") to integer nanoseconds, exactly.
    GNU find prints tv_sec, then tv_nsec as a fraction: -1.75 s is "-2.25"."""
    whole, _, fraction = text.partition(b".")
    return int(whole) * 1_000_000_000 + int((fraction[:9] or b"0").ljust(9, b"0"))


def touch_time(ns: int) -> str:
    """Nanoseconds as `touch -d @...` reads them (a plain signed decimal)."""
    sign = "-" if ns < 0 else ""
    seconds, fraction = divmod(abs(ns), 1_000_000_000)
    return f"@{sign}{seconds}.{fraction:09d}"


def make_stat(mode: int, ino: int, dev: int, nlink: int, uid: int, gid: int, size: int,
              mtime_ns: int, ctime_ns: int, rdev: int = 0) -> os.stat_result:
    return os.stat_result(
        (mode, ino, dev, nlink, uid, gid, size, mtime_ns // 10**9, mtime_ns // 10**9, ctime_ns // 10**9),
        {"st_atime": mtime_ns / 1e9, "st_mtime": mtime_ns / 1e9, "st_ctime": ctime_ns / 1e9,
         "st_atime_ns": mtime_ns, "st_mtime_ns": mtime_ns, "st_ctime_ns": ctime_ns, "st_rdev": rdev})


def _name(value: bytes, number: int) -> str | None:
    """find prints the number when the id has no name."""
    return None if value == str(number).encode() else os.fsdecode(value)


def parse_record(fields: list[bytes]) -> Found | None:
    kind, perm, uid, gid, size, mtime, ctime, ino, nlink, dev, user, group, path, target = fields
    if kind not in _TYPES:
        return None  # a door or an unknown type: nothing we back up
    uid_n, gid_n = int(uid), int(gid)
    st = make_stat(_TYPES[kind] | int(perm, 8), int(ino), int(dev), int(nlink), uid_n, gid_n, int(size),
                   time_ns(mtime), time_ns(ctime))
    return Found(os.fsdecode(path), st, os.fsdecode(target) if kind == b"l" else None,
                 _name(user, uid_n), _name(group, gid_n))


def parse_stream(chunks: Iterable[bytes]) -> Iterator[Found]:
    """Records from find's output as it arrives."""
    pending = b""
    fields: list[bytes] = []
    for chunk in chunks:
        parts = (pending + chunk).split(b"\0")
        pending = parts.pop()
        for part in parts:
            fields.append(part)
            if len(fields) == FIELDS:
                found = parse_record(fields)
                fields = []
                if found is not None:
                    yield found
    if pending or fields:
        raise ValueError("find's output ended in the middle of an entry")


def sort_key(path: str) -> tuple[bytes, ...]:
    """The local walk's order: a directory before its contents, names in byte order."""
    return tuple(os.fsencode(path).split(b"/"))
