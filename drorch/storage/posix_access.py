"""Users and groups of a posix repository: the group it is shared with, and who
owns what, for the messages of permission errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from drorch.errors import StorageError


def gid_of(group: str) -> int:
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise StorageError(f"repository group {group!r} does not exist on this machine",
                           "create the group (and add drorch's and postgres's users to it) or fix `group:`") from None


def owner_of(path: Path) -> str:
    """' (directory D is owned by U:G, mode M)' for the nearest existing parent."""
    import grp
    import pwd

    for candidate in (path, *path.parents):
        try:
            st = candidate.stat()
        except OSError:
            continue
        try:
            user = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            user = str(st.st_uid)
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        return f" ({candidate} is owned by {user}:{group}, mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def whoami() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
