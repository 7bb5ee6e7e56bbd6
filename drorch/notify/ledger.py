"""What notify remembers between passes and restarts (a JSON file in the
daemon's state directory): each problem's episode, what each channel was told
about it and when, the channels' recent sends (rate limit), and the day the
daily report was last sent.

De-duplication: a channel is told of a problem once per episode (an episode
starts when the problem appears and ends when it clears), reminded every
`repeat` while it lasts, and told once when it clears — only if it was told
of the problem.  Flapping: a problem that changed FLAP_CHANGES times within
FLAP_WINDOW is announced once as flapping; its changes are not sent again
until it has held still for FLAP_WINDOW, and then its state is.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from drorch.notify import severity as sev
from drorch.notify.findings import Finding
from drorch.timefmt import iso, parse_iso

log = logging.getLogger(__name__)
FLAP_WINDOW = timedelta(hours=1)
FLAP_CHANGES = 3
FORGET_AFTER = timedelta(days=2)  # a cleared problem everybody was told of is forgotten after this
HOUR = timedelta(hours=1)


class Ledger:
    def __init__(self, path: Path | None = None):
        self.path = path
        self.data = {"version": 1, "problems": {}, "channels": {}, "reports": {}}
        if path is not None and path.exists():
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict) and loaded.get("version") == 1:
                    self.data.update(loaded)
            except (OSError, ValueError) as exc:  # a damaged state file: start afresh, say so
                log.warning("notification state %s unreadable (%s): starting afresh", path, exc)

    @property
    def problems(self) -> dict[str, dict]:
        return self.data["problems"]

    def save(self) -> None:
        if self.path is None:
            return
        text = json.dumps(self.data, indent=1, sort_keys=True)
        if text == getattr(self, "_saved", None):
            return  # nothing changed since the last save
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ledger-")
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(tmp, self.path)
            self._saved = text
        except OSError as exc:
            log.error("cannot save the notification state %s: %s", self.path, exc.strerror or exc)

    # -- problems ----------------------------------------------------------------

    def observe(self, finding: Finding, now: datetime) -> str | None:
        """Take a finding in; 'opened', 'escalated', 'cleared' or None (nothing changed)."""
        at = iso(finding.at or now)
        entry = self.problems.get(finding.key)
        if not finding.active:
            if entry is None or entry["state"] != "problem":
                return None
            entry.update(state="clear", cleared=at, clear_detail=finding.detail)
            self._changed(entry, at, now)
            return "cleared"
        if entry is None or entry["state"] == "clear":
            entry = self.problems.setdefault(finding.key, {"episode": 0, "changes": [], "told": {}})
            entry.update(key=finding.key, kind=finding.kind, source=finding.source, severity=finding.severity,
                         title=finding.title, detail=finding.detail, state="problem", since=at, cleared=None,
                         count=1, last=at, episode=entry["episode"] + 1, facts=finding.facts)
            self._changed(entry, at, now)
            return "opened"
        escalated = sev.rank(finding.severity) < sev.rank(entry["severity"])
        entry.update(title=finding.title, detail=finding.detail, last=at, facts=finding.facts)
        if finding.occurrence:
            entry["count"] += 1
        if escalated:  # worse than what was said: a new episode, told again
            entry.update(severity=finding.severity, episode=entry["episode"] + 1)
            return "escalated"
        return None

    def _changed(self, entry: dict, at: str, now: datetime) -> None:
        entry["changes"] = [c for c in entry["changes"] if now - parse_iso(c) < FLAP_WINDOW] + [at]
        if len(entry["changes"]) >= FLAP_CHANGES and not entry.get("flapping"):
            entry["flapping"] = True
            log.warning("%s is flapping (%d changes within %s)", entry["key"], len(entry["changes"]),
                        FLAP_WINDOW)

    def settle(self, now: datetime) -> None:
        """Flapping problems that held still for FLAP_WINDOW settle; old cleared ones are forgotten."""
        for key, entry in list(self.problems.items()):
            last_change = parse_iso(entry["changes"][-1]) if entry["changes"] else None
            if entry.get("flapping") and (last_change is None or now - last_change >= FLAP_WINDOW):
                entry["flapping"] = False
                log.info("%s settled (%s)", key, entry["state"])
            if entry["state"] == "clear" and not entry.get("flapping") and entry.get("cleared") \
                    and now - parse_iso(entry["cleared"]) > FORGET_AFTER:
                del self.problems[key]

    def retire(self, stale) -> list[str]:
        """Forget problems the policy no longer asks about (stale(entry) is true), without a
        recovery notice: a source removed from the policy did not recover."""
        gone = [key for key, entry in self.problems.items() if stale(entry)]
        for key in gone:
            del self.problems[key]
        return gone

    # -- what a channel should be told -------------------------------------------------

    def pending(self, channel, now: datetime) -> list[tuple[str, str]]:
        """(key, state) this channel should be sent now: problem, reminder, flapping or recovered."""
        out = []
        for key, entry in sorted(self.problems.items(), key=lambda kv: (sev.rank(kv[1]["severity"]), kv[0])):
            if not sev.reaches(entry["severity"], channel.min_severity):
                continue
            told = entry["told"].get(channel.name)
            heard = told is not None and told["episode"] == entry["episode"] and told["state"] != "recovered"
            if entry.get("flapping"):
                if (heard or entry["state"] == "problem") and (told is None or told["state"] != "flapping"):
                    out.append((key, "flapping"))
                continue
            if entry["state"] == "problem":
                if not heard or told["state"] == "flapping":
                    out.append((key, "problem"))
                elif (now - parse_iso(told["at"])).total_seconds() >= channel.repeat:
                    out.append((key, "reminder"))
            elif told is not None and told["state"] != "recovered":
                out.append((key, "recovered"))  # it heard of the problem (this or an earlier episode)
        return out

    def told(self, channel_name: str, key: str, state: str, now: datetime) -> None:
        entry = self.problems[key]
        entry["told"][channel_name] = {"state": state, "at": iso(now), "episode": entry["episode"]}

    # -- rate limit ------------------------------------------------------------------

    def capacity(self, channel, now: datetime) -> int:
        record = self.data["channels"].setdefault(channel.name, {"sent": []})
        record["sent"] = [t for t in record["sent"] if now - parse_iso(t) < HOUR]
        return channel.max_per_hour - len(record["sent"])

    def sent(self, channel_name: str, now: datetime) -> None:
        self.data["channels"].setdefault(channel_name, {"sent": []})["sent"].append(iso(now))

    def channel_state(self, channel_name: str) -> dict:
        return self.data["channels"].setdefault(channel_name, {"sent": []})

    # -- reports ---------------------------------------------------------------------

    def report_sent(self, name: str) -> str | None:
        return self.data["reports"].get(name)

    def mark_report(self, name: str, value: str) -> None:
        self.data["reports"][name] = value
