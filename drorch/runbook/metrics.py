"""Measured outcomes of a run, from its journal: milestones -> RTO, and data
loss -> RPO.

RTO: from `detected` (the failure was noticed: the run's start, or
--detected-at) to `verified` (the data checks passed), else to `writable`.

RPO of a standby promotion: the WAL bytes between the old primary's end of
WAL and the point where the promoted standby's new timeline starts.  Exact
when the old primary's WAL was read from its disk (pg.fence, pg.rewind,
`report --refresh`); otherwise an estimate from the last position seen while
it was reachable, marked so.  RPO of a DR activation: the time between the
last commit replayed from the archive and the failure.
"""

from __future__ import annotations

from drorch.runbook.model_types import human_size
from drorch.sources.pg_wal import parse_lsn
from drorch.timefmt import parse_iso

MILESTONE_ORDER = ("detected", "started", "fenced", "promoted", "restored", "writable", "verified", "finished")


def offsets(milestones: dict) -> dict[str, float]:
    """Seconds from `detected` to each milestone."""
    if "detected" not in milestones:
        return {}
    zero = parse_iso(milestones["detected"])
    out = {}
    for name in MILESTONE_ORDER:
        if name in milestones:
            out[name] = round((parse_iso(milestones[name]) - zero).total_seconds(), 3)
    return out


def rto(data: dict) -> dict:
    marks = offsets(data.get("milestones") or {})
    until = "verified" if "verified" in marks else "writable" if "writable" in marks else None
    objective = (data.get("objectives") or {}).get("rto")
    out: dict = {"seconds": marks.get(until) if until else None, "until": until, "objective_seconds": objective,
                 "milestones": marks}
    if out["seconds"] is not None and objective is not None:
        out["met"] = out["seconds"] <= objective
    return out


def rpo(data: dict) -> dict | None:
    facts = data.get("facts") or {}
    objectives = data.get("objectives") or {}
    promotion = facts.get("promotion") or {}
    if promotion.get("switchpoint") and promotion.get("engine") == "mariadb":
        from drorch.runbook.mdbmetrics import promotion_loss

        return promotion_loss(facts, promotion, objectives)
    if promotion.get("switchpoint"):
        return _promotion_loss(facts, promotion, objectives)
    restored = facts.get("dr_restore") or {}
    if restored.get("last_commit"):
        return _dr_loss(data, restored, objectives)
    return None


def objective_met(within: bool, estimate: bool) -> bool | None:
    """An estimate is a lower bound: it can show an objective missed, never met (None: not known)."""
    return None if estimate and within else within


def _promotion_loss(facts: dict, promotion: dict, objectives: dict) -> dict:
    switchpoint = parse_lsn(promotion["switchpoint"])
    end = facts.get("old_primary_end") or {}
    if end.get("lsn"):
        lost = max(0, parse_lsn(end["lsn"]) - switchpoint)
        out = {"kind": "promotion", "bytes": lost, "estimate": False,
               "basis": f"{end['node']}'s end of WAL {end['lsn']} ({end['basis']}) against the new timeline's "
                        f"start {promotion['switchpoint']} on {promotion['node']}"}
    else:
        seen = facts.get("last_seen")
        known = [parse_lsn(seen["lsn"])] if seen else []
        lost = max([0] + [lsn - switchpoint for lsn in known])
        why = end.get("basis") or "the old primary could not be read"
        source = f"the last WAL position seen on {seen['node']} ({seen['lsn']} at {seen['at']})" if seen else \
            "what the promoted standby had received (nothing newer was seen)"
        out = {"kind": "promotion", "bytes": lost, "estimate": True,
               "basis": f"estimate: {source} against the new timeline's start {promotion['switchpoint']}; "
                        f"{why}; `drorch runbook report RUN --refresh` recomputes it once the old primary's "
                        "data directory can be read"}
    out["text"] = f"{human_size(out['bytes'])} of WAL" + (" (estimate, at least)" if out["estimate"] else "")
    if objectives.get("rpo_bytes") is not None:
        out["objective_bytes"] = objectives["rpo_bytes"]
        out["met"] = objective_met(out["bytes"] <= objectives["rpo_bytes"], out["estimate"])
    return out


def _dr_loss(data: dict, restored: dict, objectives: dict) -> dict:
    milestones = data.get("milestones") or {}
    failed = data.get("failed_at") or milestones.get("detected")
    seconds = max(0.0, (parse_iso(failed) - parse_iso(restored["last_commit"])).total_seconds())
    what = "the failure" if data.get("failed_at") else "the failure was detected (run start; pass --failed-at " \
                                                       "for the real moment)"
    if data.get("mode") == "drill":
        what = "the drill started (the data a failure at that moment would lose)"
    out = {"kind": "dr", "seconds": round(seconds, 3), "estimate": not data.get("failed_at"),
           "basis": f"last commit replayed from the archive {restored['last_commit']} (backup "
                    f"{restored.get('backup')}, WAL to {restored.get('end_lsn')}) until {what} at {failed}",
           "text": f"{seconds:.1f} s of commits"}
    if objectives.get("rpo") is not None:
        out["objective_seconds"] = objectives["rpo"]
        out["met"] = seconds <= objectives["rpo"]
    return out
