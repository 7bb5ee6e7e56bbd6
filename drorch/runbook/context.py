"""What an action sees of its run: nodes by name or role, hosts, the step's
deadline, placeholders, milestones, facts for RTO/RPO, approvals and
notifications.  In plan mode the same context answers, but records nothing."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Callable

from drorch.errors import DrorchError, UsageError
from drorch.runbook import template
from drorch.runbook.actions.base import StepFailed
from drorch.runbook.approvals import Approvals, Asker, ask
from drorch.runbook.journal import Journal
from drorch.runbook.notifier import Notifier
from drorch.runbook.pgnode import NodeSpec, NodeStatus, PgNode, lsn_text
from drorch.sources.pg_wal import parse_lsn
from drorch.timefmt import iso, parse_iso, utcnow

Emit = Callable[[str, str], None]


class RunContext:
    def __init__(self, policy, book, journal: Journal, *, approvals: Approvals | None = None,
                 notifier: Notifier | None = None, asker: Asker | None = None, emit: Emit | None = None,
                 plan: bool = False, hooks=None):
        self.policy, self.runbook, self.journal = policy, book, journal
        self.hooks = hooks  # drorch.engine.hooks.Hooks with the runbook's post_runbook_step scripts
        self.approvals, self.notifier, self.asker = approvals, notifier, asker
        self.emit: Emit = emit or (lambda kind, text: None)
        self.plan = plan
        self.mode: str = journal.data["mode"]
        self.run_id = journal.run_id
        self.step_id = ""
        self.step_host_name: str | None = None
        self.deadline = time.monotonic() + 300
        self.repeating = False
        self.statuses: dict[str, NodeStatus] = {}
        self._nodes: dict[tuple, PgNode] = {}
        self._hosts: dict[str, object] = {}

    # -- the run ------------------------------------------------------------------

    @property
    def facts(self) -> dict:
        return self.journal.data["facts"]

    @property
    def roles(self) -> dict:
        return self.journal.data.setdefault("roles", {})

    @property
    def drill(self) -> bool:
        return self.mode == "drill"

    @property
    def started_at(self) -> datetime:
        return parse_iso(self.journal.data["started"])

    def save(self) -> None:
        if not self.plan:
            self.journal.save()

    def begin_step(self, step) -> None:
        self.step_id = step.id
        self.step_host_name = step.host
        self.deadline = time.monotonic() + step.timeout.total_seconds()

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def note(self, text: str) -> None:
        self.emit("note", text)
        if not self.plan:
            self.journal.event(text)

    def milestone(self, name: str) -> None:
        if not self.plan:
            self.journal.data["milestones"].setdefault(name, iso(utcnow()))

    def record_check(self, name: str, ok: bool, detail: str) -> None:
        if not self.plan:
            self.journal.data["checks"].append({"step": self.step_id, "check": name, "ok": ok, "detail": detail,
                                                "at": iso(utcnow())})

    def add_cleanup(self, item: dict) -> None:
        if not self.plan and item not in self.journal.data["cleanups"]:
            self.journal.data["cleanups"].append(item)
            self.save()

    def ask(self, prompt: str, timeout: float, default: str, question: str | None = None) -> tuple[bool, str]:
        if self.plan:
            return False, "plan mode: not asked"
        return ask(self.journal, self.approvals, question=question or self.step_id, step=self.step_id,
                   prompt=prompt, timeout=timeout, default=default, asker=self.asker, emit=self.emit)

    def notify(self, message: str, severity: str, webhook: str | None) -> list[str]:
        if self.plan or self.notifier is None:
            return []
        return self.notifier.send(message, severity, webhook)

    # -- nodes and roles ---------------------------------------------------------------

    def role_name(self, ref: str) -> str:
        topology = self.runbook.topology
        if ref in topology.nodes:
            return ref
        if ref == "new_primary":
            name = self.roles.get("new_primary") or self.roles.get("candidate") or self.roles.get("dr")
        else:
            name = self.roles.get(ref)
        if not name:
            raise StepFailed(f"no node has the role {ref} in this run", "see the run's choice of nodes")
        return name

    def node(self, ref: str) -> PgNode:
        return self.node_at(self.role_name(ref))

    @property
    def engine(self) -> str:
        return self.runbook.topology.engine

    @property
    def units(self):
        from drorch.runbook.topology import GTID, WAL

        return GTID if self.engine == "mariadb" else WAL

    def node_at(self, name: str, pgdata: str | None = None) -> PgNode:
        key = (name, pgdata)
        if key not in self._nodes and self.engine == "mariadb":
            from drorch.runbook.mdbnode import MdbNode

            model = self.runbook.topology.nodes[name]
            self._nodes[key] = MdbNode(mdb_spec(name, model, pgdata), lambda host=model.host: self.host(host))
        if key not in self._nodes:
            from drorch.factory import pg_params

            model = self.runbook.topology.nodes[name]
            spec = NodeSpec(name=name, host=model.host, pgdata=pgdata or model.pgdata,
                            params=pg_params(model.connection), os_user=model.os_user, bin_dir=model.bin_dir,
                            replication_conninfo=model.replication_conninfo, settings=dict(model.settings),
                            start_command=model.start_command, stop_command=model.stop_command,
                            drill_pgdata=model.drill_pgdata)
            self._nodes[key] = PgNode(spec, lambda host=model.host: self.host(host))
        return self._nodes[key]

    def production_order(self) -> list[str]:
        topology = self.runbook.topology
        return [topology.primary, *topology.standbys]

    def production_nodes(self) -> list[PgNode]:
        return [self.node_at(name) for name in self.production_order()]

    def nodes(self, refs: list[str]) -> list[PgNode]:
        """Nodes of refs; `standbys` is every production node but the primary and the one promoted."""
        out: list[PgNode] = []
        for ref in refs:
            if ref == "standbys":
                skip = {self.roles.get("primary"), self.roles.get("candidate"), self.roles.get("new_primary")}
                found = [self.node_at(n) for n in self.production_order() if n not in skip]
            else:
                found = [self.node(ref)]
            out += [node for node in found if node.name not in {n.name for n in out}]
        return out

    def fence_command(self, name: str):
        return self.runbook.topology.nodes[name].fence_command

    def host(self, name: str):
        if name not in self._hosts:
            from drorch.factory import make_host

            self._hosts[name] = make_host(self.policy, name)
        return self._hosts[name]

    @property
    def step_host(self) -> str:
        """The step's `host:`: a hosts entry, or a node or role (that node's host); default local."""
        name = self.step_host_name
        if name is None:
            return "local"
        topology = self.runbook.topology
        if name in topology.nodes or name in template.ROLES:
            return topology.nodes[self.role_name(name)].host
        return name

    @property
    def step_host_given(self) -> bool:
        return self.step_host_name is not None

    def new_primary(self, name: str) -> None:
        self.roles["new_primary"] = name
        self.save()

    # -- what is known of the WAL ---------------------------------------------------------

    def observe(self, node: PgNode) -> NodeStatus:
        status = node.status()
        self.statuses[node.name] = status
        if status.role == "primary" and status.head is not None:
            seen = {"node": node.name, **status.seen(), "at": iso(utcnow())}
            try:
                self.journal.state.write(seen, "topology", self.runbook.lease_name, f"last-seen-{node.name}.json")
            except DrorchError:
                pass  # a cache for estimates: plan still works where the state directory is not writable
            if not self.plan and node.name == self.roles.get("primary"):
                self.facts["last_seen"] = seen
        return status

    def last_seen(self, name: str) -> dict | None:
        """The newest flushed WAL position seen on a node while it was primary (this run, or earlier)."""
        candidates = [self.facts.get("last_seen"),
                      self.journal.state.read("topology", self.runbook.lease_name, f"last-seen-{name}.json")]
        found = [c for c in candidates if c and c.get("node") == name]
        return max(found, key=seen_position) if found else None

    def reference_lsn(self, ref: str) -> tuple[int, str] | None:
        """How far a server's WAL goes: flushed while it runs as primary; once stopped, its end
        of WAL read from disk; else the last position seen (an estimate)."""
        name, log = self.role_name(ref), self.units.log
        status = self.observe(self.node_at(name))
        if status.role == "primary":
            return status.head, f"{name}'s {'flushed WAL' if log == 'WAL' else 'binlog'}"
        end = self.facts.get("old_primary_end") or {}
        if end.get("node") == name and end.get("lsn"):
            return seen_position(end), f"{name}'s end of {log} (read from disk)"
        seen = self.last_seen(name)
        if seen:
            return seen_position(seen), f"the last {log} position seen on {name} ({seen['at']}, an estimate)"
        return None

    def old_end_of_wal(self, name: str, lsn: int | dict | None, basis: str) -> None:
        """The end of WAL of a fenced or rejoining server: exact data loss of a failover."""
        if self.plan or name != self.roles.get("primary"):
            return
        previous = self.facts.get("old_primary_end") or {}
        if lsn is None and previous.get("lsn"):
            return
        position = lsn if isinstance(lsn, dict) else {"lsn": lsn_text(lsn) if lsn is not None else None}
        self.facts["old_primary_end"] = {"node": name, **position, "basis": basis, "at": iso(utcnow())}
        self.save()

    def expand(self, text: str) -> str:
        def value(name: str, field: str | None) -> str:
            if name in template.RUN_VALUES:
                return {"run": self.run_id, "mode": self.mode, "runbook": self.runbook.id}[name]
            if name in template.ROLES and not (self.roles.get(name) or name == "new_primary" and any(
                    self.roles.get(r) for r in ("new_primary", "candidate", "dr"))):
                return "(none)"
            node = self.node(name)
            spec = node.spec
            if self.engine == "mariadb":
                return {None: node.name, "name": node.name, "host": spec.host, "address": spec.address,
                        "port": str(spec.port), "pgdata": spec.datadir, "datadir": spec.datadir, "bin_dir": "",
                        "os_user": spec.os_user, "conninfo": f"{spec.repl_address}:{spec.repl_port}"}[field]
            return {None: node.name, "name": node.name, "host": spec.host, "address": spec.params.host,
                    "port": str(spec.params.port), "pgdata": spec.pgdata, "datadir": spec.pgdata,
                    "bin_dir": spec.bin_dir, "os_user": spec.os_user, "conninfo": spec.peer_conninfo()}[field]
        try:
            return template.expand(text, value)
        except KeyError as exc:
            raise UsageError(f"unknown placeholder field {exc}") from None


def seen_position(record: dict) -> int:
    """The position of a last-seen or end-of-log record (MariaDB records carry it; WAL ones an LSN)."""
    if record.get("position") is not None:
        return int(record["position"])
    return parse_lsn(record["lsn"])


def mdb_spec(name: str, model, datadir: str | None = None):
    from drorch.runbook.mdbnode import MdbSpec

    conn, repl = model.connection, model.replication
    return MdbSpec(name=name, host=model.host, datadir=datadir or model.datadir, address=conn.host, port=conn.port,
                   user=conn.user, password=conn.password.resolve() if conn.password else None,
                   repl_address=repl.host or conn.host, repl_port=repl.port or conn.port, repl_user=repl.user,
                   repl_password=repl.password.resolve() if repl.password else None, os_user=model.os_user,
                   binlog_basename=model.binlog_basename, fence_file=model.fence_file,
                   server_options=list(model.server_options), start_command=model.start_command,
                   stop_command=model.stop_command)
