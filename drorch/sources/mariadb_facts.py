"""What mariabackup and MariaDB say, parsed (pure functions)."""

from __future__ import annotations

import re

BINLOG_NAME = re.compile(r"^(?P<base>.+)\.(?P<seq>\d{6,})$")
_BINLOG_POS = re.compile(r"filename '(?P<file>[^']*)', position '(?P<pos>\d+)'"
                         r"(?:, GTID of the last change '(?P<gtid>[^']*)')?")


def parse_key_values(text: str) -> dict[str, str]:
    """xtrabackup_checkpoints / xtrabackup_info: `key = value` lines."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def backup_facts(checkpoints: str, info: str) -> dict:
    """The facts a manifest records about one mariabackup run."""
    points = parse_key_values(checkpoints)
    details = parse_key_values(info)
    facts = {"backup_type": points.get("backup_type"), "from_lsn": int(points.get("from_lsn", 0)),
             "to_lsn": int(points.get("to_lsn", 0)), "last_lsn": int(points.get("last_lsn", 0)),
             "server_version": details.get("server_version"), "tool_version": details.get("tool_version"),
             "start_time": details.get("start_time"), "end_time": details.get("end_time")}
    match = _BINLOG_POS.search(details.get("binlog_pos", ""))
    if match:
        facts.update(binlog_file=match["file"], binlog_position=int(match["pos"]), gtid=match["gtid"] or "")
    return facts


def binlog_sequence(name: str) -> int | None:
    match = BINLOG_NAME.match(name)
    return int(match["seq"]) if match else None


def parse_position(text: str) -> tuple[str, int]:
    """--position FILE:POS."""
    name, sep, pos = text.rpartition(":")
    if not sep or not name or not pos.isdigit():
        raise ValueError(f"{text!r} is not FILE:POS (e.g. binlog.000042:1234)")
    return name, int(pos)
