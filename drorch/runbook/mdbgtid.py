"""MariaDB positions for runbooks: GTID positions as numbers, the distance between two
GTID positions or two binlog coordinates, and the last GTID of a binlog dump.

Positions are compared as GTID sequence numbers (the highest of each
replication domain, summed): a distance is a number of transactions."""

from __future__ import annotations

import re

_GTID = re.compile(r"(\d+)-(\d+)-(\d+)")


def gtid_seq(text: str | None) -> int | None:
    """A GTID position (`0-1-42,1-2-7`) as one number: the highest seq_no of each domain, summed."""
    if text is None:
        return None
    domains: dict[int, int] = {}
    for domain, _, seq in _GTID.findall(text):
        domains[int(domain)] = max(domains.get(int(domain), 0), int(seq))
    return sum(domains.values())


def gtid_lag(ahead: str, behind: str) -> int:
    """Transactions in `ahead` that `behind` lacks (per domain, by seq_no)."""
    def per_domain(text: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for domain, _, seq in _GTID.findall(text or ""):
            out[int(domain)] = max(out.get(int(domain), 0), int(seq))
        return out
    have = per_domain(behind)
    return sum(max(0, seq - have.get(domain, 0)) for domain, seq in per_domain(ahead).items())


def binlog_distance(start: tuple[str, int], end: tuple[str, int], sizes: dict[str, int]) -> int | None:
    """Bytes of binlog from start (file, pos) to end (file, pos); None when a file size is unknown."""
    (file_a, pos_a), (file_b, pos_b) = start, end
    if file_a == file_b:
        return max(0, pos_b - pos_a)
    if file_a > file_b:
        return 0
    between = [name for name in sorted(sizes) if file_a < name < file_b]
    if file_a not in sizes:
        return None
    return sizes[file_a] - pos_a + sum(sizes[name] for name in between) + pos_b


_GTID_EVENT = re.compile(r"\bGTID (\d+-\d+-\d+)")
_GTID_LIST = re.compile(r"Gtid list \[([^\]]*)\]")


def last_gtid(dump: str) -> str | None:
    """The position after the last event group of a binlog, from mariadb-binlog's output:
    the binlog's Gtid list (state at its start) updated with each GTID event, per domain."""
    state: dict[str, str] = {}
    for line in dump.splitlines():
        if match := _GTID_LIST.search(line):
            for gtid in _GTID.finditer(match.group(1)):
                state[gtid.group(1)] = gtid.group(0)
        elif match := _GTID_EVENT.search(line):
            gtid = match.group(1)
            state[gtid.split("-")[0]] = gtid
    if not state:
        return None
    return ",".join(state[d] for d in sorted(state, key=int))


def holds_transactions(dump: str) -> bool:
    """Whether mariadb-binlog's output of a binlog shows a GTID event (a transaction), not only
    the Gtid list a new binlog starts with."""
    return _GTID_EVENT.search(dump) is not None
