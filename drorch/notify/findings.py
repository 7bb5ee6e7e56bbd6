"""What notify reasons about (findings: a problem present or gone) and what it
sends (notices: one message, for webhooks and e-mail alike)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime

from drorch.notify import severity as sev
from drorch.notify.text import printable
from drorch.timefmt import format_duration, iso, utcnow

# kind -> severity (I..IV, see severity.py)
SEVERITY = {"backup": "II", "copy": "II", "repository": "II", "verification": "I", "rpo": "I", "runbook": "I",
            "verify-job": "III", "verify-age": "III", "rto": "III", "space": "III", "change": "III",
            "hook": "III", "expire": "III", "drill": "II"}


@dataclass
class Finding:
    """A condition one check saw: `active` (the problem is there) or not (it is
    gone: a recovery, when it had been there)."""

    key: str  # stable name of the problem, e.g. backup/main-db, copy/main-db/dr
    kind: str
    source: str | None
    title: str  # one line: what is wrong ("backup of main-db failed")
    detail: str = ""  # the error, the figures
    active: bool = True
    severity: str = ""  # default: the kind's
    occurrence: bool = False  # a discrete event (a failed job): each one is counted
    at: datetime | None = None  # when it happened (default: when it was seen)
    facts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.severity = self.severity or SEVERITY.get(self.kind, "III")


def gone(key: str, kind: str, source: str | None, title: str, detail: str = "") -> Finding:
    """The check ran and found the problem absent."""
    return Finding(key, kind, source, title, detail, active=False)


@dataclass
class Notice:
    """One message.  state: problem | reminder | recovered | flapping | digest | report | test | info."""

    state: str
    severity: str
    title: str
    text: str
    key: str | None = None
    source: str | None = None
    kind: str | None = None
    at: datetime = field(default_factory=utcnow)
    facts: dict = field(default_factory=dict)
    attachments: dict[str, bytes] = field(default_factory=dict)  # e-mail attachments (name -> bytes)
    held_back: int = 0  # messages the rate limit held back before this one

    def subject(self) -> str:
        tag = "resolved" if self.state == "recovered" else sev.NAMES[self.severity]
        if self.state in ("report", "test", "info"):
            return printable(f"[drorch] {self.title}")
        return printable(f"[drorch {self.severity} {tag}] {self.title}")

    def body(self) -> str:
        text = self.text.rstrip()
        if self.held_back:
            text += f"\n\n({self.held_back} earlier message(s) were held back by the rate limit)"
        return printable(text + f"\n\n-- drorch on {socket.gethostname()}, {iso(self.at)}\n")

    def chat_text(self) -> str:
        """`text` of a webhook: what Slack and Teams show."""
        return f"*{self.subject()}*\n{self.body().rstrip()}"

    def payload(self) -> dict:
        return {"text": self.chat_text(), "drorch": {
            "state": self.state, "severity": self.severity, "severity_name": sev.NAMES[self.severity],
            "title": printable(self.title), "key": self.key, "source": self.source, "kind": self.kind, "at": iso(self.at),
            "host": socket.gethostname(), "facts": self.facts, "held_back": self.held_back}}

    def as_json(self) -> dict:
        return {"state": self.state, "severity": self.severity, "title": self.title, "key": self.key,
                "source": self.source, "kind": self.kind, "at": iso(self.at)}


def problem_text(problem: dict, state: str, now: datetime) -> str:
    """The body of a problem, reminder, flapping or recovered notice (problem: a ledger entry)."""
    lines = []
    since = problem["since"]
    if state == "recovered":
        lines.append(f"Recovered at {problem.get('cleared') or iso(now)}: {problem['title']} "
                     f"(a problem since {since}, {problem['count']} time(s)).")
        if problem.get("clear_detail"):
            lines.append(problem["clear_detail"])
        return "\n".join(lines)
    if state == "flapping":
        lines.append(f"{problem['title']}: it keeps coming and going ({len(problem['changes'])} changes within "
                     f"the hour); changes are not sent again until it settles for an hour.")
    elif state == "reminder":
        lines.append(f"Still a problem: {problem['title']} (since {since}, {problem['count']} time(s)).")
    else:
        lines.append(problem["title"] + ".")
    if problem.get("detail"):
        lines.append(problem["detail"])
    level = problem["severity"]
    resolve = sev.RESOLVE_WITHIN[level]
    respond = sev.RESPOND_WITHIN.get(level)
    target = f"severity {sev.describe(level)}: " + (f"respond within {format_duration(respond)}, " if respond
                                                     else "") + f"resolve within {format_duration(resolve)}"
    lines.append(target + (f" (source {problem['source']})" if problem.get("source") else ""))
    return "\n".join(lines)
