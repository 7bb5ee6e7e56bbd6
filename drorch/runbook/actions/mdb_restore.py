"""`mariadb.restore`: DR activation from the repository.  The newest (or a
named) mariabackup chain of the topology's source is restored onto a node with
drorch's chain restore, the archived binlogs are replayed to the failure (or a
time), then the server is started and waited for until it takes writes.  In a
drill it goes to the node's drill directory (on the node's port), and the runner tears it
down at the end."""

from __future__ import annotations

import dataclasses
import re
import time

from pydantic import Field

from drorch.policy.models import Model
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field
from drorch.runbook.actions.mdb_status import mariadb_cli
from drorch.runbook.actions.pg_restore import pick_backup
from drorch.timefmt import iso

_EVENT_TIME = re.compile(r"^#(\d{6})\s+(\d{1,2}:\d\d:\d\d) server id .*\b(Xid|Query)\b")


class MdbRestoreArgs(Model):
    node: str = node_field("dr", "the node to restore onto")
    backup: str | None = Field(None, description="this backup label (default: the newest that fits)")
    time: str | None = Field(None, description="replay the binlogs to this time (ISO 8601); default: all archived")
    target: str | None = Field(None, description="the datadir (default: the node's datadir; in a drill its "
                                                 "drill_datadir)")
    start: bool = Field(True, description="start the server and wait until it takes writes")


class MdbRestore(Action):
    name = "mariadb.restore"
    title = "restore a backup and its binlogs from the repository"
    Args = MdbRestoreArgs

    def describe(self, args: MdbRestoreArgs, view) -> list[Manual]:
        node = view.node(args.node)
        target = args.target or (node.drill_pgdata if view.mode == "drill" else node.pgdata)
        when = (f" --backup {args.backup}" if args.backup else "") + \
            f" --time '{args.time or '<the failure, UTC>'}'"
        host = "" if node.host == "local" else f" --target-host {node.host}"
        return [Manual("on the orchestrator", "shell", f"drorch restore --policy {view.policy_path} --source "
                       f"{view.source}{when} --target {target}{host} --force"),
                Manual(f"on host {node.host}", "shell", "systemctl start mariadb   # or the node's start_command, "
                       f"with --datadir={target}"),
                Manual(f"SQL on {node.name}: must return 0", "sql", mariadb_cli(node, "SELECT @@read_only"))]

    def preview(self, args: MdbRestoreArgs, ctx) -> str:
        manifest, _ = pick_backup(ctx, args.backup, {"time": args.time})
        return (f"would restore {manifest.type} backup {manifest.label} (finished {manifest.finished}) of "
                f"{ctx.runbook.topology.source} with its chain, then replay the archived binlogs"
                + (f" to {args.time}" if args.time else " to their end"))

    def run(self, args: MdbRestoreArgs, ctx) -> Outcome:
        node = self._node(args, ctx)
        if node.running():
            status = ctx.observe(node)
            if status.role == "primary" and ctx.repeating:
                return Outcome(True, f"{node.name} already runs restored on {node.spec.datadir}")
            return Outcome(False, f"a server already runs on {node.name}:{node.spec.datadir}; stop it or choose "
                                  "another target (nothing was written)")
        if ctx.drill:
            ctx.add_cleanup({"kind": "mariadb.remove", "node": node.name, "target": node.spec.datadir})
        label, replayed = self._restore(args, node, ctx)
        ctx.milestone("restored")
        if not args.start:
            return Outcome(True, f"backup {label} restored onto {node.name}:{node.spec.datadir} (not started)")
        node.start(timeout=60)
        status = node.wait_up(time.monotonic() + ctx.remaining(), writable=True)
        ctx.milestone("writable")
        facts = {"node": node.name, "target": node.spec.datadir, "backup": label, "gtid": status.binlog_gtid,
                 "last_commit": replayed, "end_lsn": replayed and f"binlogs replayed to {replayed}"}
        ctx.facts["dr_restore"] = facts
        ctx.new_primary(node.name)
        return Outcome(True, f"backup {label} restored onto {node.name}:{node.spec.datadir}, last commit "
                             f"replayed {replayed or '(none: the backup itself)'}, takes writes", facts)

    @staticmethod
    def _node(args: MdbRestoreArgs, ctx):
        from drorch.runbook.mdbnode import MdbNode

        node = ctx.node(args.node)
        model = ctx.runbook.topology.nodes[node.name]
        target = args.target or (model.drill_datadir or model.datadir.rstrip("/") + "-drill"
                                 if ctx.drill else model.datadir)
        if target == node.spec.datadir:
            return node
        spec = dataclasses.replace(node.spec, datadir=target, fence_file=target + ".drorch-fence.cnf",
                                   binlog_basename=None, start_command=None if ctx.drill else node.spec.start_command)
        return MdbNode(spec, lambda: node.host)

    @staticmethod
    def _restore(args: MdbRestoreArgs, node, ctx) -> tuple[str, str | None]:
        """Restore the chain (and replay the archived binlogs after it); the last commit replayed."""
        from drorch.engine import binlog
        from drorch.engine.restore import run_restore
        from drorch.factory import make_source
        from drorch.sources.base import RestoreOptions
        from drorch.timefmt import parse_iso

        source = ctx.runbook.topology.source
        manifest, repo = pick_backup(ctx, args.backup, {"time": args.time})
        first = manifest.source_facts.get("binlog_file")
        names = binlog.needed_from(list(binlog.archived(repo, source)), first) if first else []
        options = {}
        if names and args.time:
            options["time"] = parse_iso(args.time).strftime("%Y-%m-%d %H:%M:%S")  # UTC: mariadb-binlog runs with TZ=UTC
        elif names:  # everything archived (a stop time of "now" would drop this second's transactions)
            options["latest"] = True
        ctx.note(f"restoring backup {manifest.label} of {source} onto {node.name}:{node.spec.datadir}"
                 + (f", then replaying {len(names)} archived binlog(s)" if names else " (no binlog after it)"))
        run_restore(repo, make_source(ctx.policy, source), manifest,
                    RestoreOptions(target=node.spec.datadir, force=True, source_options=options), node.host)
        if not names:
            return manifest.label, manifest.source_facts.get("end_time")
        return manifest.label, last_commit(node.host, repo, source, names[-1])


def last_commit(host, repo, source: str, name: str) -> str | None:
    """The time (UTC) of the last transaction in an archived binlog, read with mariadb-binlog on host."""
    from drorch.engine import binlog

    path = f"/tmp/drorch-{name}-{int(time.time())}"
    host.put(path, binlog.chunks(repo, source, name))
    try:
        dump = host.run(f"TZ=UTC mariadb-binlog --no-defaults {path}", shell=True, timeout=300)
    finally:
        host.remove(path)
    stamps = [m for m in (_EVENT_TIME.match(line) for line in dump.text().splitlines()) if m]
    if not stamps:
        return None
    day, clock = stamps[-1].group(1), stamps[-1].group(2)
    return f"20{day[:2]}-{day[2:4]}-{day[4:]}T{clock.zfill(8)}Z"


__all__ = ["MdbRestore", "iso"]
