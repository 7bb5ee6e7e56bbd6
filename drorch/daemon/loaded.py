"""The policies in force: validated, copied for the jobs, turned into planner rules.

The copy (`<state_dir>/policies/<generation>/`) is what every job reads, so
an edit on disk changes nothing until SIGHUP has validated it, and a job
started before a reload finishes with the policies it started with.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from drorch.daemon import planner
from drorch.daemon.planner import Decision, Rules
from drorch.errors import DrorchError, RepositoryError
from drorch.policy import Policy, load_policy
from drorch.policy.loader import ORIGIN_FILE, policy_files
from drorch.timefmt import iso, utcnow

log = logging.getLogger("drorch.daemon")
ARCHIVE_LOOK_EVERY = 60.0  # seconds between listings of a source's WAL archive
ARCHIVES = {"postgres": "wal", "mariadb": "binlog"}  # key prefix of each kind's log archive


@dataclass
class Loaded:
    policy: Policy
    generation: int
    snapshot: str  # what jobs get as --policy
    snapshot_dir: Path
    rules: dict[str, Rules]
    loaded_at: datetime
    _repos: dict = field(default_factory=dict)
    _archive_looked: dict = field(default_factory=dict)

    def repository(self, name: str):
        """The opened repository (cached: encrypted ones cost a key derivation), None before its first backup."""
        from drorch.factory import open_repository

        if name not in self._repos:
            try:
                self._repos[name] = open_repository(self.policy, name)
            except RepositoryError as exc:
                if exc.message.startswith("no repository at"):
                    return None
                raise
        return self._repos[name]

    def archive_last(self, repo, source: str, model, now: datetime) -> datetime | None:
        """When the newest archived WAL (PostgreSQL) or binlog (MariaDB) of a physical source reached
        the repository."""
        prefix = ARCHIVES.get(model.kind)
        if prefix is None or getattr(model, "mode", "physical") != "physical":
            return None
        if time.monotonic() - self._archive_looked.get(source, -1e9) < ARCHIVE_LOOK_EVERY:
            return None
        self._archive_looked[source] = time.monotonic()
        newest = max((info.mtime for info in repo.storage.list(f"{prefix}/{source}/")
                      if not info.key.endswith("archive.info")), default=None)
        return datetime.fromtimestamp(newest, now.tzinfo) if newest is not None else None

    def job_spec(self, decision: Decision, log_format: str) -> dict:
        spec = {"job": decision.job, "source": decision.source, "policy": self.snapshot,
                "slot": iso(decision.slot), "reason": decision.cause, "log_format": log_format}
        if decision.job == "backup":
            cron = self.rules[decision.source].crons[decision.requested]
            spec["requested"] = decision.requested
            spec["tolerance"] = planner.slot_tolerance(cron, decision.slot).total_seconds()
        return spec

    def schedule_text(self, name: str) -> dict[str, str]:
        schedule = getattr(self.policy.sources[name], "schedule", None)
        if schedule is None:
            return {}
        out = {"timezone": schedule.timezone}
        for job in ("full", "diff", "incr", "verify", "expire", "copy"):
            value = schedule.copy_ if job == "copy" else getattr(schedule, job)
            if value:
                out[job] = value
        return out

    def forget(self, keep: set[str]) -> None:
        """Remove copies of earlier generations that no running job uses."""
        root = self.snapshot_dir.parent
        for entry in root.iterdir() if root.is_dir() else []:
            if str(entry) not in keep and not any(k.startswith(str(entry) + "/") for k in keep):
                shutil.rmtree(entry, ignore_errors=True)


def load(policy_path: Path, generation: int) -> Loaded:
    """Validate the policies and copy exactly what was validated; PolicyError when invalid."""
    for _ in range(5):
        before = {f: f.read_bytes() for f in policy_files(policy_path)}
        policy = load_policy(policy_path)
        after = {f: f.read_bytes() for f in policy.files}
        if before == after:
            break
        time.sleep(0.1)  # edited while we read it: read again
    else:
        raise DrorchError(f"{policy_path} keeps changing while it is read", "reload once the edit is done")
    snapshot_dir = _snapshot(policy, after, generation)
    snapshot = str(snapshot_dir) if policy_path.is_dir() else str(snapshot_dir / policy_path.name)
    rules = {}
    for name, model in policy.sources.items():
        source_rules = planner.rules_for(model, policy.daemon.catchup_grace)
        if source_rules is not None:
            rules[name] = source_rules
    loaded = Loaded(policy, generation, snapshot, snapshot_dir, rules, utcnow())
    if generation == 1:
        loaded.forget(keep={str(snapshot_dir)})  # copies of earlier runs of the daemon
    return loaded


def _snapshot(policy: Policy, contents: dict[Path, bytes], generation: int) -> Path:
    root = Path(policy.daemon.state_dir) / "policies"
    target = root / f"{generation:05d}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        target.mkdir(mode=0o700)
        for path, data in contents.items():
            (target / path.name).write_bytes(data)
        (target / ORIGIN_FILE).write_text(str(policy.base_dir.resolve()))  # relative hook paths point there
    except OSError as exc:
        raise DrorchError(f"cannot write the daemon's state directory {root}: {exc.strerror}",
                          "create it for the user the daemon runs as (e.g. install -d -o drorch "
                          "/var/lib/drorch), or set daemon.state_dir") from None
    return target
