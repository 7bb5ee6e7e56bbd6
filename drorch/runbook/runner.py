"""Running a runbook: choose the nodes, run the steps of the mode in order
(guard, approval, action with timeout and retries, on_failure), journal
before and after every step, escalate to the DR branch when no standby can
take over, resume a run whose runner died without repeating what it did.

A step found `running` on resume was interrupted: an idempotent action runs
again; a non-idempotent one is asked whether it took effect (already_done):
yes -> recorded as done, not run again; cannot tell -> a person decides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from drorch import faults
from drorch.errors import DrorchError, UsageError
from drorch.runbook import metrics
from drorch.runbook.actions import ACTIONS
from drorch.runbook.actions.base import Outcome, tail
from drorch.runbook.approvals import Approvals, Asker
from drorch.runbook.context import RunContext
from drorch.runbook.journal import Journal, StateDir, new_run_id, run_key, runbook_of, state_key
from drorch.runbook.lease import TopologyLease
from drorch.runbook.model import MAIN_MODES, step_modes
from drorch.runbook.notifier import Notifier
from drorch.runbook.topology import choose_candidate, choose_dr, current_primary
from drorch.timefmt import iso, utcnow

log = logging.getLogger(__name__)
MAX_EXECUTIONS = 10  # of one step in one run (goto loops)


@dataclass
class RunOptions:
    state_dir: Path
    candidate: str | None = None
    detected_at: datetime | None = None
    failed_at: datetime | None = None
    asker: Asker | None = None
    emit: Callable[[str, str], None] = field(default=lambda kind, text: None)


class RunStopped(DrorchError):
    def __init__(self, status: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status


def digest(book) -> str:
    return hashlib.sha256(json.dumps(book.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def journal_repository(policy, book):
    from drorch.factory import open_repository, repository_name

    name = book.topology.repository or repository_name(policy, book.topology.source, None)
    return open_repository(policy, name, create=True)


def start(policy, book, mode: str, options: RunOptions) -> Journal:
    if mode not in book.modes:
        raise UsageError(f"runbook {book.id} has no mode {mode} (modes: {', '.join(book.modes)})")
    repo = journal_repository(policy, book)
    state = StateDir(options.state_dir)
    now = utcnow()
    run_id = new_run_id(book.id, now, lambda r: state.path("runs", r).exists() or
                        repo.storage.stat(run_key(r)) is not None)
    lease = TopologyLease(repo, book.lease_name, run_id, book.lease).acquire()
    try:
        objectives = {key: (value.total_seconds() if hasattr(value, "total_seconds") else value)
                      for key, value in book.objectives}
        journal = Journal.create(run_id, {
            "runbook": book.id, "title": book.title, "mode": mode, "started": iso(now),
            "runbook_digest": digest(book), "runbook_file": str(policy.runbook_docs[book.id].path),
            "host": socket.gethostname(), "pid": os.getpid(), "objectives": objectives, "branch": "main"
            if mode in MAIN_MODES else "dr", "failed_at": iso(options.failed_at) if options.failed_at else None,
            "milestones": {"detected": iso(options.detected_at or now), "started": iso(now)}}, state, repo)
        options.emit("info", f"run {run_id}: {book.title}, mode {mode}")
        Runner(_context(policy, book, journal, options), lease, options).go(fresh=True)
        return journal
    finally:
        lease.release()


def resume(policy, run_id: str, options: RunOptions) -> Journal:
    book_id = runbook_of(run_id)
    if book_id not in policy.runbooks:
        raise UsageError(f"run {run_id} is of runbook {book_id}, which is not in {policy.path}")
    book = policy.runbooks[book_id]
    repo = journal_repository(policy, book)
    journal = Journal.load(run_id, StateDir(options.state_dir), repo)
    status = journal.data["status"]
    if status in ("succeeded", "rolled-back"):
        raise UsageError(f"run {run_id} has ended ({status}); nothing to resume")
    lease = TopologyLease(repo, book.lease_name, run_id, book.lease).acquire()
    try:
        if journal.data.get("runbook_digest") != digest(book):
            options.emit("warn", f"runbook {book.id} changed since run {run_id} started; steps are matched by id")
        journal.data["status"] = "running"
        journal.data.setdefault("resumed", []).append({"at": iso(utcnow()), "host": socket.gethostname(),
                                                       "pid": os.getpid()})
        journal.save()
        options.emit("info", f"resuming run {run_id} ({journal.data['mode']}) at step "
                             f"{(journal.data.get('cursor') or {}).get('step', 'the start')}")
        Runner(_context(policy, book, journal, options), lease, options).go(fresh=False)
        return journal
    finally:
        lease.release()


def _context(policy, book, journal: Journal, options: RunOptions) -> RunContext:
    approvals = Approvals(journal.state, journal.repo)
    notifier = Notifier(journal.state, journal.run_id, book.id, book.notify.webhook)
    return RunContext(policy, book, journal, approvals=approvals, notifier=notifier, asker=options.asker,
                      emit=options.emit)


class Runner:
    def __init__(self, ctx: RunContext, lease: TopologyLease, options: RunOptions):
        self.ctx, self.lease, self.options = ctx, lease, options
        self.journal, self.book = ctx.journal, ctx.runbook

    def go(self, fresh: bool) -> None:
        data = self.journal.data
        try:
            if fresh:
                self._choose()
            while True:
                if data.get("escalating"):
                    self._escalate()
                result = self._branch(data["branch"])
                if result == "escalate":
                    data["escalating"] = True
                    continue
                if result == "rollback":
                    self._branch("rollback")
                    raise RunStopped("rolled-back", data.get("error") or "rolled back")
                break
            data["status"] = "succeeded"
            data.pop("error", None)
            self.ctx.milestone("verified")
            self._remember_primary()
        except RunStopped as stop:
            data["status"], data["error"] = stop.status, stop.message
        except DrorchError as exc:
            data["status"], data["error"] = "failed", exc.message + (f" ({exc.hint})" if exc.hint else "")
        finally:
            self._tear_down()
            self.ctx.milestone("finished")
            data["outcome"] = {"rto": metrics.rto(data), "rpo": metrics.rpo(data)}
            self.journal.save()
            self.options.emit("end", f"run {self.journal.run_id}: {data['status']}" +
                              (f": {data['error']}" if data.get("error") else ""))

    # -- choosing nodes -------------------------------------------------------------

    def _choose(self) -> None:
        ctx, data, topology = self.ctx, self.journal.data, self.book.topology
        remembered = self._remembered_primary()
        if data["mode"] not in MAIN_MODES:
            ctx.roles["primary"] = remembered or topology.primary
            self._choose_dr()
            return
        order = ctx.production_order()
        statuses = {name: ctx.observe(ctx.node_at(name)) for name in order}
        primary, why = current_primary(order, statuses, remembered, topology.primary)
        ctx.roles["primary"] = primary
        seen = ctx.last_seen(primary)
        known = None if seen is None else (_lsn(seen["lsn"]), f"the last WAL position seen on {primary} "
                                                               f"({seen['at']})")
        if seen is not None and statuses[primary].role != "primary":
            ctx.facts["last_seen"] = seen  # what the data loss is estimated from until its disk can be read
        choice = choose_candidate(primary, order, statuses, topology.max_lag, known, self.options.candidate)
        choice.primary_why = why
        ctx.roles["candidate"] = choice.candidate
        data["choice"] = choice.as_dict()
        data["nodes"] = {name: status.as_dict() for name, status in statuses.items()}
        ctx.note(f"primary: {primary} ({why}); candidate: {choice.candidate or 'none'}")
        for name, reason in choice.reasons.items():
            ctx.note(f"  {name}: {reason}")
        self.journal.save()
        if choice.candidate is None and (data["mode"] == "switchover" or self.book.dr_branch is None):
            raise RunStopped("failed", "no standby can take over: " + ("; ".join(
                f"{n}: {r}" for n, r in choice.reasons.items()) or "no standbys"))

    def _choose_dr(self) -> None:
        ctx = self.ctx
        reachable = {}
        for name in self.book.topology.dr:
            try:
                ctx.host(self.book.topology.nodes[name].host).connect()
                reachable[name] = None
            except DrorchError as exc:
                reachable[name] = exc.message
        chosen, reasons = choose_dr(self.book.topology.dr, reachable)
        self.journal.data["dr_choice"] = {"dr": chosen, "reasons": reasons}
        for name, reason in reasons.items():
            ctx.note(f"  DR {name}: {reason}")
        if chosen is None:
            raise RunStopped("failed", "no DR node can be reached: " + "; ".join(f"{n}: {r}" for n, r in
                                                                                 reasons.items()))
        ctx.roles["dr"] = chosen
        self.journal.save()

    def _escalate(self) -> None:
        data, branch = self.journal.data, self.book.dr_branch
        reasons = "; ".join(f"{n}: {r}" for n, r in (data.get("choice") or {}).get("reasons", {}).items())
        data.setdefault("escalation", {"at": iso(utcnow()), "why": reasons or "a step asked to escalate"})
        self.ctx.note(f"escalating to the DR branch: {data['escalation']['why']}")
        if not branch.auto_escalate:
            self.ctx.step_id = "escalate"
            prompt = (f"No standby can take over ({data['escalation']['why']}). Activate DR: restore "
                      f"{self.book.topology.source} from the repository onto a DR node and make it the primary? "
                      "Data committed after the last archived WAL is lost.")
            approved, why = self.ctx.ask(prompt, branch.approval.timeout.total_seconds(), branch.approval.default,
                                         question="escalate")
            data["escalation"]["approval"] = why
            if not approved:
                raise RunStopped("failed", f"no standby can take over and DR activation was not approved: {why}")
        if "dr" not in self.ctx.roles or not self.ctx.roles["dr"]:
            self._choose_dr()
        data["branch"], data["cursor"], data["escalating"] = "dr", None, False
        self.journal.save()

    # -- steps -----------------------------------------------------------------------

    def _branch(self, branch: str) -> str:
        steps = self.book.branch(branch)
        ids = [step.id for step in steps]
        cursor = self.journal.data.get("cursor") or {}
        index = ids.index(cursor["step"]) if cursor.get("branch") == branch and cursor.get("step") in ids else 0
        mode = self.journal.data["mode"] if branch != "dr" or self.journal.data["mode"] != "failover" \
            else "dr-activate"
        runs: Counter = Counter()
        while index < len(steps):
            step = steps[index]
            self.journal.data["cursor"] = {"branch": branch, "step": step.id}
            entry = self.journal.step(step.id, branch)
            if entry["state"] in ("succeeded", "skipped") or entry.get("continued"):
                index += 1
                continue
            if mode not in step_modes(step, branch, self.book):
                entry.update(state="skipped", summary=f"not part of mode {mode}", title=step.title,
                             action=step.action)
                index += 1
                continue
            if branch == "main" and needs_standby(step) and not self.ctx.roles.get("candidate") \
                    and not self.ctx.roles.get("new_primary"):
                return "escalate"  # the first step that needs a standby to promote, and there is none
            runs[step.id] += 1
            if runs[step.id] > MAX_EXECUTIONS:
                raise RunStopped("failed", f"step {step.id} ran {MAX_EXECUTIONS} times in this run (goto loop)")
            if self._step(step, branch, entry):
                index += 1
                continue
            action = step.on_failure
            error = f"step {step.id} failed: {entry.get('summary')}"
            if action != "continue":
                self.journal.data["error"] = error
            if action == "continue":
                entry["continued"] = True
                index += 1
            elif action == "rollback" and branch != "rollback":
                return "rollback"
            elif action == "escalate" and self.journal.data["mode"] == "failover":
                return "escalate"
            elif step.goto:
                index = ids.index(step.goto)
                for later in ids[index:]:  # run again from there
                    if later in self.journal.data["steps"]:
                        self.journal.data["steps"][later]["state"] = "pending"
                        self.journal.data["steps"][later].pop("continued", None)
            else:
                raise RunStopped("failed", error)
        return "done"

    def _step(self, step, branch: str, entry: dict) -> bool:
        ctx, action = self.ctx, ACTIONS[step.action]
        self.lease.check()
        ctx.begin_step(step)
        ctx.repeating = False
        if entry["state"] == "running":
            decided = self._interrupted(step, entry)
            if decided is not None:
                return decided
            ctx.repeating = True
        if entry["state"] == "failed":
            ctx.repeating = True
        entry.update(state="running", started=iso(utcnow()), ended=None, title=step.title, action=step.action)
        self.journal.save()
        self.options.emit("step", f"{step.id}: {step.title} ({step.action})")
        outcome = self._guard(step, entry)
        if outcome is None and step.approval and not entry.get("approved"):
            approved, why = ctx.ask(ctx.expand(step.approval.prompt or step.title),
                                    step.approval.timeout.total_seconds(), step.approval.default)
            entry["approval"], entry["approved"] = why, approved
            if not approved:
                outcome = Outcome(False, f"not approved: {why}")
        if outcome is None:
            outcome = self._attempts(step, action, entry)
        if outcome.ok is None:  # the guard said skip
            return self._finish(entry, "skipped", outcome, step)
        return self._finish(entry, "succeeded" if outcome.ok else "failed", outcome, step)

    def _interrupted(self, step, entry: dict) -> bool | None:
        """A step the dead runner left running: True/False when decided here, None to run it again."""
        action, ctx = ACTIONS[step.action], self.ctx
        if action.is_idempotent(step.args):
            ctx.note(f"{step.id} was running when the runner died; it is safe to run again")
            return None
        done = action.already_done(step.args, ctx)
        if done is True:
            note = "the runner died during this step; its effect is observed, so it was not run again"
            return self._finish(entry, "succeeded", Outcome(True, note), step)
        if done is None:
            approved, why = ctx.ask(f"The runner died while step {step.id} ({step.title}) ran, and drorch cannot "
                                    "tell whether it took effect. Approve to run it again; reject to stop.",
                                    900, "reject", question=f"{step.id}.repeat")
            if not approved:
                return self._finish(entry, "failed", Outcome(False, f"not run again: {why}"), step)
        return None

    def _guard(self, step, entry: dict) -> Outcome | None:
        """None when the guard holds (or there is none); else the outcome (ok None = skip)."""
        if step.guard is None:
            return None
        outcome = self._run_action(ACTIONS[step.guard.action], step.guard.args)
        entry["guard"] = outcome.summary
        if outcome.ok:
            return None
        if step.guard.otherwise == "skip":
            return Outcome(None, f"skipped: guard not met: {outcome.summary}")  # type: ignore[arg-type]
        return Outcome(False, f"guard not met: {outcome.summary}")

    def _attempts(self, step, action, entry: dict) -> Outcome:
        outcome = Outcome(False, "not run")
        for attempt in range(1 + step.retries):
            entry["attempts"] = entry.get("attempts", 0) + 1
            self.journal.save()
            self.ctx.deadline = time.monotonic() + step.timeout.total_seconds()
            outcome = self._run_action(action, step.args)
            if outcome.ok:
                break
            if attempt < step.retries:
                self.options.emit("warn", f"{step.id}: {outcome.summary}; trying again")
                time.sleep(step.retry_delay.total_seconds())
                self.ctx.repeating = True
        faults.checkpoint(f"runbook-after-action-{step.id}")
        return outcome

    def _run_action(self, action, args) -> Outcome:
        try:
            return action.run(args, self.ctx)
        except DrorchError as exc:
            return Outcome(False, exc.message + (f" ({tail(exc.hint, 1500)})" if exc.hint else ""))

    def _finish(self, entry: dict, state: str, outcome: Outcome, step) -> bool:
        now = utcnow()
        entry.update(state=state, summary=outcome.summary, ended=iso(now), data=outcome.data or {},
                     output=outcome.output or "")
        if entry.get("started"):
            entry["seconds"] = round((now - datetime.fromisoformat(entry["started"].replace("Z", "+00:00")))
                                     .total_seconds(), 3)
        if state == "succeeded" and step.milestone:
            self.ctx.milestone(step.milestone)
        self.journal.save()
        self.options.emit("step-" + state, f"{step.id}: {outcome.summary}")
        return state != "failed"

    # -- the end -----------------------------------------------------------------------

    def _tear_down(self) -> None:
        """A drill leaves nothing behind: stop and remove what it restored."""
        for item in self.journal.data.get("cleanups", []):
            if item.get("done"):
                continue
            node = self.ctx.node_at(item["node"], item["target"])
            try:
                if node.running():
                    node.stop("immediate", timeout=60)
                node.host.remove(item["target"])
                node.host.remove(node.start_log())
                item["done"] = iso(utcnow())
                self.ctx.note(f"drill: removed {item['node']}:{item['target']}")
            except DrorchError as exc:
                self.ctx.note(f"drill: could not remove {item['node']}:{item['target']}: {exc.message}")

    def _remember_primary(self) -> None:
        new = self.ctx.roles.get("new_primary")
        if not new or self.journal.data["mode"] == "drill":
            return
        record = {"primary": new, "run": self.journal.run_id, "at": iso(utcnow())}
        self.journal.state.write(record, "topology", self.book.lease_name, "state.json")
        try:
            self.journal.repo.put_json(state_key(self.book.lease_name), record)
        except DrorchError as exc:
            log.warning("cannot record the new primary in the repository: %s", exc)

    def _remembered_primary(self) -> str | None:
        from drorch.errors import NotFoundError

        record = self.journal.state.read("topology", self.book.lease_name, "state.json")
        try:
            remote = self.journal.repo.get_json(state_key(self.book.lease_name))
        except (NotFoundError, DrorchError):
            remote = None
        newest = max((r for r in (record, remote) if r), key=lambda r: r.get("at", ""), default=None)
        return newest.get("primary") if newest else None


def needs_standby(step) -> bool:
    """Does the step act on the standby being promoted (a failover without one escalates there)?"""
    refs = ACTIONS[step.action].node_refs(step.args)
    if step.guard is not None:
        refs += ACTIONS[step.guard.action].node_refs(step.guard.args)
    return any(ref in ("candidate", "new_primary") for ref in refs)


def _lsn(text: str) -> int:
    from drorch.sources.pg_wal import parse_lsn

    return parse_lsn(text)


def refresh_rpo(policy, run_id: str, state_dir: Path) -> Journal:
    """`report --refresh`: read the old primary's end of WAL now that it can be reached
    (it must be stopped) and recompute the data loss exactly."""
    book = policy.runbooks.get(runbook_of(run_id))
    if book is None:
        raise UsageError(f"run {run_id} is of runbook {runbook_of(run_id)}, which is not in {policy.path}")
    journal = Journal.load(run_id, StateDir(state_dir), journal_repository(policy, book))
    end = journal.data["facts"].get("old_primary_end") or {}
    name = journal.data.get("roles", {}).get("primary")
    if end.get("lsn") or not name or not journal.data["facts"].get("promotion"):
        return journal
    ctx = RunContext(policy, book, journal)
    node = ctx.node_at(name)
    if node.running():
        raise DrorchError(f"{name} runs: its end of WAL cannot be read while it runs",
                          "stop it (it is fenced with standby.signal), or rejoin it with pg.rewind, which reads "
                          "it first")
    lsn, basis = node.end_of_wal()
    ctx.old_end_of_wal(name, lsn, basis)
    journal.data["outcome"] = {"rto": metrics.rto(journal.data), "rpo": metrics.rpo(journal.data)}
    journal.save()
    return journal
