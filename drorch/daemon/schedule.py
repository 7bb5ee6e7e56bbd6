"""Fire times of one cron schedule in its time zone (APScheduler 3.x CronTrigger).

Every time handed out is timezone-aware UTC, so the planner compares instants,
never wall-clock times.  Daylight-saving changes:
- clocks go forward: a time in the skipped hour runs once, as the same
  wall-clock time read with the old offset (02:30 in Europe/Berlin on the
  spring change runs at 03:30 CEST), which is what APScheduler does;
- clocks go back: a time in the repeated hour runs once (the first time),
  when the hour is fixed (`30 2 * * *`); schedules that run every hour or more
  often (`*/30 * * * *`) run in both hours, as they are different hours.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from drorch.policy import cron

# How far back latest_at_or_before() looks, widening only until it finds a fire time.
_WINDOWS = (timedelta(minutes=2), timedelta(hours=2), timedelta(days=2), timedelta(days=9), timedelta(days=40),
            timedelta(days=400), timedelta(days=1830))
_TICK = timedelta(microseconds=1)


class Cron:
    def __init__(self, expr: str, tz: str = "UTC"):
        self.expr = expr
        self.tz = tz
        self.zone = cron.zone(tz)
        self.trigger = cron.trigger(expr, tz)
        self._once_when_repeated = not cron.fields(expr)["hour"].startswith("*")

    def __repr__(self) -> str:
        return f"Cron({self.expr!r}, {self.tz!r})"

    def next_at_or_after(self, moment: datetime) -> datetime | None:
        moment = moment.astimezone(timezone.utc)
        while True:
            fire = self.trigger.get_next_fire_time(None, moment.astimezone(self.zone))
            if fire is None:
                return None
            if self._once_when_repeated and getattr(fire, "fold", 0) == 1 and _repeated(fire):
                moment = fire.astimezone(timezone.utc) + _TICK  # the repeated hour's second pass: skip
                continue
            return fire.astimezone(timezone.utc)

    def next_after(self, moment: datetime) -> datetime | None:
        return self.next_at_or_after(moment + _TICK)

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        moment = after
        while len(out) < count:
            fire = self.next_after(moment)
            if fire is None:
                break
            out.append(fire)
            moment = fire
        return out

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The newest fire time not after moment (the slot that is due now)."""
        moment = moment.astimezone(timezone.utc)
        for window in _WINDOWS:
            fire = self.next_at_or_after(moment - window)
            if fire is None or fire > moment:
                continue
            while True:
                later = self.next_after(fire)
                if later is None or later > moment:
                    return fire
                fire = later
        return None

    def count_between(self, start: datetime, end: datetime, cap: int = 1000) -> int:
        """How many fire times lie in (start, end], at most cap."""
        count, moment = 0, start
        while count < cap:
            fire = self.next_after(moment)
            if fire is None or fire > end:
                break
            count += 1
            moment = fire
        return count

    def local(self, moment: datetime) -> str:
        """A time as people of this schedule read it: 2026-11-23 01:00:00 CST."""
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    def notes(self) -> list[str]:
        """What a reader might get wrong about this expression."""
        out = []
        if cron.restricts_both_days(self.expr):
            parts = self.expr.split()
            day, dow = parts[-3], parts[-1]
            out.append(f"runs on days that are both day-of-month {day} AND day-of-week {dow} "
                       "(classic cron would run on days matching either)")
        return out


def _repeated(fire: datetime) -> bool:
    """The wall-clock time of fire also occurred an hour earlier (fold=0): clocks went back."""
    first = fire.replace(fold=0)
    return first.utcoffset() != fire.utcoffset()
