"""`mariadb.fence`: make sure a MariaDB server can no longer take writes, and
prove it (the rules of actions/fencing.py).  On a reachable host the node's
fence file (`read_only = ON`, `skip_slave_start`) is written first, so that a
restart comes back read-only; then the server is either stopped (SHUTDOWN
WAIT FOR ALL SLAVES: every replica has the binlog first; then signals) or,
with `mode: read_only`, kept running with read_only ON and its writers'
connections killed.  Its end of binlog is recorded either way: what the data
loss is measured against.  `mariadb.start` starts a server (writable: the
undo of a fence, refused while another server takes writes)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Literal

from pydantic import Field

from drorch.errors import HostError
from drorch.policy.models import Model
from drorch.policy.types import Duration
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field, tail
from drorch.runbook.actions.fencing import fence_nodes, preview_fence, refuse_second_primary
from drorch.runbook.actions.mdb_status import mariadb_cli
from drorch.runbook.mdbgtid import gtid_seq
from drorch.timefmt import format_duration

WRITERS_SQL = ("SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER NOT IN "
               "('system user', 'event_scheduler', 'unauthenticated user', %s) AND COMMAND NOT IN "
               "('Binlog Dump', 'Binlog Dump GTID', 'Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker')")


class MdbFenceArgs(Model):
    nodes: list[str] = node_field(["primary"], "the servers to fence (nodes or roles; `standbys` is every "
                                  "replica not being promoted)")
    mode: Literal["stop", "read_only"] = Field("stop", description="stop the server, or keep it running "
                                               "read-only with its writers' connections killed (switchover)")
    disable_command: str | None = Field(None, description="run on the node's host afterwards, e.g. "
                                        "`systemctl disable mariadb`")
    approval_timeout: Duration = Field(timedelta(minutes=15), description="how long the split-brain question "
                                       "waits; unanswered means NOT fenced")


class MdbFence(Action):
    name = "mariadb.fence"
    title = "fence a server"
    Args = MdbFenceArgs

    def describe(self, args: MdbFenceArgs, view) -> list[Manual]:
        out = []
        for ref in args.nodes:
            for node in view.nodes(ref):
                fence = node.fence_file or f"{node.pgdata}.drorch-fence.cnf"
                out.append(Manual(f"on host {node.host}", "shell", "printf '[mariadbd]\\nread_only = ON\\n"
                                  f"skip_slave_start = ON\\n' > {fence}   # read at start: it comes back read-only"))
                if args.mode == "read_only":
                    out.append(Manual(f"SQL on {node.name}", "sql", mariadb_cli(node, "SET GLOBAL read_only = ON; "
                               "SELECT ID, USER FROM information_schema.PROCESSLIST   -- then KILL CONNECTION "
                               "each writer; SHOW MASTER STATUS; SELECT @@gtid_binlog_pos")))
                else:
                    out.append(Manual(f"SQL on {node.name} (or stop its service)", "sql",
                                      mariadb_cli(node, "SHUTDOWN WAIT FOR ALL SLAVES")))
                    out.append(Manual(f"on host {node.host}: no process may remain", "shell",
                                      f"kill -0 $(cat {node.pgdata}/*.pid) && echo STILL RUNNING"))
                if args.disable_command:
                    out.append(Manual(f"on host {node.host}", "shell", args.disable_command))
                command = view.fence_command(node.name)
                if command:
                    out.append(Manual(f"only if host {node.host} cannot be reached: on host {command.host}",
                                      "shell", command.command))
        out.append(Manual("", "note", "proof is the server seen stopped (or read_only ON with its writers "
                                      "killed), or the fence command succeeding; if neither: do not go on until "
                                      "you know the server is down (the run asks, and gives up after "
                                      f"{format_duration(args.approval_timeout)})"))
        return out

    def preview(self, args: MdbFenceArgs, ctx) -> str:
        what = "read_only ON, writers killed" if args.mode == "read_only" else "stopped"
        return preview_fence(ctx.nodes(args.nodes), lambda node: "server " + (
            f"running: it would be {what}" if node.running() else "not running: the fence file would be left"),
            ctx)

    def run(self, args: MdbFenceArgs, ctx) -> Outcome:
        return fence_nodes(ctx.nodes(args.nodes), lambda node, out: _fence_on_host(node, args, ctx, out), ctx,
                           args.approval_timeout.total_seconds())


def _fence_on_host(node, args: MdbFenceArgs, ctx, output: list[str]) -> tuple[str | None, str]:
    running = node.running()  # raises when the host cannot be reached: the fence command's turn
    node.write_fence(ctx.run_id)
    if running and args.mode == "read_only" and ctx.observe(node).up:
        how = _read_only(node, ctx)
    elif running:
        node.stop("fast", timeout=max(10.0, ctx.remaining() / 2))
        if node.running():
            node.stop("immediate", timeout=max(10.0, ctx.remaining() / 2))
            if node.running():
                return None, "it still runs after SIGKILL"
        how = "stopped"
    else:
        how = "found not running"
    if args.disable_command:
        result = node.host.run(ctx.expand(args.disable_command), shell=True, timeout=60)
        output.append(tail(result.stdout + result.stderr))
        if not result.ok:
            return None, f"the disable command exited {result.exit_status}"
    if how.startswith("read_only"):
        return f"{how}; fence file {node.spec.fence_path} in place", ""
    if node.running():
        return None, "it started again while being fenced"
    end, basis = node.end_of_wal()
    ctx.old_end_of_wal(node.name, end, basis)
    return f"{how}; observed: no server process (pid files); fence file {node.spec.fence_path} in place", ""


def _read_only(node, ctx) -> str:
    """read_only ON (waits for commits in progress), writers killed, end of binlog read live."""
    node.execute("SET GLOBAL read_only = ON")
    killed = 0
    for (pid,) in node.query(WRITERS_SQL, (node.spec.user,)):
        try:
            node.execute(f"KILL CONNECTION {int(pid)}")
            killed += 1
        except Exception:  # noqa: BLE001 - it ended by itself meanwhile
            pass
    status = ctx.observe(node)
    if not status.read_only:
        raise HostError(f"node {node.name}: read_only is still OFF after SET GLOBAL read_only = ON")
    sizes = {row[0]: int(row[1]) for row in node.query("SHOW BINARY LOGS")}
    end = {"gtid": status.binlog_gtid, "file": status.binlog_file, "pos": status.binlog_pos, "sizes": sizes,
           "position": gtid_seq(status.binlog_gtid),
           "lsn": status.binlog_gtid}
    ctx.old_end_of_wal(node.name, end, f"SHOW MASTER STATUS on {node.name} while read-only")
    return f"read_only ON observed, {killed} client connection(s) killed, binlog ends at {status.binlog_gtid}"


class MdbStartArgs(Model):
    node: str = node_field("primary", "the server to start")
    writable: bool = Field(False, description="start it as a primary again (removes the fence file, read_only "
                                              "OFF: the undo of mariadb.fence in a rollback); otherwise as it is")


class MdbStart(Action):
    name = "mariadb.start"
    title = "start a server"
    Args = MdbStartArgs

    def describe(self, args: MdbStartArgs, view) -> list[Manual]:
        node = view.node(args.node)
        fence = node.fence_file or f"{node.pgdata}.drorch-fence.cnf"
        out = [Manual("", "note", "only when no other server of the topology takes writes") if args.writable
               else Manual("", "note", "a fenced server comes back read-only (its fence file)")]
        out.append(Manual(f"on host {node.host}", "shell", (f"rm -f {fence}\n" if args.writable else "") +
                          "systemctl start mariadb   # or the node's start_command"))
        if args.writable:
            out.append(Manual(f"SQL on {node.name}", "sql", mariadb_cli(node, "SET GLOBAL read_only = OFF")))
        return out

    def run(self, args: MdbStartArgs, ctx) -> Outcome:
        node = ctx.node(args.node)
        refused = refuse_second_primary(node, ctx, "start as a primary") if args.writable else None
        if refused is not None:
            return refused
        if args.writable:
            node.remove_fence()
        if not node.running():
            node.start(timeout=60)
        status = node.wait_up(time.monotonic() + ctx.remaining())
        if args.writable and status.read_only:
            node.execute("SET GLOBAL read_only = OFF")
            status = ctx.observe(node)
        return Outcome(True, status.describe(), status.as_dict())
