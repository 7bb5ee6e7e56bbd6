"""Abnormal write volume: a backup that stored far more than usual (mass
change, or files encrypted by ransomware: encrypted data neither dedupes nor
compresses), or nothing at all where the backups before it always stored
something (the application stopped writing, or the paths point at an empty
mount).  A pure function of the source's committed backups."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from drorch.notify.facts import BackupFacts
from drorch.notify.text import human_bytes

WINDOW = 7  # backups of the same type the newest is compared with
MIN_HISTORY = 3  # fewer earlier backups of its type: too little to judge
FLOOR = 1 << 20  # a backup storing less than this is never a mass change


@dataclass(frozen=True)
class Anomaly:
    kind: str  # mass-change | zero-change
    label: str
    type: str
    changed_bytes: int
    median_bytes: float
    compared: int  # earlier backups of its type it was compared with
    factor: float  # changed / median (inf when the median is 0)

    def describe(self, source: str) -> str:
        usual = f"the median of the last {self.compared} {self.type} backups is {human_bytes(self.median_bytes)}"
        if self.kind == "zero-change":
            return (f"backup {self.label} of {source} stored nothing new, although each of the last "
                    f"{self.compared} {self.type} backups did ({usual}): is the application still writing, "
                    "and do the paths still point at its data?")
        times = "infinitely" if self.factor == float("inf") else f"{self.factor:.1f}×"
        return (f"backup {self.label} of {source} stored {human_bytes(self.changed_bytes)} of changed data, "
                f"{times} what is usual ({usual}): a mass change, or files encrypted by ransomware? Check the "
                "source before the backups that hold good data expire")


def change_anomaly(backups: list[BackupFacts], factor: float, zero_change: bool = True) -> Anomaly | None:
    """The anomaly of the newest backup (backups oldest first), or None."""
    if not backups:
        return None
    newest = backups[-1]
    earlier = [b for b in backups[:-1] if b.type == newest.type][-WINDOW:]
    if len(earlier) < MIN_HISTORY:
        return None
    median = statistics.median(b.changed_bytes for b in earlier)
    ratio = newest.changed_bytes / median if median else float("inf")
    if newest.changed_bytes >= FLOOR and newest.changed_bytes > factor * median:
        return Anomaly("mass-change", newest.label, newest.type, newest.changed_bytes, median, len(earlier), ratio)
    if zero_change and newest.changed_bytes == 0 and all(b.changed_bytes > 0 for b in earlier):
        return Anomaly("zero-change", newest.label, newest.type, 0, median, len(earlier), 0.0)
    return None
