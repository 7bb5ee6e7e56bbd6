"""The daily report: per source, what ran in the last 24 hours (backups,
failures, copies, verifications), sizes and durations, RPO / RTO /
verification compliance, warnings, and the next runs."""

from __future__ import annotations

from datetime import timedelta

from drorch.notify import severity as sev
from drorch.notify.report import (Context, Report, backup_row, failure_row, in_period, journal_notices,
                                  open_problems, source_state, verification_row)
from drorch.notify.text import local
from drorch.timefmt import iso


def daily_report(ctx: Context, hours: float = 24) -> Report:
    until = ctx.now
    since = until - timedelta(hours=hours)
    evaluator = ctx.evaluator()
    sections = [source_section(ctx, evaluator, name, since, until) for name in ctx.names()]
    host_warnings = [_warning(f) for f in evaluator.space() if f.active]
    problems = open_problems(ctx, set(ctx.names()))
    date = local(until, ctx.timezone).split(" ")[0]
    summary = _summary(sections, host_warnings)
    report = Report("daily", f"drorch daily report {date}: {_headline(summary)}", ctx.now, since, until,
                    ctx.timezone, summary, sources=sections,
                    notifications=journal_notices(ctx, since, until),
                    current=[{"key": "host", "warnings": host_warnings, "open_problems": problems}],
                    policy=str(getattr(ctx.policy, "path", "")))
    return report


def source_section(ctx: Context, evaluator, name: str, since, until) -> dict:
    model = ctx.policy.sources[name]
    facts, error = ctx.facts(model.repository)
    section = {"name": name, "kind": model.kind, "repository": model.repository, "error": error,
               "backups": [], "failures": [], "copies": [], "verifications": [], "warnings": [],
               "next_runs": {}}
    if facts is not None:
        section["backups"] = [backup_row(b) for b in facts.backups(name) if in_period(b.finished, since, until)]
        section["failures"] = [failure_row(r) for r in facts.failed_runs(name)
                               if in_period(r.failed, since, until)]
        section["verifications"] = [verification_row(facts, r) for r in facts.verifications(name)
                                    if in_period(r.at, since, until)]
    for target in model.copy_to:
        copies, copy_error = ctx.facts(target)
        if copies is None:
            if copy_error:
                section["warnings"].append({"key": f"repository/{target}", "severity": "II",
                                            "title": f"copy repository {target} cannot be read",
                                            "detail": copy_error})
            continue
        section["copies"] += [{"repository": target, "label": b.label, "type": b.type, "copied": iso(b.copied_at)}
                              for b in copies.backups(name) if b.copied_at and in_period(b.copied_at, since, until)]
        section["failures"] += [failure_row(r) for r in copies.failed_runs(name)
                                if r.operation == "copy" and in_period(r.failed, since, until)]
    section["failures"].sort(key=lambda f: f["failed"])
    section["state"] = source_state(ctx, name)
    section["warnings"] += _warnings(ctx, evaluator, name, section)
    section["totals"] = _totals(section)
    if ctx.next_runs is not None:
        section["next_runs"] = {job: iso(at) for job, at in sorted(ctx.next_runs(name).items())}
    return section


def _warning(finding) -> dict:
    return {"key": finding.key, "severity": finding.severity, "title": finding.title, "detail": finding.detail}


def _warnings(ctx: Context, evaluator, name: str, section: dict) -> list[dict]:
    """Problems now (objectives, anomaly), the daemon's open problems, and backups' own warnings."""
    found = [_warning(f) for f in evaluator.source(name) if f.active]
    seen = {w["key"] for w in found}
    for problem in open_problems(ctx, {name}):
        if problem["key"] not in seen and problem.get("source", name) == name:
            found.append({k: problem[k] for k in ("key", "severity", "title", "detail")})
    for row in section["backups"]:
        if row["warnings"]:
            found.append({"key": f"backup-warnings/{name}/{row['label']}", "severity": "III",
                          "title": f"backup {row['label']} of {name} had {len(row['warnings'])} warning(s)",
                          "detail": "; ".join(row["warnings"][:3])})
    return sorted(found, key=lambda w: (sev.rank(w["severity"]), w["key"]))


def _totals(section: dict) -> dict:
    backups, failures = section["backups"], [f for f in section["failures"] if not f["aborted"]]
    return {"backups": len(backups), "failed": sum(1 for f in failures if f["operation"] == "backup"),
            "copies": len(section["copies"]), "copies_failed": sum(1 for f in failures if f["operation"] == "copy"),
            "verifications": len(section["verifications"]),
            "verifications_failed": sum(1 for v in section["verifications"] if v["result"] == "failed"),
            "stored_bytes": sum(b["stored_bytes"] for b in backups),
            "seconds": round(sum(b["seconds"] for b in backups), 3),
            "size_bytes": backups[-1]["size_bytes"] if backups else None}


def _summary(sections: list[dict], host_warnings: list[dict]) -> dict:
    totals = [s["totals"] for s in sections]
    rpo = [s["state"]["rpo"]["met"] for s in sections]
    warnings = [w for s in sections for w in s["warnings"]] + host_warnings
    severities = [w["severity"] for w in warnings] + ["II" for t in totals if t["failed"] or t["copies_failed"]]
    severities += ["I" for t in totals if t["verifications_failed"]]
    return {"sources": len(sections), **{key: sum(t[key] for t in totals) for key in
                                         ("backups", "failed", "copies", "copies_failed", "verifications",
                                          "verifications_failed", "stored_bytes")},
            "rpo_met": rpo.count(True), "rpo_missed": rpo.count(False), "rpo_unset": rpo.count(None),
            "warnings": len(warnings), "worst_severity": sev.worst(severities)}


def _headline(summary: dict) -> str:
    parts = [f"{summary['backups']} backup(s)"]
    if summary["failed"]:
        parts.append(f"{summary['failed']} failed")
    if summary["copies_failed"]:
        parts.append(f"{summary['copies_failed']} copy failure(s)")
    if summary["verifications_failed"]:
        parts.append(f"{summary['verifications_failed']} verification(s) failed")
    if summary["rpo_missed"]:
        parts.append(f"{summary['rpo_missed']} source(s) outside their RPO")
    if len(parts) == 1:
        parts.append(f"{summary['warnings']} warning(s)" if summary["warnings"] else "all well")
    return ", ".join(parts)
