"""`pg.status` (role, WAL positions, lag of a node; can expect a role) and
`pg.wait_caught_up` (a standby has replayed up to the primary's WAL, or to
within a bound of it).  Both read-only."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from drorch.policy.models import Model
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field
from drorch.runbook.model_types import ByteSize, human_size
from drorch.runbook.pgnode import lsn_text

STATUS_SQL = ("SELECT pg_is_in_recovery(), pg_current_wal_flush_lsn() /* on a primary */, "
              "pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn() /* on a standby */")


class StatusExpect(Model):
    role: Literal["primary", "standby", "down"] | None = Field(None, description="the role it must have")
    max_lag: ByteSize | None = Field(None, description="a standby: its replay lags at most this much")
    writable: bool | None = Field(None, description="false: must not take writes (down, or in recovery)")


def role_problems(expect: StatusExpect, status) -> list[str]:
    """What differs from the expected role / writability (shared by the engines' status actions)."""
    problems = []
    if expect.role and status.role != expect.role:
        problems.append(f"expected {expect.role}")
    if expect.writable is not None and (status.role == "primary") != expect.writable:
        problems.append("takes writes" if status.role == "primary" else "does not take writes")
    return problems


class StatusArgs(Model):
    node: str = node_field("primary", "the node (or role) to look at")
    expect: StatusExpect = Field(default_factory=StatusExpect, description="default: just report")


class PgStatus(Action):
    name = "pg.status"
    title = "look at a server"
    Args = StatusArgs
    read_only = True

    def describe(self, args: StatusArgs, view) -> list[Manual]:
        node = view.node(args.node)
        out = [Manual(f"SQL on {node.name}", "sql", node.psql(STATUS_SQL))]
        want = []
        if args.expect.role:
            want.append("unreachable / not running" if args.expect.role == "down" else f"role {args.expect.role}")
        if args.expect.writable is not None:
            want.append("takes writes" if args.expect.writable else "does not take writes (down or in recovery)")
        if args.expect.max_lag is not None:
            want.append(f"replay lag at most {human_size(args.expect.max_lag)}")
        if want:
            out.append(Manual("", "note", "expect: " + ", ".join(want)))
        return out

    def run(self, args: StatusArgs, ctx) -> Outcome:
        node = ctx.node(args.node)
        status = ctx.observe(node)
        problems = role_problems(args.expect, status)
        lag_text = ""
        if args.expect.max_lag is not None and status.role == "standby":
            reference = ctx.reference_lsn("primary")
            if reference and status.replay_lsn is not None:
                lag = max(0, reference[0] - status.replay_lsn)
                lag_text = f"; replay lag {human_size(lag)} behind {reference[1]}"
                if lag > args.expect.max_lag:
                    problems.append(f"lag beyond {human_size(args.expect.max_lag)}")
        summary = status.describe() + lag_text + (f" ({'; '.join(problems)})" if problems else "")
        return Outcome(not problems, summary, status.as_dict())


class CaughtUpArgs(Model):
    node: str = node_field("candidate", "the standby that must catch up")
    of: str = node_field("primary", "whose WAL it must have replayed: while that server runs, its flushed "
                         "WAL; once it is stopped, its end of WAL as read by pg.fence; else the last known")
    max_lag: ByteSize = Field(0, description="how far behind still counts as caught up")
    received: bool = Field(False, description="only wait until it has replayed what it received (failover: "
                                              "the primary is gone)")


class PgWaitCaughtUp(Action):
    name = "pg.wait_caught_up"
    title = "wait until a standby has caught up"
    Args = CaughtUpArgs
    read_only = True

    def describe(self, args: CaughtUpArgs, view) -> list[Manual]:
        node, of = view.node(args.node), view.node(args.of)
        if args.received:
            return [Manual(f"SQL on {node.name}, repeated until it returns t", "sql",
                           node.psql("SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()"))]
        end_of_wal = (f"{of.bin_dir}/pg_controldata -D {of.pgdata} | grep \"REDO location\"\n"
                      f"{of.bin_dir}/pg_waldump -p {of.pgdata}/pg_wal -s <REDO location> -q\n"
                      "# its complaint 'invalid record length at X/Y' gives the end of WAL: X/Y")
        return [Manual(f"the LSN of {of.name}, while it runs: SQL on {of.name}", "sql",
                       of.psql("SELECT pg_current_wal_flush_lsn()")),
                Manual(f"once it is stopped, its end of WAL: {of.on()}", "shell", end_of_wal),
                Manual(f"SQL on {node.name}, repeated until it returns t", "sql",
                       node.psql(f"SELECT pg_wal_lsn_diff('<the LSN of {of.name}>', pg_last_wal_replay_lsn()) "
                                 f"<= {args.max_lag}"))]

    def run(self, args: CaughtUpArgs, ctx) -> Outcome:
        node = ctx.node(args.node)
        settled: tuple | None = None  # (replay, receive, since): received mode, replay no longer moving
        while True:
            status = ctx.observe(node)
            if status.role != "standby":
                return Outcome(False, f"{status.describe()}: not a standby")
            if args.received:
                target, basis = status.receive_lsn or status.replay_lsn, "what it received"
            else:
                reference = ctx.reference_lsn(args.of)
                if reference is None:
                    return Outcome(False, f"nothing is known of {ctx.role_name(args.of)}'s WAL position")
                target, basis = reference[0] - args.max_lag, reference[1]
            lag = max(0, (target or 0) - (status.replay_lsn or 0))
            if lag == 0:
                return Outcome(True, f"{node.name} replayed {lsn_text(status.replay_lsn)}, caught up with {basis}",
                               {"replay_lsn": lsn_text(status.replay_lsn)})
            if args.received and not status.replay_paused:
                # The last bytes received may be part of a record that never arrived whole:
                # replay that stands still for a second has applied all it can.
                now = (status.replay_lsn, status.receive_lsn)
                if settled is None or settled[:2] != now:
                    settled = (*now, time.monotonic())
                elif time.monotonic() - settled[2] >= 1.0:
                    return Outcome(True, f"{node.name} replayed {lsn_text(status.replay_lsn)}, all it can of what "
                                         f"it received ({human_size(lag)} more is an incomplete record)",
                                   {"replay_lsn": lsn_text(status.replay_lsn)})
            if ctx.plan or ctx.remaining() <= 0.5:
                return Outcome(False, f"{node.name} replayed {lsn_text(status.replay_lsn)}: {human_size(lag)} "
                                      f"short of {basis}" + (", replay is paused" if status.replay_paused else ""))
            time.sleep(0.3)
