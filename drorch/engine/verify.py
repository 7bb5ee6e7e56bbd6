"""`drorch verify`: prove that backups restore, and keep the evidence.

Levels, each including the ones before it:
- structure: manifests parse, every object a backup needs exists with the
  expected size (verify_objects.py);
- read: every byte it needs is downloaded and checked (verify_objects.py);
- restore: structure, then a restore into a sandbox with the source's checks
  (verify_restore.py).

Each verified backup gets a record in the repository (repo/verifications.py):
when, level, result, the time of each phase, the restore time (evidence for
the RTO), every check with its outcome, and drorch's version.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from drorch import __version__
from drorch.engine.progress import Progress
from drorch.engine.verify_archive import rule_for
from drorch.engine.verify_objects import ObjectChecker
from drorch.engine.verify_restore import sandbox_base, verify_by_restore
from drorch.errors import DrorchError, UsageError
from drorch.repo import layout, verifications
from drorch.repo.catalog import Catalog
from drorch.repo.repository import Repository
from drorch.sources.base import Check
from drorch.timefmt import iso, parse_iso, utcnow

log = logging.getLogger(__name__)
LEVELS = ("structure", "read", "restore")
MAX_PROBLEMS = 100  # per record; the count says how many there were


@dataclass
class VerifySettings:
    """A source's `verify:` and `objectives:` (the factory reads the policy)."""

    level: str = "read"
    host: str = "local"  # where restore verifications restore
    sandbox: str | None = None
    timeout: float = 3600.0
    assertions: list = field(default_factory=list)  # [(sql, expect, database)]
    rto: float | None = None  # seconds


@dataclass
class Verification:
    source: str
    label: str
    type: str | None
    level: str
    result: str = "passed"  # passed | failed | skipped (the backup was expired meanwhile)
    started: str = ""
    finished: str = ""
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    restore_seconds: float | None = None
    ready_seconds: float | None = None
    rto_seconds: float | None = None
    sandbox: dict | None = None
    record: str | None = None  # the key of its record in the repository
    record_error: str | None = None

    def record_data(self, repo: Repository) -> dict:
        data = asdict(self)
        for key in ("record", "record_error"):
            data.pop(key)
        data.update(format=1, drorch_version=__version__, host=socket.gethostname(), repository=repo.id)
        return data


def choose_labels(catalog: Catalog, source: str, level: str, label: str | None = None, latest: bool = False,
                  sample: int | None = None, rng: random.Random | None = None) -> list[str]:
    """--backup LABEL, --latest, --sample N (N at random); by default every backup
    for structure and read, the latest for restore."""
    if sum(bool(x) for x in (label, latest, sample)) > 1:
        raise UsageError("give one of --backup, --latest and --sample")
    labels = catalog.labels(source)
    if label:
        if label not in labels:
            raise UsageError(f"no backup {label} of source {source} in {catalog.repo.location}",
                             f"`drorch list --source {source}` shows the backups there are")
        return [label]
    if sample is not None:
        if sample < 1:
            raise UsageError("--sample takes a number of backups, at least 1")
        return sorted((rng or random.Random()).sample(labels, min(sample, len(labels))))
    if latest or level == "restore":
        return labels[-1:]
    return labels


def run_verify(repo: Repository, source: str, labels: list[str], level: str, settings: VerifySettings, *,
               make_source: Callable | None = None, host=None, progress: Progress | None = None,
               record: bool = True) -> list[Verification]:
    """Verify the backups `labels` of a source at `level`; make_source and host are
    needed for the restore level."""
    if level not in LEVELS:
        raise UsageError(f"unknown level {level!r}", "use structure, read or restore")
    catalog = Catalog(repo)
    progress = progress or Progress()
    kind = _kind(catalog, source, labels)
    checker = ObjectChecker(repo, catalog, source, rule_for(kind), progress=progress)
    done = []
    for label in labels:  # each recorded when done: an interrupted run keeps what it proved
        verification = _verify_one(repo, catalog, checker, source, label, level, settings, make_source, host,
                                   progress)
        checker.name_dependents()
        _conclude(repo, checker, verification, settings)
        if record and verification.result != "skipped":
            _record(repo, verification)
        done.append(verification)
    return done


def _kind(catalog: Catalog, source: str, labels: list[str]) -> str | None:
    for label in reversed(labels):
        try:
            return catalog.manifest(source, label).kind
        except DrorchError:
            continue
    return None


def _verify_one(repo, catalog, checker, source, label, level, settings, make_source, host,
                progress) -> Verification:
    started, clock = utcnow(), time.monotonic()
    verification = Verification(source, label, layout.label_type(label), level, started=iso(started))
    progress.phase = f"{level} {label}"
    try:
        manifest = catalog.manifest(source, label)
    except DrorchError as exc:
        checker.problem(layout.manifest_key(source, label), None, f"cannot be read: {exc.message}", label)
        return _timed(verification, clock)
    verification.type = manifest.type
    phase = time.monotonic()
    needs = checker.structure(manifest)
    verification.phases["structure"] = time.monotonic() - phase
    damage = _recorded_damage(manifest)
    if damage:
        verification.checks.append(damage)
    if level == "read" and needs is not None:
        phase = time.monotonic()
        nbytes = checker.read(manifest, needs)
        verification.phases["read"] = time.monotonic() - phase
        blobs = sum(len(b) for b in needs.blobs.values())
        archive = f" and {len(needs.archive)} archive files" if needs.archive else ""
        verification.checks.append(Check("read", "passed", f"{blobs} blocks{archive} decoded and checked "
                                         f"({nbytes} bytes read; what an earlier backup of this run checked "
                                         "is not read again)", verification.phases["read"]))
    if level == "restore":
        if checker.problems_of(label) or needs is None:
            verification.checks.append(Check("restore", "skipped", "the structure check failed: the backup "
                                             "cannot be restored whole"))
        else:
            _restore_level(repo, manifest, verification, settings, make_source, host, progress)
    return _timed(verification, clock)


def _recorded_damage(manifest) -> Check | None:
    """Damage the source had when the backup was taken (PostgreSQL: pages failing
    their checksum): the repository holds it faithfully, and a restore brings it back."""
    count = manifest.source_facts.get("page_error_count") or 0
    if not count:
        return None
    first = (manifest.source_facts.get("page_errors") or ["?"])[0]
    return Check("source damage", "failed", f"the backup recorded {count} page(s) failing their checksum in the "
                                            f"source when it was taken, e.g. {first}; a restore brings them back")


def _restore_level(repo, manifest, verification, settings, make_source, host, progress) -> None:
    if make_source is None or host is None:
        raise UsageError("the restore level needs the source and a host to restore on")
    outcome = verify_by_restore(repo, make_source(), manifest, host, base=sandbox_base(settings.sandbox, host.name),
                                assertions=settings.assertions, timeout=settings.timeout, progress=progress)
    verification.checks += outcome.checks
    verification.phases.update(outcome.phases)
    verification.restore_seconds = _round(outcome.restore_seconds)
    verification.ready_seconds = _round(outcome.ready_seconds)
    verification.sandbox = outcome.sandbox


def _timed(verification: Verification, clock: float) -> Verification:
    verification.finished = iso(utcnow())
    verification.seconds = round(time.monotonic() - clock, 3)
    return verification


def _conclude(repo: Repository, checker: ObjectChecker, verification: Verification,
              settings: VerifySettings) -> None:
    found = checker.problems_of(verification.label)
    problems = [p.message() for p in found]
    verification.problem_count = len(problems)
    verification.problems = problems[:MAX_PROBLEMS]
    broken = sum(p.level == "structure" for p in found)
    damaged = len(found) - broken
    structure = Check("structure", "failed" if broken else "passed",
                      f"{broken} object(s) missing or wrong" if broken else "every object the backup needs is there",
                      verification.phases.get("structure", 0.0))
    verification.checks.insert(0, structure)
    for check in verification.checks:
        if check.name == "read" and damaged:
            check.result, check.detail = "failed", f"{check.detail}; {damaged} damaged"
        check.seconds = round(check.seconds, 3)
    verification.phases = {k: round(v, 3) for k, v in verification.phases.items()}
    verification.rto_seconds = settings.rto
    failed = any(c.result == "failed" for c in verification.checks)
    verification.result = "failed" if failed else "passed"
    if failed and repo.storage.stat(layout.manifest_key(verification.source, verification.label)) is None \
            and verification.level != "restore":
        verification.result = "skipped"  # expired while it was verified: nothing to prove any more
        verification.problems = ["the backup was expired while it was verified"]


def _record(repo: Repository, verification: Verification) -> None:
    try:
        verification.record = verifications.write(
            repo, verification.source, verification.label, parse_iso(verification.finished), verification.level,
            verification.result, verification.record_data(repo))
    except DrorchError as exc:
        verification.record_error = exc.message
        log.error("could not record the verification of %s %s: %s", verification.source, verification.label,
                  exc.message)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
