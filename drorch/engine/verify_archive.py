"""What each source kind needs from its archive to make a backup consistent
(PostgreSQL: the WAL from the backup's start to its end; MariaDB: binlogs),
and how to check one archived file.  A source kind with an archive adds an
ArchiveRule to RULES; verify's structure and read levels use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from drorch.engine import wal
from drorch.sources import pg_wal
from drorch.sources.pg_walcheck import WalChecker


@dataclass(frozen=True)
class ArchiveRule:
    what: str  # for messages: "WAL"
    #: names of the archive files a backup needs, from its manifest's source facts
    required: Callable[[dict], list[str]]
    #: the repository key of one archive file: (source, name) -> key
    key: Callable[[str, str], str]
    #: a checker for one backup's archive files, fed in order: facts -> ((name, raw) -> problem or None)
    checker: Callable[[dict], Callable[[str, bytes], str | None]]


def _pg_required(facts: dict) -> list[str]:
    return list(facts.get("wal_required") or []) if facts.get("mode", "physical") == "physical" else []


def _pg_checker(facts: dict) -> Callable[[str, bytes], str | None]:
    """Each segment: of the backed-up cluster, whole, the one its name says, every
    page header and record CRC right (records across segments: fed in order)."""
    records = WalChecker()

    def check(name: str, raw: bytes) -> str | None:
        return _pg_header_problem(name, raw, facts) or records.feed(name, raw)
    return check


def _pg_header_problem(name: str, raw: bytes, facts: dict) -> str | None:
    header = pg_wal.segment_header(raw)
    size = facts.get("wal_segment_size")
    if header is None or (size and len(raw) != size):
        return f"is not a whole WAL segment ({len(raw)} bytes, expected {size})"
    sysid = str(facts.get("system_identifier") or "")
    if sysid and str(header["system_identifier"]) != sysid:
        return (f"belongs to the cluster with system identifier {header['system_identifier']}, "
                f"not to the backed-up cluster {sysid}")
    seg_size = header["seg_size"]
    expected = pg_wal.segment_number(name, seg_size) * seg_size
    if header["pageaddr"] != expected:  # (not the timeline: a new timeline's first segment starts as a copy)
        return f"holds the WAL at {pg_wal.format_lsn(header['pageaddr'])}, not the segment its name says"
    return None


RULES: dict[str, ArchiveRule] = {
    "postgres": ArchiveRule("WAL", _pg_required, wal.wal_key, _pg_checker),
}


def rule_for(kind: str) -> ArchiveRule | None:
    return RULES.get(kind)
