"""Markdown of a Report (the JSON is Report.as_json): what a person reads in
an e-mail, a chat message or a ticket.  Times in the report's time zone."""

from __future__ import annotations

from drorch.notify import severity as sev
from drorch.notify.markdown import Doc
from drorch.notify.text import duration, human_bytes, local
from drorch.timefmt import parse_iso


def render(report) -> str:
    doc = Doc()
    doc.h(1, report.title)
    zone = report.timezone
    doc.p(f"Period {local(report.since, zone)} – {local(report.until, zone)} · generated "
          f"{local(report.generated, zone)} on {report.host}" + (f" · policy `{report.policy}`" if report.policy
                                                                  else ""))
    if report.kind == "daily":
        _daily(doc, report)
    else:
        _incidents(doc, report)
    _runbook_runs(doc, report)
    if report.notifications:
        doc.h(2, "Notifications sent")
        doc.table(["at", "channel", "severity", "what", "delivered"],
                  [[_t(n["at"], zone), n["channel"], n["severity"], f"{n['state']}: {n['title']}",
                    "yes" if n["ok"] else f"no: {n['error']}"] for n in report.notifications])
    return doc.markdown()


def _t(text: str | None, zone: str) -> str:
    return local(parse_iso(text), zone) if text else "-"


def _met(value) -> str:
    return "-" if value is None else "met" if value else "MISSED"


# -- daily ----------------------------------------------------------------------------


def _daily(doc: Doc, report) -> None:
    s, zone = report.summary, report.timezone
    doc.h(2, "Summary")
    doc.ul([f"{s['sources']} source(s): {s['backups']} backup(s), {s['failed']} failed; {s['copies']} copies, "
            f"{s['copies_failed']} failed; {s['verifications']} verification(s), {s['verifications_failed']} failed",
            f"{human_bytes(s['stored_bytes'])} stored",
            f"RPO: {s['rpo_met']} met, {s['rpo_missed']} missed, {s['rpo_unset']} without an objective",
            f"{s['warnings']} warning(s)" + (f"; worst severity {sev.describe(s['worst_severity'])}"
                                             if s["worst_severity"] else "")])
    doc.table(["source", "backups", "failed", "stored", "took", "recovery point", "RPO", "RTO", "restore verified",
               "next run"],
              [_source_row(section, zone) for section in report.sources])
    for section in report.sources:
        _source(doc, section, zone)
    host = report.current[0] if report.current else {}
    if host.get("warnings") or host.get("open_problems"):
        doc.h(2, "Backup host")
        doc.ul([f"[{w['severity']}] {w['title']}: {w['detail']}" for w in host.get("warnings", [])]
               + [f"[{p['severity']}] open since {_t(p['since'], zone)}: {p['title']}"
                  for p in host.get("open_problems", [])])


def _source_row(section: dict, zone: str) -> list:
    totals, state = section["totals"], section["state"]
    rpo, rto, ver = state["rpo"], state["rto"], state["verification"]
    point = f"{duration(rpo['age_seconds'])} ago" if rpo["age_seconds"] is not None else "none"
    nxt = min(section["next_runs"].items(), key=lambda kv: kv[1], default=None)
    return [section["name"], totals["backups"], totals["failed"] + totals["copies_failed"],
            human_bytes(totals["stored_bytes"]), duration(totals["seconds"]), point, _met(rpo["met"]),
            _met(rto["met"]) + (f" ({duration(rto['measured_seconds'])})" if rto["measured_seconds"] else ""),
            (f"{duration(ver['age_seconds'])} ago" if ver["age_seconds"] is not None else "never")
            + (f", {_met(ver['met'])}" if ver["met"] is not None else ""),
            f"{nxt[0]} {_t(nxt[1], zone)}" if nxt else "-"]


def _source(doc: Doc, section: dict, zone: str) -> None:
    doc.h(2, f"Source {section['name']} ({section['kind']}, repository {section['repository']})")
    if section["error"]:
        doc.p(f"**The repository cannot be read:** {section['error']}")
    if section["backups"]:
        doc.table(["backup", "type", "started", "took", "size", "stored", "changed", "warnings"],
                  [[b["label"], b["type"], _t(b["started"], zone), duration(b["seconds"]), human_bytes(b["size_bytes"]),
                    human_bytes(b["stored_bytes"]), human_bytes(b["changed_bytes"]), len(b["warnings"]) or ""]
                   for b in section["backups"]])
    else:
        doc.p("No backup in this period.")
    if section["failures"]:
        doc.p("**Failed:**")
        doc.table(["run", "what", "failed at", "phase", "error"],
                  [[f["label"], f["operation"] + (" (aborted)" if f["aborted"] else ""), _t(f["failed"], zone),
                    f["phase"], f["error"]] for f in section["failures"]])
    if section["copies"]:
        doc.p("Copies: " + ", ".join(f"{c['label']} to {c['repository']}" for c in section["copies"]))
    if section["verifications"]:
        doc.table(["verified", "level", "result", "at", "took", "ready after"],
                  [[v["label"], v["level"], v["result"], _t(v["at"], zone), duration(v["seconds"]),
                    duration(v["ready_seconds"])] for v in section["verifications"]])
    state = section["state"]
    rpo = state["rpo"]
    lines = []
    if rpo["objective_seconds"] is not None:
        lines.append(f"RPO {duration(rpo['objective_seconds'])}: {_met(rpo['met'])} — {rpo['basis'] or 'no backup'}")
    rto = state["rto"]
    if rto["objective_seconds"] is not None:
        lines.append(f"RTO {duration(rto['objective_seconds'])}: {_met(rto['met'])} — last measured "
                     f"{duration(rto['measured_seconds'])}" + (f" ({rto['label']})" if rto["label"] else ""))
    lines += [f"[{w['severity']}] {w['title']}" + (f": {w['detail']}" if w["detail"] else "")
              for w in section["warnings"]]
    doc.ul(lines)


# -- incidents --------------------------------------------------------------------------


def _incidents(doc: Doc, report) -> None:
    s, zone = report.summary, report.timezone
    if not report.incidents:
        doc.p("No incident in this period.")
    else:
        by = ", ".join(f"{n} of severity {level}" for level, n in s["by_severity"].items())
        doc.p(f"**{s['incidents']} incident(s)** ({by}); {s['open']} open, {s['resolved']} resolved.")
    for item in report.incidents:
        _incident(doc, item, zone)
    doc.h(2, "Current state")
    doc.table(["source", "last backup", "recovery point", "RPO", "last failure", "verification", "open problems"],
              [_current_row(c, zone) for c in report.current])


def _incident(doc: Doc, item: dict, zone: str) -> None:
    doc.h(2, f"{item['number']}. [{item['severity']}] {item['title']}")
    ended = item["ended"]
    took = duration((parse_iso(ended) - parse_iso(item["started"])).total_seconds()) if ended else None
    targets = item.get("targets") or {}
    target = f"resolve by {_t(targets.get('resolve_by'), zone)}"
    if targets.get("respond_by"):
        target = f"respond by {_t(targets['respond_by'], zone)}, " + target
    verdict = {True: "resolved in time", False: "NOT resolved in time", None: "open"}[targets.get("resolved_in_time")]
    doc.ul([f"**When:** {_t(item['started'], zone)} – " + (f"{_t(ended, zone)} ({took})" if ended else "still open"),
            f"**Severity:** {sev.describe(item['severity'])}; {target} ({verdict})",
            f"**What failed:** {item['cause'] or item['title']}"
            + (f" ({item['failures']} times)" if item["failures"] > 1 else ""),
            f"**Impact:** {item['impact'].get('text') or '-'}",
            f"**Resolution:** {item['resolution'] or 'none yet'}"])
    if len(item["errors"]) > 1:
        doc.p("Errors seen:")
        doc.ul(item["errors"][:10])
    if item["actions"]:
        doc.table(["at", "what was done", "result", "detail"],
                  [[_t(a["at"], zone), a["what"], a["result"], a["detail"]] for a in item["actions"]])


def _current_row(state: dict, zone: str) -> list:
    rpo, ver = state["rpo"], state["verification"]
    last = state["last_backup"]
    failure = state["last_failure"]
    return [state["source"], f"{last['label']} ({last['type']})" if last else "none",
            f"{duration(rpo['age_seconds'])} ago" if rpo["age_seconds"] is not None else "none", _met(rpo["met"]),
            f"{_t(failure['failed'], zone)}: {failure['error']}" if failure else "-",
            ("failed: " + ", ".join(ver["failed_labels"])) if ver["failed_labels"] else
            (f"restore {duration(ver['age_seconds'])} ago" if ver["age_seconds"] is not None else "-"),
            "; ".join(f"[{p['severity']}] {p['title']}" for p in state.get("open_problems", [])) or "-"]


def _runbook_runs(doc: Doc, report) -> None:
    for run in report.runbook_runs:
        doc.h(2, f"Runbook run {run['run']}")
        doc.p(f"Runbook `{run['runbook']}` ({run['title']}) · mode {run['mode']} · **{run['status']}** · "
              f"{_t(run['started'], report.timezone)} – {_t(run['ended'], report.timezone)} on {run['host']}"
              + (f" · error: {run['error']}" if run["error"] else ""))
        doc.ul(run["outcome"])
        doc.table(["step", "title", "result", "attempts", "started", "took", "detail"],
                  [[s["id"], s["title"], s["state"], s["attempts"], _t(s["started"], report.timezone),
                    duration(s["seconds"]), s["summary"]] for s in run["steps"]])
