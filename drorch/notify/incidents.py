"""The incident report: what failed since T, when, how severe, its impact
(data at risk), what was done (attempts, the job that resolved it, notices,
runbook runs with their steps) and the state now — the fault report the O&M
plans ask for within 24 hours of every incident.

Incidents (episodes of a problem) come from the repositories where they can
(a failed backup until the next committed one; a failed verification until
the backup passes one again; a gap between recovery points longer than the
RPO; a backup with an abnormal change volume) and from the daemon's journal
for what leaves no trace there (a failed copy that later succeeded, hooks,
free space).
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime, timedelta

from drorch.notify import severity as sev
from drorch.notify.anomaly import change_anomaly
from drorch.notify.facts import BackupFacts, FailedRun
from drorch.notify.objectives import has_archive, objectives_of
from drorch.notify.report import Context, Report, journal_notices, open_problems, source_state
from drorch.notify.runbooks import runbook_incident, runbook_runs
from drorch.notify.text import duration, local
from drorch.timefmt import format_duration, iso, parse_iso

REPOSITORY_KINDS = ("backup", "verification", "change")  # episodes read from the repositories
_ZONE: ContextVar[str] = ContextVar("report_zone", default="UTC")  # the zone texts show times in


def _when(moment: datetime | None) -> str:
    return local(moment, _ZONE.get()) if moment else "now"


def incident_report(ctx: Context, since: datetime, until: datetime | None = None) -> Report:
    token = _ZONE.set(ctx.timezone)
    try:
        return _incident_report(ctx, since, until or ctx.now)
    finally:
        _ZONE.reset(token)


def _incident_report(ctx: Context, since: datetime, until: datetime) -> Report:
    found: list[dict] = []
    archived: set[str] = set()
    for name in ctx.names():
        found += source_incidents(ctx, name, until)
        if has_archive(ctx.policy.sources[name]):
            archived.add(name)
    found += journal_incidents(ctx, until, archived, {i["key"] for i in found if i["status"] == "open"})
    runs = [r for r in runbook_runs(ctx) if _overlaps(r["started"], r["ended"], since, until)]
    found += [runbook_incident(r) for r in runs if r["status"] == "failed"]
    incidents = sorted((i for i in found if _overlaps(i["started"], i["ended"], since, until)),
                       key=lambda i: (i["started"], i["key"]))
    for number, incident in enumerate(incidents, 1):
        incident["number"] = number
        _journal_actions(ctx, incident, until)
        incident["targets"] = targets(incident, until)
    scope = set(ctx.names())
    current = [{**source_state(ctx, name), "open_problems": open_problems(ctx, {name})} for name in ctx.names()]
    levels = [i["severity"] for i in incidents]
    summary = {"incidents": len(incidents), "open": sum(1 for i in incidents if i["status"] == "open"),
               "resolved": sum(1 for i in incidents if i["status"] == "resolved"),
               "by_severity": {level: levels.count(level) for level in sev.LEVELS if level in levels},
               "worst_severity": sev.worst(levels), "runbook_runs": len(runs),
               "host_problems": [p for p in open_problems(ctx, scope) if p.get("source") is None]}
    title = f"drorch incident report since {local(since, ctx.timezone)}: " + (
        f"{len(incidents)} incident(s), {summary['open']} open" if incidents else "no incidents")
    return Report("incident", title, ctx.now, since, until, ctx.timezone, summary, incidents=incidents,
                  runbook_runs=runs, notifications=journal_notices(ctx, since, until), current=current,
                  policy=str(getattr(ctx.policy, "path", "")))


def _overlaps(started: str | None, ended: str | None, since: datetime, until: datetime) -> bool:
    if started is None:
        return False
    return parse_iso(started) <= until and (ended is None or parse_iso(ended) >= since)


def incident(key: str, kind: str, source: str | None, severity: str, title: str, started: datetime,
             ended: datetime | None, **more) -> dict:
    out = {"id": f"{key}@{iso(started)}", "key": key, "kind": kind, "source": source, "severity": severity,
           "title": title, "started": iso(started), "ended": iso(ended) if ended else None,
           "status": "resolved" if ended else "open", "failures": 1, "errors": [], "cause": None,
           "impact": {"text": ""}, "resolution": None, "actions": []}
    out.update(more)
    return out


def targets(item: dict, now: datetime) -> dict:
    """When the O&M plans want it answered and resolved, and whether it was."""
    started = parse_iso(item["started"])
    respond = sev.RESPOND_WITHIN.get(item["severity"])
    resolve_by = started + sev.RESOLVE_WITHIN[item["severity"]]
    ended = parse_iso(item["ended"]) if item["ended"] else None
    in_time = (ended <= resolve_by) if ended else (None if now <= resolve_by else False)
    return {"respond_by": iso(started + respond) if respond else None, "resolve_by": iso(resolve_by),
            "resolved_in_time": in_time}


# -- from the repositories ----------------------------------------------------------------


def source_incidents(ctx: Context, name: str, now: datetime) -> list[dict]:
    model = ctx.policy.sources[name]
    facts, error = ctx.facts(model.repository)
    if facts is None:
        return []
    rpo = objectives_of(model)[0]
    backups = facts.backups(name)
    failures = [r for r in facts.failed_runs(name) if r.operation == "backup" and not r.aborted]
    archive = has_archive(model)
    found = backup_incidents(name, backups, failures, rpo, archive, now)
    if rpo is not None and not archive:
        found += rpo_gaps(name, backups, rpo, now, found)
    found += verification_incidents(name, backups, facts)
    found += change_incidents(name, backups, model.warnings.change_factor, model.warnings.zero_change)
    for target in model.copy_to:
        copies, _ = ctx.facts(target)
        if copies is not None:
            found += copy_incidents(name, target, [r for r in copies.failed_runs(name) if r.operation == "copy"])
    return found


def backup_incidents(name: str, backups: list[BackupFacts], failures: list[FailedRun], rpo: timedelta | None,
                     archive: bool, now: datetime) -> list[dict]:
    """A failed backup opens an incident; the first backup started after it resolves it."""
    out, i = [], 0
    failures = sorted(failures, key=lambda r: r.failed)
    while i < len(failures):
        first = failures[i]
        resolving = next((b for b in backups if b.started > first.started), None)
        group = [f for f in failures[i:] if resolving is None or f.started < resolving.started]
        i += len(group)
        last_good = next((b for b in reversed(backups) if b.finished <= first.started), None)
        out.append(_backup_incident(name, group, resolving, last_good, rpo, archive, now))
    return out


def _backup_incident(name, group, resolving, last_good, rpo, archive, now) -> dict:
    first = group[0]
    ended = resolving.finished if resolving else None
    errors = list(dict.fromkeys(f"{f.phase}: {f.error}" if f.phase else f.error for f in group))
    impact = _exposure(name, last_good, first.failed, ended, now, rpo, archive)
    level = "I" if impact.get("rpo_exceeded") else "II"
    actions = [{"at": iso(f.failed), "what": f"backup {f.label} ({f.type}) on {f.host}", "result": "failed",
                "detail": f"{f.phase}: {f.error}" if f.phase else f.error} for f in group]
    resolution = None
    if resolving is not None:
        resolution = f"{resolving.type} backup {resolving.label} committed at {_when(resolving.finished)}"
        actions.append({"at": iso(resolving.finished), "what": f"{resolving.type} backup {resolving.label}",
                        "result": "ok", "detail": resolving.why})
    title = f"backup of {name} failed" + (f" ({len(group)} times)" if len(group) > 1 else "")
    return incident(f"backup/{name}", "backup", name, level, title, first.failed, ended, failures=len(group),
                    errors=errors, cause=errors[0], impact=impact, resolution=resolution, actions=actions)


def _exposure(name, last_good: BackupFacts | None, failed: datetime, ended: datetime | None, now: datetime,
              rpo: timedelta | None, archive: bool) -> dict:
    """Data at risk: what was written after the last good backup, until a backup held it again."""
    until = ended or now
    if last_good is None:
        return {"text": f"there was no backup of {name} to restore from until {_when(ended)}",
                "at_risk_from": None, "at_risk_until": iso(ended) if ended else None, "data_at_risk_seconds": None,
                "rpo_seconds": rpo.total_seconds() if rpo else None, "rpo_exceeded": rpo is not None}
    seconds = (until - last_good.finished).total_seconds()
    text = (f"no new backup of {name} from {_when(failed)} until {_when(ended)}: data written "
            f"after backup {last_good.label} (finished {_when(last_good.finished)}) was held by no backup for "
            f"{duration(seconds)}")
    exceeded = rpo is not None and not archive and seconds > rpo.total_seconds()
    if archive:
        text += " (archived WAL / binlogs kept protecting it as long as archiving worked)"
    elif rpo is not None:
        text += f"; RPO {format_duration(rpo)}: " + (f"exceeded by {duration(seconds - rpo.total_seconds())}"
                                                    if exceeded else "kept")
    return {"text": text, "at_risk_from": iso(last_good.finished), "at_risk_until": iso(ended) if ended else None,
            "data_at_risk_seconds": round(seconds, 1), "rpo_seconds": rpo.total_seconds() if rpo else None,
            "rpo_exceeded": exceeded}


def rpo_gaps(name: str, backups: list[BackupFacts], rpo: timedelta, now: datetime, known: list[dict]) -> list[dict]:
    """Times with no recovery point within the RPO that no failed backup explains (no backup ran)."""
    covered = [(parse_iso(i["impact"]["at_risk_from"]), parse_iso(i["ended"]) if i["ended"] else now)
               for i in known if i["kind"] == "backup" and i["impact"].get("at_risk_from")]
    out = []
    points = [b.finished for b in backups]
    for before, after in zip(points, points[1:] + [None]):
        end = after or now
        if end - before <= rpo or any(start <= before and end <= stop for start, stop in covered):
            continue
        lost = (end - before).total_seconds()
        out.append(incident(f"rpo/{name}", "rpo", name, "I", f"{name} had no restorable backup within its RPO "
                            f"of {format_duration(rpo)}", before + rpo, after, cause="no backup ran",
                            impact={"text": f"nothing newer than {_when(before)} could be restored for "
                                            f"{duration(lost)}", "at_risk_from": iso(before),
                                    "at_risk_until": iso(after) if after else None,
                                    "data_at_risk_seconds": round(lost, 1), "rpo_seconds": rpo.total_seconds(),
                                    "rpo_exceeded": True},
                            resolution=f"a backup finished at {_when(after)}" if after else None))
    return out


def verification_incidents(name: str, backups: list[BackupFacts], facts) -> list[dict]:
    """A failed verification of a backup, until that backup passes one again."""
    by_label: dict[str, list] = {}
    for ref in facts.verifications(name):
        by_label.setdefault(ref.label, []).append(ref)
    kept = {b.label: b for b in backups}
    out = []
    for label, refs in by_label.items():
        failed = []
        for ref in refs + [None]:
            if ref is not None and ref.result == "failed":
                failed.append(ref)
                continue
            if failed:
                out.append(_verification_incident(name, label, failed, ref, kept, facts))
                failed = []
    return out


def _verification_incident(name, label, failed, passed, kept, facts) -> dict:
    first = failed[0]
    record = facts.verification_record(failed[-1])
    problems = [str(p) for p in (record.get("problems") or [])[:5]]
    checks = [f"{c.get('name')}: {c.get('detail')}" for c in record.get("checks") or []
              if isinstance(c, dict) and c.get("result") == "failed"][:5]
    dependents = sorted(b.label for b in kept.values() if label in b.chain)
    backup = kept.get(label)
    what = f"backup {label}" + (f" ({backup.type}, finished {_when(backup.finished)})" if backup else "")
    text = f"{what} may not restore"
    if dependents:
        text += f"; {len(dependents)} later backup(s) depend on it and may not restore either: {', '.join(dependents)}"
    actions = [{"at": iso(r.at), "what": f"{r.level} verification of {label}", "result": "failed",
                "detail": ""} for r in failed]
    if passed is not None:
        actions.append({"at": iso(passed.at), "what": f"{passed.level} verification of {label}", "result": "ok",
                        "detail": "passed"})
    errors = problems or checks or ["failed"]
    return incident(f"verification/{name}", "verification", name, "I",
                    f"{first.level} verification of {name} backup {label} failed", first.at,
                    passed.at if passed else None, failures=len(failed), errors=errors, cause=errors[0],
                    impact={"text": text, "backups_affected": [label] + dependents},
                    resolution=f"{passed.level} verification passed at {_when(passed.at)}" if passed else None,
                    actions=actions)


def change_incidents(name: str, backups: list[BackupFacts], factor: float, zero: bool) -> list[dict]:
    """Backups with an abnormal change volume; a run of them is one incident, until a usual one."""
    out, current = [], None
    for index in range(len(backups)):
        anomaly = change_anomaly(backups[:index + 1], factor, zero)
        if anomaly is not None:
            if current is None:
                current = incident(f"change/{name}", "change", name, "III",
                                   f"abnormal change volume in {name}: backup {anomaly.label}",
                                   backups[index].finished, None, failures=0, cause=anomaly.describe(name),
                                   errors=[], impact={"text": "if this is damage (mass deletion, encryption), "
                                                              "the backups before it hold the good data",
                                                      "backups_affected": []})
                out.append(current)
            current["failures"] += 1
            current["errors"].append(anomaly.describe(name))
            current["impact"]["backups_affected"].append(anomaly.label)
        elif current is not None:
            current.update(ended=iso(backups[index].finished), status="resolved",
                           resolution=f"backup {backups[index].label} stored a usual amount")
            current = None
    return out


def copy_incidents(name: str, target: str, failures: list[FailedRun]) -> list[dict]:
    """Copies still failing (their run records remain until the backup is copied)."""
    if not failures:
        return []
    first = min(failures, key=lambda r: r.failed)
    errors = list(dict.fromkeys(f"{f.label}: {f.error}" for f in failures))
    return [incident(f"copy/{name}/{target}", "copy", name, "II", f"copy of {name} to {target} failed",
                     first.failed, None, failures=len(failures), errors=errors, cause=errors[0],
                     impact={"text": f"{len(failures)} backup(s) of {name} are not in {target} (the second copy "
                                     "the 3-2-1 rule asks for)", "backups_affected": [f.label for f in failures]},
                     actions=[{"at": iso(f.failed), "what": f"copy of {f.label} to {target}", "result": "failed",
                               "detail": f.error} for f in failures])]


# -- from the daemon's journal ----------------------------------------------------------------


def journal_incidents(ctx: Context, now: datetime, archived: set[str], open_keys: set[str]) -> list[dict]:
    """Problems the daemon opened and cleared whose history the repositories do not keep."""
    if ctx.journal is None:
        return []
    out, current = [], {}
    names = set(ctx.names())
    for event in ctx.journal.read(None, now):
        key, kind = event.get("key"), event.get("kind")
        if not key or not event.get("event", "").startswith("problem-") or key in open_keys:
            continue
        if kind in REPOSITORY_KINDS or (kind == "rpo" and event.get("source") not in archived):
            continue
        if event.get("source") is not None and event.get("source") not in names:
            continue
        at = parse_iso(event["at"])
        if event["event"] in ("problem-opened", "problem-escalated") and key not in current:
            current[key] = incident(key, kind, event.get("source"), event.get("severity", "III"),
                                    event.get("title", key), at, None, cause=event.get("detail"),
                                    errors=[event.get("detail")] if event.get("detail") else [],
                                    impact={"text": _journal_impact(kind)})
            out.append(current[key])
        elif event["event"] in ("problem-opened", "problem-escalated"):
            current[key]["severity"] = sev.worst([current[key]["severity"], event.get("severity", "III")])
            current[key]["failures"] = max(current[key]["failures"], event.get("count") or 1)
        elif event["event"] == "problem-cleared" and key in current:
            item = current.pop(key)
            item.update(ended=event["at"], status="resolved", resolution=event.get("detail") or "cleared")
    for item in out:
        if item["status"] == "open" and ctx.ledger is not None:
            entry = ctx.ledger.problems.get(item["key"])
            item["failures"] = max(item["failures"], (entry or {}).get("count", 1))
    return out


def _journal_impact(kind: str) -> str:
    return {"copy": "the second copy (3-2-1) of new backups is missing while copies fail",
            "hook": "the operator's own step around the backup did not do its work (the backup itself is good)",
            "space": "backups fail once the file system is full",
            "verify-job": "no evidence that the backups restore was gathered",
            "verify-age": "no recent evidence that the backups restore",
            "rto": "a real restore would take longer than the objective",
            "rpo": "data written since the newest recovery point would be lost",
            "repository": "backups, copies and verifications using it fail"}.get(kind, "")


def _journal_actions(ctx: Context, item: dict, now: datetime) -> None:
    """Notices sent about it, and the daemon's other jobs of its source, while it lasted."""
    if ctx.journal is None:
        return
    start = parse_iso(item["started"])
    end = parse_iso(item["ended"]) if item["ended"] else now
    for event in ctx.journal.read(start - timedelta(seconds=1), end + timedelta(seconds=5)):
        if event.get("event") == "notice" and item["key"] in (event.get("keys") or []):
            item["actions"].append({"at": event["at"], "what": f"notified {event.get('channel')} "
                                                               f"({event.get('state')})",
                                    "result": "ok" if event.get("ok") else "failed",
                                    "detail": event.get("error") or event.get("title")})
        elif event.get("event") == "job" and event.get("source") == item["source"] and \
                not (event.get("job") == "backup" and event.get("result") in ("ok", "failed")):
            item["actions"].append({"at": event["at"], "what": f"daemon job {event.get('job')}",
                                    "result": event.get("result"), "detail": event.get("summary") or ""})
    item["actions"].sort(key=lambda a: a["at"])
