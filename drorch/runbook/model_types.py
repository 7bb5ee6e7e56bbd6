"""Small value types of runbooks: sizes of WAL (16MB, 0, 1GiB)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|k|mb|mib|m|gb|gib|g|tb|tib)?\s*$", re.I)
_UNIT = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Any) -> int:
    """16MB, 512kB, 1GiB, 0 -> bytes (kB/MB/GB are 1024-based, as in PostgreSQL)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a text like 16MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size; write e.g. 0, 512kB, 16MB or 1GB")
    unit = (match.group(2) or "b").lower()[0]
    return int(match.group(1)) * _UNIT[unit]


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1024
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} TB"


ByteSize = Annotated[int, BeforeValidator(parse_size), PlainSerializer(int, return_type=int)]
