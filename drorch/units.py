"""Sizes as people read them, and the free space of a file system: shared by
the CLI, the daemon, `drorch check` and notifications (none imports another)."""

from __future__ import annotations

import os


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def fs_space(path: str) -> tuple[int, int]:
    """(total, free to unprivileged users) bytes of the file system holding path, or its
    nearest existing parent (a repository not created yet); OSError if it cannot be seen."""
    probe = str(path)
    while not os.path.exists(probe) and probe not in ("/", ""):
        probe = os.path.dirname(probe)
    fs = os.statvfs(probe or "/")
    return fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
