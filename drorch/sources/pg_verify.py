"""The PostgreSQL checks of a restore verification (the `verify_restored` hook
of the postgres sources): start the restored cluster in the sandbox, reach
consistency, pg_amcheck every database, run the policy's SQL assertions, and
stop it whatever happened.  Logical backups: pg_verify_logical.py."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Callable

import psycopg

from drorch.errors import SourceError
from drorch.sources.assertions import failed as assertion_failed
from drorch.sources.assertions import judge
from drorch.sources.base import Check, Sandbox
from drorch.sources.pg_sandbox import SandboxServer

Add = Callable[[Check], None]
OUTPUT_LINES = 10  # of a failing tool's output, kept in the evidence


def verify_physical(settings, sandbox: Sandbox, host, add: Add) -> None:
    if host.name != "local":
        add(Check("start", "failed", f"a restored cluster is started on the backup host only (not yet on "
                                     f"verify host {host.name}): leave `verify.host` out for this source"))
        return
    server = SandboxServer(settings.bin_dir, settings.os_user, sandbox.target, sandbox.path)
    user, dbname = settings.primary.user, settings.primary.dbname
    started = time.monotonic()
    phase = "recovery"
    try:
        server.start()
        sandbox.info.update(pid=server.proc.pid, port=server.port, socket_dir=server.socket_dir)
        server.wait_ready(user, dbname, sandbox.timeout)
        seconds = time.monotonic() - started
        sandbox.info["startup_seconds"] = round(seconds, 3)
        add(Check("recovery", "passed", f"started on 127.0.0.1:{server.port} as {settings.os_user}, replayed "
                                        "the WAL to consistency and promoted", seconds))
        phase = "connect"
        superuser = _bootstrap_superuser(server, user, dbname)
        database_checks(server, superuser, dbname, settings.bin_dir, sandbox, add)
    except SourceError as exc:
        add(Check(phase, "failed", exc.message, time.monotonic() - started))
    except psycopg.Error as exc:
        add(Check(phase, "failed", f"as {user} to {dbname}: {str(exc).strip()}", time.monotonic() - started))
    finally:
        how = server.stop()
        add(Check("stop", "passed", f"the sandbox cluster {how}"))


def database_checks(server: SandboxServer, superuser: str, dbname: str, bin_dir: str, sandbox: Sandbox,
                    add: Add) -> None:
    """pg_amcheck on every database, then the policy's assertions."""
    add(_amcheck(server, superuser, bin_dir, sandbox.timeout))
    for sql, expect, database in sandbox.assertions:
        add(_assertion(server, superuser, database or dbname, sql, expect, sandbox.timeout))


def _bootstrap_superuser(server: SandboxServer, user: str, dbname: str) -> str:
    with server.connect(user, dbname) as conn:
        return conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()[0]


def _amcheck(server: SandboxServer, user: str, bin_dir: str, timeout: float) -> Check:
    started = time.monotonic()
    argv = [os.path.join(bin_dir, "pg_amcheck"), "-h", server.socket_dir, "-p", str(server.port), "-U", user,
            "--all", "--install-missing"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("pg_amcheck", "failed", f"could not run pg_amcheck: {exc}", time.monotonic() - started)
    seconds = time.monotonic() - started
    if proc.returncode == 0:
        return Check("pg_amcheck", "passed", "every database: heap and B-tree indexes consistent", seconds)
    output = (proc.stdout + proc.stderr).strip().splitlines()
    what = "found corruption" if proc.returncode == 2 else f"failed (exit {proc.returncode})"
    return Check("pg_amcheck", "failed", f"pg_amcheck {what}: " + " | ".join(output[:OUTPUT_LINES]), seconds)


def _assertion(server: SandboxServer, user: str, dbname: str, sql: str, expect: str | None,
               timeout: float) -> Check:
    started = time.monotonic()
    try:
        with server.connect(user, dbname) as conn:
            conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
            row = conn.execute(sql).fetchone()
    except psycopg.Error as exc:
        return assertion_failed(sql, dbname, exc, time.monotonic() - started)
    return judge(sql, dbname, row, expect, time.monotonic() - started)


def verify_dumps(bin_dir: str, sandbox: Sandbox, facts: dict, dump_path, add: Add) -> bool:
    """A logical backup: each database's dump is an archive pg_restore can read."""
    ok = True
    for database in facts.get("databases") or []:
        path = os.path.join(sandbox.target, dump_path(database))
        started = time.monotonic()
        proc = subprocess.run([os.path.join(bin_dir, "pg_restore"), "--list", path], capture_output=True,
                              text=True)
        seconds = time.monotonic() - started
        if proc.returncode:
            ok = False
            add(Check(f"dump {database}", "failed", f"pg_restore cannot read it: {proc.stderr.strip()}", seconds))
        else:
            count = sum(1 for line in proc.stdout.splitlines() if line and not line.startswith(";"))
            add(Check(f"dump {database}", "passed", f"a readable pg_restore archive of {count} objects", seconds))
    return ok
