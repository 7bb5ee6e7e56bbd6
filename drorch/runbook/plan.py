"""`drorch runbook plan`: what a run would do now, without changing anything.

It looks at every node (read-only SQL, `pg_ctl status`, SSH reachability),
says which standby would be promoted and why not the others, evaluates every
guard, runs the read-only steps that come before the first step that would
change something, and lists the commands of the others with the nodes filled
in.  When failover would find no standby, it plans the DR branch as well.
"""

from __future__ import annotations

from pathlib import Path

from drorch.errors import DrorchError, UsageError
from drorch.runbook.actions import ACTIONS
from drorch.runbook.context import RunContext
from drorch.runbook.journal import Journal, StateDir
from drorch.runbook.model import MAIN_MODES, step_modes
from drorch.runbook.render import View
from drorch.runbook.runner import known_position, needs_standby
from drorch.runbook.topology import SplitBrain, choose_candidate, choose_dr, current_primary
from drorch.timefmt import format_duration, iso, utcnow


def plan(policy, book, mode: str, state_dir: Path, candidate: str | None = None) -> dict:
    if mode not in book.modes:
        raise UsageError(f"runbook {book.id} has no mode {mode} (modes: {', '.join(book.modes)})")
    journal = Journal({"run": f"{book.id}.plan", "mode": mode, "started": iso(utcnow()), "facts": {},
                       "roles": {}, "milestones": {}, "checks": [], "approvals": {}, "cleanups": []},
                      StateDir(state_dir), None)
    ctx = RunContext(policy, book, journal, plan=True)
    out: dict = {"runbook": book.id, "mode": mode, "at": iso(utcnow()), "nodes": {}, "steps": [], "ok": True}
    branches = ["main"] if mode in MAIN_MODES else ["dr"]
    if mode in MAIN_MODES:
        if not _choose(ctx, book, out, candidate) and (mode == "switchover" or book.dr_branch is None):
            out["ok"] = False
            out["blocked"] = "no standby can take over"
            return out
    else:
        ctx.roles["primary"] = book.topology.primary
        _choose_dr(ctx, book, out)
    changing = False
    for branch in branches:
        branch_mode = "dr-activate" if branch == "dr" and mode == "failover" else mode
        for step in book.branch(branch):
            if branch == "main" and needs_standby(step) and not ctx.roles.get("candidate") and \
                    mode in step_modes(step, branch, book):
                _escalation(ctx, book, out, step)
                branches.append("dr")
                break
            item, changes = _step(ctx, book, step, branch, branch_mode, changing, policy)
            changing = changing or changes
            out["steps"].append(item)
            if item.get("guard", {}).get("ok") is False and step.guard.otherwise == "fail":
                out["ok"] = False
            if item.get("now", {}).get("ok") is False:
                out["ok"] = False
    out["roles"] = dict(ctx.roles)
    return out


def _escalation(ctx: RunContext, book, out: dict, step) -> None:
    approval = book.dr_branch.approval
    out["escalation"] = (f"no standby can be promoted: at step {step.id} the run would go to the DR branch " +
                         ("at once (auto_escalate)" if book.dr_branch.auto_escalate else
                          f"after approval (unanswered after {format_duration(approval.timeout)}: {approval.default})"))
    _choose_dr(ctx, book, out)


def _choose(ctx: RunContext, book, out: dict, forced: str | None) -> bool:
    order = ctx.production_order()
    statuses = {name: ctx.observe(ctx.node_at(name)) for name in order}
    out["nodes"] = {name: {**status.as_dict(), "text": status.describe()} for name, status in statuses.items()}
    try:
        primary, why = current_primary(order, statuses, None, book.topology.primary)
    except SplitBrain as exc:
        out["ok"], out["blocked"] = False, exc.message
        raise
    ctx.roles["primary"] = primary
    seen = ctx.last_seen(primary)
    choice = choose_candidate(primary, order, statuses, book.topology.max_lag, known_position(ctx, primary, seen),
                              forced, ctx.units)
    choice.primary_why = why
    ctx.roles["candidate"] = choice.candidate
    out["choice"] = choice.as_dict()
    return choice.candidate is not None


def _choose_dr(ctx: RunContext, book, out: dict) -> None:
    reachable = {}
    for name in book.topology.dr:
        try:
            ctx.host(book.topology.nodes[name].host).connect()
            reachable[name] = None
        except DrorchError as exc:
            reachable[name] = exc.message
    chosen, reasons = choose_dr(book.topology.dr, reachable)
    ctx.roles["dr"] = chosen
    out["dr_choice"] = {"dr": chosen, "reasons": reasons}
    if chosen is None:
        out["ok"], out["blocked"] = False, "no DR node can be reached"


def _step(ctx: RunContext, book, step, branch: str, mode: str, changing: bool, policy) -> tuple[dict, bool]:
    action = ACTIONS[step.action]
    item: dict = {"id": step.id, "title": step.title, "action": step.action, "branch": branch}
    if mode not in step_modes(step, branch, book):
        item["skipped"] = f"not part of mode {mode}"
        return item, False
    ctx.begin_step(step)
    if step.guard is not None:
        outcome = _evaluate(ctx, ACTIONS[step.guard.action], step.guard.args)
        item["guard"] = {"ok": outcome[0], "summary": outcome[1], "otherwise": step.guard.otherwise}
    if step.approval is not None:
        item["approval"] = step.approval.prompt or step.title
    read_only = action.is_read_only(step.args)
    if read_only and not changing:
        ok, summary = _evaluate(ctx, action, step.args)
        item["now"] = {"ok": ok, "summary": summary}
        return item, False
    view = View(book, str(policy.path), dict(ctx.roles), mode=mode)
    view.step_host = ctx.step_host
    item["would"] = [_expanded(ctx, f"{m.where + ': ' if m.where else ''}{m.text}")
                     for m in action.describe(step.args, view)]
    if read_only:
        item["later"] = "read-only; evaluated when the run gets there (earlier steps change things)"
    preview = getattr(action, "preview", None)
    if preview is not None:
        try:
            item["preview"] = preview(step.args, ctx)
        except DrorchError as exc:
            item["preview"] = f"cannot tell: {exc.message}"
    return item, not read_only


def _expanded(ctx: RunContext, text: str) -> str:
    try:
        return ctx.expand(text)
    except DrorchError:
        return text


def _evaluate(ctx: RunContext, action, args) -> tuple[bool, str]:
    try:
        outcome = action.run(args, ctx)
        return bool(outcome.ok), outcome.summary
    except DrorchError as exc:
        return False, exc.message
