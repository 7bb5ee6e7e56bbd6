"""What to run now for one source, and why: a pure function of the schedules,
the history the repository holds, what this daemon tried, and the clock.

- A **slot** is a fire time of a schedule.  The slot that matters is the
  latest one not after now; it is done when a backup at least as strong
  (full > diff > incr) started at or after it.  So after downtime a missed
  backup runs once, not once per missed slot, and only within catchup_grace.
- Slots of several types due together (full and incr at 01:00) run once, as
  the strongest type.
- Upgrade rules: an incr or diff with no full to build on, or whose last full
  is older than max_full_interval, runs as a full; an incr whose last diff or
  full is older than max_diff_interval runs as a diff.
- A slot whose run failed is not retried (the next slot comes); a run that
  was aborted (shutdown) is; a run refused by a lock held elsewhere is tried
  again after LOCKED_RETRY and then finds the slot done, or not.

Every decision carries one sentence saying why, for the log and /status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drorch.daemon.schedule import Cron
from drorch.timefmt import format_duration

STRENGTH = {"incr": 1, "diff": 2, "full": 3}
BACKUP_TYPES = ("full", "diff", "incr")
OTHER_JOBS = ("verify", "expire", "copy", "drill")
SLOT_TOLERANCE = timedelta(seconds=10)  # a run this much before its slot (clocks of two hosts) counts
LOCKED_RETRY = timedelta(seconds=60)
LATE = timedelta(minutes=2)


@dataclass(frozen=True)
class Backup:
    """A committed backup, as far as planning cares."""

    label: str
    type: str
    started: datetime
    host: str | None = None


@dataclass(frozen=True)
class Attempt:
    """A run that did not commit a backup (from the repository's failed run
    records, or this daemon's own jobs).  result: failed, aborted, locked,
    skipped, ok (ok only for verify, expire and copy)."""

    job: str
    type: str | None
    started: datetime
    result: str
    label: str | None = None
    error: str | None = None


@dataclass
class History:
    backups: list[Backup] = field(default_factory=list)  # oldest first
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class Rules:
    """One source's schedule, as the planner reads it (built from the policy in main.py)."""

    crons: dict[str, Cron]  # full, diff, incr, verify, expire, copy: those given as cron expressions
    catchup_grace: timedelta
    max_full_interval: timedelta | None = None
    max_diff_interval: timedelta | None = None
    full_only: bool = False


@dataclass(frozen=True)
class Decision:
    source: str
    job: str  # backup | verify | expire | copy
    slot: datetime
    cause: str  # why this job, at this slot
    run: bool = True
    type: str | None = None  # backup: the type to run
    requested: str | None = None  # backup: the strongest type whose slot is due
    upgrade: str | None = None  # backup: why type differs from requested

    @property
    def reason(self) -> str:
        return f"{self.cause}; {self.upgrade}" if self.upgrade else self.cause


def decide(source: str, rules: Rules, history: History, now: datetime,
           since: datetime | None = None) -> list[Decision]:
    """Decisions for one source: those with run=True are due now; the others
    explain a slot that is not run (missed too long ago, failed)."""
    out = _backup_decisions(source, rules, history, now, since)
    for job in OTHER_JOBS:
        if job in rules.crons:
            decision = _other_decision(source, job, rules, history, now)
            if decision is not None:
                out.append(decision)
    return out


def _backup_decisions(source, rules, history, now, since) -> list[Decision]:
    due: list[tuple[str, datetime]] = []
    notes: list[Decision] = []
    for kind in BACKUP_TYPES:
        cron = rules.crons.get(kind)
        slot = cron.latest_at_or_before(now) if cron else None
        if slot is None:
            continue
        tolerance = slot_tolerance(cron, slot)
        if satisfied(kind, slot, history.backups, tolerance):
            continue
        blocking = _blocking_attempt(kind, slot, tolerance, history.attempts, now)
        if blocking is not None:
            notes.append(Decision(source, "backup", slot, _blocked_reason(kind, slot, cron, blocking, now),
                                  run=False, requested=kind))
        elif now - slot > rules.catchup_grace:
            notes.append(Decision(source, "backup", slot, _missed_reason(kind, slot, cron, rules, now),
                                  run=False, requested=kind))
        else:
            due.append((kind, slot))
    if not due:
        return notes
    kind, slot = max(due, key=lambda d: (STRENGTH[d[0]], d[1]))
    cron = rules.crons[kind]
    reason = f"{kind} scheduled at {cron.local(slot)}"
    others = [k for k, _ in due if k != kind]
    if others:
        reason += f"; {' and '.join(others)} due too: one run, as the stronger {kind}"
    reason += _lateness(kind, slot, cron, history.backups, now, since)
    btype, why = upgrade(kind, history.backups, now, rules)
    return [Decision(source, "backup", slot, reason, type=btype, requested=kind, upgrade=why)]


def satisfied(kind: str, slot: datetime, backups: list[Backup], tolerance: timedelta = SLOT_TOLERANCE
              ) -> Backup | None:
    """The backup that already covers this slot, if any."""
    for backup in reversed(backups):
        if STRENGTH[backup.type] >= STRENGTH[kind] and backup.started >= slot - tolerance:
            return backup
    return None


def upgrade(kind: str, backups: list[Backup], now: datetime, rules: Rules) -> tuple[str, str | None]:
    """(type to run, why it differs from kind) per the upgrade rules."""
    if kind == "full":
        return "full", None
    if rules.full_only:
        return "full", "ran as full: this source takes full backups only"
    fulls = [b for b in backups if b.type == "full"]
    if not fulls:
        return "full", "ran as full: there is no full backup to build on"
    last = fulls[-1]
    if rules.max_full_interval is not None and now - last.started > rules.max_full_interval:
        return "full", (f"ran as full: the last full {last.label} is {_age(now - last.started)} old, "
                        f"more than max_full_interval {format_duration(rules.max_full_interval)}")
    if kind == "incr" and rules.max_diff_interval is not None:
        base = [b for b in backups if b.type in ("full", "diff")][-1]
        if now - base.started > rules.max_diff_interval:
            return "diff", (f"ran as diff: the last {base.type} {base.label} is {_age(now - base.started)} "
                            f"old, more than max_diff_interval {format_duration(rules.max_diff_interval)}")
    return kind, None


def slot_tolerance(cron: Cron, slot: datetime) -> timedelta:
    """SLOT_TOLERANCE, or less for schedules that fire more often (half the gap to the slot before)."""
    before = cron.latest_at_or_before(slot - timedelta(microseconds=1))
    if before is None:
        return SLOT_TOLERANCE
    return min(SLOT_TOLERANCE, (slot - before) / 2)


def _blocking_attempt(kind, slot, tolerance, attempts, now) -> Attempt | None:
    for attempt in reversed(attempts):
        if attempt.job != "backup" or attempt.started < slot - tolerance:
            continue
        if attempt.type is not None and STRENGTH.get(attempt.type, 0) < STRENGTH[kind]:
            continue
        if attempt.result == "aborted":
            continue  # stopped by a shutdown: a catch-up runs it again
        if attempt.result == "locked" and now - attempt.started >= LOCKED_RETRY:
            continue
        return attempt
    return None


def _blocked_reason(kind, slot, cron, attempt, now) -> str:
    nxt = cron.next_after(now)
    then = f"; next {kind} at {cron.local(nxt)}" if nxt else ""
    if attempt.result == "locked":
        return (f"{kind} slot {cron.local(slot)}: the source was locked elsewhere ({attempt.error}); "
                f"trying again {format_duration(LOCKED_RETRY)} after that")
    what = f"run {attempt.label}" if attempt.label else "run"
    return f"{kind} slot {cron.local(slot)}: the {what} {attempt.result}" + (
        f" ({attempt.error})" if attempt.error else "") + f"; not retried before the next slot{then}"


def _missed_reason(kind, slot, cron, rules, now) -> str:
    nxt = cron.next_after(now)
    return (f"{kind} slot {cron.local(slot)} was missed {_age(now - slot)} ago, more than catchup_grace "
            f"{format_duration(rules.catchup_grace)}: not caught up"
            + (f"; next {kind} at {cron.local(nxt)}" if nxt else ""))


def _lateness(kind, slot, cron, backups, now, since) -> str:
    if since is not None and slot < since:
        last = satisfied(kind, datetime.min.replace(tzinfo=slot.tzinfo), backups, timedelta(0))
        missed = cron.count_between(last.started, now) if last else 1
        count = f" for {missed} missed slots" if missed > 1 else ""
        return f"; catching up once{count}: the slot passed while no daemon was running"
    if now - slot > LATE:
        return f"; {_age(now - slot)} late (the source or the job limit was busy)"
    return ""


def _other_decision(source, job, rules, history, now) -> Decision | None:
    cron = rules.crons[job]
    slot = cron.latest_at_or_before(now)
    if slot is None:
        return None
    tolerance = slot_tolerance(cron, slot)
    for attempt in reversed(history.attempts):
        if attempt.job == job and attempt.started >= slot - tolerance and attempt.result != "aborted":
            if attempt.result != "locked" or now - attempt.started < LOCKED_RETRY:
                return None
    if now - slot > rules.catchup_grace:
        return None  # nothing to explain: the next slot comes
    return Decision(source, job, slot, f"{job} scheduled at {cron.local(slot)}")


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400}d{(seconds % 86400) // 3600}h" if seconds % 86400 >= 3600 else \
            f"{seconds // 86400}d"
    return format_duration(timedelta(seconds=seconds))


def rules_for(model, catchup_grace: timedelta) -> Rules | None:
    """The planner's view of a source's policy (None: the source has no schedule)."""
    schedule = getattr(model, "schedule", None)
    if schedule is None:
        return None
    crons = {}
    for job in BACKUP_TYPES + OTHER_JOBS:
        expr = schedule.copy_ if job == "copy" else getattr(schedule, job)
        if expr and expr not in ("after_backup", "off"):
            crons[job] = Cron(expr, schedule.timezone)
    return Rules(crons, catchup_grace, schedule.max_full_interval, schedule.max_diff_interval,
                 full_only=getattr(model, "mode", None) == "logical")
