"""`pg.restore`: a backup plus WAL from the repository onto a node (a DR host
fed only from the repository), to the end of the archive or a target; then
the server is started and waited for until it takes writes.  This ties the
backup side to DR.  In a drill it restores into the node's drill directory
and the runner tears it down at the end."""

from __future__ import annotations

import time

from pydantic import Field

from drorch.policy.models import Model
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field
from drorch.runbook.pgnode import lsn_text
from drorch.sources.pg_wal import parse_lsn
from drorch.timefmt import iso


class RestoreArgs(Model):
    node: str = node_field("dr", "the node to restore onto")
    backup: str | None = Field(None, description="this backup label (default: the newest that fits)")
    time: str | None = Field(None, description="recover to this time (ISO 8601); default: the end of the archive")
    lsn: str | None = Field(None, description="recover to this LSN")
    target: str | None = Field(None, description="the data directory (default: the node's pgdata; in a drill "
                                                 "its drill_pgdata)")
    start: bool = Field(True, description="start the server and wait until it takes writes")
    archive_mode: str = Field("off", pattern="^(off|preserve)$", description="off: the restored server does "
                              "not archive into production's archive (re-enable archiving to its own source)")


class PgRestore(Action):
    name = "pg.restore"
    title = "restore a backup from the repository"
    Args = RestoreArgs

    def describe(self, args: RestoreArgs, view) -> list[Manual]:
        node = view.node(args.node)
        target = args.target or (node.drill_pgdata if view.mode == "drill" else node.pgdata)
        when = f" --backup {args.backup}" if args.backup else ""
        when += f" --time '{args.time}' --target-action promote" if args.time else ""
        when += f" --lsn {args.lsn} --target-action promote" if args.lsn else ""
        host = "" if node.host == "local" else f" --target-host {node.host}"
        return [Manual("on the orchestrator", "shell",
                       f"drorch restore --policy {view.policy_path} --source {view.source}{when} "
                       f"--target {target}{host}"),
                Manual(f"on host {node.host}", "shell",
                       f"echo \"port = {node.port}\" >> {target}/postgresql.auto.conf   # and the node's settings"),
                Manual(node.on(), "shell", f"{node.bin_dir}/pg_ctl -D {target} -l {target}-drorch.log start"),
                Manual(f"SQL on {node.name}, repeated until it returns f (recovery done, promoted)", "sql",
                       node.psql("SELECT pg_is_in_recovery()"))] + (
            [Manual("", "note", f"in a drill: restore into {node.drill_pgdata} instead, and remove it at the end "
                                f"(pg_ctl -D {node.drill_pgdata} stop -m immediate; rm -rf {node.drill_pgdata})")]
            if view.mode is None and not args.target else [])

    def preview(self, args: RestoreArgs, ctx) -> str:
        """Plan mode: which backup would be restored."""
        manifest, _ = pick_backup(ctx, args.backup, {"time": args.time, "lsn": args.lsn})
        return (f"would restore {manifest.type} backup {manifest.label} (finished {manifest.finished}) of "
                f"{ctx.runbook.topology.source}, then replay the archived WAL"
                + (f" to {args.time or args.lsn}" if args.time or args.lsn else " to its end"))

    def run(self, args: RestoreArgs, ctx) -> Outcome:
        node = ctx.node(args.node)
        target = args.target or (node.spec.drill_pgdata or node.spec.pgdata.rstrip("/") + "-drill"
                                 if ctx.drill else node.spec.pgdata)
        if target != node.spec.pgdata:
            node = ctx.node_at(node.name, target)
        if node.host.lstat(node.path("PG_VERSION")) is not None and node.running():
            status = ctx.observe(node)
            if status.role == "primary" and ctx.repeating:
                return Outcome(True, f"{node.name} already runs restored on {target}", self._facts(node, ctx))
            return Outcome(False, f"a server already runs on {node.name}:{target}; stop it or choose another "
                                  "target (nothing was written)")
        if ctx.drill:
            ctx.add_cleanup({"kind": "pg.remove", "node": node.name, "target": target})
        pitr = {k: v for k, v in (("time", args.time), ("lsn", args.lsn)) if v}
        if pitr:
            pitr["action"] = "promote"
        pitr["archive_mode"] = args.archive_mode
        label = restore_backup(ctx, node, target, pitr, backup=args.backup)
        ctx.milestone("restored")
        node.append_settings(node.own_settings(), f"drorch runbook {ctx.run_id}: settings of node {node.name}")
        if not args.start:
            return Outcome(True, f"backup {label} restored onto {node.name}:{target} (not started)", {"backup": label})
        ctx.note(f"{node.name}: starting the server; it replays the archived WAL, then takes writes")
        node.start(timeout=60)
        node.wait_up(time.monotonic() + ctx.remaining(), writable=True)
        ctx.milestone("writable")
        facts = self._facts(node, ctx)
        facts["backup"] = label
        ctx.facts["dr_restore"] = facts
        ctx.new_primary(node.name)
        return Outcome(True, f"backup {label} restored onto {node.name}:{target}, recovered to "
                             f"{facts['end_lsn']} (last commit {facts['last_commit']}), takes writes", facts)

    @staticmethod
    def _facts(node, ctx) -> dict:
        end, last = node.query("SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()")[0]
        return {"node": node.name, "target": node.spec.pgdata, "end_lsn": end,
                "last_commit": iso(last) if last else None}


def restore_backup(ctx, node, target: str, pitr: dict, *, backup: str | None = None,
                   standby_of=None) -> str:
    """Restore the topology source's backup onto node:target (delta when the target
    holds an earlier attempt); returns the backup label."""
    from drorch.engine.restore import run_restore
    from drorch.factory import make_source
    from drorch.sources.base import RestoreOptions
    from drorch.timefmt import parse_iso

    policy, source = ctx.policy, ctx.runbook.topology.source
    manifest, repo = pick_backup(ctx, backup, pitr)
    moment = parse_iso(pitr["time"]) if pitr.get("time") else None
    options = dict(pitr)
    if moment is not None:
        options["time"] = iso(moment).replace("Z", "+00")
    if standby_of is not None:
        options.update(standby=True, primary_conninfo=f"{standby_of.spec.peer_conninfo()} "
                                                      f"application_name={node.name}", archive_mode="preserve")
    # Over what is there only when it is this run's own earlier attempt, or the node's
    # old data directory being rebuilt; anything else is refused by the restore.
    delta = bool(node.host.listdir(target)) and (ctx.repeating or standby_of is not None)
    restore = RestoreOptions(target=target, delta=delta, source_options=options)
    ctx.note(f"restoring backup {manifest.label} of {source} onto {node.name}:{target}"
             + (" (delta over what is there)" if delta else ""))
    run_restore(repo, make_source(policy, source), manifest, restore, node.host)
    return manifest.label


def pick_backup(ctx, backup: str | None, pitr: dict):
    """(manifest, repository) of the backup to restore: by label, or the newest that fits the target."""
    from drorch.engine.selection import choose_backup
    from drorch.factory import open_repository, repository_name
    from drorch.repo.catalog import Catalog
    from drorch.timefmt import parse_iso

    policy, source = ctx.policy, ctx.runbook.topology.source
    repo = open_repository(policy, repository_name(policy, source, None))
    moment = parse_iso(pitr["time"]) if pitr.get("time") else None
    return choose_backup(Catalog(repo), source, backup, moment, pitr.get("lsn")), repo


def lsn_of(text: str | None) -> int | None:
    return None if not text else parse_lsn(text)


__all__ = ["PgRestore", "restore_backup", "lsn_text", "lsn_of"]
