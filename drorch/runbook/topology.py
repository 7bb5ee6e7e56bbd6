"""Who is who at run time: which node is the primary now, which standby would
be promoted and why not the others, which DR node would be used.  Pure
functions of the nodes' observed states, so every decision has a sentence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from drorch.errors import DrorchError
from drorch.runbook.model_types import human_size
from drorch.runbook.pgnode import NodeStatus, lsn_text


@dataclass(frozen=True)
class Units:
    """How an engine's positions and distances read: WAL LSNs and bytes, or GTIDs and transactions."""

    position: Callable[[int | None], str]
    amount: Callable[[int | None], str]
    log: str  # what the primary's log is called


WAL = Units(lsn_text, human_size, "WAL")
GTID = Units(lambda n: "-" if n is None else f"GTID seq {n}",
             lambda n: "-" if n is None else f"{n} transaction" + ("" if n == 1 else "s"), "binlog")


class SplitBrain(DrorchError):
    """More than one node of the topology takes writes."""


@dataclass
class Choice:
    primary: str
    primary_why: str
    candidate: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)  # node -> why chosen / why not
    reference: dict | None = None  # {"lsn": "0/3000000", "basis": "..."}

    def as_dict(self) -> dict:
        return {"primary": self.primary, "primary_why": self.primary_why, "candidate": self.candidate,
                "reasons": self.reasons, "reference": self.reference}


def current_primary(order: list[str], statuses: dict[str, NodeStatus], remembered: str | None,
                    configured: str) -> tuple[str, str]:
    """The writable node; with none, the one a run made primary last, else the configured one."""
    writable = [name for name in order if statuses[name].role == "primary"]
    if len(writable) > 1:
        raise SplitBrain(f"more than one server takes writes: {', '.join(writable)} (split brain)",
                         "stop all but one of them by hand now, then decide which data to keep; drorch does "
                         "nothing while two primaries run")
    if writable:
        return writable[0], "it takes writes"
    if remembered:
        return remembered, "no server takes writes; it was primary when a runbook run last changed roles"
    return configured, "no server takes writes; it is the primary the runbook names"


def choose_candidate(primary: str, order: list[str], statuses: dict[str, NodeStatus], max_lag: int,
                     known: tuple[int, str] | None = None, forced: str | None = None, units: Units = WAL) -> Choice:
    """The standby to promote: running, in recovery, replay within max_lag of the
    reference (the primary's flushed WAL, else the last known end of its WAL),
    the furthest ahead; ties go to the first in the standbys list."""
    status = statuses.get(primary)
    choice = Choice(primary, "")
    reference = _reference(status, [statuses[n] for n in order if n != primary], known, units)
    choice.reference = None if reference is None else {"lsn": units.position(reference[0]), "basis": reference[1]}
    eligible = []
    for index, name in enumerate(n for n in order if n != primary):
        why = _ineligible(statuses[name], reference, max_lag, forced, units)
        if why:
            choice.reasons[name] = why
        else:
            eligible.append((statuses[name].position or 0, -index, name))
    if not eligible:
        return choice
    eligible.sort(reverse=True)
    best_pos, _, best = eligible[0]
    choice.candidate = best
    lag = "" if reference is None else f", {units.amount(max(0, reference[0] - (statuses[best].applied or 0)))} " \
                                       f"replay lag"
    choice.reasons[best] = f"chosen: the furthest ahead of the eligible standbys (at {units.position(best_pos)}{lag})"
    for pos, _, name in eligible[1:]:
        if pos < best_pos:
            choice.reasons[name] = f"eligible, but {best} is further ahead by {units.amount(best_pos - pos)}"
        else:
            choice.reasons[name] = f"eligible and as far ahead, but {best} comes first in the standbys list"
    return choice


def _reference(primary: NodeStatus | None, standbys: list[NodeStatus],
               known: tuple[int, str] | None, units: Units) -> tuple[int, str] | None:
    if primary is not None and primary.role == "primary" and primary.head is not None:
        return primary.head, f"the primary {primary.name}'s {'flushed WAL' if units is WAL else 'binlog'}"
    best: tuple[int, str] | None = known
    for status in standbys:
        if status.up and status.position is not None and (best is None or status.position > best[0]):
            best = (status.position, f"the {units.log} {status.name} received (the primary's is not known)")
    return best


def _ineligible(status: NodeStatus, reference: tuple[int, str] | None, max_lag: int,
                forced: str | None, units: Units) -> str | None:
    if forced and status.name != forced:
        return f"not the standby asked for (--candidate {forced})"
    if not status.up:
        return f"not reachable: {status.error}"
    if status.role != "standby":
        return "not a standby (it takes writes)"
    if status.applied is None:
        return f"reports no replayed {units.log} position" + ("" if units is WAL else " (not a replica)")
    if reference is not None:
        lag = max(0, reference[0] - status.applied)
        if lag > max_lag:
            paused = "; its replay is paused" if status.replay_paused else ""
            exact = f" ({lag} bytes)" if units is WAL else ""
            return (f"lags {units.amount(lag)}{exact} behind {reference[1]} at {units.position(reference[0])}, "
                    f"beyond the bound of {units.amount(max_lag)} (replayed {units.position(status.applied)}"
                    f"{paused})")
    return None


def choose_dr(order: list[str], reachable: dict[str, str | None]) -> tuple[str | None, dict[str, str]]:
    """The first DR node whose host can be reached; reachable[name] is None or why not."""
    reasons, chosen = {}, None
    for name in order:
        problem = reachable.get(name)
        if problem:
            reasons[name] = f"not reachable: {problem}"
        elif chosen is None:
            chosen = name
            reasons[name] = "chosen: the first DR node that can be reached"
        else:
            reasons[name] = f"reachable, but {chosen} comes first"
    return chosen, reasons
