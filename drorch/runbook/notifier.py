"""Where `notify` steps and run events go: a JSON line in the state directory's
notifications.log, the log, and a webhook when one is set.  A small seam: the
notifications issue replaces Notifier with its routing (severity, e-mail)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from drorch.runbook.journal import StateDir
from drorch.timefmt import iso, utcnow

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = 10


class Notifier:
    def __init__(self, state: StateDir, run_id: str, runbook_id: str, webhook: str | None = None):
        self.state, self.run_id, self.runbook_id, self.webhook = state, run_id, runbook_id, webhook

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
        return delivered


def post(url: str, event: dict) -> str:
    request = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
            return f"webhook {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        log.warning("webhook %s failed: %s", url, exc)
        return f"webhook FAILED ({getattr(exc, 'reason', exc)})"
