"""Running a runbook (runs.py starts and resumes runs): choose the nodes, run
the steps of the mode in order (guard, approval, action with timeout and
retries, on_failure), journal before and after every step, escalate to the
DR branch when no standby can take over, carry on with a run whose runner
died without repeating what it did.

A step found `running` on resume was interrupted: an idempotent action runs
again; a non-idempotent one is asked whether it took effect (already_done):
yes -> recorded as done, not run again; cannot tell -> a person decides.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime
from typing import Callable

from drorch import faults
from drorch.errors import DrorchError
from drorch.runbook import metrics
from drorch.runbook.actions import ACTIONS
from drorch.runbook.actions.base import Outcome, tail
from drorch.runbook.context import RunContext
from drorch.runbook.journal import state_key
from drorch.runbook.model import MAIN_MODES, step_modes
from drorch.runbook.topology import choose_candidate, choose_dr, current_primary
from drorch.timefmt import iso, utcnow

log = logging.getLogger(__name__)
MAX_EXECUTIONS = 10  # of one step in one run (goto loops)


class RunStopped(DrorchError):
    def __init__(self, status: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status


class Runner:
    def __init__(self, ctx: RunContext, lease, candidate: str | None, emit: Callable[[str, str], None]):
        self.ctx, self.lease, self.candidate, self.emit = ctx, lease, candidate, emit
        self.journal, self.book = ctx.journal, ctx.runbook

    def go(self, fresh: bool) -> None:
        data = self.journal.data
        try:
            if fresh:
                self._choose()
            while True:
                if data.get("escalating"):
                    self._escalate()
                if data.get("rolling_back"):  # also when resumed in the middle of a rollback
                    self._roll_back()
                result = self._branch(data["branch"])
                if result == "escalate":
                    data["escalating"] = True
                elif result == "rollback":
                    data["rolling_back"], data["rollback_of"] = True, data.get("error")
                    self.journal.save()
                else:
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
            if self.ctx.notifier is not None:
                data["notified"] = self.ctx.notifier.run_ended(data)
                self.journal.save()
            self.emit("end", f"run {self.journal.run_id}: {data['status']}" +
                              (f": {data['error']}" if data.get("error") else ""))

    def _roll_back(self) -> None:
        why = self.journal.data.get("rollback_of") or "a step failed"
        try:
            self._branch("rollback")
        except RunStopped as stop:
            raise RunStopped("failed", f"{why}; then the rollback failed: {stop.message}") from None
        raise RunStopped("rolled-back", why)

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
        if seen is not None and statuses[primary].role != "primary":
            ctx.facts["last_seen"] = seen  # what the data loss is estimated from until its disk can be read
        choice = choose_candidate(primary, order, statuses, topology.max_lag, known_position(ctx, primary, seen),
                                  self.candidate, ctx.units)
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
        if self.ctx.roles.get("candidate"):  # it could not take over: the DR branch fences it with the rest
            data["escalation"]["candidate"] = self.ctx.roles["candidate"]
            self.ctx.roles["candidate"] = None
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
        self.emit("step", f"{step.id}: {step.title} ({step.action})")
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
                self.emit("warn", f"{step.id}: {outcome.summary}; trying again")
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
        self.emit("step-" + state, f"{step.id}: {outcome.summary}")
        self._post_step_hooks(entry, state, step)
        return state != "failed"

    def _post_step_hooks(self, entry: dict, state: str, step) -> None:
        """post_runbook_step hooks: reported in the step's journal entry, never fail the step."""
        hooks = self.ctx.hooks
        if hooks is None or self.ctx.plan or not hooks.has("post_runbook_step"):
            return
        runs = hooks.run("post_runbook_step", {"step": step.id, "step_state": state})
        entry["hooks"] = [{"path": r.path, "ok": r.ok, "summary": r.describe()} for r in runs]
        self.journal.save()
        for run in runs:
            if not run.ok:
                self.emit("warn", f"{step.id}: post_runbook_step {run.describe()}")

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


def known_position(ctx, primary: str, seen: dict | None) -> tuple[int, str] | None:
    """The last position seen on the primary, as the reference of the candidate's lag."""
    from drorch.runbook.context import seen_position

    if seen is None:
        return None
    return seen_position(seen), f"the last {ctx.units.log} position seen on {primary} ({seen['at']})"


