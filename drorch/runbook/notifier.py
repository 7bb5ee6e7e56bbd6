"""Where `notify` steps and run events go: a JSON line in the state directory's
notifications.log, the log, the runbook's own webhook when one is set, and the
policy's `notify:` channels (webhook, e-mail) that the event's severity reaches."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from drorch.runbook.journal import StateDir
from drorch.timefmt import iso, utcnow

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = 10
#: a notify step's severity on the policy's scale (notify/severity.py)
SEVERITY = {"critical": "I", "warning": "III", "info": "IV"}


class Notifier:
    def __init__(self, state: StateDir, run_id: str, runbook_id: str, webhook: str | None = None,
                 channels=None):
        self.state, self.run_id, self.runbook_id, self.webhook = state, run_id, runbook_id, webhook
        self.channels = channels  # drorch.notify.notifier.Notifier of the policy's channels, or None

    def send(self, message: str, severity: str = "info", webhook: str | None = None) -> list[str]:
        """Deliver one event; returns where it went (a failed webhook is said, never raised:
        a notification must not stop a failover)."""
        event = {"at": iso(utcnow()), "runbook": self.runbook_id, "run": self.run_id, "severity": severity,
                 "message": message}
        self.state.append(json.dumps(event), "notifications.log")
        log.info("runbook %s (%s): %s", self.run_id, severity, message)
        delivered = ["log"]
        url = webhook or self.webhook
        if url:
            delivered.append(post(url, event))
        delivered += self.announce(SEVERITY.get(severity, severity), f"runbook {self.runbook_id}: {message}",
                                   f"{message}\n\nrun {self.run_id}")
        return delivered

    def announce(self, severity: str, title: str, text: str) -> list[str]:
        """Tell the policy's channels (severity I..IV); what each said, failures included."""
        if self.channels is None:
            return []
        from drorch.notify.findings import Notice

        notice = Notice("info", severity, title, text, key=f"runbook/{self.run_id}", kind="runbook")
        return [f"{o['channel']} " + ("ok" if o["ok"] else f"FAILED ({o['error']})")
                for o in self.channels.announce(notice)]

    def run_ended(self, data: dict) -> list[str]:
        """A run's end, at the severity its incident has (notify/runbooks.py: run_severity)."""
        from drorch.notify.runbooks import outcome_lines, run_severity

        status = data.get("status")
        lines = [f"mode {data.get('mode')}, status {status}"]
        if data.get("error"):
            lines.append(f"error: {data['error']}")
        lines += outcome_lines(data.get("outcome"))
        lines.append(f"report: drorch runbook report {self.run_id}")
        return self.announce(run_severity(data), f"runbook run {self.run_id} {status}", "\n".join(lines))


def post(url: str, event: dict) -> str:
    request = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
            return f"webhook {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        log.warning("webhook %s failed: %s", url, exc)
        return f"webhook FAILED ({getattr(exc, 'reason', exc)})"
