"""What a repository says happened, as notify needs it: committed backups with
their figures, failed runs (backups and copies), verification records,
archived WAL / binlogs, runbook runs.  Read only; manifests are cached (they
never change once committed)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from drorch.errors import DrorchError, NotFoundError
from drorch.repo import layout
from drorch.repo.manifest import read_manifest
from drorch.repo.repository import Repository
from drorch.timefmt import parse_iso

log = logging.getLogger(__name__)
ARCHIVES = {"postgres": "wal", "mariadb": "binlog"}  # key prefix of each kind's log archive
_VERIFY_NAME = re.compile(r"^(\d{8}T\d{6}Z)-(structure|read|restore)-(passed|failed)$")


@dataclass(frozen=True)
class BackupFacts:
    source: str
    label: str
    type: str
    started: datetime
    finished: datetime
    size_bytes: int
    stored_bytes: int
    changed_bytes: int  # what this backup stored of new or changed data (packs, without its entries)
    files: int
    why: str
    host: str | None
    parent: str | None
    chain: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    copied_from: str | None = None  # a copy's source repository id
    copied_at: datetime | None = None  # when the copy was made

    @property
    def seconds(self) -> float:
        return round((self.finished - self.started).total_seconds(), 3)


@dataclass(frozen=True)
class FailedRun:
    source: str
    label: str
    operation: str  # backup | copy
    type: str | None
    started: datetime
    failed: datetime
    phase: str | None
    error: str
    aborted: bool
    host: str | None
    repository: str = ""  # the policy name of the repository it was recorded in


@dataclass(frozen=True)
class VerifyRef:
    source: str
    label: str
    at: datetime
    level: str
    result: str  # passed | failed
    key: str


@dataclass
class RepoFacts:
    """One repository's facts (name: its policy name)."""

    repo: Repository
    name: str
    _manifests: dict = field(default_factory=dict)

    def backups(self, source: str) -> list[BackupFacts]:
        """Committed backups, oldest first."""
        out = []
        for info in self.repo.storage.list(layout.manifests_prefix(source)):
            label = layout.split_key(info.key)[1]
            if layout.is_label(label):
                facts = self._backup(source, label)
                if facts is not None:
                    out.append(facts)
        return sorted(out, key=lambda b: b.label)

    def _backup(self, source: str, label: str) -> BackupFacts | None:
        key = (source, label)
        if key not in self._manifests:
            try:
                data = read_manifest(self.repo, source, label).data
            except NotFoundError:
                return None  # expired between list and read
            self._manifests[key] = backup_facts(data)
        return self._manifests[key]

    def failed_runs(self, source: str) -> list[FailedRun]:
        """Failed run records (a failed backup, or a failed copy into this repository), oldest first."""
        committed = {layout.split_key(i.key)[1] for i in self.repo.storage.list(layout.manifests_prefix(source))}
        out = []
        for info in self.repo.storage.list(layout.runs_prefix(source)):
            label = layout.split_key(info.key)[1]
            if label in committed or not layout.is_label(label):
                continue
            try:
                record = self.repo.get_json(info.key)
            except NotFoundError:
                continue
            except DrorchError as exc:
                log.warning("%s: cannot read the run record %s: %s", source, label, exc.message)
                continue
            if record.get("status") == "failed":
                out.append(failed_run(source, label, record, self.name))
        return sorted(out, key=lambda r: r.failed)

    def verifications(self, source: str) -> list[VerifyRef]:
        """Verification records (FORMAT.md, "Verification records"), oldest first."""
        out = []
        for info in self.repo.storage.list(f"verify/{source}/"):
            parts = info.key.split("/")
            match = _VERIFY_NAME.match(parts[-1]) if len(parts) == 4 else None
            if match and layout.is_label(parts[2]):
                when = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
                out.append(VerifyRef(source, parts[2], when, match.group(2), match.group(3), info.key))
        return sorted(out, key=lambda r: (r.at, r.key))

    def verification_record(self, ref: VerifyRef) -> dict:
        try:
            return self.repo.get_json(ref.key)
        except DrorchError as exc:
            log.warning("%s: cannot read the verification record %s: %s", ref.source, ref.key, exc.message)
            return {}

    def archive_newest(self, source: str, kind: str) -> datetime | None:
        """When the newest archived WAL segment (PostgreSQL) or binlog (MariaDB) reached the repository."""
        prefix = ARCHIVES.get(kind)
        if prefix is None:
            return None
        newest = max((info.mtime for info in self.repo.storage.list(f"{prefix}/{source}/")
                      if not info.key.endswith(("archive.info", ".history"))), default=None)
        return datetime.fromtimestamp(newest, timezone.utc) if newest is not None else None

    def runbook_runs(self) -> list[dict]:
        """Journals of runbook runs kept in this repository (`runbooks/runs/<run>`)."""
        out = []
        for info in self.repo.storage.list("runbooks/runs/"):
            try:
                data = self.repo.get_json(info.key)
            except DrorchError:
                continue
            if isinstance(data, dict) and data.get("run"):
                out.append(data)
        return out


def backup_facts(data: dict) -> BackupFacts:
    stats = data.get("stats") or {}
    stored = int(stats.get("stored_bytes", 0))
    packs = data.get("packs")
    if isinstance(packs, list) and all(isinstance(p, dict) and "size" in p for p in packs):
        changed = sum(int(p["size"]) for p in packs)
    else:
        changed = max(0, stored - int((data.get("entries") or {}).get("size", 0)))
    return BackupFacts(
        data["source"], data["label"], data["type"], parse_iso(data["started"]), parse_iso(data["finished"]),
        int(stats.get("size_bytes", 0)), stored, changed, int(stats.get("files", 0)), str(data.get("why", "")),
        data.get("host"), data.get("parent"), tuple(data.get("chain") or ()), tuple(data.get("warnings") or ()),
        (data.get("copy") or {}).get("from"),
        parse_iso(data["copy"]["copied"]) if (data.get("copy") or {}).get("copied") else None)


def failed_run(source: str, label: str, record: dict, repository: str = "") -> FailedRun:
    started = parse_iso(record["started"]) if record.get("started") else layout.label_time(label)
    failed = parse_iso(record["failed"]) if record.get("failed") else started
    return FailedRun(source, label, record.get("operation", "backup"), record.get("type"), started, failed,
                     record.get("phase"), str(record.get("error") or "failed"), bool(record.get("aborted")),
                     record.get("host"), repository)


class RepoCache:
    """RepoFacts by repository name, opened once: `opener(name)` opens a repository
    (the factory's open_repository).  None for a repository not created yet."""

    def __init__(self, opener):
        self.opener = opener
        self._facts: dict[str, RepoFacts | None] = {}

    def __call__(self, name: str) -> RepoFacts | None:
        if name not in self._facts:
            from drorch.errors import RepositoryError

            try:
                self._facts[name] = RepoFacts(self.opener(name), name)
            except RepositoryError as exc:
                if not exc.message.startswith("no repository at"):
                    raise
                return None  # not cached: the first backup creates it
        return self._facts[name]

    def forget(self, name: str) -> None:
        self._facts.pop(name, None)
