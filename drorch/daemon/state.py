"""What the daemon knows about each source, for /metrics and /status.

Backups, their sizes and times and failed runs come from the repository
(history.py), so the figures are right after a restart or on a new host;
verification results, job counters and the daemon's own decisions are
what this process saw.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drorch.daemon.history import SourceHistory
from drorch.timefmt import iso


@dataclass
class SourceState:
    name: str
    kind: str
    repository: str
    host: str
    schedule: dict[str, str] = field(default_factory=dict)
    backups: dict[str, int] = field(default_factory=dict)  # committed backups by type
    last_backup: dict | None = None
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_failure_error: str | None = None
    last_verify: datetime | None = None
    last_verify_ok: bool | None = None
    archive_last: datetime | None = None  # newest archived WAL (PostgreSQL physical)
    rpo: timedelta | None = None
    next_runs: dict[str, datetime] = field(default_factory=dict)
    decision: str | None = None  # the latest decision's reason
    error: str | None = None  # the repository could not be read

    def take_history(self, history: SourceHistory) -> None:
        self.backups = dict(Counter(f.backup.type for f in history.facts))
        self.error = None
        if history.facts:
            last = history.facts[-1]
            self.last_success = last.finished
            self.last_backup = {"label": last.backup.label, "type": last.backup.type,
                                "started": iso(last.backup.started), "finished": iso(last.finished),
                                "seconds": round((last.finished - last.backup.started).total_seconds(), 3),
                                "stored_bytes": last.stored_bytes, "size_bytes": last.size_bytes,
                                "host": last.backup.host, "why": last.why}
        else:
            self.last_success, self.last_backup = None, None
        for attempt in history.failures:
            failed = history.failed_at.get(attempt.label or "", attempt.started)
            if attempt.result == "failed" and (self.last_failure is None or failed > self.last_failure):
                self.last_failure, self.last_failure_error = failed, attempt.error

    def recovery_point(self) -> datetime | None:
        points = [p for p in (self.last_success, self.archive_last) if p is not None]
        return max(points, default=None)

    def as_json(self, now: datetime) -> dict:
        point = self.recovery_point()
        return {
            "kind": self.kind, "repository": self.repository, "host": self.host, "schedule": self.schedule,
            "backups": self.backups, "last_backup": self.last_backup,
            "last_success": _iso(self.last_success), "last_failure": _iso(self.last_failure),
            "last_failure_error": self.last_failure_error,
            "last_verify": _iso(self.last_verify), "last_verify_ok": self.last_verify_ok,
            "archive_last": _iso(self.archive_last),
            "rpo_remaining_seconds": None if self.rpo is None or point is None else
            round((self.rpo - (now - point)).total_seconds(), 1),
            "next_runs": {job: iso(t) for job, t in sorted(self.next_runs.items())},
            "decision": self.decision, "error": self.error,
        }


@dataclass
class DaemonState:
    started: datetime
    sources: dict[str, SourceState] = field(default_factory=dict)
    jobs: Counter = field(default_factory=Counter)  # (job, type, result) -> count
    reloads: Counter = field(default_factory=Counter)  # ok / failed
    last_reload_ok: bool = True
    policy_files: list[str] = field(default_factory=list)
    generation: int = 0
    last_tick: float = 0.0  # time.monotonic() of the loop's latest pass
    running: list[dict] = field(default_factory=list)
    problems_open: dict = field(default_factory=dict)  # severity -> open problems (alerts.py)
    notices: Counter = field(default_factory=Counter)  # (channel, ok|failed) -> deliveries
    lock: threading.RLock = field(default_factory=threading.RLock)


def _iso(moment: datetime | None) -> str | None:
    return iso(moment) if moment else None
