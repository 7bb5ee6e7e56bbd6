"""`mariadb.status` (role, GTID positions, replica threads; can expect a role)
and `mariadb.wait_caught_up` (a replica has applied the primary's binlog up to
its GTID position, or all it received).  Both read-only."""

from __future__ import annotations

import time

from pydantic import Field

from drorch.policy.models import Model
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field
from drorch.runbook.actions.pg_status import StatusExpect, role_problems
from drorch.runbook.mdbgtid import gtid_lag

STATUS_SQL = ("SELECT @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos; SHOW MASTER STATUS; "
              "SHOW SLAVE STATUS\\G")


def mariadb_cli(node, sql: str) -> str:
    quoted = sql.replace('"', '\\"')
    return f'mariadb -h {node.address} -P {node.port} -u {node.user or "USER"} -p -e "{quoted}"'


class MdbStatusExpect(StatusExpect):
    max_lag: int | None = Field(None, ge=0, description="a replica: at most this many transactions behind")


class MdbStatusArgs(Model):
    node: str = node_field("primary", "the node (or role) to look at")
    expect: MdbStatusExpect = Field(default_factory=MdbStatusExpect, description="default: just report")


class MdbStatus(Action):
    name = "mariadb.status"
    title = "look at a server"
    Args = MdbStatusArgs
    read_only = True

    def describe(self, args: MdbStatusArgs, view) -> list[Manual]:
        node = view.node(args.node)
        out = [Manual(f"SQL on {node.name}", "sql", mariadb_cli(node, STATUS_SQL))]
        want = []
        if args.expect.role:
            want.append("unreachable / not running" if args.expect.role == "down" else
                        "role primary (read_only OFF)" if args.expect.role == "primary" else "read_only ON")
        if args.expect.writable is not None:
            want.append("takes writes" if args.expect.writable else "does not take writes (down or read_only ON)")
        if args.expect.max_lag is not None:
            want.append(f"at most {args.expect.max_lag} transactions behind the primary's gtid_binlog_pos")
        if want:
            out.append(Manual("", "note", "expect: " + ", ".join(want)))
        return out

    def run(self, args: MdbStatusArgs, ctx) -> Outcome:
        status = ctx.observe(ctx.node(args.node))
        problems = role_problems(args.expect, status)
        lag_text = ""
        if args.expect.max_lag is not None and status.role == "standby":
            primary = ctx.observe(ctx.node("primary"))
            if primary.role == "primary":
                lag = gtid_lag(primary.binlog_gtid, status.slave_gtid)
                lag_text = f"; {lag} transactions behind {primary.name}"
                if lag > args.expect.max_lag:
                    problems.append(f"lag beyond {args.expect.max_lag} transactions")
        summary = status.describe() + lag_text + (f" ({'; '.join(problems)})" if problems else "")
        return Outcome(not problems, summary, status.as_dict())


class MdbCaughtUpArgs(Model):
    node: str = node_field("candidate", "the replica that must catch up")
    of: str = node_field("primary", "whose binlog it must have applied: while that server runs, its "
                         "gtid_binlog_pos; once it is stopped, its end of binlog as read by mariadb.fence; else "
                         "the last known")
    max_lag: int = Field(0, ge=0, description="how many transactions behind still counts as caught up")
    received: bool = Field(False, description="only wait until it has applied what it received (failover: "
                                              "the primary is gone)")


class MdbWaitCaughtUp(Action):
    name = "mariadb.wait_caught_up"
    title = "wait until a replica has caught up"
    Args = MdbCaughtUpArgs
    read_only = True

    def describe(self, args: MdbCaughtUpArgs, view) -> list[Manual]:
        node, of = view.node(args.node), view.node(args.of)
        if args.received:
            return [Manual(f"SQL on {node.name}, repeated until Relay_Master_Log_File = Master_Log_File and "
                           "Exec_Master_Log_Pos = Read_Master_Log_Pos", "sql",
                           mariadb_cli(node, "SHOW SLAVE STATUS\\G"))]
        return [Manual(f"the GTID position of {of.name}, while it runs: SQL on {of.name}", "sql",
                       mariadb_cli(of, "SELECT @@gtid_binlog_pos")),
                Manual(f"once it is stopped, its last GTID: on host {of.host}", "shell",
                       f"mariadb-binlog --no-defaults $(tail -1 {of.pgdata}/binlog.index) | grep -E 'GTID|Gtid list' "
                       "| tail -1"),
                Manual(f"SQL on {node.name}, repeated until it returns 1", "sql",
                       mariadb_cli(node, f"SELECT MASTER_GTID_WAIT('<the GTID of {of.name}>', 1) = 0"
                                   if not args.max_lag else
                                   f"SELECT @@gtid_slave_pos   -- at most {args.max_lag} behind"))]

    def run(self, args: MdbCaughtUpArgs, ctx) -> Outcome:
        node = ctx.node(args.node)
        while True:
            status = ctx.observe(node)
            if status.role != "standby" or not status.replica:
                return Outcome(False, f"{status.describe()}: not a replica")
            if args.received:
                done, short = status.caught_up_with_received(), "applied less than it received"
                basis = "what it received"
            else:
                target = self._target(args, ctx)
                if target is None:
                    return Outcome(False, f"nothing is known of {ctx.role_name(args.of)}'s GTID position")
                lag = gtid_lag(target[0], status.slave_gtid)
                done, short, basis = lag <= args.max_lag, f"{lag} transactions short", target[1]
            if done:
                return Outcome(True, f"{node.name} applied GTID {status.slave_gtid or '-'}, caught up with {basis}",
                               {"gtid": status.slave_gtid, "exec": status.exec_coordinates})
            if status.problem() or ctx.plan or ctx.remaining() <= 0.5:
                why = f": {status.problem()}" if status.problem() else ""
                return Outcome(False, f"{node.name} applied GTID {status.slave_gtid or '-'}: {short} of {basis}"
                                      + (", its SQL thread is stopped" if status.replay_paused else "") + why)
            time.sleep(0.3)

    @staticmethod
    def _target(args: MdbCaughtUpArgs, ctx) -> tuple[str, str] | None:
        name = ctx.role_name(args.of)
        status = ctx.observe(ctx.node_at(name))
        if status.role == "primary":
            return status.binlog_gtid, f"{name}'s gtid_binlog_pos {status.binlog_gtid}"
        end = ctx.facts.get("old_primary_end") or {}
        if end.get("node") == name and end.get("gtid"):
            return end["gtid"], f"{name}'s end of binlog {end['gtid']}"
        seen = ctx.last_seen(name)
        if seen and seen.get("gtid"):
            return seen["gtid"], f"the last GTID seen on {name} ({seen['gtid']} at {seen['at']}, an estimate)"
        return None
