"""What the repository says happened to a source: committed backups and runs
that failed.  This is the daemon's state (principle 1): a new backup host
with the same policies reads the same history and carries on.

Manifests never change once committed, so each is read once per process and
then only listed; run records are re-read when they change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from drorch.daemon.planner import Attempt, Backup
from drorch.errors import DrorchError, NotFoundError
from drorch.repo import layout
from drorch.repo.manifest import read_manifest
from drorch.repo.repository import Repository
from drorch.timefmt import parse_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupFacts:
    """A committed backup with what metrics and /status show."""

    backup: Backup
    finished: datetime
    stored_bytes: int
    size_bytes: int
    why: str


@dataclass
class SourceHistory:
    facts: list[BackupFacts] = field(default_factory=list)  # oldest first
    failures: list[Attempt] = field(default_factory=list)  # failed run records, oldest first
    failed_at: dict[str, datetime] = field(default_factory=dict)  # label -> when the run failed

    @property
    def backups(self) -> list[Backup]:
        return [f.backup for f in self.facts]


def backups_from_labels(repo: Repository, source: str) -> list[Backup]:
    """Committed backups from one listing: a label holds the start second and the
    type, which is all the planner needs (a job's look under the lock stays cheap)."""
    labels = sorted(layout.split_key(info.key)[1] for info in repo.storage.list(layout.manifests_prefix(source)))
    return [Backup(label, layout.label_type(label), layout.label_time(label))
            for label in labels if layout.is_label(label)]


class HistoryReader:
    def __init__(self) -> None:
        self._manifests: dict[tuple[str, str, str], BackupFacts] = {}
        self._runs: dict[tuple[str, str, str], tuple[float, Attempt | None, datetime | None]] = {}

    def read(self, repo: Repository, source: str) -> SourceHistory:
        history = SourceHistory()
        for info in repo.storage.list(layout.manifests_prefix(source)):
            label = layout.split_key(info.key)[1]
            if not layout.is_label(label):
                continue
            facts = self._manifest(repo, source, label)
            if facts is not None:
                history.facts.append(facts)
        history.facts.sort(key=lambda f: f.backup.label)
        committed = {f.backup.label for f in history.facts}
        for info in repo.storage.list(layout.runs_prefix(source)):
            label = layout.split_key(info.key)[1]
            if label in committed or not layout.is_label(label):
                continue
            attempt, failed = self._run(repo, source, label, info.mtime)
            if attempt is not None:
                history.failures.append(attempt)
                history.failed_at[label] = failed
        history.failures.sort(key=lambda a: a.started)
        return history

    def _manifest(self, repo: Repository, source: str, label: str) -> BackupFacts | None:
        key = (repo.id, source, label)
        if key not in self._manifests:
            try:
                manifest = read_manifest(repo, source, label)
            except NotFoundError:
                return None  # expired between list and read
            stats = manifest.stats
            started = parse_iso(manifest.started)
            self._manifests[key] = BackupFacts(
                Backup(label, manifest.type, started, manifest.data.get("host")),
                parse_iso(manifest.finished), int(stats.get("stored_bytes", 0)), int(stats.get("size_bytes", 0)),
                str(manifest.data.get("why", "")))
        return self._manifests[key]

    def _run(self, repo: Repository, source: str, label: str, mtime: float):
        """(Attempt, failed time) of a failed run record; (None, None) for others."""
        key = (repo.id, source, label)
        cached = self._runs.get(key)
        if cached is not None and cached[0] == mtime:
            return cached[1], cached[2]
        try:
            record = repo.get_json(layout.run_key(source, label))
        except NotFoundError:
            return None, None
        except DrorchError as exc:
            log.warning("%s: cannot read the run record %s: %s", source, label, exc.message)
            return None, None
        attempt, failed = None, None
        if record.get("status") == "failed" and record.get("operation", "backup") == "backup":
            started = parse_iso(record.get("started") or layout.label_time(label).isoformat())
            failed = parse_iso(record["failed"]) if record.get("failed") else started
            attempt = Attempt("backup", record.get("type"), started,
                              "aborted" if record.get("aborted") else "failed", label,
                              f"{record.get('phase')}: {record.get('error')}")
        self._runs[key] = (mtime, attempt, failed)
        return attempt, failed
