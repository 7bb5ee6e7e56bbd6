"""Runbook runs in reports: read from the journals the runbook runner keeps in
the repositories (`runbooks/runs/<run>`), and `run_report()`, the incident
report of one run (what `drorch runbook report RUN` shows).

Only these journal keys are read: run, runbook, title, mode, status, error,
started, ended / finished / saved, host, order, steps{id: {title, action,
state, attempts, started, ended, seconds, summary}}, and `outcome`: the
runner's {rto, rpo} measurements (runbook/metrics.py), or a list of lines.
"""

from __future__ import annotations

from datetime import datetime

from drorch.notify.report import Context, Report
from drorch.notify.text import local
from drorch.timefmt import parse_iso, utcnow

STEP_KEYS = ("id", "title", "action", "state", "attempts", "started", "ended", "seconds", "summary")


def runbook_run(data: dict) -> dict:
    """A run's journal as the report shows it."""
    steps = data.get("steps") or {}
    order = data.get("order") or list(steps)
    rows = [{k: steps[step].get(k, step if k == "id" else None) for k in STEP_KEYS} for step in order
            if isinstance(steps.get(step), dict)]
    ended = data.get("ended") or data.get("finished") or (data.get("milestones") or {}).get("finished")
    if ended is None and data.get("status") not in ("running", "waiting", None):
        ended = data.get("saved")
    return {"run": data.get("run"), "runbook": data.get("runbook"), "title": data.get("title"),
            "mode": data.get("mode"), "status": data.get("status"), "error": data.get("error"),
            "started": data.get("started"), "ended": ended, "host": data.get("host"), "steps": rows,
            "outcome": outcome_lines(data.get("outcome"))}


def outcome_lines(outcome) -> list[str]:
    """The runner's measured RTO and data loss as sentences (a list of lines is kept as it is)."""
    if not isinstance(outcome, dict):
        return [str(line) for line in outcome or []]
    lines = []
    rto, rpo = outcome.get("rto") or {}, outcome.get("rpo") or {}
    if rto.get("seconds") is not None:
        objective = rto.get("objective_seconds")
        lines.append(f"service back after {rto['seconds']:.1f} s (until {rto.get('until')})"
                     + (f", objective {objective:.0f} s: {'met' if rto.get('met') else 'MISSED'}"
                        if objective is not None else ""))
    if rpo.get("text"):
        met = "" if rpo.get("met") is None else f"; objective {'met' if rpo['met'] else 'MISSED'}"
        lines.append(f"data lost: {rpo['text']} ({rpo.get('basis', '')}){met}")
    return lines


def runbook_runs(ctx: Context) -> list[dict]:
    """Runs of every repository of the policy (each once), oldest first."""
    seen: dict[str, dict] = {}
    for name in sorted(ctx.policy.repositories):
        facts, _ = ctx.facts(name)
        if facts is None:
            continue
        for data in facts.runbook_runs():
            run = runbook_run(data)
            if run["run"] not in seen and run["started"]:
                seen[run["run"]] = run
    return sorted(seen.values(), key=lambda r: r["started"])


def run_severity(data: dict) -> str:
    """I when a run failed, lost data, or moved a service because its primary failed (failover,
    dr-activate); IV for a planned switchover or a drill that went well."""
    rpo = (data.get("outcome") or {}).get("rpo") if isinstance(data.get("outcome"), dict) else None
    lost = data.get("mode") != "drill" and bool(rpo and (rpo.get("bytes") or rpo.get("seconds")
                                                         or rpo.get("transactions")))
    if data.get("status") == "failed" or lost or data.get("mode") in ("failover", "dr-activate"):
        return "I"
    return "IV"


def runbook_incident(run: dict, severity: str | None = None) -> dict:
    """A run as an incident: I (a service move or a failed run), IV for a drill that went well."""
    from drorch.notify.incidents import incident

    if severity is None:
        severity = "IV" if run.get("mode") in ("drill", "switchover") and run["status"] != "failed" else "I"
    failed = [s for s in run["steps"] if s.get("state") == "failed"]
    cause = run.get("error") or (f"step {failed[0]['id']} failed: {failed[0].get('summary')}" if failed else None)
    actions = [{"at": s.get("started") or run["started"], "what": f"step {s['id']}: {s.get('title') or ''}",
                "result": s.get("state"), "detail": s.get("summary") or ""} for s in run["steps"]]
    impact = "; ".join(run["outcome"]) or ("the runbook did not finish: the service may still be down"
                                           if run["status"] == "failed" else "")
    ended = parse_iso(run["ended"]) if run["ended"] and run["status"] != "failed" else None
    return incident(f"runbook/{run['run']}", "runbook", None, severity,
                    f"runbook {run['runbook']} run {run['run']} ({run['mode']}): {run['status']}",
                    parse_iso(run["started"]), ended, cause=cause, errors=[cause] if cause else [],
                    impact={"text": impact}, actions=actions,
                    resolution=f"the run finished: {run['status']}" if ended else None)


def run_report(data: dict, *, timezone: str = "UTC", now: datetime | None = None,
               severity: str | None = None) -> Report:
    """The incident report of one runbook run (its journal alone)."""
    from drorch.notify.incidents import targets

    now = now or utcnow()
    run = runbook_run(data)
    item = runbook_incident(run, severity)
    item["number"] = 1
    item["targets"] = targets(item, now)
    since = parse_iso(run["started"]) if run["started"] else now
    until = parse_iso(run["ended"]) if run["ended"] else now
    summary = {"incidents": 1, "open": int(item["status"] == "open"), "resolved": int(item["status"] != "open"),
               "by_severity": {item["severity"]: 1}, "worst_severity": item["severity"], "runbook_runs": 1,
               "host_problems": []}
    return Report("incident", f"incident report: runbook run {run['run']} ({local(since, timezone)})", now, since,
                  until, timezone, summary, incidents=[item], runbook_runs=[run])
