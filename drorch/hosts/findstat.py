"""Metadata of remote files from one `find -printf` (shell.FIND_FORMAT): type,
mode, owner ids, size, times to the nanosecond, inode, links, device, path,
symlink target; 12 NUL-terminated fields per entry.  Re-stats of many paths
use GNU `stat --printf` (STAT_FORMAT), three times faster than find given
paths one by one."""

from __future__ import annotations

import os
import stat as statmod
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator

FIELDS = 12
STAT_FORMAT = r"%f %s %.9Y %.9Z %i %u %g %h %d\0%n\0"  # raw mode (hex), size, mtime, ctime, ino, ids, links, dev
_ENCODING, _ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_TYPES = {b"f": statmod.S_IFREG, b"d": statmod.S_IFDIR, b"l": statmod.S_IFLNK, b"p": statmod.S_IFIFO,
          b"c": statmod.S_IFCHR, b"b": statmod.S_IFBLK, b"s": statmod.S_IFSOCK}


@dataclass(slots=True)
class Found:
    path: str
    st: os.stat_result
    target: str | None


def time_ns(text: bytes) -> int:
    """find's %T@ ("1700000000.1234567890") to integer nanoseconds, exactly.
    GNU find prints tv_sec, then tv_nsec as a fraction: -1.75 s is "-2.25"."""
    if text[-11:-10] == b".":  # find's usual ten digits (ns, then a 0): the walk's hot spot
        if text[:1] != b"-":
            return int(text[:-11] + text[-10:-1])
        return int(text[:-11]) * 1_000_000_000 + int(text[-10:-1])
    whole, _, fraction = text.partition(b".")
    return int(whole) * 1_000_000_000 + int((fraction[:9] or b"0").ljust(9, b"0"))


def decimal_ns(text: bytes) -> int:
    """A plain signed decimal ("-1.750000000", as stat prints it) to nanoseconds."""
    whole, dot, fraction = text.partition(b".")
    if whole[:1] != b"-" and len(fraction) <= 9:  # the usual case, once per file in tar's pax headers
        return int(whole) * 1_000_000_000 + (int(fraction.ljust(9, b"0")) if fraction else 0)
    negative = text.startswith(b"-")
    whole, _, fraction = text.lstrip(b"-").partition(b".")
    value = int(whole) * 1_000_000_000 + int((fraction[:9] or b"0").ljust(9, b"0"))
    return -value if negative else value


def fsdecode(raw: bytes) -> str:
    """os.fsdecode without its type checks (called once per file)."""
    return raw.decode(_ENCODING, _ERRORS)


def parse_stat(output: bytes) -> dict[str, os.stat_result]:
    """path -> lstat from `stat --printf STAT_FORMAT` output.  Its times are
    signed decimals with exactly nine digits after the point (the host was
    probed for that), so dropping the point gives nanoseconds."""
    fields = output.split(b"\0")
    out = {}
    for numbers, path in zip(fields[0::2], fields[1::2]):
        mode, size, mtime, ctime, ino, uid, gid, nlink, dev = numbers.split()
        out[fsdecode(path)] = make_stat(int(mode, 16), int(ino), int(dev), int(nlink), int(uid), int(gid),
                                        int(size), int(mtime.replace(b".", b"")), int(ctime.replace(b".", b"")))
    return out


def touch_time(ns: int) -> str:
    """Nanoseconds as `touch -d @...` reads them (a plain signed decimal)."""
    sign = "-" if ns < 0 else ""
    seconds, fraction = divmod(abs(ns), 1_000_000_000)
    return f"@{sign}{seconds}.{fraction:09d}"


def make_stat(mode: int, ino: int, dev: int, nlink: int, uid: int, gid: int, size: int,
              mtime_ns: int, ctime_ns: int, rdev: int = 0) -> os.stat_result:
    # all 19 fields as one tuple (the 10 indexable ones, then st_atime ... st_rdev in
    # os.stat_result's order): half the cost of passing the named ones in a dict
    seconds, mtime = mtime_ns // 1_000_000_000, mtime_ns / 1e9
    return os.stat_result((mode, ino, dev, nlink, uid, gid, size, seconds, seconds, ctime_ns // 1_000_000_000,
                           mtime, mtime, ctime_ns / 1e9, mtime_ns, mtime_ns, ctime_ns, None, None, rdev))


def id_names(getent_output: bytes) -> dict[int, str]:
    """id -> name from `getent passwd|group ID...` lines (name:x:id:...)."""
    names = {}
    for line in getent_output.splitlines():
        fields = line.split(b":")
        if len(fields) >= 3 and fields[2].isdigit():
            names.setdefault(int(fields[2]), os.fsdecode(fields[0]))
    return names


def parse_record(fields: list[bytes]) -> Found | None:
    kind, perm, uid, gid, size, mtime, ctime, ino, nlink, dev, path, target = fields
    if kind not in _TYPES:
        return None  # a door or an unknown type: nothing we back up
    st = make_stat(_TYPES[kind] | int(perm, 8), int(ino), int(dev), int(nlink), int(uid), int(gid), int(size),
                   time_ns(mtime), time_ns(ctime))
    return Found(fsdecode(path), st, fsdecode(target) if kind == b"l" else None)


def parse_stream(chunks: Iterable[bytes]) -> Iterator[Found]:
    """Records from find's output as it arrives."""
    pending = b""
    fields: list[bytes] = []
    for chunk in chunks:
        fields += (pending + chunk).split(b"\0")
        pending = fields.pop()
        whole = len(fields) - len(fields) % FIELDS
        for start in range(0, whole, FIELDS):
            found = parse_record(fields[start:start + FIELDS])
            if found is not None:
                yield found
        del fields[:whole]
    if pending or fields:
        raise ValueError("find's output ended in the middle of an entry")


def sort_key(path: str) -> bytes:
    """The local walk's order: a directory before its contents, names in byte order
    (the path's bytes with "/" as NUL, which no name holds: the order of the
    tuples of names, without building them)."""
    return path.encode(_ENCODING, _ERRORS).replace(b"/", b"\0")
