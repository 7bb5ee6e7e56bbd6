"""The runbook as a document a person can follow when drorch is not there:
every step with its id in the heading, its text, the exact commands and SQL
it runs, its guard, timeout, retries, approval and what happens on failure;
the rollback and the DR branch.  Built from the same model the runner runs,
so the document and the program cannot drift apart."""

from __future__ import annotations

from drorch.runbook.actions import ACTIONS
from drorch.runbook.actions.base import NodeView
from drorch.runbook.docformat import Doc
from drorch.runbook.model import DR_MODES, MAIN_MODES, Runbook, step_modes
from drorch.runbook.model_types import human_size
from drorch.runbook.topology import GTID, WAL
from drorch.timefmt import format_duration

ROLE_TEXT = {
    "primary": "the server that takes writes now; when none does, the one a run last made primary, else `{p}`",
    "candidate": "the standby that is promoted: running, replay within {lag} of the primary, the furthest "
                 "ahead; equally far: the first of {standbys}. `drorch runbook plan` says which one and why "
                 "not the others",
    "new_primary": "the server that takes writes after the run (the candidate, or the DR node)",
    "dr": "the first DR node that can be reached, of {dr}",
    "standbys": "every standby that is not being promoted",
}


class View:
    """Nodes as render shows them: a named node with its values; a role as
    `${role.field}` placeholders, or, when the run's roles are known (plan),
    the node that has it."""

    def __init__(self, book: Runbook, policy_path: str = "POLICY", roles: dict | None = None,
                 mode: str | None = None):
        self.book, self.policy_path, self.roles, self.mode = book, policy_path, roles or {}, mode
        self.step_host = "local"
        self.source = book.topology.source or "SOURCE"
        self.webhook = book.notify.webhook

    def node(self, ref: str) -> NodeView:
        name = self._resolve(ref)
        model = self.book.topology.nodes.get(name) if name else None
        if model is None:
            return NodeView(*(f"${{{ref}.{f}}}" if f != "name" else ref for f in
                              ("name", "host", "address", "port", "pgdata", "bin_dir", "os_user", "conninfo")),
                            f"<drill_pgdata of {ref}>")
        if self.book.topology.engine == "mariadb":
            repl = model.replication
            return NodeView(name, model.host, model.connection.host, str(model.connection.port), model.datadir, "",
                            model.os_user, f"{repl.host or model.connection.host}:{repl.port or model.connection.port}",
                            model.drill_datadir or model.datadir.rstrip("/") + "-drill", model.connection.user,
                            model.fence_file or model.datadir.rstrip("/") + ".drorch-fence.cnf")
        conninfo = model.replication_conninfo or \
            f"host={model.connection.host} port={model.connection.port} user={model.connection.user}"
        return NodeView(name, model.host, model.connection.host, str(model.connection.port), model.pgdata,
                        model.bin_dir, model.os_user, conninfo,
                        model.drill_pgdata or model.pgdata.rstrip("/") + "-drill")

    def nodes(self, ref: str) -> list[NodeView]:
        if ref != "standbys":
            return [self.node(ref)]
        if not self.roles:
            return [self.node("standbys")]
        skip = {self.roles.get("primary"), self.roles.get("candidate"), self.roles.get("new_primary")}
        topology = self.book.topology
        return [self.node(n) for n in [topology.primary, *topology.standbys] if n not in skip]

    def _resolve(self, ref: str) -> str | None:
        if ref in self.book.topology.nodes:
            return ref
        if ref == "new_primary":
            return self.roles.get("new_primary") or self.roles.get("candidate") or self.roles.get("dr")
        return self.roles.get(ref)

    def fence_command(self, name: str):
        model = self.book.topology.nodes.get(name)
        return model.fence_command if model else None


def document(book: Runbook, source_file: str = "", policy_path: str = "POLICY") -> Doc:
    doc = Doc(book.title)
    doc.h(1, f"{book.title}")
    doc.p(f"Runbook `{book.id}` · modes: {', '.join(book.modes)} · owners: {', '.join(book.owners)}"
          + (f" · file: `{source_file}`" if source_file else ""))
    doc.p(book.summary)
    _objectives(doc, book)
    _topology(doc, book)
    _how_to_run(doc, book, policy_path)
    view = View(book, policy_path)
    if book.steps:
        doc.h(2, "Switchover and failover (`steps`)")
        doc.p("Run in order. A step whose modes do not include the current mode is left out.")
        for number, step in enumerate(book.steps, 1):
            step_section(doc, book, step, "main", number, view)
    if book.rollback:
        doc.h(2, "Rollback (`rollback`)")
        doc.p("Run when a step with `on failure: rollback` fails: it puts things back as they were.")
        for number, step in enumerate(book.rollback, 1):
            step_section(doc, book, step, "rollback", number, view)
    if book.dr_branch:
        _dr_branch(doc, book, view)
    return doc


def _objectives(doc: Doc, book: Runbook) -> None:
    objectives = book.objectives
    items = []
    if objectives.rto is not None:
        items.append(f"RTO: service back within {format_duration(objectives.rto)} of the failure (measured from "
                     "detection to the data checks passing)")
    if objectives.rpo is not None:
        items.append(f"RPO: at most {format_duration(objectives.rpo)} of committed data lost (DR activation: "
                     "last archived commit to the failure)")
    if objectives.rpo_bytes is not None:
        items.append(f"RPO of a standby promotion: at most {human_size(objectives.rpo_bytes)} of WAL lost")
    if items:
        doc.h(2, "Objectives")
        doc.ul(items)


def _topology(doc: Doc, book: Runbook) -> None:
    topology = book.topology
    doc.h(2, "Topology")
    role_of = {topology.primary: "primary (initially)", **{n: "standby" for n in topology.standbys},
               **{n: "DR (fed from the repository)" for n in topology.dr}}
    rows = []
    for name, node in topology.nodes.items():
        fence = f"on {node.fence_command.host}: `{node.fence_command.command}`" if node.fence_command else "-"
        rows.append([name, role_of.get(name, "-"), node.host, f"`{node.pgdata}`",
                     f"{node.connection.host}:{node.connection.port}", node.os_user, fence])
    doc.table(["node", "role", "host", "data directory", "address", "OS user", "fence command"], rows)
    units = GTID if topology.engine == "mariadb" else WAL
    facts = [f"Standby lag bound: a standby whose replay lags more than {units.amount(topology.max_lag)} is not "
             "promoted."]
    if topology.source:
        facts.append(f"DR nodes are fed only from the repository: backups and {units.log} archive of source "
                     f"`{topology.source}`.")
    doc.ul(facts)
    doc.h(3, "Roles chosen at run time")
    standbys = ", ".join(topology.standbys) or "none"
    doc.ul([f"`{role}`: " + text.format(p=topology.primary, lag=units.amount(topology.max_lag), standbys=standbys,
                                        dr=", ".join(topology.dr) or "none")
            for role, text in ROLE_TEXT.items()])
    doc.p("`${role.field}` in a command stands for that node's value in the table above (fields: host, "
          "address, port, pgdata, datadir, bin_dir, os_user, conninfo).")


def _how_to_run(doc: Doc, book: Runbook, policy_path: str) -> None:
    doc.h(2, "Running it with drorch")
    modes = " | ".join(book.modes)
    doc.code(f"drorch runbook plan   --policy {policy_path} {book.id} --mode {modes}   # read-only: what would happen\n"
             f"drorch runbook run    --policy {policy_path} {book.id} --mode MODE\n"
             f"drorch runbook approve --policy {policy_path} RUN STEP [--reject]     # answer a waiting approval\n"
             f"drorch runbook resume --policy {policy_path} RUN                      # after the runner died\n"
             f"drorch runbook report --policy {policy_path} RUN [--json]             # the incident report", "sh")
    doc.p("Every step's start and end are journaled (state directory and repository) before and after it runs; "
          f"one runner at a time holds the lease on topology `{book.lease_name}`.")


def step_section(doc: Doc, book: Runbook, step, branch: str, number: int, view: View) -> None:
    action = ACTIONS[step.action]
    doc.h(3, f"Step {number} `{step.id}`: {step.title}", anchor=step.id)
    on_failure = step.on_failure.replace("goto:", "go to step ")
    facts = [f"modes: {', '.join(step_modes(step, branch, book))}", f"action `{step.action}` ({action.title})",
             f"timeout {format_duration(step.timeout)}", f"retries {step.retries}", f"on failure: {on_failure}"]
    if step.milestone:
        facts.append(f"milestone: {step.milestone}")
    doc.p("*" + " · ".join(facts) + "*")
    doc.p(step.text)
    if step.guard is not None:
        guard = ACTIONS[step.guard.action]
        otherwise = "skip this step" if step.guard.otherwise == "skip" else "the step fails"
        doc.p(f"**Guard** (must hold first; otherwise {otherwise}): `{step.guard.action}`")
        _manual(doc, guard.describe(step.guard.args, view))
    if step.approval is not None:
        doc.p(f"**Approval**: {step.approval.prompt or step.title} — unanswered after "
              f"{format_duration(step.approval.timeout)}: {step.approval.default}.")
    view.step_host = step_host(view, step.host)
    doc.p("**Do:**")
    _manual(doc, action.describe(step.args, view))


def step_host(view: View, host: str | None) -> str:
    """A step's `host:`: a hosts entry, or a node or role (its host)."""
    if host is None:
        return "local"
    if host in view.book.topology.nodes or host in ("primary", "candidate", "new_primary", "dr"):
        return view.node(host).host
    return host


def _manual(doc: Doc, lines) -> None:
    for line in lines:
        if line.kind == "note":
            doc.p(f"{line.where + ': ' if line.where else ''}{line.text}")
        else:
            doc.p(f"{line.where[0].upper() + line.where[1:]}:" if line.where else "")
            doc.code(line.text, "sql" if line.kind == "sql" and not line.text.startswith("psql") else "sh")


def _dr_branch(doc: Doc, book: Runbook, view: View) -> None:
    branch = book.dr_branch
    doc.h(2, "DR branch (`dr_branch`)")
    when = ("Runs in modes " + ", ".join(m for m in DR_MODES if m in book.modes) if any(
        m in book.modes for m in DR_MODES) else "Runs")
    ask = "without asking (`auto_escalate: true`)" if branch.auto_escalate else \
        (f"after a person approves (unanswered after {format_duration(branch.approval.timeout)}: "
         f"{branch.approval.default})")
    text = f"{when}, and in a failover when no standby can be promoted (every standby lost or too far behind): then " \
           f"{ask}."
    if "drill" in book.modes:
        text += " A drill runs the steps for mode drill onto the DR node's drill directory, never touches the " \
                "production servers, and removes what it restored at the end."
    doc.p(text)
    for number, step in enumerate(branch.steps, 1):
        step_section(doc, book, step, "dr", number, view)


def markdown(book: Runbook, source_file: str = "", policy_path: str = "POLICY") -> str:
    return document(book, source_file, policy_path).markdown()


def html(book: Runbook, source_file: str = "", policy_path: str = "POLICY") -> str:
    return document(book, source_file, policy_path).html()


__all__ = ["View", "document", "markdown", "html", "MAIN_MODES"]
