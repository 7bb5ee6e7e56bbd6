"""Failback: the old primary rejoins as a standby of the new one.
`pg.rewind` (pg_rewind from the new primary: needs data checksums or
wal_log_hints), with `fallback: rebuild`; `pg.rebuild` (the newest backup
from the repository, written over it with --delta, as a standby).  Before
either, the old primary's end of WAL is read: the data loss of the failover
is recomputed from it."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from drorch.errors import DrorchError
from drorch.policy.models import Model
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field, tail
from drorch.runbook.actions.pg_promote import wait_streaming
from drorch.runbook.actions.pg_restore import restore_backup


class RewindArgs(Model):
    node: str = node_field("primary", "the server that rejoins (the old primary)")
    source: str = node_field("new_primary", "the server it follows")
    fallback: Literal["fail", "rebuild"] = Field("fail", description="when pg_rewind fails: fail the step, or "
                                                 "rebuild the node from the newest backup")


class PgRewind(Action):
    name = "pg.rewind"
    title = "rejoin a server as a standby (pg_rewind)"
    Args = RewindArgs

    def describe(self, args: RewindArgs, view) -> list[Manual]:
        node, source = view.node(args.node), view.node(args.source)
        ctl = f"{node.bin_dir}/pg_ctl -D {node.pgdata}"
        return [Manual(node.on(), "shell",
                       f"{ctl} stop -m fast || true\nrm -f {node.pgdata}/standby.signal {node.pgdata}/recovery.signal\n"
                       f"{node.bin_dir}/pg_rewind -D {node.pgdata} --source-server='{source.conninfo} "
                       f"dbname=postgres' -R\n"
                       f"echo \"port = {node.port}\" >> {node.pgdata}/postgresql.auto.conf   # and the node's settings\n"
                       f"{ctl} -l {node.pgdata}-drorch.log start"),
                Manual(f"SQL on {node.name}: must show streaming", "sql",
                       node.psql("SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver"))] + (
            [Manual("", "note", "if pg_rewind fails: rebuild it from the newest backup (see pg.rebuild)")]
            if args.fallback == "rebuild" else [])

    def run(self, args: RewindArgs, ctx) -> Outcome:
        node, source = ctx.node(args.node), ctx.node(args.source)
        status = ctx.observe(node)
        if status.role == "standby" and status.upstream and status.timeline == ctx.observe(source).timeline:
            return Outcome(True, f"{node.name} already streams from {status.upstream}")
        stop_and_measure(node, ctx)
        node.remove("standby.signal")
        node.remove("recovery.signal")
        result = node.run_as_owner([node.tool("pg_rewind"), "-D", node.spec.pgdata, "--source-server",
                                    f"{source.spec.params.conninfo()}", "-R"], timeout=ctx.remaining())
        output = tail(result.stdout + b"\n" + result.stderr)
        if not result.ok:
            if args.fallback != "rebuild":
                return Outcome(False, f"pg_rewind of {node.name} from {source.name} failed (exit "
                                      f"{result.exit_status})", output=output)
            ctx.note(f"pg_rewind failed on {node.name}; rebuilding it from the newest backup")
            label = rebuild(node, source, ctx)
            return Outcome(True, f"pg_rewind failed; {node.name} rebuilt from backup {label} and streams "
                                 f"from {source.name}", {"rebuilt_from": label}, output)
        follow(node, source, ctx)
        return Outcome(True, f"{node.name} rewound and streams from {source.name}", {}, output)


class RebuildArgs(Model):
    node: str = node_field("primary", "the server to rebuild as a standby")
    source: str = node_field("new_primary", "the server it follows")
    backup: str | None = Field(None, description="this backup label (default: the newest)")


class PgRebuild(Action):
    name = "pg.rebuild"
    title = "rebuild a standby from the newest backup"
    Args = RebuildArgs

    def describe(self, args: RebuildArgs, view) -> list[Manual]:
        node, source = view.node(args.node), view.node(args.source)
        host = "" if node.host == "local" else f" --target-host {node.host}"
        return [Manual(node.on(), "shell", f"{node.bin_dir}/pg_ctl -D {node.pgdata} stop -m fast || true"),
                Manual("on the orchestrator", "shell",
                       f"drorch restore --policy {view.policy_path} --source {view.source} --target {node.pgdata}"
                       f"{host} --delta --standby --primary-conninfo '{source.conninfo} "
                       f"application_name={node.name}'"),
                Manual(node.on(), "shell", f"{node.bin_dir}/pg_ctl -D {node.pgdata} -l {node.pgdata}-drorch.log start")]

    def run(self, args: RebuildArgs, ctx) -> Outcome:
        node, source = ctx.node(args.node), ctx.node(args.source)
        stop_and_measure(node, ctx)
        label = rebuild(node, source, ctx, args.backup)
        return Outcome(True, f"{node.name} rebuilt from backup {label}, streams from {source.name}",
                       {"backup": label})


def stop_and_measure(node, ctx) -> None:
    """Stop the server and read its end of WAL (the failover's data loss, exactly)."""
    if node.running():
        result = node.stop("fast", timeout=60)
        if node.running():
            raise DrorchError(f"cannot stop {node.name}: {tail(result.stderr)}")
    end, basis = node.end_of_wal()
    ctx.old_end_of_wal(node.name, end, basis)


def rebuild(node, source, ctx, backup: str | None = None) -> str:
    label = restore_backup(ctx, node, node.spec.pgdata, {}, backup=backup, standby_of=source)
    follow(node, source, ctx)
    return label


def follow(node, source, ctx) -> None:
    """Settings of the node, primary_conninfo for peers, start, wait for streaming."""
    settings = node.own_settings()
    settings["primary_conninfo"] = f"{source.spec.peer_conninfo()} application_name={node.name}"
    node.append_settings(settings, f"drorch runbook {ctx.run_id}: {node.name} follows {source.name}")
    node.touch("standby.signal")
    node.start(timeout=60)
    node.wait_up(time.monotonic() + max(10.0, ctx.remaining()), writable=False)
    wait_streaming(node, source, ctx)
