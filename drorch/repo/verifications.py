"""Verification records: the evidence that a backup was verified (FORMAT.md,
"Verification records").  One small record per verification, under
`verify/<source>/<label>/<finished>-<level>-<result>`: when, level and result
are in the key, so the last verification of every backup is known from one
listing; the record itself (phases, checks, restore time) is read on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from drorch.repo import layout
from drorch.repo.repository import Repository
from drorch.storage.base import AlreadyExists
from drorch.timefmt import iso, utcnow


@dataclass(frozen=True)
class RecordRef:
    source: str
    label: str
    at: datetime  # when the verification finished (to the second)
    level: str
    result: str  # passed | failed
    key: str

    def summary(self, now: datetime | None = None) -> dict:
        """What `list --json` shows as a backup's `verification`."""
        now = now or utcnow()
        return {"level": self.level, "result": self.result, "at": iso(self.at),
                "age_seconds": max(0, int((now - self.at).total_seconds()))}


def write(repo: Repository, source: str, label: str, finished: datetime, level: str, result: str,
          record: dict) -> str:
    """Store a record (a blob in an encrypted repository); returns its key.  Keys
    order a backup's records by their second: a record finishing in the second of
    an earlier one (or before it: clocks of two hosts) takes the next second, so
    the newest key is the newest verification."""
    earlier = [ref.at for ref in refs(repo, source, label)]
    if earlier and max(earlier) >= finished.replace(microsecond=0):
        finished = max(earlier) + timedelta(seconds=1)
    for bump in range(60):
        key = layout.verify_key(source, label, finished + timedelta(seconds=bump), level, result)
        try:
            repo.put_json(key, record, if_absent=True)
            return key
        except AlreadyExists:
            continue
    raise AlreadyExists(f"no free verification record key for {source} {label} near {iso(finished)}")


def refs(repo: Repository, source: str, label: str | None = None) -> list[RecordRef]:
    """Every record of a source (or of one backup), oldest first."""
    out = []
    for info in repo.storage.list(layout.verify_prefix(source, label)):
        parsed = layout.parse_verify_key(info.key)
        if parsed is not None:
            out.append(RecordRef(*parsed, key=info.key))
    out.sort(key=lambda r: (r.at, r.key))
    return out


def last_by_label(repo: Repository, source: str) -> dict[str, RecordRef]:
    """The newest record of each backup of a source."""
    last: dict[str, RecordRef] = {}
    for ref in refs(repo, source):
        last[ref.label] = ref  # oldest first: the newest wins
    return last


def last_passed(repo: Repository, source: str, level: str, labels: set[str] | None = None) -> RecordRef | None:
    """The newest passed record of a level (of the given backups only, when labels is set)."""
    found = [r for r in refs(repo, source) if r.level == level and r.result == "passed"
             and (labels is None or r.label in labels)]
    return found[-1] if found else None


def read(repo: Repository, ref: RecordRef) -> dict:
    return repo.get_json(ref.key)


def delete_all(repo: Repository, source: str, label: str) -> None:
    """Remove the records of a backup that is gone (expire)."""
    for info in list(repo.storage.list(layout.verify_prefix(source, label))):
        repo.storage.delete(info.key)
