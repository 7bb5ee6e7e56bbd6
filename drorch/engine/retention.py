"""Retention as a pure function: backups, rules, now -> keep or drop, with reasons.

Rules (a backup is kept if any rule keeps it):
- the newest backup is always kept (expire never removes the last restore point);
- pinned backups are kept;
- `max_age`: every backup that finished within max_age of now;
- `full: N`: the N newest fulls;
- `diff: M`: the M newest diffs; without `diff`, a diff goes with its full;
- an incr goes with the diff or full it hangs on (its base);
- everything a kept backup depends on (its chain) is kept.
Without any rule, everything is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drorch.timefmt import format_duration as _fmt


@dataclass(frozen=True)
class BackupRef:
    label: str
    type: str  # full | diff | incr
    parent: str | None
    finished: datetime
    pinned: bool = False


@dataclass(frozen=True)
class Rules:
    full: int | None = None
    diff: int | None = None
    max_age: timedelta | None = None

    @property
    def empty(self) -> bool:
        return self.full is None and self.diff is None and self.max_age is None


@dataclass
class Decision:
    label: str
    keep: bool = False
    reasons: list[str] = field(default_factory=list)


def decide(backups: list[BackupRef], rules: Rules, now: datetime) -> dict[str, Decision]:
    ordered = sorted(backups, key=lambda b: b.label)
    by_label = {b.label: b for b in ordered}
    out = {b.label: Decision(b.label) for b in ordered}
    if not ordered:
        return out

    def keep(label: str, reason: str) -> None:
        out[label].keep = True
        out[label].reasons.append(reason)

    if rules.empty:
        for b in ordered:
            keep(b.label, "no retention rules: everything is kept")
        return out
    keep(ordered[-1].label, "newest backup (always kept)")
    for b in ordered:
        if b.pinned:
            keep(b.label, "pinned")
        if rules.max_age is not None and now - b.finished <= rules.max_age:
            keep(b.label, f"younger than max_age ({_fmt(rules.max_age)})")
    _keep_newest(ordered, "full", rules.full, keep)
    _keep_newest(ordered, "diff", rules.diff, keep)
    directly = {label for label, d in out.items() if d.keep}

    # Diffs without a diff rule go with their full; incrs go with their base.
    for b in ordered:
        if out[b.label].keep:
            continue
        base = _base(b, by_label)
        if b.type == "diff" and rules.diff is None and base in directly:
            keep(b.label, f"goes with its full {base}")
            directly.add(b.label)  # so the incrs on it go with it too
        elif b.type == "incr" and base in directly:
            keep(b.label, f"goes with its base {base}")

    # What a kept backup depends on is kept.
    for b in reversed(ordered):
        if not out[b.label].keep:
            continue
        parent = b.parent
        while parent in by_label:
            if not any(r.startswith("needed by") for r in out[parent].reasons):
                keep(parent, f"needed by {b.label}")
            parent = by_label[parent].parent

    for b in ordered:
        if not out[b.label].keep:
            out[b.label].reasons.append(_why_dropped(b, rules, by_label, out))
    return out


def _keep_newest(ordered: list[BackupRef], btype: str, count: int | None, keep) -> None:
    if count is None or count <= 0:
        return
    of_type = [b for b in ordered if b.type == btype]
    for rank, b in enumerate(reversed(of_type[-count:]), start=1):
        keep(b.label, f"{btype} {rank} of the {count} newest ({btype}: {count})")


def _base(backup: BackupRef, by_label: dict[str, BackupRef]) -> str | None:
    """The full or diff an incr (or diff) hangs on."""
    parent = backup.parent
    while parent in by_label and by_label[parent].type == "incr":
        parent = by_label[parent].parent
    return parent


def _why_dropped(b: BackupRef, rules: Rules, by_label, out) -> str:
    age = f"; older than max_age ({_fmt(rules.max_age)})" if rules.max_age is not None else ""
    if b.type == "full":
        if rules.full is None:
            return "no rule keeps it (no `full:` count)" + age
        return f"not among the {rules.full} newest fulls" + age
    base = _base(b, by_label)
    fate = "is kept only because a newer backup needs it" if base in out and out[base].keep else "expires"
    if b.type == "diff":
        if rules.diff is not None:
            return f"not among the {rules.diff} newest diffs" + age
        return f"its full {base} {fate}" + age
    return f"its base {base} {fate}" + age
