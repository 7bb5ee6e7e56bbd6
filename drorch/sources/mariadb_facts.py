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


def parse_vertical(text: str) -> dict[str, str]:
    """`SHOW ... \\G` output (`  Key: value` lines) of the first row."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("*****") and out:
            break
        key, sep, value = line.strip().partition(": ")
        if sep or line.strip().endswith(":"):
            out[key.rstrip(":")] = value.strip()
    return out


_SLAVE_LINE = "MySQL slave binlog position:"
_SLAVE_GTID = re.compile(r"gtid_slave_pos '(?P<gtid>[^']*)'")
_SLAVE_FILE = re.compile(r"filename '(?P<file>[^']*)',? position '(?P<pos>\d+)'")


def replica_position(tool_log: str) -> dict:
    """What `mariabackup --slave-info` logged the replica had applied of its primary at the
    backup's consistency point: the GTID (gtid_slave_pos) and, without GTID replication, the
    primary's binlog file and position.  Empty when it logged nothing."""
    line = next((line for line in reversed(tool_log.splitlines()) if _SLAVE_LINE in line), None)
    if line is None:
        return {}
    text = line.split(_SLAVE_LINE, 1)[1].strip()
    facts: dict = {"replica_position": text[:500]}
    gtid = _SLAVE_GTID.search(text)
    if gtid:
        facts["primary_gtid"] = gtid["gtid"]
    position = _SLAVE_FILE.search(text)
    if position and position["file"]:
        facts.update(primary_binlog_file=position["file"], primary_binlog_position=int(position["pos"]))
    return facts
