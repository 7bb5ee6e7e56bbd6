"""The notify front: findings in, notices out.

`observe()` takes findings (from job results, objectives, early warnings) into
the ledger; `flush()` works out, per channel, what it should be told now
(severity threshold, de-duplication, reminders, recoveries, flapping) and
delivers it within the channel's rate limit: when more is due than fits, or
more than DIGEST_ABOVE at once, one digest carries it all.  A delivery that
fails stays due and is tried at the next flush.  Nothing here raises for a
channel's failure: a notification must never stop a backup or a failover.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Callable

from drorch.notify import severity as sev
from drorch.notify.channels import Channel, DeliveryError, make_channels
from drorch.notify.findings import Finding, Notice, problem_text
from drorch.notify.journal import Journal
from drorch.notify.ledger import Ledger
from drorch.timefmt import utcnow

log = logging.getLogger(__name__)
DIGEST_ABOVE = 3  # more notices than this due at once for one channel: one digest


class Notifier:
    def __init__(self, channels: list[Channel], state_dir: Path | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.channels = channels
        root = Path(state_dir) / "notify" if state_dir is not None else None
        self.ledger = Ledger(root / "ledger.json" if root else None)
        self.journal = Journal(root / "events.jsonl" if root else None)
        self.clock = clock

    @classmethod
    def from_policy(cls, policy, state_dir: Path | str | None = None, clock=utcnow) -> "Notifier":
        """The policy's channels; state in `state_dir` (default: the daemon's state_dir)."""
        state = Path(state_dir) if state_dir is not None else Path(policy.daemon.state_dir)
        return cls(make_channels(policy.notify), state, clock)

    # -- findings --------------------------------------------------------------------

    def observe(self, findings: list[Finding]) -> list[tuple[str, str]]:
        """Take findings in; the (key, change) of problems that opened, escalated or cleared."""
        now = self.clock()
        changes = []
        for finding in findings:
            change = self.ledger.observe(finding, now)
            if change is None:
                continue
            changes.append((finding.key, change))
            entry = self.ledger.problems[finding.key]
            level = logging.INFO if change == "cleared" else logging.WARNING
            log.log(level, "problem %s %s: %s%s", finding.key, change, entry["title"],
                    f" ({finding.detail})" if finding.detail and change != "cleared" else "",
                    extra={"fields": {"event": f"problem-{change}", "key": finding.key,
                                      "severity": entry["severity"], "source": finding.source}})
            self.journal.append(f"problem-{change}", finding.at or now, key=finding.key, kind=finding.kind,
                                source=finding.source, severity=entry["severity"], title=entry["title"],
                                detail=finding.detail, count=entry["count"])
        return changes

    def record(self, event: str, **facts) -> None:
        """A fact for the incident report (a job's outcome, a report sent)."""
        self.journal.append(event, self.clock(), **facts)

    # -- delivery --------------------------------------------------------------------

    def flush(self) -> list[dict]:
        """Send what is due; [{channel, title, state, ok, error}] of every delivery tried."""
        now = self.clock()
        self.ledger.settle(now)
        tried = []
        for channel in self.channels:
            due = self.ledger.pending(channel, now)
            room = self.ledger.capacity(channel, now)
            if not due or room <= 0:
                continue
            if len(due) > min(DIGEST_ABOVE, room):
                tried.append(self._deliver(channel, self._digest(due, now), due, now))
                continue
            for key, state in due:
                tried.append(self._deliver(channel, self._notice(key, state, now), [(key, state)], now))
        self.ledger.save()
        return tried

    def send(self, notice: Notice, channels: list[Channel] | None = None) -> list[dict]:
        """Deliver one notice now (a report, a test) to the given channels (default: all)."""
        now = self.clock()
        chosen = self.channels if channels is None else channels
        tried = [self._deliver(channel, notice, [], now) for channel in chosen]
        self.ledger.save()
        return tried

    def announce(self, notice: Notice) -> list[dict]:
        """Deliver a one-off notice (a runbook's `notify` step, an event) to the channels
        whose min_severity it reaches; not de-duplicated (problems go through observe/flush)."""
        return self.send(notice, [c for c in self.channels if sev.reaches(notice.severity, c.min_severity)])

    def _deliver(self, channel: Channel, notice: Notice, items: list[tuple[str, str]], now: datetime) -> dict:
        state = self.ledger.channel_state(channel.name)
        outcome = {"channel": channel.name, "title": notice.title, "state": notice.state,
                   "severity": notice.severity, "keys": [k for k, _ in items], "ok": True, "error": None}
        try:
            channel.send(notice)
        except DeliveryError as exc:
            outcome.update(ok=False, error=exc.message)
            if state.get("failing") != exc.message:  # said once per kind of failure, not every pass
                log.error("notification to %s failed: %s", channel.name, exc.message,
                          extra={"fields": {"event": "notify-failed", "channel": channel.name}})
            state["failing"] = exc.message
        else:
            if state.pop("failing", None):
                log.info("notifications to %s work again", channel.name)
            self.ledger.sent(channel.name, now)
            for key, item_state in items:
                self.ledger.told(channel.name, key, item_state, now)
            log.info("notified %s: %s", channel.name, notice.subject(),
                     extra={"fields": {"event": "notified", "channel": channel.name, "state": notice.state,
                                       "severity": notice.severity, "keys": outcome["keys"]}})
        self.journal.append("notice", now, **outcome)
        return outcome

    def _notice(self, key: str, state: str, now: datetime) -> Notice:
        entry = self.ledger.problems[key]
        title = {"recovered": f"{entry['title']}: recovered", "reminder": f"still: {entry['title']}",
                 "flapping": f"flapping: {entry['title']}"}.get(state, entry["title"])
        return Notice(state, entry["severity"], title, problem_text(entry, state, now), key=key,
                      source=entry.get("source"), kind=entry.get("kind"), at=now,
                      facts={**(entry.get("facts") or {}), "since": entry["since"], "count": entry["count"]})

    def _digest(self, due: list[tuple[str, str]], now: datetime) -> Notice:
        parts = [self._notice(key, state, now) for key, state in due]
        open_ = [p for p in parts if p.state != "recovered"]
        level = sev.worst(p.severity for p in (open_ or parts))
        title = f"{len(open_)} problem(s)" + (f", {len(parts) - len(open_)} recovered" if len(open_) < len(parts)
                                              else "") + ": " + ", ".join(p.key for p in parts[:4]) + \
            ("…" if len(parts) > 4 else "")
        text = "\n\n".join(f"[{p.severity}] {p.title}\n{p.text}" for p in parts)
        return Notice("digest", level, title, text, at=now, facts={"items": [p.as_json() for p in parts]})
