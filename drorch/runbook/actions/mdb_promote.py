"""`mariadb.promote` (a replica becomes the primary: STOP SLAVE, RESET SLAVE
ALL, read_only OFF; refused while another server takes writes) and
`mariadb.repoint` (other replicas, and a fenced old primary once it runs
again, replicate from the new primary with MASTER_USE_GTID=slave_pos)."""

from __future__ import annotations

import time

from pydantic import Field

from drorch.errors import DrorchError
from drorch.policy.models import Model
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field
from drorch.runbook.actions.fencing import refuse_second_primary
from drorch.runbook.actions.mdb_status import mariadb_cli
from drorch.timefmt import iso, utcnow

PROMOTE_SQL = ("STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = OFF")
CHANGE_MASTER = ("CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s, MASTER_PASSWORD = %s, "
                 "MASTER_USE_GTID = slave_pos")


class MdbPromoteArgs(Model):
    node: str = node_field("candidate", "the replica to promote")


class MdbPromote(Action):
    name = "mariadb.promote"
    title = "promote a replica"
    Args = MdbPromoteArgs
    idempotent = False

    def describe(self, args: MdbPromoteArgs, view) -> list[Manual]:
        node = view.node(args.node)
        fence = node.fence_file or f"{node.pgdata}.drorch-fence.cnf"
        return [Manual("", "note", "first make sure no other server of the topology takes writes (every one "
                                   "answers 1 to SELECT @@read_only, or is fenced)"),
                Manual(f"SQL on {node.name}: note what it applied", "sql",
                       mariadb_cli(node, "SELECT @@gtid_slave_pos; SHOW SLAVE STATUS\\G")),
                Manual(f"SQL on {node.name}", "sql", mariadb_cli(node, "; ".join(PROMOTE_SQL))),
                Manual(f"on host {node.host}", "shell", f"rm -f {fence}   # a restart keeps it writable"),
                Manual(f"SQL on {node.name}: must return 0", "sql", mariadb_cli(node, "SELECT @@read_only"))]

    def run(self, args: MdbPromoteArgs, ctx) -> Outcome:
        node = ctx.node(args.node)
        refused = refuse_second_primary(node, ctx, "promote")
        if refused is not None:
            return refused
        before = ctx.observe(node)
        if before.role != "standby" or not before.replica:
            return Outcome(False, f"{before.describe()}: only a running replica can be promoted")
        node.execute("STOP SLAVE")
        stopped = ctx.observe(node)  # what it applied, final: the data loss is measured from here
        ctx.facts["promotion"] = {"engine": "mariadb", "node": node.name, "gtid": stopped.slave_gtid,
                                  "exec": stopped.exec_coordinates, "received": stopped.io_gtid,
                                  "upstream": stopped.upstream}
        ctx.save()
        node.execute(*PROMOTE_SQL[1:])
        ctx.milestone("promoted")
        return Outcome(True, self._after(node, ctx), ctx.facts["promotion"])

    def _after(self, node, ctx) -> str:
        """The fence file gone, read_only OFF observed: record where the new primary starts."""
        try:
            node.remove_fence()
        except DrorchError as exc:
            ctx.note(f"{node.name}: could not remove its fence file ({exc.message}); a restart would come back "
                     "read-only")
        status = ctx.observe(node)
        if status.read_only:
            raise DrorchError(f"{node.name}: read_only is still ON after the promotion")
        ctx.milestone("writable")
        ctx.facts["promotion"].update({"switchpoint": status.binlog_gtid or ctx.facts["promotion"]["gtid"],
                                       "at": iso(utcnow())})
        ctx.new_primary(node.name)
        return f"{node.name} promoted: read_only OFF, no replication, applied GTID {ctx.facts['promotion']['gtid']}"

    def already_done(self, args: MdbPromoteArgs, ctx) -> bool | None:
        node = ctx.node(args.node)
        status = ctx.observe(node)
        if not status.up:
            return None
        if status.replica:
            return False
        if status.role != "primary" or "promotion" not in ctx.facts:
            return None
        if "switchpoint" not in ctx.facts["promotion"]:
            ctx.milestone("promoted")
            self._after(node, ctx)  # finish what the killed runner did not record
        return True


class MdbRepointArgs(Model):
    nodes: list[str] = node_field(["standbys"], "the servers that must replicate from it (`standbys`: every "
                                  "replica not promoted; `primary`: the fenced old primary, when it runs)")
    to: str = node_field("new_primary", "the server they replicate from")
    wait: bool = Field(True, description="wait until both replication threads run")


class MdbRepoint(Action):
    name = "mariadb.repoint"
    title = "point replicas at the new primary"
    Args = MdbRepointArgs

    def describe(self, args: MdbRepointArgs, view) -> list[Manual]:
        to = view.node(args.to)
        out = []
        for ref in args.nodes:
            for node in view.nodes(ref):
                out.append(Manual(f"SQL on {node.name}", "sql", mariadb_cli(node, (
                    "STOP SLAVE; SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos  -- only on a former primary\n"
                    f"CHANGE MASTER TO MASTER_HOST = '{to.conninfo.rsplit(':', 1)[0]}', MASTER_PORT = "
                    f"{to.conninfo.rsplit(':', 1)[-1]}, MASTER_USER = '<replication user>', MASTER_PASSWORD = "
                    "'<its password>', MASTER_USE_GTID = slave_pos; START SLAVE"))))
        out.append(Manual("", "note", "each must then show Slave_IO_Running and Slave_SQL_Running Yes in SHOW "
                                      "SLAVE STATUS; error 1236 means it has transactions the new primary lacks: "
                                      "rebuild it from a backup"))
        return out

    def run(self, args: MdbRepointArgs, ctx) -> Outcome:
        to = ctx.node(args.to)
        done, skipped, already = [], [], []
        for node in ctx.nodes(args.nodes):
            if node.name == to.name:
                continue
            status = ctx.observe(node)
            if status.role != "standby":
                skipped.append(f"{node.name} ({'down: repoint it once it runs' if not status.up else 'takes writes'})")
                continue
            if follows(status, to) and status.streaming and not status.replay_paused:
                already.append(node.name)
                continue
            node.execute("STOP SLAVE")
            if not status.replica:  # a former primary: its own transactions are where it starts from
                node.execute("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
            node.query(CHANGE_MASTER, (to.spec.repl_address, to.spec.repl_port, to.spec.repl_user,
                                       to.spec.repl_password or ""), read_only=False)
            node.execute("START SLAVE")
            done.append(node)
        for node in done if args.wait else []:
            wait_replicating(node, to, ctx)
        names = [n.name for n in done] + already
        summary = (f"{', '.join(names)} replicate(s) from {to.name}" if names else "no other replica to repoint") \
            + (f"; not repointed: {', '.join(skipped)}" if skipped else "")
        return Outcome(True, summary, {"repointed": [n.name for n in done], "already": already, "skipped": skipped})


def follows(status, to) -> bool:
    return bool(status.replica) and status.upstream == f"{to.spec.repl_address}:{to.spec.repl_port}"


def wait_replicating(node, to, ctx) -> None:
    """Until both threads of node run against `to`; a replication error fails at once."""
    deadline = time.monotonic() + max(5.0, ctx.remaining())
    while True:
        status = ctx.observe(node)
        if status.up and follows(status, to) and status.streaming and not status.replay_paused:
            return
        if status.problem() or time.monotonic() > deadline:
            raise DrorchError(f"{node.name} does not replicate from {to.name}: {status.describe()}",
                              "error 1236 (a GTID not in the master's binlog) means it has transactions the new "
                              "primary lacks: rebuild it from a backup; otherwise see its error log")
        time.sleep(0.3)
