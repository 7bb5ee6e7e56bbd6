"""The notify journal: one JSON line per event the daemon saw or said (a job's
outcome, a problem opened or cleared, a notice delivered or not), in the
daemon's state directory.  The incident report reads it beside the
repositories (which hold what the daemon did not see: CLI runs, other hosts).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

from drorch.timefmt import iso, parse_iso

log = logging.getLogger(__name__)
ROTATE_BYTES = 8 << 20  # then events.jsonl becomes events.jsonl.1 (one old file kept)


class Journal:
    def __init__(self, path: Path | None):
        self.path = path

    def append(self, event: str, at: datetime, **facts) -> None:
        if self.path is None:
            return
        line = json.dumps({"at": iso(at), "event": event, **facts}, default=str)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.path.exists() and self.path.stat().st_size > ROTATE_BYTES:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            with open(self.path, "a") as handle:
                handle.write(line + "\n")
        except OSError as exc:
            log.error("cannot write the notify journal %s: %s", self.path, exc.strerror or exc)

    def read(self, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
        """Events oldest first (the rotated file too), within [since, until]."""
        if self.path is None:
            return []
        out = []
        for path in (self.path.with_name(self.path.name + ".1"), self.path):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for raw in lines:
                try:
                    event = json.loads(raw)
                    at = parse_iso(event["at"])
                except Exception:  # noqa: BLE001 - a torn last line, a foreign line
                    continue
                if (since is None or at >= since) and (until is None or at <= until):
                    out.append(event)
        return out
