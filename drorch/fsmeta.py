"""One file-system entry as drorch records it.

Hosts produce entries (metadata), sources decide which, the engine fills in
where the bytes are stored, and the manifest serialises them.  Paths are
`str` decoded with os.fsdecode (surrogateescape), so names that are not
valid UTF-8 survive a round trip.
"""

from __future__ import annotations

import os
import posixpath
import stat as statmod
from dataclasses import dataclass, field

FILE, DIR, SYMLINK, HARDLINK, FIFO, CHARDEV, BLOCKDEV = (
    "file", "dir", "symlink", "hardlink", "fifo", "chardev", "blockdev")
TYPES = (FILE, DIR, SYMLINK, HARDLINK, FIFO, CHARDEV, BLOCKDEV)


@dataclass(slots=True)
class Entry:
    path: str  # relative, '/'-separated
    type: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    user: str | None = None
    group: str | None = None
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0
    size: int = 0
    target: str | None = None  # symlink text, or the path a hard link shares its inode with
    rdev: int | None = None
    checksum: str | None = None
    bs: int = 0  # block size; 0 = stored as one block
    blocks: list = field(default_factory=list)  # [label, pack, offset, length, raw_size, sha256]
    flags: list | None = None

    def same_stat(self, other: "Entry") -> bool:
        """True when nothing suggests the content changed (size, mtime, ctime, inode, type)."""
        return (self.type == other.type and self.size == other.size and self.mtime_ns == other.mtime_ns
                and self.ctime_ns == other.ctime_ns and self.ino == other.ino)


def type_of(mode: int) -> str | None:
    if statmod.S_ISREG(mode):
        return FILE
    if statmod.S_ISDIR(mode):
        return DIR
    if statmod.S_ISLNK(mode):
        return SYMLINK
    if statmod.S_ISFIFO(mode):
        return FIFO
    if statmod.S_ISCHR(mode):
        return CHARDEV
    if statmod.S_ISBLK(mode):
        return BLOCKDEV
    return None  # sockets and the like: not backed up


def entry_from_stat(path: str, st: os.stat_result, target: str | None = None) -> Entry | None:
    kind = type_of(st.st_mode)
    if kind is None:
        return None
    return Entry(path=path, type=kind, mode=statmod.S_IMODE(st.st_mode), uid=st.st_uid,
                 gid=st.st_gid, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, ino=st.st_ino,
                 size=st.st_size if kind == FILE else 0, target=target,
                 rdev=st.st_rdev if kind in (CHARDEV, BLOCKDEV) else None)


def safe_relpath(path: str) -> bool:
    """A manifest path that cannot leave the directory it is restored into."""
    if not path or path.startswith("/") or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def join_under(root: str, path: str) -> str:
    """root/path, refusing anything that would land outside root."""
    if not safe_relpath(path):
        raise ValueError(f"unsafe path {path!r}")
    return posixpath.join(root, path)
