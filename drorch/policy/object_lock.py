"""How long an S3 repository's Object Lock retains each object, derived from the policy.

A backup's objects must stay locked as long as retention keeps the backup,
and a full's objects as long as the incrs and diffs built on it: the period
is the longest a source's retention keeps a backup (max_age, or `full: N`
fulls `full_every` apart), plus one chain (`full_every`), plus a margin.
`object_lock.period` overrides the derivation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from drorch.timefmt import format_duration


@dataclass(frozen=True)
class LockPeriod:
    period: timedelta
    why: str  # how it was derived, for `drorch policy check`


def sources_of(policy, repository: str) -> list[str]:
    """Sources whose backups (or copies) go to this repository."""
    return sorted(name for name, source in policy.sources.items()
                  if source.repository == repository or repository in (getattr(source, "copy_to", None) or ()))


def lock_period(policy, repository: str) -> LockPeriod:
    """The period for a repository with object_lock; ValueError says why it cannot be derived."""
    lock = policy.repositories[repository].object_lock
    if lock.period is not None:
        return LockPeriod(lock.period, f"{format_duration(lock.period)} (object_lock.period)")
    sources = sources_of(policy, repository)
    if not sources:
        raise ValueError("no source uses this repository, so the lock period cannot be derived from a "
                         "retention: set object_lock.period")
    longest, because = timedelta(0), ""
    for name in sources:
        kept, why = _kept_for(name, policy.sources[name].retention, lock.full_every)
        if kept > longest:
            longest, because = kept, why
    chain = lock.full_every or timedelta(0)
    period = longest + chain + lock.margin
    parts = [because] + ([f"{format_duration(chain)} (one chain: full_every)"] if chain else []) + \
        [f"{format_duration(lock.margin)} (margin)"]
    return LockPeriod(period, f"{format_duration(period)} = " + " + ".join(parts))


def _kept_for(name: str, retention, full_every: timedelta | None) -> tuple[timedelta, str]:
    """How long the source's retention keeps a backup at most, and how that was found."""
    options = []
    if retention.max_age is not None:
        options.append((retention.max_age, f"{format_duration(retention.max_age)} (max_age of {name})"))
    if retention.full is not None and full_every is not None:
        kept = retention.full * full_every
        options.append((kept, f"{format_duration(kept)} ({retention.full} fulls of {name}, full_every "
                              f"{format_duration(full_every)})"))
    if options:
        return max(options, key=lambda option: option[0])
    if retention.full is None and retention.diff is None:
        raise ValueError(f"source {name} has no retention rules (it keeps every backup forever), so no lock "
                         "period can be derived: set object_lock.period, or a retention for the source")
    raise ValueError(f"source {name} keeps backups by count only: set object_lock.full_every (how often a "
                     "full runs) so the lock period can be derived, or set object_lock.period")


def object_lock_problems(policy) -> list[str]:
    """Policy problems (FILE:LINE:COL: key: message) of repositories whose lock period cannot be derived."""
    problems = []
    for name, repository in sorted(policy.repositories.items()):
        if getattr(repository, "object_lock", None) is None:
            continue
        try:
            lock_period(policy, name)
        except ValueError as exc:
            problems.append(f"{policy.where('repositories', name, 'object_lock')}: "
                            f"repositories.{name}.object_lock: {exc}")
    return problems
