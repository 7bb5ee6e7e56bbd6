"""Approvals: a question a run waits on, answered on the runner's terminal or
with `drorch runbook approve RUN STEP [--reject]` from anywhere that reaches
the state directory or the repository.  Unanswered within its timeout, the
question takes its explicit default."""

from __future__ import annotations

import getpass
import socket
import time
from datetime import timedelta
from typing import Callable

from drorch.errors import DrorchError, NotFoundError, UsageError
from drorch.runbook.journal import Journal, StateDir, approval_key
from drorch.timefmt import format_duration, iso, utcnow

#: the CLI's prompt: (prompt, deadline (monotonic), poll for an outside answer) -> answer or None
Asker = Callable[[str, float, Callable[[], dict | None]], dict | None]
POLL = 0.5


class Approvals:
    def __init__(self, state: StateDir, repo):
        self.state, self.repo = state, repo
        self._next_repo_look = 0.0

    def give(self, run_id: str, question: str, decision: str, how: str) -> dict:
        answer = {"decision": decision, "by": f"{getpass.getuser()}@{socket.gethostname()}", "how": how,
                  "at": iso(utcnow())}
        self.state.write(answer, "runs", run_id, "approvals", f"{question}.json")
        if self.repo is not None:
            try:
                self.repo.put_json(approval_key(run_id, question), answer)
            except DrorchError:
                pass  # the local copy is there; a runner elsewhere will not see it
        return answer

    def find(self, run_id: str, question: str) -> dict | None:
        local = self.state.read("runs", run_id, "approvals", f"{question}.json")
        if local is not None or self.repo is None or time.monotonic() < self._next_repo_look:
            return local
        self._next_repo_look = time.monotonic() + 2.0
        try:
            return self.repo.get_json(approval_key(run_id, question))
        except NotFoundError:
            return None
        except DrorchError:
            return None


def ask(journal: Journal, approvals: Approvals, *, question: str, step: str, prompt: str, timeout: float,
        default: str, asker: Asker | None, emit: Callable[[str, str], None]) -> tuple[bool, str]:
    """Wait for an answer; returns (approved, a sentence saying who decided how)."""
    earlier = journal.data["approvals"].get(question)
    if earlier and earlier.get("decision") == "approve":
        return True, _says(earlier, "earlier in this run")
    base, n = question, 1
    while question in journal.data["approvals"]:  # rejected before (then resumed): ask anew
        n += 1
        question = f"{base}.{n}"
    until = utcnow() + timedelta(seconds=timeout)
    journal.data["waiting"] = {"question": question, "step": step, "prompt": prompt, "until": iso(until),
                               "default": default}
    journal.save()
    emit("approval", f"step {step} needs approval: {prompt}\n    answer here, or run: drorch runbook approve "
                     f"{journal.run_id} {step} [--reject]   (until {iso(until)}; unanswered: {default})")
    deadline = time.monotonic() + timeout
    answer = asker(prompt, deadline, lambda: approvals.find(journal.run_id, question)) if asker else None
    while answer is None and time.monotonic() < deadline:
        answer = approvals.find(journal.run_id, question)
        if answer is None:
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
    if answer is None:
        answer = {"decision": default, "by": "nobody", "at": iso(utcnow()),
                  "how": f"no answer within {format_duration(timedelta(seconds=timeout))}: the default applies"}
    journal.data["approvals"][question] = {**answer, "prompt": prompt, "step": step}
    journal.data.pop("waiting", None)
    journal.save()
    return answer["decision"] == "approve", _says(answer)


def _says(answer: dict, when: str = "") -> str:
    verb = "approved" if answer["decision"] == "approve" else "rejected"
    extra = f", {when}" if when else ""
    return f"{verb} by {answer.get('by')} ({answer.get('how')}{extra})"


def approve_waiting(journal: Journal, approvals: Approvals, step: str, decision: str) -> dict:
    """`drorch runbook approve`: answer the question the run waits on for this step."""
    waiting = journal.data.get("waiting")
    if not waiting or waiting.get("step") != step:
        now = f"step {waiting['step']}" if waiting else "nothing"
        raise UsageError(f"run {journal.run_id} is not waiting for an approval of step {step} (it waits for: "
                         f"{now})", "`drorch runbook report RUN` shows where the run is")
    answer = approvals.give(journal.run_id, waiting["question"], decision, "drorch runbook approve")
    return {**answer, "question": waiting["question"], "prompt": waiting["prompt"]}
