"""The incident report of one run, from its journal alone (Markdown or JSON):
what failed, the nodes chosen and why, each step with its timing, the
milestones, RTO and RPO against the objectives, the data checks run after
recovery, the approvals.  `build()` is the model the notifications issue can
reuse for its fault reports."""

from __future__ import annotations

from drorch.runbook import metrics
from drorch.runbook.docformat import Doc
from drorch.timefmt import parse_iso, utcnow


def build(data: dict) -> dict:
    """The report as plain data."""
    steps = [data["steps"][step_id] for step_id in data.get("order", [])]
    recovered = (data.get("milestones") or {}).get("writable")
    checks = [c for c in data.get("checks", []) if recovered is None or c["at"] >= recovered]
    return {
        "run": data["run"], "runbook": data.get("runbook"), "title": data.get("title"), "mode": data.get("mode"),
        "status": data.get("status"), "error": data.get("error"), "started": data.get("started"),
        "host": data.get("host"), "resumed": data.get("resumed", []),
        "roles": data.get("roles", {}), "choice": data.get("choice"), "dr_choice": data.get("dr_choice"),
        "escalation": data.get("escalation"),
        "failed_steps": [{"id": s["id"], "summary": s.get("summary")} for s in steps if s.get("state") == "failed"],
        "steps": [{k: s.get(k) for k in ("id", "title", "action", "branch", "state", "attempts", "started", "ended",
                                         "seconds", "summary", "approval", "guard")} for s in steps],
        "milestones": data.get("milestones", {}), "rto": metrics.rto(data), "rpo": metrics.rpo(data),
        "objectives": data.get("objectives", {}), "data_checks": checks,
        "approvals": data.get("approvals", {}), "cleanups": data.get("cleanups", []),
        "incident": _incident(data),
    }


def _incident(data: dict) -> dict:
    """The run as the notifications' incident report sees it: severity and the O&M targets."""
    from drorch.notify import severity as sev
    from drorch.notify.incidents import targets
    from drorch.notify.runbooks import run_severity, runbook_incident, runbook_run

    severity = run_severity(data)
    item = runbook_incident(runbook_run(data), severity)
    return {"severity": severity, "severity_name": sev.NAMES[severity], "status": item["status"],
            "targets": targets(item, utcnow())}


def document(report: dict) -> Doc:
    doc = Doc(f"Run {report['run']}")
    doc.h(1, f"Incident report: run `{report['run']}`")
    doc.p(f"Runbook `{report['runbook']}` ({report['title']}) · mode **{report['mode']}** · status "
          f"**{report['status']}** · started {report['started']} on {report['host']}")
    incident = report["incident"]
    targets = incident["targets"]
    doc.p(f"Severity **{incident['severity']}** ({incident['severity_name']}) · "
          + (f"respond by {targets['respond_by']} · " if targets["respond_by"] else "")
          + f"resolve by {targets['resolve_by']} · incident {incident['status']}")
    if report["error"]:
        doc.p(f"**What failed:** {report['error']}")
    if report["resumed"]:
        doc.p("Resumed after the runner stopped: " + ", ".join(f"{r['at']} on {r['host']}" for r in report["resumed"]))
    _outcome(doc, report)
    _nodes(doc, report)
    doc.h(2, "Steps")
    rows = [[s["id"], s["title"], s["state"], s["attempts"], _clock(s["started"]),
             "" if s["seconds"] is None else f"{s['seconds']:.1f}s", s["summary"]] for s in report["steps"]]
    doc.table(["step", "title", "result", "attempts", "started", "took", "result detail"], rows)
    doc.h(2, "Data checks after recovery")
    if report["data_checks"]:
        doc.table(["check", "result", "detail"],
                  [[c["check"], "ok" if c["ok"] else "FAILED", c["detail"]] for c in report["data_checks"]])
    else:
        doc.p("None ran.")
    if report["approvals"]:
        doc.h(2, "Approvals")
        doc.table(["question", "step", "decision", "by", "how", "at"],
                  [[q, a.get("step"), a.get("decision"), a.get("by"), a.get("how"), a.get("at")]
                   for q, a in report["approvals"].items()])
    return doc


def _outcome(doc: Doc, report: dict) -> None:
    doc.h(2, "Outcome")
    rto, rpo, items = report["rto"], report["rpo"], []
    if rto["seconds"] is not None:
        objective = rto.get("objective_seconds")
        verdict = "" if objective is None else f" — objective {objective:.0f}s: {'met' if rto['met'] else 'MISSED'}"
        items.append(f"RTO: {rto['seconds']:.1f}s from detection until {rto['until']}{verdict}")
    else:
        items.append("RTO: service was not restored by this run")
    if rpo is None:
        items.append("RPO: nothing was promoted or restored")
    else:
        verdict = ""
        if "met" in rpo:
            met = "not known (an estimate)" if rpo["met"] is None else "met" if rpo["met"] else "MISSED"
            verdict = f" — objective: {met}"
        items.append(f"RPO: {rpo['text']}{verdict} ({rpo['basis']})")
    doc.ul(items)
    marks = rto["milestones"]
    if marks:
        doc.table(["milestone", "at", "seconds after detection"],
                  [[name, report["milestones"][name], f"{seconds:.1f}"] for name, seconds in marks.items()])


def _nodes(doc: Doc, report: dict) -> None:
    roles = {k: v for k, v in report["roles"].items() if v}
    if not roles:
        return
    doc.h(2, "Nodes")
    doc.ul([f"`{role}`: {name}" for role, name in roles.items()])
    choice = report.get("choice") or {}
    reasons = {**choice.get("reasons", {}), **{f"DR {k}": v for k, v in
                                              ((report.get("dr_choice") or {}).get("reasons") or {}).items()}}
    if choice.get("primary_why"):
        doc.p(f"Primary {choice['primary']}: {choice['primary_why']}.")
    if reasons:
        doc.ul([f"{name}: {why}" for name, why in reasons.items()])
    if report.get("escalation"):
        esc = report["escalation"]
        doc.p(f"Escalated to the DR branch at {esc.get('at')}: {esc.get('why')}"
              + (f"; {esc['approval']}" if esc.get("approval") else ""))


def _clock(text: str | None) -> str:
    return parse_iso(text).strftime("%H:%M:%S") if text else ""


def markdown(data: dict) -> str:
    return document(build(data)).markdown()
