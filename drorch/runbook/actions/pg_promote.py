"""`pg.promote` (a standby becomes the primary; refused while another server
is writable) and `pg.repoint` (other standbys follow the new primary)."""

from __future__ import annotations

import time
from datetime import timedelta

from pydantic import Field

from drorch.errors import DrorchError
from drorch.policy.models import Model
from drorch.policy.types import Duration
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field
from drorch.runbook.actions.fencing import refuse_second_primary
from drorch.runbook.pgnode import lsn_text, pg_value
from drorch.sources.pg_wal import parse_lsn
from drorch.timefmt import iso, utcnow

WRITE_PROBE = "SELECT txid_current()"  # assigns a transaction id: fails unless the server takes writes


class PromoteArgs(Model):
    node: str = node_field("candidate", "the standby to promote")
    wait: Duration = Field(timedelta(seconds=60), description="how long pg_promote may take")


class PgPromote(Action):
    name = "pg.promote"
    title = "promote a standby"
    Args = PromoteArgs
    idempotent = False

    def describe(self, args: PromoteArgs, view) -> list[Manual]:
        node = view.node(args.node)
        seconds = int(args.wait.total_seconds())
        return [Manual("", "note", "first make sure no other server of the topology accepts writes "
                                   "(every one answers t to SELECT pg_is_in_recovery(), or is fenced)"),
                Manual(f"SQL on {node.name}", "sql", node.psql(f"SELECT pg_promote(true, {seconds})")),
                Manual(f"SQL on {node.name}: must work (the server takes writes)", "sql", node.psql(WRITE_PROBE))]

    def run(self, args: PromoteArgs, ctx) -> Outcome:
        node = ctx.node(args.node)
        refused = refuse_second_primary(node, ctx, "promote")
        if refused is not None:
            return refused
        before = ctx.observe(node)
        if before.role != "standby":
            return Outcome(False, f"{before.describe()}: only a running standby can be promoted")
        ctx.facts["promotion"] = {"node": node.name, "timeline_before": before.timeline,
                                  "received": lsn_text(before.receive_lsn), "replayed": lsn_text(before.replay_lsn)}
        ctx.save()
        seconds = int(args.wait.total_seconds())
        done = node.query("SELECT pg_promote(true, %s)", (seconds,), read_only=False)
        if not (done and done[0][0]):
            return Outcome(False, f"pg_promote on {node.name} did not finish within {seconds}s")
        ctx.milestone("promoted")
        return Outcome(True, self._after(node, ctx), ctx.facts["promotion"])

    def _after(self, node, ctx) -> str:
        """Wait for writes, then record where the new timeline starts."""
        deadline = time.monotonic() + max(5.0, ctx.remaining())
        while True:
            try:
                node.query(WRITE_PROBE, read_only=False)
                break
            except DrorchError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        ctx.milestone("writable")
        status = ctx.observe(node)
        switchpoint = node.query("SELECT pg_last_wal_replay_lsn()")[0][0]
        ctx.facts["promotion"].update({"timeline": status.timeline, "switchpoint": str(switchpoint),
                                       "at": iso(utcnow())})
        ctx.new_primary(node.name)
        return f"{node.name} promoted: timeline {status.timeline} from {switchpoint}, takes writes"

    def already_done(self, args: PromoteArgs, ctx) -> bool | None:
        node = ctx.node(args.node)
        status = ctx.observe(node)
        if not status.up:
            return None
        if status.role == "standby":
            return False
        before = (ctx.facts.get("promotion") or {}).get("timeline_before")
        if before is not None and status.timeline is not None and status.timeline <= before:
            return None
        if "switchpoint" not in (ctx.facts.get("promotion") or {}):
            self._after(node, ctx)  # finish what the killed runner did not record
        return True


class RepointArgs(Model):
    nodes: list[str] = node_field(["standbys"], "the standbys that must follow (`standbys`: every standby "
                                  "not promoted)")
    to: str = node_field("new_primary", "the server they follow")


class PgRepoint(Action):
    name = "pg.repoint"
    title = "point standbys at the new primary"
    Args = RepointArgs

    def describe(self, args: RepointArgs, view) -> list[Manual]:
        to = view.node(args.to)
        out = []
        for ref in args.nodes:
            for node in view.nodes(ref):
                out.append(Manual(f"SQL on {node.name}", "sql", node.psql(
                    f"ALTER SYSTEM SET primary_conninfo = '{to.conninfo} application_name={node.name}'; "
                    "SELECT pg_reload_conf()")))
        out.append(Manual("", "note", "each must then show status streaming in pg_stat_wal_receiver"))
        return out

    def run(self, args: RepointArgs, ctx) -> Outcome:
        to = ctx.node(args.to)
        conninfo_base = to.spec.peer_conninfo()
        done, skipped = [], []
        for node in ctx.nodes(args.nodes):
            if node.name == to.name:
                continue
            status = ctx.observe(node)
            if status.role != "standby":
                skipped.append(f"{node.name} ({status.role})")
                continue
            conninfo = f"{conninfo_base} application_name={node.name}"
            node.query(f"ALTER SYSTEM SET primary_conninfo = {pg_value(conninfo)}", read_only=False)
            node.query("SELECT pg_reload_conf()", read_only=False)
            done.append(node)
        for node in done:
            wait_streaming(node, to, ctx)
        summary = (f"{', '.join(n.name for n in done)} now follow(s) {to.name}" if done else
                   "no other standby to repoint") + (f"; not repointed: {', '.join(skipped)}" if skipped else "")
        return Outcome(True, summary, {"repointed": [n.name for n in done], "skipped": skipped})


def wait_streaming(node, to, ctx) -> None:
    """Until node streams on the new primary's timeline."""
    want = ctx.observe(to).timeline
    deadline = time.monotonic() + max(5.0, ctx.remaining())
    while True:
        status = ctx.observe(node)
        if status.up and status.upstream and status.timeline is not None and want is not None \
                and status.timeline >= want:
            return
        if time.monotonic() > deadline:
            raise DrorchError(f"{node.name} does not stream from {to.name}: {status.describe()}",
                              "look at its server log; a standby that went further than the new primary "
                              "needs pg.rewind or pg.rebuild")
        time.sleep(0.3)


def lsn_int(text: str | None) -> int | None:
    return None if text in (None, "-") else parse_lsn(text)
