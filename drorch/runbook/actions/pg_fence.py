"""`pg.fence`: make sure a server can no longer accept writes, and prove it.

Reachable host: stop the server (fast, then immediate), leave standby.signal
in its data directory so that a restart brings it back read-only, run the
node's optional disable command, and read its end of WAL (data loss is
measured against it).  A server found running in recovery is already
read-only.  Unreachable host: run the node's `fence_command` elsewhere (power
off, cut its network); its success is the proof.  Being unreachable is never
proof (a network partition looks the same), so without proof the run stops at
an approval that names the split-brain risk.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from drorch.policy.models import Model
from drorch.policy.types import Duration
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field, tail
from drorch.runbook.actions.fencing import fence_nodes, preview_fence, refuse_second_primary
from drorch.timefmt import format_duration


class FenceArgs(Model):
    nodes: list[str] = node_field(["primary"], "the servers to fence (nodes or roles; `standbys` is every "
                                  "standby not being promoted)")
    stop_mode: Literal["fast", "immediate"] = Field("fast", description="fast: clean stop, every committed "
                                                    "transaction sent to the standbys first")
    standby_signal: bool = Field(True, description="leave standby.signal so a restart comes back read-only")
    disable_command: str | None = Field(None, description="run on the node's host after it stopped, e.g. "
                                        "`systemctl disable postgresql@15-main`")
    approval_timeout: Duration = Field(timedelta(minutes=15), description="how long the split-brain question "
                                       "waits; unanswered means NOT fenced")


class PgFence(Action):
    name = "pg.fence"
    title = "fence a server"
    Args = FenceArgs

    def describe(self, args: FenceArgs, view) -> list[Manual]:
        out = []
        for ref in args.nodes:
            for node in view.nodes(ref):
                ctl = f"{node.bin_dir}/pg_ctl -D {node.pgdata}"
                out.append(Manual(node.on(), "shell", f"{ctl} status || true\n{ctl} stop -m {args.stop_mode} -w "
                                  f"|| {ctl} stop -m immediate -w\n" +
                                  (f"touch {node.pgdata}/standby.signal\n" if args.standby_signal else "") +
                                  f"{ctl} status   # must say: no server running"))
                if args.disable_command:
                    out.append(Manual(f"on host {node.host}", "shell", args.disable_command))
                fence = view.fence_command(node.name)
                if fence:
                    out.append(Manual(f"only if host {node.host} cannot be reached: on host {fence.host}", "shell",
                                      fence.command))
        out.append(Manual("", "note", "proof is the server seen stopped (or in recovery), or the fence "
                                      "command succeeding; if neither: do not go on until you know the server "
                                      f"is down (the run asks, and gives up after {format_duration(args.approval_timeout)})"))
        return out

    def preview(self, args: FenceArgs, ctx) -> str:
        """Plan mode: what fencing would find (read-only: pg_ctl status, SSH reachability)."""
        return preview_fence(ctx.nodes(args.nodes), lambda node: "server " + (
            "running: it would be stopped" if node.running() else "not running: standby.signal would be left"),
            ctx)

    def run(self, args: FenceArgs, ctx) -> Outcome:
        return fence_nodes(ctx.nodes(args.nodes), lambda node, out: _fence_on_host(node, args, ctx, out), ctx,
                           args.approval_timeout.total_seconds())


def _fence_on_host(node, args: FenceArgs, ctx, output: list[str]) -> tuple[str | None, str]:
    if node.running():
        status = ctx.observe(node)
        if status.up and status.in_recovery:
            return "observed running in recovery (read-only)", ""
        result = node.stop(args.stop_mode, timeout=max(10.0, ctx.remaining() / 2))
        output.append(tail(result.stdout + result.stderr))
        if node.running():
            result = node.stop("immediate", timeout=max(10.0, ctx.remaining() / 2))
            output.append(tail(result.stdout + result.stderr))
            if node.running():
                return None, "it is still running after pg_ctl stop -m immediate"
        how = f"stopped (pg_ctl stop -m {args.stop_mode})"
    else:
        how = "found not running"
    if args.standby_signal:
        node.remove("recovery.signal")
        node.touch("standby.signal")
    if args.disable_command:
        result = node.host.run(ctx.expand(args.disable_command), shell=True, timeout=60)
        output.append(tail(result.stdout + result.stderr))
        if not result.ok:
            return None, f"the disable command exited {result.exit_status}"
    if node.running():
        return None, "it started again while being fenced"
    end, basis = node.end_of_wal()
    ctx.old_end_of_wal(node.name, end, basis)
    signal = ", standby.signal in place" if args.standby_signal else ""
    return f"{how}; observed: no server running (pg_ctl status){signal}", ""


class StartArgs(Model):
    node: str = node_field("primary", "the server to start")
    writable: bool = Field(False, description="start it as a primary again (removes standby.signal: the undo "
                                              "of pg.fence in a rollback); otherwise as it is")


class PgStart(Action):
    name = "pg.start"
    title = "start a server"
    Args = StartArgs

    def describe(self, args: StartArgs, view) -> list[Manual]:
        node = view.node(args.node)
        undo = f"rm -f {node.pgdata}/standby.signal\n" if args.writable else ""
        return [Manual("", "note", "only when no other server of the topology takes writes") if args.writable
                else Manual("", "note", "it comes back in the role its data directory says"),
                Manual(node.on(), "shell", f"{undo}{node.bin_dir}/pg_ctl -D {node.pgdata} -l {node.pgdata}-drorch.log "
                                           "start")]

    def run(self, args: StartArgs, ctx) -> Outcome:
        import time

        node = ctx.node(args.node)
        refused = refuse_second_primary(node, ctx, "start as a primary") if args.writable else None
        if refused is not None:
            return refused
        if not node.running():
            if args.writable:
                node.remove("standby.signal")
            node.start(timeout=60)
        status = node.wait_up(time.monotonic() + ctx.remaining(), writable=True if args.writable else None)
        return Outcome(True, status.describe(), status.as_dict())
