"""Data lost by a MariaDB promotion: the transactions (GTIDs) and binlog bytes
the old primary had that the promoted replica never applied.

Exact when the old primary's end of binlog was read (read-only while it ran,
or its binlog files on disk after it stopped); otherwise an estimate from its
last position seen while reachable, marked so (`report --refresh` reads its
disk later)."""

from __future__ import annotations

from drorch.runbook.mdbgtid import binlog_distance, gtid_lag
from drorch.runbook.metrics import objective_met
from drorch.runbook.model_types import human_size


def promotion_loss(facts: dict, promotion: dict, objectives: dict) -> dict:
    applied, at = promotion.get("gtid") or "", promotion.get("exec")
    end = facts.get("old_primary_end") or {}
    estimate = not end.get("gtid")
    if not estimate:
        reference, source = end, f"{end['node']}'s end of binlog {end['gtid']} at {end.get('file')}:" \
                                 f"{end.get('pos')} ({end['basis']})"
    else:
        reference = facts.get("last_seen") or {}
        source = (f"estimate: the last binlog position seen on {reference['node']} ({reference.get('gtid')} at "
                  f"{reference['at']})" if reference.get("gtid") else
                  "estimate: what the promoted replica had received (nothing newer was seen)")
        source += f"; {end.get('basis') or 'the old primary could not be read'}; `drorch runbook report RUN " \
                  "--refresh` recomputes it once the old primary's binlog can be read"
    transactions = gtid_lag(reference.get("gtid") or "", applied)
    lost_bytes = None
    if at and reference.get("file"):
        sizes = dict(reference.get("sizes") or {})
        lost_bytes = binlog_distance((at[0], int(at[1])), (reference["file"], int(reference["pos"])), sizes)
    out = {"kind": "promotion", "engine": "mariadb", "transactions": transactions, "bytes": lost_bytes,
           "estimate": estimate,
           "basis": f"{source} against what {promotion['node']} applied before its promotion: GTID "
                    f"{applied or '-'}" + (f", {at[0]}:{at[1]} of the old primary's binlog" if at else "")}
    out["text"] = f"{transactions} transaction{'' if transactions == 1 else 's'}" + (
        f" ({human_size(lost_bytes)} of binlog)" if lost_bytes is not None else "") + (
        " (estimate, at least)" if estimate else "")
    checks = []
    if objectives.get("rpo_transactions") is not None:
        out["objective_transactions"] = objectives["rpo_transactions"]
        checks.append(transactions <= objectives["rpo_transactions"])
    if objectives.get("rpo_bytes") is not None and lost_bytes is not None:
        out["objective_bytes"] = objectives["rpo_bytes"]
        checks.append(lost_bytes <= objectives["rpo_bytes"])
    if checks:
        out["met"] = objective_met(all(checks), estimate)
    return out
