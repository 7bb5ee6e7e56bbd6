"""The report model: one Report for the daily report and the incident report
(and a runbook run's report), rendered as JSON (`as_json`) or Markdown
(report_md.py).  Built from what the repositories hold (backups, failed runs,
verification records, runbook journals) plus, where the daemon runs, its
notify journal and ledger (jobs it ran, problems it saw, notices it sent).

Times in the model are ISO 8601 UTC; Markdown shows them in the report's
time zone.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from drorch.errors import DrorchError
from drorch.notify.facts import BackupFacts, FailedRun, RepoFacts, VerifyRef
from drorch.notify.findings import Notice
from drorch.notify.journal import Journal
from drorch.notify.ledger import Ledger
from drorch.notify.objectives import Evaluator, objectives_of, recovery_point
from drorch.notify import severity as sev
from drorch.timefmt import iso, utcnow


@dataclass
class Report:
    kind: str  # daily | incident
    title: str
    generated: datetime
    since: datetime
    until: datetime
    timezone: str
    summary: dict
    sources: list[dict] = field(default_factory=list)  # daily: per source, what ran
    incidents: list[dict] = field(default_factory=list)  # incident: what failed, impact, what was done
    runbook_runs: list[dict] = field(default_factory=list)
    notifications: list[dict] = field(default_factory=list)  # notices sent in the period (daemon journal)
    current: list[dict] = field(default_factory=list)  # per source: the state at `generated`
    host: str = field(default_factory=socket.gethostname)
    policy: str = ""

    def as_json(self) -> dict:
        return {"report": self.kind, "title": self.title, "generated": iso(self.generated),
                "since": iso(self.since), "until": iso(self.until), "timezone": self.timezone, "host": self.host,
                "policy": self.policy, "summary": self.summary, "sources": self.sources,
                "incidents": self.incidents, "runbook_runs": self.runbook_runs,
                "notifications": self.notifications, "current": self.current}

    def markdown(self) -> str:
        from drorch.notify.report_md import render

        return render(self)

    def severity(self) -> str:
        return self.summary.get("worst_severity") or "IV"

    def notice(self) -> Notice:
        """The report as a message: Markdown body, the JSON attached (e-mail) or carried (webhook)."""
        import json

        text = self.markdown()
        notice = Notice("report", self.severity(), self.title, text, kind=f"report-{self.kind}",
                        at=self.generated, facts={"summary": self.summary})
        notice.attachments = {f"drorch-{self.kind}-report.json": json.dumps(self.as_json(), indent=1).encode()}
        return notice


@dataclass
class Context:
    """What a report is built from."""

    policy: object
    repos: Callable[[str], RepoFacts | None]  # by repository name; DrorchError when unreadable
    now: datetime = field(default_factory=utcnow)
    timezone: str = "UTC"
    sources: list[str] | None = None  # default: every source of the policy
    journal: Journal | None = None
    ledger: Ledger | None = None
    next_runs: Callable[[str], dict[str, datetime]] | None = None

    def names(self) -> list[str]:
        return sorted(self.sources if self.sources is not None else self.policy.sources)

    def facts(self, repository: str) -> tuple[RepoFacts | None, str | None]:
        try:
            return self.repos(repository), None
        except DrorchError as exc:
            return None, exc.message

    def evaluator(self) -> Evaluator:
        return Evaluator(self.policy, self.repos, lambda: self.now)


# -- rows (shared by the daily and the incident report) -------------------------------


def backup_row(b: BackupFacts) -> dict:
    return {"label": b.label, "type": b.type, "started": iso(b.started), "finished": iso(b.finished),
            "seconds": b.seconds, "size_bytes": b.size_bytes, "stored_bytes": b.stored_bytes,
            "changed_bytes": b.changed_bytes, "files": b.files, "warnings": list(b.warnings), "why": b.why,
            "host": b.host}


def failure_row(r: FailedRun) -> dict:
    return {"label": r.label, "operation": r.operation, "type": r.type, "started": iso(r.started),
            "failed": iso(r.failed), "phase": r.phase, "error": r.error, "aborted": r.aborted, "host": r.host,
            "repository": r.repository}


def verification_row(facts: RepoFacts, ref: VerifyRef) -> dict:
    record = facts.verification_record(ref)
    return {"label": ref.label, "level": ref.level, "result": ref.result, "at": iso(ref.at),
            "seconds": record.get("seconds"), "ready_seconds": record.get("ready_seconds"),
            "restore_seconds": record.get("restore_seconds"), "problems": (record.get("problems") or [])[:5],
            "problem_count": record.get("problem_count", len(record.get("problems") or []))}


def in_period(moment: datetime, since: datetime, until: datetime) -> bool:
    return since < moment <= until


# -- the state of a source now ------------------------------------------------------------


def source_state(ctx: Context, name: str) -> dict:
    """Recovery point vs RPO, last restore verification vs max_age and RTO, last backup and failure."""
    model = ctx.policy.sources[name]
    rpo, rto, max_age = objectives_of(model)
    facts, error = ctx.facts(model.repository)
    state = {"source": name, "kind": model.kind, "repository": model.repository, "error": error,
             "last_backup": None, "last_failure": None,
             "rpo": {"objective_seconds": _seconds(rpo), "recovery_point": None, "basis": None,
                     "age_seconds": None, "met": None},
             "rto": {"objective_seconds": _seconds(rto), "measured_seconds": None, "label": None,
                     "measured_at": None, "met": None},
             "verification": {"last_restore_passed": None, "age_seconds": None,
                              "max_age_seconds": _seconds(max_age), "met": None, "failed_labels": []}}
    if facts is None:
        if error is None and rpo is not None:
            state["rpo"]["met"] = False  # no repository yet: nothing is restorable
        return state
    backups = [b for b in facts.backups(name) if b.finished <= ctx.now]  # (a report of an earlier day)
    if backups:
        state["last_backup"] = backup_row(backups[-1])
    failures = [r for r in facts.failed_runs(name) if not r.aborted and r.failed <= ctx.now]
    if failures:
        state["last_failure"] = failure_row(failures[-1])
    point = recovery_point(facts, name, model, backups, ctx.now)
    age = (ctx.now - point.at).total_seconds() if point.at else None
    state["rpo"].update(recovery_point=iso(point.at) if point.at else None, basis=point.basis,
                        age_seconds=None if age is None else round(age, 1),
                        met=None if rpo is None else (age is not None and age <= rpo.total_seconds()))
    _verification_state(state, facts, name, {b.label for b in backups}, ctx.now, rto, max_age)
    return state


def _verification_state(state: dict, facts: RepoFacts, name: str, labels: set[str], now: datetime,
                        rto: timedelta | None, max_age: timedelta | None) -> None:
    refs = [r for r in facts.verifications(name) if r.label in labels and r.at <= now]
    newest: dict[str, VerifyRef] = {}
    for ref in refs:
        newest[ref.label] = ref
    verification = state["verification"]
    verification["failed_labels"] = sorted(label for label, ref in newest.items() if ref.result == "failed")
    passed = [r for r in refs if r.level == "restore" and r.result == "passed"]
    if not passed:
        verification["met"] = None if max_age is None else False
        return
    last = passed[-1]
    age = (now - last.at).total_seconds()
    verification.update(last_restore_passed=iso(last.at), age_seconds=round(age, 1),
                        met=None if max_age is None else age <= max_age.total_seconds())
    record = facts.verification_record(last)
    measured = record.get("ready_seconds") or record.get("restore_seconds")
    state["rto"].update(measured_seconds=measured, label=last.label, measured_at=iso(last.at),
                        met=None if rto is None or measured is None else measured <= rto.total_seconds())


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


def journal_notices(ctx: Context, since: datetime, until: datetime) -> list[dict]:
    if ctx.journal is None:
        return []
    return [{k: e.get(k) for k in ("at", "channel", "state", "severity", "title", "keys", "ok", "error")}
            for e in ctx.journal.read(since, until) if e.get("event") == "notice"]


def open_problems(ctx: Context, names: set[str]) -> list[dict]:
    """Problems the daemon's ledger holds open (with flapping), for sources in scope and the host."""
    if ctx.ledger is None:
        return []
    out = []
    for key, entry in sorted(ctx.ledger.problems.items()):
        if entry.get("state") == "problem" and (entry.get("source") in names or entry.get("source") is None):
            out.append({"key": key, "source": entry.get("source"), "severity": entry["severity"],
                        "title": entry["title"],
                        "detail": entry.get("detail"), "since": entry["since"], "count": entry["count"],
                        "flapping": bool(entry.get("flapping"))})
    return sorted(out, key=lambda p: (sev.rank(p["severity"]), p["key"]))
