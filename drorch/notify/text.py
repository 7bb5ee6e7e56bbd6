"""Small text helpers of notices and reports (notify imports neither cli nor daemon)."""

from __future__ import annotations

from datetime import datetime, timedelta

from drorch.policy import cron
from drorch.timefmt import format_duration
from drorch.units import human_bytes  # noqa: F401 - notify modules take it from here




def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return format_duration(timedelta(seconds=round(seconds)))


def local(moment: datetime | None, zone: str, with_date: bool = True) -> str:
    """A time as people of the report's zone read it: 2026-11-22 09:30 CST."""
    if moment is None:
        return "-"
    here = moment.astimezone(cron.zone(zone))
    return here.strftime("%Y-%m-%d %H:%M:%S %Z" if with_date else "%H:%M:%S")


def printable(text: str) -> str:
    """Text that any UTF-8 channel takes: names that are not UTF-8 (kept by drorch as surrogate
    escapes) show as U+FFFD instead of making a terminal, a mail or a chat refuse the message."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
