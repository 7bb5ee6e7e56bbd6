"""Objectives and early warnings, as findings, from what the repositories hold:

- rpo/<source> (I): the newest restorable point (the newest backup, or the
  newest archived WAL segment / binlog of a physical database) is older than
  `objectives.rpo`, or there is none;
- verification/<source> (I): a backup's newest verification failed;
- verify-age/<source> (III): the last passed restore verification is older
  than `verify.max_age` (or there is none);
- rto/<source> (III): the restore time that verification measured exceeds
  `objectives.rto`;
- change/<source> (III): the newest backup stored far more than usual, or
  nothing (anomaly.py);
- space/<path> (III): a posix repository's or the backup host's file system
  has less free space than `warnings.min_free`;
- repository/<name> (II): a repository cannot be read.

`objectives` and `verify` are read with getattr: they come with the
verification work and may be absent from older policies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from drorch.errors import DrorchError
from drorch.notify.anomaly import change_anomaly
from drorch.notify.facts import ARCHIVES, BackupFacts, RepoFacts, VerifyRef
from drorch.notify.findings import Finding, gone
from drorch.notify.text import duration, human_bytes
from drorch.policy.notify_models import parse_min_free
from drorch.timefmt import format_duration, iso
from drorch.units import fs_space


def objectives_of(model) -> tuple[timedelta | None, timedelta | None, timedelta | None]:
    """(rpo, rto, verify max_age) of a source model; None when not set."""
    objectives = getattr(model, "objectives", None)
    verify = getattr(model, "verify", None)
    return getattr(objectives, "rpo", None), getattr(objectives, "rto", None), getattr(verify, "max_age", None)


def has_archive(model) -> bool:
    return model.kind in ARCHIVES and getattr(model, "mode", "physical") == "physical"


@dataclass
class RecoveryPoint:
    at: datetime | None
    basis: str  # what it is: "backup L finished T", "WAL archived T"


def recovery_point(facts: RepoFacts, name: str, model, backups: list[BackupFacts],
                   now: datetime | None = None) -> RecoveryPoint:
    points = []
    if backups:
        newest = backups[-1]
        points.append((newest.finished, f"backup {newest.label} finished {iso(newest.finished)}"))
        if has_archive(model):  # the archive carries a backup forward only once there is a backup
            archived = facts.archive_newest(name, model.kind)
            if archived is not None and archived > newest.finished and (now is None or archived <= now):
                what = "WAL" if model.kind == "postgres" else "binlog"
                points.append((archived, f"{what} archived {iso(archived)} (after backup {newest.label})"))
    if not points:
        return RecoveryPoint(None, "no committed backup")
    return RecoveryPoint(*max(points, key=lambda p: p[0]))


class Evaluator:
    """Findings about the sources of a policy.  repos(name) gives a repository's
    RepoFacts (None when it does not exist yet; DrorchError when unreadable)."""

    def __init__(self, policy, repos: Callable[[str], RepoFacts | None], clock: Callable[[], datetime],
                 host_paths: list[str] | None = None):
        self.policy, self.repos, self.clock = policy, repos, clock
        self.host_paths = host_paths or []

    def source(self, name: str) -> list[Finding]:
        model = self.policy.sources[name]
        key, title = f"repository/{model.repository}", f"repository {model.repository} cannot be read"
        try:
            found = self._source(name, model, self.repos(model.repository))
        except DrorchError as exc:  # unreachable, or failing while it is read: nothing else can be judged
            return [Finding(key, "repository", None, title, exc.message)]
        return [gone(key, "repository", None, title, "it can be read again"), *found]

    def _source(self, name: str, model, facts: RepoFacts | None) -> list[Finding]:
        rpo, rto, max_age = objectives_of(model)
        now = self.clock()
        backups = [b for b in facts.backups(name) if b.finished <= now] if facts is not None else []
        point = recovery_point(facts, name, model, backups, now) if facts is not None else \
            RecoveryPoint(None, "no repository yet")
        refs = facts.verifications(name) if facts is not None else []
        labels = {b.label for b in backups}
        refs = [r for r in refs if r.label in labels and r.at <= now]  # of backups that (still) exist
        warnings = model.warnings
        return [rpo_finding(name, rpo, point, now), verification_finding(name, refs, facts),
                verify_age_finding(name, refs, max_age, now), rto_finding(name, refs, rto, facts),
                change_finding(name, backups, warnings.change_factor, warnings.zero_change)]

    def space(self) -> list[Finding]:
        """Free space of posix repositories and of the backup host's own directories."""
        wanted: dict[str, tuple[str, str]] = {}  # path -> (what, strictest min_free)
        for name, model in sorted(self.policy.sources.items()):
            for repo_name in [model.repository, *model.copy_to]:
                repo = self.policy.repositories.get(repo_name)
                if repo is not None and repo.type == "posix":
                    _stricter(wanted, repo.path, f"repository {repo_name}", model.warnings.min_free)
            spool = getattr(getattr(model, "archive", None), "spool", None)
            sandbox = getattr(getattr(model, "verify", None), "sandbox", None)
            for path, what in ((spool, f"WAL spool of {name}"), (sandbox, f"verification sandbox of {name}")):
                if path:
                    _stricter(wanted, path, what, model.warnings.min_free)
        default = min((m.warnings.min_free for m in self.policy.sources.values()), key=_strictness,
                      default="10%")
        for path in self.host_paths:
            _stricter(wanted, path, "the backup host's state directory", default)
        return [space_finding(path, what, limit) for path, (what, limit) in sorted(wanted.items())]


def _strictness(limit: str) -> tuple[float, int]:
    percent, nbytes = parse_min_free(limit)
    return (-(percent or 0.0), -(nbytes or 0))


def _stricter(wanted: dict, path: str, what: str, limit: str) -> None:
    if path not in wanted or _strictness(limit) < _strictness(wanted[path][1]):
        wanted[path] = (what, limit)


def rpo_finding(name: str, rpo: timedelta | None, point: RecoveryPoint, now: datetime) -> Finding:
    key, title = f"rpo/{name}", f"{name} has no restorable backup within its RPO"
    if rpo is None:
        return gone(key, "rpo", name, title, "no objectives.rpo")
    title += f" of {format_duration(rpo)}"
    facts = {"rpo_seconds": rpo.total_seconds(), "recovery_point": iso(point.at) if point.at else None}
    if point.at is None:
        return Finding(key, "rpo", name, title, f"{point.basis}: nothing of {name} can be restored", facts=facts)
    age = now - point.at
    facts["age_seconds"] = round(age.total_seconds(), 1)
    if age > rpo:
        return Finding(key, "rpo", name, title, f"the newest recovery point is {format_duration(age)} old: "
                       f"{point.basis}; data written since then would be lost", facts=facts)
    return gone(key, "rpo", name, title, f"the newest recovery point is {format_duration(age)} old ({point.basis})")


def _newest_per_label(refs: list[VerifyRef]) -> dict[str, VerifyRef]:
    last: dict[str, VerifyRef] = {}
    for ref in refs:  # oldest first: the newest wins
        last[ref.label] = ref
    return last


def verification_finding(name: str, refs: list[VerifyRef], facts: RepoFacts | None) -> Finding:
    key, title = f"verification/{name}", f"a verification of {name} failed"
    failed = sorted((r for r in _newest_per_label(refs).values() if r.result == "failed"), key=lambda r: r.at)
    if not failed:
        return gone(key, "verification", name, title, "the last verification of every verified backup passed")
    newest = failed[-1]
    problems = (facts.verification_record(newest).get("problems") or [])[:3] if facts else []
    detail = f"{len(failed)} backup(s) failed their last verification: " + ", ".join(
        f"{r.label} ({r.level}, {iso(r.at)})" for r in failed[:5])
    if problems:
        detail += "; " + "; ".join(str(p) for p in problems)
    return Finding(key, "verification", name, f"{newest.level} verification of {name} backup {newest.label} failed",
                   detail, facts={"labels": [r.label for r in failed]})


def _last_passed_restore(refs: list[VerifyRef]) -> VerifyRef | None:
    passed = [r for r in refs if r.level == "restore" and r.result == "passed"]
    return passed[-1] if passed else None


def verify_age_finding(name: str, refs: list[VerifyRef], max_age: timedelta | None, now: datetime) -> Finding:
    key, title = f"verify-age/{name}", f"{name} has no recent restore verification"
    if max_age is None:
        return gone(key, "verify-age", name, title, "no verify.max_age")
    last = _last_passed_restore(refs)
    if last is None:
        return Finding(key, "verify-age", name, title, f"no backup of {name} has passed a restore verification; "
                       f"the policy asks for one within {format_duration(max_age)}")
    age = now - last.at
    if age > max_age:
        return Finding(key, "verify-age", name, title, f"the last passed restore verification ({last.label}, "
                       f"{iso(last.at)}) is {format_duration(age)} old; the policy asks for one within "
                       f"{format_duration(max_age)}")
    return gone(key, "verify-age", name, title, f"restore verification {format_duration(age)} old")


def rto_finding(name: str, refs: list[VerifyRef], rto: timedelta | None, facts: RepoFacts | None) -> Finding:
    key, title = f"rto/{name}", f"restoring {name} takes longer than its RTO"
    last = _last_passed_restore(refs)
    if rto is None or last is None or facts is None:
        return gone(key, "rto", name, title, "nothing to compare")
    record = facts.verification_record(last)
    seconds = record.get("ready_seconds") or record.get("restore_seconds")
    if seconds is None or seconds <= rto.total_seconds():
        return gone(key, "rto", name, title, f"the last restore verification took {duration(seconds)}")
    return Finding(key, "rto", name, f"{title} of {format_duration(rto)}",
                   f"the restore verification of {last.label} ({iso(last.at)}) measured {duration(seconds)} until "
                   "the restored copy was ready", facts={"measured_seconds": seconds,
                                                        "rto_seconds": rto.total_seconds()})


def change_finding(name: str, backups: list[BackupFacts], factor: float, zero_change: bool) -> Finding:
    key, title = f"change/{name}", f"abnormal change volume in {name}"
    anomaly = change_anomaly(backups, factor, zero_change)
    if anomaly is None:
        newest = backups[-1].label if backups else None
        return gone(key, "change", name, title, f"backup {newest} stored a usual amount" if newest else "")
    kind = "mass change" if anomaly.kind == "mass-change" else "no change"
    return Finding(key, "change", name, f"{kind} in {name}: backup {anomaly.label}", anomaly.describe(name),
                   facts={"anomaly": anomaly.kind, "label": anomaly.label, "changed_bytes": anomaly.changed_bytes,
                          "median_bytes": anomaly.median_bytes, "compared": anomaly.compared})


def space_finding(path: str, what: str, limit: str) -> Finding:
    key, title = f"space/{path}", f"low free space for {what}"
    try:
        total, free = fs_space(path)
    except OSError as exc:
        return Finding(key, "space", None, f"cannot see the free space for {what}", f"{path}: {exc.strerror}")
    share = 100.0 * free / total if total else 100.0
    said = f"{human_bytes(free)} free of {human_bytes(total)} ({share:.1f}%) on the file system of {path}"
    percent, nbytes = parse_min_free(limit)
    low = (percent is not None and share < percent) or (nbytes is not None and free < nbytes)
    facts = {"path": str(Path(path)), "free_bytes": free, "total_bytes": total, "min_free": limit}
    if low:
        return Finding(key, "space", None, title, f"{said}, below {limit}: expire old backups, clean up, or grow "
                       "the file system before it fills", facts=facts)
    return Finding(key, "space", None, title, said, active=False, facts=facts)
