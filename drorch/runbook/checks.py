"""Checks of a runbook across keys, each problem as FILE:LINE:COL: key: message:
step ids, goto targets, modes, node and role references, placeholders, what a
drill may touch; and, against the policy, hosts, sources and repositories."""

from __future__ import annotations

from drorch.policy.yamlmarks import Marked, dotted
from drorch.runbook import template
from drorch.runbook.actions import ACTIONS, PRODUCTION_ACTIONS, action_engine
from drorch.runbook.actions.base import NODE_ROLES
from drorch.runbook.model import DR_MODES, MAIN_MODES, MODES, Runbook, step_modes

BRANCHES = (("steps", "main"), ("rollback", "rollback"), ("dr_branch", "dr"))


def _branch_loc(key: str) -> tuple:
    return ("runbook", "dr_branch", "steps") if key == "dr_branch" else ("runbook", key)


class _Problems(list):
    def __init__(self, doc: Marked):
        super().__init__()
        self.doc = doc

    def add(self, loc: tuple, message: str) -> None:
        self.append(f"{self.doc.where(loc)}: {dotted(loc)}: {message}")


def runbook_problems(book: Runbook, doc: Marked) -> list[str]:
    """What is wrong inside one runbook (no policy needed)."""
    out = _Problems(doc)
    _topology(book, out)
    seen: dict[str, tuple] = {}
    for key, branch in BRANCHES:
        steps = book.branch(branch)
        ids = {step.id for step in steps}
        for index, step in enumerate(steps):
            loc = _branch_loc(key) + (index,)
            raw = _raw(doc, loc)
            if isinstance(raw, dict) and raw and next(iter(raw)) != "id":
                out.add(loc, "a step starts with `id:` (the id is how people, the journal and `approve` name it)")
            if step.id in seen:
                out.add(loc + ("id",), f"step id {step.id!r} is used twice (also at {doc.where(seen[step.id])})")
            seen.setdefault(step.id, loc + ("id",))
            _step(book, step, branch, ids, loc, out)
    return list(out)


def _topology(book: Runbook, out: _Problems) -> None:
    topo = book.topology
    loc = ("runbook", "topology")
    roles: dict[str, str] = {}
    for key, names in (("primary", [topo.primary]), ("standbys", topo.standbys), ("dr", topo.dr)):
        for index, name in enumerate(names):
            where = loc + (key,) if key == "primary" else loc + (key, index)
            if name not in topo.nodes:
                out.add(where, f"no node named {name!r} (nodes: {', '.join(sorted(topo.nodes))})")
            elif name in roles:
                out.add(where, f"node {name} is already listed as {roles[name]}")
            roles.setdefault(name, key)
    if any(m in DR_MODES for m in book.modes) and not topo.dr:
        out.add(loc, "modes dr-activate/drill need DR nodes: add `dr: [NODE]`")
    if "failover" in book.modes and book.dr_branch is not None and not topo.dr:
        out.add(loc, "the DR branch needs DR nodes: add `dr: [NODE]`")
    uses_source = any(s.action in ("pg.restore", "pg.rebuild", "mariadb.restore") or (
        s.action == "pg.rewind" and s.args.fallback == "rebuild") for _, b in BRANCHES for s in book.branch(b))
    if uses_source and not topo.source:
        out.add(loc, "pg.restore / pg.rebuild / mariadb.restore restore the backups of `source:`: name the "
                "policy source")
    if not topo.source and not topo.repository:
        out.add(loc, "name `source:` or `repository:` (the journal and the lease live in a repository)")


def _step(book: Runbook, step, branch: str, ids: set, loc: tuple, out: _Problems) -> None:
    action = ACTIONS[step.action]
    allowed = {"main": MAIN_MODES, "dr": DR_MODES, "rollback": MODES}[branch]
    for name, where in ((step.action, loc + ("action",)),) + (
            ((step.guard.action, loc + ("guard", "action")),) if step.guard is not None else ()):
        engine = action_engine(name)
        if engine is not None and engine != book.topology.engine:
            out.add(where, f"{name} acts on {engine} servers; this topology's engine is {book.topology.engine}")
    for index, mode in enumerate(step.modes or []):
        if mode not in allowed:
            out.add(loc + ("modes", index), f"a step of this list runs in {' or '.join(allowed)}, not {mode}")
        elif mode not in book.modes and not (mode == "dr-activate" and "failover" in book.modes):
            out.add(loc + ("modes", index), f"the runbook has no mode {mode} (modes: {', '.join(book.modes)})")
    if step.goto and step.goto not in ids:
        out.add(loc + ("on_failure",), f"goto: no step {step.goto!r} in this list")
    if step.on_failure == "escalate" and (branch != "main" or book.dr_branch is None):
        out.add(loc + ("on_failure",), "escalate goes to the DR branch: only steps of `steps:` can, and the "
                "runbook needs a `dr_branch:`")
    if step.on_failure == "rollback" and (branch == "rollback" or not book.rollback):
        out.add(loc + ("on_failure",), "rollback needs `rollback:` steps (and a rollback step cannot roll back)")
    if step.host is not None and not action.uses_host:
        out.add(loc + ("host",), f"{step.action} acts on `args.node`, not on a host: remove `host:`")
    if "drill" in step_modes(step, branch, book) and step.action in PRODUCTION_ACTIONS:
        fix = "give this step `modes: [dr-activate]`" if branch == "dr" else "leave drill out of its `modes:`"
        out.add(loc + ("action",), f"{step.action} changes production servers and must not run in a drill: {fix}")
    _references(book, step.args, action, branch, loc + ("args",), out)
    if step.guard is not None:
        guard_action = ACTIONS[step.guard.action]
        _references(book, step.guard.args, guard_action, branch, loc + ("guard", "args"), out)


def _references(book: Runbook, args, action, branch: str, loc: tuple, out: _Problems) -> None:
    nodes = set(book.topology.nodes)
    for key, info in type(args).model_fields.items():
        extra = info.json_schema_extra
        if not (isinstance(extra, dict) and extra.get("node")):
            continue
        value = getattr(args, key)
        for index, ref in enumerate(value if isinstance(value, list) else [value]):
            where = loc + ((key, index) if isinstance(value, list) else (key,))
            problem = _role_problem(ref, branch, nodes, many=isinstance(value, list))
            if problem:
                out.add(where, problem)
    for key, value in args:
        if isinstance(value, str):
            for problem in template.problems(value, nodes):
                out.add(loc + (key,), problem)


def _role_problem(ref: str, branch: str, nodes: set, many: bool) -> str | None:
    if ref in nodes:
        return None
    roles = list(NODE_ROLES) + (["standbys"] if many else [])
    if ref not in roles:
        return f"no node or role named {ref!r} (roles: {', '.join(roles)}; nodes: {', '.join(sorted(nodes))})"
    if ref == "candidate" and branch == "dr":
        return "the DR branch runs when no standby can be promoted: there is no `candidate` there"
    if ref == "dr" and branch != "dr":
        return "`dr` is chosen only in the DR branch"
    return None


def _raw(doc: Marked, loc: tuple):
    data = doc.data
    for step in loc:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def policy_problems(policy, book: Runbook, doc: Marked) -> list[str]:
    """What the runbook names that the policy lacks (hosts, sources, repositories)."""
    out = _Problems(doc)
    topo, loc = book.topology, ("runbook", "topology")
    hosts = {"local", *policy.hosts}
    for name, node in topo.nodes.items():
        _host(hosts, node.host, loc + ("nodes", name, "host"), out)
        if node.fence_command:
            _host(hosts, node.fence_command.host, loc + ("nodes", name, "fence_command", "host"), out)
    if topo.source:
        source = policy.sources.get(topo.source)
        if source is None:
            out.add(loc + ("source",), f"no source named {topo.source!r} in the policy "
                    f"(sources: {', '.join(sorted(policy.sources)) or 'none'})")
        elif source.kind != topo.engine or source.mode != "physical":
            out.add(loc + ("source",), f"source {topo.source} is not a physical {topo.engine} source")
    if topo.repository and topo.repository not in policy.repositories:
        out.add(loc + ("repository",), f"no repository named {topo.repository!r} in the policy")
    for key, branch in BRANCHES:
        for index, step in enumerate(book.branch(branch)):
            step_loc = _branch_loc(key) + (index,)
            if step.host is not None:  # a hosts entry, or a node or role (that node's host)
                _host(hosts | set(topo.nodes) | set(NODE_ROLES), step.host, step_loc + ("host",), out)
            if step.action == "files.restore":
                source = policy.sources.get(step.args.source)
                if source is None or source.kind != "files":
                    out.add(step_loc + ("args", "source"), f"no files source named {step.args.source!r}")
    return list(out)


def _host(hosts: set, name: str, loc: tuple, out: _Problems) -> None:
    if name not in hosts:
        out.add(loc, f"no host named {name!r} (hosts: {', '.join(sorted(hosts))})")
