"""PostgreSQL WAL file names, LSNs and segment headers (pure functions)."""

from __future__ import annotations

import re
import struct

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
PARTIAL_RE = re.compile(r"^[0-9A-F]{24}\.partial$")
BACKUP_RE = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")
HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
LONG_HEADER = struct.Struct("<HHIQI4xQII")  # XLogLongPageHeaderData


def parse_lsn(text: str) -> int:
    high, low = text.strip().split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_name(timeline: int, lsn: int, seg_size: int) -> str:
    """The WAL file holding the byte at lsn (pg_walfile_name)."""
    segno = lsn // seg_size
    per_id = 0x100000000 // seg_size
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def segment_number(name: str, seg_size: int) -> int:
    _, log, seg = SEGMENT_RE.match(name[:24]).groups()
    return int(log, 16) * (0x100000000 // seg_size) + int(seg, 16)


def segment_range(timeline: int, start_lsn: int, stop_lsn: int, seg_size: int) -> list[str]:
    """Every segment from the one holding start_lsn to the one holding the last
    byte before stop_lsn, on one timeline."""
    first = start_lsn // seg_size
    last = max(first, (stop_lsn - 1) // seg_size)
    return [segment_name(timeline, n * seg_size, seg_size) for n in range(first, last + 1)]


def kind_of(name: str) -> str | None:
    """segment | partial | backup | history, or None for anything else."""
    if SEGMENT_RE.match(name):
        return "segment"
    if PARTIAL_RE.match(name):
        return "partial"
    if BACKUP_RE.match(name):
        return "backup"
    if HISTORY_RE.match(name):
        return "history"
    return None


def position(name: str) -> str:
    """The log/segment part of a WAL file name (timeline left out): comparing
    these orders segments by position whatever their timeline."""
    return name[8:24]


def segment_header(data: bytes) -> dict | None:
    """The long page header at the start of a segment: magic, timeline,
    system identifier, segment size.  None if data is too short."""
    if len(data) < LONG_HEADER.size:
        return None
    magic, info, tli, pageaddr, rem_len, sysid, seg_size, blcksz = LONG_HEADER.unpack_from(data)
    return {"magic": magic, "timeline": tli, "system_identifier": sysid, "seg_size": seg_size,
            "block_size": blcksz, "pageaddr": pageaddr}


def parse_backup_label(text: str) -> dict:
    """START WAL LOCATION / CHECKPOINT LOCATION / START TIMELINE / ... of a backup_label."""
    out: dict = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == "START WAL LOCATION":
            lsn, _, rest = value.partition(" (file ")
            out["start_lsn"] = format_lsn(parse_lsn(lsn))
            out["start_wal"] = rest.rstrip(")")
        elif key == "CHECKPOINT LOCATION":
            out["checkpoint_lsn"] = value.strip()
        elif key == "START TIMELINE":
            out["start_timeline"] = int(value)
        elif key == "BACKUP FROM":
            out["backup_from"] = value.strip()
        elif key == "START TIME":
            out["start_time"] = value.strip()
        elif key == "LABEL":
            out["label"] = value.strip()
    return out
