"""The journal of a run: one JSON document, written whole before and after
every step, to a local state directory and to the repository (FORMAT.md,
"Runbooks").  A run is resumed from whichever copy is newer (`seq`), so the
orchestrator itself may die at any instant, and its host may be lost.

Keys: `runbooks/runs/<run>` (the journal), `runbooks/approvals/<run>/<question>`
(answers given with `drorch runbook approve`), `runbooks/state/<topology>`
(which node a run made primary), `runbooks/leases/<topology>`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from drorch.errors import DrorchError, NotFoundError, UsageError
from drorch.timefmt import iso, utcnow

log = logging.getLogger(__name__)
DEFAULT_STATE_DIR = Path("/var/lib/drorch/runbooks")
RUN_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\.(\d{8}T\d{6}Z)$")


def run_key(run_id: str) -> str:
    return f"runbooks/runs/{run_id}"


def approval_key(run_id: str, question: str) -> str:
    return f"runbooks/approvals/{run_id}/{question}"


def state_key(topology: str) -> str:
    return f"runbooks/state/{topology}"


def lease_key(topology: str) -> str:
    return f"runbooks/leases/{topology}"


def new_run_id(runbook_id: str, now: datetime, taken) -> str:
    """<runbook>.<UTC second>, the next free second if that one is taken."""
    from datetime import timedelta

    moment = now.replace(microsecond=0)
    while True:
        run_id = f"{runbook_id}.{moment.strftime('%Y%m%dT%H%M%SZ')}"
        if not taken(run_id):
            return run_id
        moment += timedelta(seconds=1)


def runbook_of(run_id: str) -> str:
    match = RUN_ID.match(run_id)
    if not match:
        raise UsageError(f"{run_id!r} is not a run id (RUNBOOK.YYYYMMDDTHHMMSSZ, as `runbook run` printed it)")
    return match.group(1)


class StateDir:
    """Local files: a cache of the repository's, and the place a run continues from
    when the repository cannot be reached."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def read(self, *parts: str) -> Any:
        try:
            return json.loads(self.path(*parts).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DrorchError(f"cannot read {self.path(*parts)}: {exc}") from None

    def write(self, obj: Any, *parts: str) -> None:
        """Atomically: a temporary file, fsync, rename."""
        path = self.path(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w") as handle:
                json.dump(obj, handle, indent=1, default=str)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise DrorchError(f"cannot write the runbook state in {self.root}: {exc.strerror or exc}",
                              "pass --state-dir DIR (a directory this user may write), or create it") from None

    def append(self, line: str, *parts: str) -> None:
        path = self.path(*parts)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path, "a") as handle:
            handle.write(line.rstrip("\n") + "\n")


class Journal:
    def __init__(self, data: dict, state: StateDir, repo):
        self.data = data
        self.state = state
        self.repo = repo
        self.repo_error: str | None = None

    @property
    def run_id(self) -> str:
        return self.data["run"]

    @classmethod
    def create(cls, run_id: str, fields: dict, state: StateDir, repo) -> "Journal":
        data = {"run": run_id, "seq": 0, "status": "running", "steps": {}, "order": [], "milestones": {},
                "facts": {}, "checks": [], "approvals": {}, "events": [], "cleanups": [], **fields}
        journal = cls(data, state, repo)
        journal.save()
        return journal

    @classmethod
    def load(cls, run_id: str, state: StateDir, repo) -> "Journal":
        local = state.read("runs", run_id, "journal.json")
        remote = None
        if repo is not None:
            try:
                remote = repo.get_json(run_key(run_id))
            except NotFoundError:
                remote = None
        if local is None and remote is None:
            raise UsageError(f"no run {run_id} in {state.root} or in the repository",
                             "`drorch runbook report` lists nothing for it: check the run id and --state-dir")
        data = max((d for d in (local, remote) if d is not None), key=lambda d: d.get("seq", 0))
        return cls(data, state, repo)

    def save(self) -> None:
        """Local copy first (always possible), then the repository's; a repository
        that cannot be written is reported, not fatal (the local copy is enough to
        go on, and the next save tries again)."""
        self.data["seq"] = self.data.get("seq", 0) + 1
        self.data["saved"] = iso(utcnow())
        self.state.write(self.data, "runs", self.run_id, "journal.json")
        if self.repo is None:
            return
        try:
            self.repo.put_json(run_key(self.run_id), self.data)
            self.repo_error = None
        except DrorchError as exc:
            if self.repo_error is None:
                log.warning("cannot write the journal of %s to the repository: %s", self.run_id, exc)
            self.repo_error = str(exc)

    def step(self, step_id: str, branch: str) -> dict:
        entry = self.data["steps"].get(step_id)
        if entry is None:
            entry = {"id": step_id, "branch": branch, "state": "pending", "attempts": 0}
            self.data["steps"][step_id] = entry
            self.data["order"].append(step_id)
        return entry

    def event(self, text: str) -> None:
        self.data["events"].append({"at": iso(utcnow()), "text": text})
