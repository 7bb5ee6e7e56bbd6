"""Cron expressions of schedules, checked when a policy is read.

Accepted forms (APScheduler 3.x CronTrigger does the arithmetic):
- 5 fields, classic: `minute hour day-of-month month day-of-week`;
- 6 fields, seconds first: `second minute hour day-of-month month day-of-week`;
- `@hourly`, `@daily`, `@weekly` (Sunday 00:00), `@monthly`.

Two differences from classic cron, on purpose:
- when both day-of-month and day-of-week are restricted, a day must match
  **both** (`0 1 1-7 * sun` is the first Sunday of the month); classic cron
  runs on days matching **either**;
- day-of-week numbers are cron's (0 or 7 = Sunday, 1 = Monday); they are
  turned into names here, because APScheduler 3.x counts 0 as Monday.
"""

from __future__ import annotations

import re
from datetime import timezone as _utc
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbers 0..6
ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * sun", "@monthly": "0 0 1 * *"}
FIELDS = ("second", "minute", "hour", "day", "month", "day_of_week")
_DOW_PART = re.compile(r"^(\*|[a-z]{3}|\d)(?:-([a-z]{3}|\d))?(?:/(\d+))?$")


def fields(expr: str) -> dict[str, str]:
    """The CronTrigger fields of an expression; ValueError with a readable message."""
    text = ALIASES.get(expr.strip().lower(), expr.strip())
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise ValueError(f"{expr!r}: a cron expression has 5 fields (minute hour day-of-month month "
                         "day-of-week) or 6 (second first), or is @hourly/@daily/@weekly/@monthly")
    values = dict(zip(FIELDS, parts))
    values["day_of_week"] = _day_of_week(values["day_of_week"], expr)
    return values


def trigger(expr: str, tz: str = "UTC"):
    """An APScheduler CronTrigger (imported here: only policies with schedules pay for it)."""
    from apscheduler.triggers.cron import CronTrigger

    values = fields(expr)
    try:
        return CronTrigger(**values, timezone=zone(tz))
    except ValueError as exc:
        for name, value in values.items():  # name the field at fault
            try:
                CronTrigger(**{name: value}, timezone=_utc.utc)
            except ValueError as one:
                raise ValueError(f"{expr!r}: {name.replace('_', '-')} {value!r}: {one}") from None
        raise ValueError(f"{expr!r}: {exc}") from None


def check(expr: str) -> str:
    """A policy validator: the expression unchanged, or ValueError."""
    if not isinstance(expr, str):
        raise ValueError("a schedule is a cron expression in quotes, e.g. \"0 1 * * mon-sat\"")
    trigger(expr)
    return expr


def zone(name: str):
    if name.upper() == "UTC":
        return _utc.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone; use an IANA name such as Europe/Berlin, "
                         "Asia/Shanghai or UTC") from None


def check_zone(name: str) -> str:
    zone(name)
    return name


def restricts_both_days(expr: str) -> bool:
    """Day-of-month and day-of-week both restricted: where classic cron would differ."""
    values = fields(expr)
    return values["day"] not in ("*", "?") and values["day_of_week"] != "*"


def _day_of_week(text: str, expr: str) -> str:
    """Cron's day-of-week (0/7 = Sunday, names, ranges, steps) as APScheduler day names."""
    text = text.lower()
    if text in ("*", "?"):
        return "*"
    days: list[int] = []
    for part in text.split(","):
        match = _DOW_PART.match(part)
        if not match:
            raise ValueError(f"{expr!r}: day-of-week {part!r}: write numbers 0-7 (0 and 7 = Sunday), "
                             "names sun..sat, ranges like mon-fri and steps like */2")
        start, end, step = match.groups()
        first = 0 if start == "*" else _day_number(start, expr)
        last = 6 if start == "*" else _day_number(end, expr) if end else 6 if step else first
        if last == 7 or (end and last == 0 and first > 0):
            last = 7  # `5-7`, `fri-sun`... up to Sunday at the end of the week
        if last < first:
            raise ValueError(f"{expr!r}: day-of-week range {part!r} runs backwards; "
                             "split it, e.g. fri-sat,sun-mon")
        if not end and not step and start != "*":
            days.append(first % 7)
            continue
        days += [d % 7 for d in range(first, last + 1, int(step or 1))]
    return ",".join(DAY_NAMES[d] for d in sorted(set(days)))


def _day_number(token: str, expr: str) -> int:
    if token.isdigit():
        number = int(token)
        if number > 7:
            raise ValueError(f"{expr!r}: day-of-week {number} is out of range (0-7, 0 and 7 = Sunday)")
        return number
    if token not in DAY_NAMES:
        raise ValueError(f"{expr!r}: {token!r} is not a day name (sun, mon, tue, wed, thu, fri, sat)")
    return DAY_NAMES.index(token)


def schedule_problems(policy) -> list[str]:
    """Checks of `schedule:` across keys, each pointing at its line."""
    problems = []
    for name, source in policy.sources.items():
        schedule = getattr(source, "schedule", None)
        if schedule is None:
            continue
        if getattr(source, "mode", None) == "logical":
            for kind in ("diff", "incr"):
                if getattr(schedule, kind):
                    problems.append(f"{policy.where('sources', name, 'schedule', kind)}: "
                                    f"sources.{name}.schedule.{kind}: mode logical takes full backups only; "
                                    "schedule `full` only")
        if schedule.copy_ not in ("after_backup", "off") and not source.copy_to:
            problems.append(f"{policy.where('sources', name, 'schedule', 'copy')}: sources.{name}.schedule.copy: "
                            "the source has no `copy_to` repositories to copy to")
        if schedule.drill and not any("drill" in book.modes and book.topology.source == name
                                      for book in policy.runbooks.values()):
            problems.append(f"{policy.where('sources', name, 'schedule', 'drill')}: sources.{name}.schedule.drill: "
                            f"no runbook with mode drill has `topology.source: {name}` to rehearse")
        if not (schedule.backups or schedule.verify or schedule.drill or schedule.copy_ not in ("after_backup", "off")
                or schedule.expire not in ("after_backup", "off")):
            problems.append(f"{policy.where('sources', name, 'schedule')}: sources.{name}.schedule: "
                            "no schedule is set; give at least one of full, diff, incr, verify, drill")
    return problems
