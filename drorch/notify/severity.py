"""Severity levels of the O&M plans: I is the worst.

I   — a source has no restorable backup within its RPO, a restore
      verification failed, or data was lost in a failover: respond within
      30 minutes, resolve within 12 hours;
II  — a backup or a copy failed: resolve within 24 hours;
III — a warning (mass change, free space, a verification too old, a hook
      that failed): resolve within 48 hours;
IV  — information: within 5 days.
"""

from __future__ import annotations

from datetime import timedelta

LEVELS = ("I", "II", "III", "IV")
NAMES = {"I": "critical", "II": "major", "III": "warning", "IV": "information"}
RESPOND_WITHIN = {"I": timedelta(minutes=30)}
RESOLVE_WITHIN = {"I": timedelta(hours=12), "II": timedelta(hours=24), "III": timedelta(hours=48),
                  "IV": timedelta(days=5)}


def rank(severity: str) -> int:
    """0 for I (the worst) ... 3 for IV."""
    return LEVELS.index(severity)


def reaches(severity: str, minimum: str) -> bool:
    """Is `severity` at least as severe as `minimum`?"""
    return rank(severity) <= rank(minimum)


def worst(severities) -> str | None:
    found = [s for s in severities if s]
    return min(found, key=rank) if found else None


def describe(severity: str) -> str:
    return f"{severity} ({NAMES[severity]})"
