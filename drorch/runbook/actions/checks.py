"""Checks: `sql.check` (a query must return the expected value), `tcp.check`
(a port is open, or closed), `http.check` (a URL answers).  Read-only: plan
mode runs them, and guards are made of them.  Each result is kept as a data
check of the run (the report lists the checks run after recovery)."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
import urllib.error
import urllib.request
from typing import Any, Literal

from pydantic import Field

from drorch.errors import DrorchError
from drorch.policy.models import Model
from drorch.policy.types import Duration
from drorch.runbook.actions.base import Action, Manual, Outcome, node_field


class Expect(Model):
    """What the first column of the first row must be (all that are given must hold)."""

    equals: Any = Field(None, description="exactly this value (compared as text)")
    min: float | None = Field(None, description="a number at least this")
    max: float | None = Field(None, description="a number at most this")


class SqlArgs(Model):
    node: str = node_field("new_primary", "the node to query (a node or a role)")
    query: str = Field(description="SQL whose first row's first column is checked")
    database: str | None = Field(None, description="default: the connection's")
    expect: Expect = Field(default_factory=Expect, description="default: any value that is not NULL")
    write: bool = Field(False, description="the query writes (otherwise it runs read-only, and plan runs it)")
    wait: Duration | None = Field(None, description="repeat until it holds, for at most this long")


class SqlCheck(Action):
    name = "sql.check"
    title = "check a query's answer"
    Args = SqlArgs
    read_only = True

    def is_read_only(self, args: SqlArgs) -> bool:
        return not args.write

    def describe(self, args: SqlArgs, view) -> list[Manual]:
        node = view.node(args.node)
        return [Manual(f"SQL on {node.name}", "sql", node.psql(args.query, args.database)),
                Manual("", "note", f"expect: {expect_text(args.expect)}")]

    def run(self, args: SqlArgs, ctx) -> Outcome:
        node = ctx.node(args.node)
        query = ctx.expand(args.query)
        deadline = time.monotonic() + (args.wait.total_seconds() if args.wait and not ctx.plan else 0)
        while True:
            try:
                rows = node.query(query, dbname=args.database, read_only=not args.write)
                value = rows[0][0] if rows and rows[0] else None
                problem = expect_problem(args.expect, value)
            except DrorchError as exc:
                value, problem = None, exc.message
            if problem is None or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        ok = problem is None
        summary = f"{node.name}: {query!r} returned {value!r}" + ("" if ok else f": {problem}")
        ctx.record_check(f"sql on {node.name}: {query}", ok, summary)
        return Outcome(ok, summary, {"value": str(value) if value is not None else None})


def expect_text(expect: Expect) -> str:
    parts = []
    if expect.equals is not None:
        parts.append(f"= {expect.equals}")
    if expect.min is not None:
        parts.append(f">= {expect.min:g}")
    if expect.max is not None:
        parts.append(f"<= {expect.max:g}")
    return " and ".join(parts) or "a value (not NULL)"


def expect_problem(expect: Expect, value: Any) -> str | None:
    if value is None:
        return "no value (no row, or NULL)"
    if expect.equals is not None and str(value) != str(expect.equals):
        return f"expected {expect.equals!r}"
    for bound, ok in ((expect.min, lambda v, b: v >= b), (expect.max, lambda v, b: v <= b)):
        if bound is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{value!r} is not a number"
        if not ok(number, bound):
            return f"expected {expect_text(expect)}"
    return None


class TcpArgs(Model):
    host: str = Field(description="address to connect to (${role.address} works)")
    port: int | str = Field(description="the port (${role.port} works)")
    expect: Literal["open", "closed"] = "open"
    connect_timeout: Duration = Field(timedelta(seconds=3), description="how long one connection attempt may take")


class TcpCheck(Action):
    name = "tcp.check"
    title = "check a TCP port"
    Args = TcpArgs
    read_only = True

    def describe(self, args: TcpArgs, view) -> list[Manual]:
        return [Manual("from the orchestrator", "shell", f"nc -z -w 3 {args.host} {args.port}"),
                Manual("", "note", f"expect the port {args.expect}")]

    def run(self, args: TcpArgs, ctx) -> Outcome:
        host, port = ctx.expand(args.host), int(ctx.expand(str(args.port)))
        try:
            with socket.create_connection((host, port), timeout=args.connect_timeout.total_seconds()):
                state = "open"
        except OSError as exc:
            state, why = "closed", exc.strerror or str(exc)
        ok = state == args.expect
        summary = f"{host}:{port} is {state}" + ("" if state == "open" else f" ({why})")
        ctx.record_check(f"tcp {host}:{port} {args.expect}", ok, summary)
        return Outcome(ok, summary, {"state": state})


class HttpArgs(Model):
    url: str = Field(description="the URL (http or https)")
    status: int = Field(200, description="the expected status code")
    contains: str | None = Field(None, description="text the body must contain")
    request_timeout: Duration = Field(timedelta(seconds=10))


class HttpCheck(Action):
    name = "http.check"
    title = "check an HTTP endpoint"
    Args = HttpArgs
    read_only = True

    def describe(self, args: HttpArgs, view) -> list[Manual]:
        want = f"status {args.status}" + (f", body contains {args.contains!r}" if args.contains else "")
        return [Manual("from the orchestrator", "shell", f"curl -sS -o /dev/stdout -w '%{{http_code}}' {args.url}"),
                Manual("", "note", f"expect {want}")]

    def run(self, args: HttpArgs, ctx) -> Outcome:
        url = ctx.expand(args.url)
        try:
            with urllib.request.urlopen(url, timeout=args.request_timeout.total_seconds()) as response:
                status, body = response.status, response.read(1 << 20).decode(errors="replace")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(1 << 20).decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            summary = f"{url}: {getattr(exc, 'reason', exc)}"
            ctx.record_check(f"http {url}", False, summary)
            return Outcome(False, summary)
        ok = status == args.status and (args.contains is None or args.contains in body)
        summary = f"{url}: status {status}" + ("" if ok else f" (expected {args.status}"
                                               + (f" with {args.contains!r}" if args.contains else "") + ")")
        ctx.record_check(f"http {url}", ok, summary)
        return Outcome(ok, summary, {"status": status})
