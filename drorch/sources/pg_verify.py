"""The PostgreSQL checks of a restore verification (the `verify_restored` hook
of the postgres sources): start the restored cluster in the sandbox, reach
consistency, pg_amcheck every database, run the policy's SQL assertions, and
stop it whatever happened.  Logical backups: pg_verify_logical.py."""

from __future__ import annotations

import posixpath
import time
from typing import Callable

from drorch.errors import DrorchError, SourceError
from drorch.sources.assertions import failed as assertion_failed
from drorch.sources.assertions import judge
from drorch.sources.base import Check, Sandbox
from drorch.sources.pg_sandbox import QueryError, SandboxServer
from drorch.sources.sandbox_server import make_private_dir

Add = Callable[[Check], None]
OUTPUT_LINES = 10  # of a failing tool's output, kept in the evidence


def stage_wal(host, os_user: str, sandbox: Sandbox, facts: dict) -> Check:
    """The WAL the backup needs, from the repository into a directory of the sandbox
    only os_user may read (a verify host's restore_command copies from there)."""
    started = time.monotonic()
    make_private_dir(host, sandbox.archive_dir, os_user)
    names = list(facts.get("wal_required") or [])
    for name in names:
        host.put(posixpath.join(sandbox.archive_dir, name), [sandbox.fetch_archive(name)], mode=0o600)
    owned = host.run(["chown", "-R", f"{os_user}:", sandbox.archive_dir], timeout=60)
    if not owned.ok:
        raise SourceError(f"cannot give {sandbox.archive_dir} to {os_user} on host {host.name}: "
                          f"{owned.stderr.decode(errors='replace').strip()}")
    return Check("archive", "passed", f"{len(names)} WAL segment(s) the backup needs put into the sandbox on "
                                      f"host {host.name}", time.monotonic() - started)


def verify_physical(settings, sandbox: Sandbox, host, add: Add, facts: dict) -> None:
    server = SandboxServer(host, settings.bin_dir, settings.os_user, sandbox.target, sandbox.path)
    user, dbname = settings.primary.user, settings.primary.dbname
    started = time.monotonic()
    phase = "recovery"
    try:
        if sandbox.archive_dir:
            phase = "archive"
            add(stage_wal(host, settings.os_user, sandbox, facts))
            phase = "recovery"
        server.start()
        sandbox.info.update(pid=server.pid, port=server.port, socket_dir=server.socket_dir)
        server.wait_ready(user, dbname, sandbox.timeout)
        seconds = time.monotonic() - started
        sandbox.info["startup_seconds"] = round(seconds, 3)
        add(Check("recovery", "passed", f"started on 127.0.0.1:{server.port} of host {host.name} as "
                                        f"{settings.os_user}, replayed the WAL to consistency and promoted", seconds))
        phase = "connect"
        superuser = server.query(user, dbname, "SELECT rolname FROM pg_roles WHERE oid = 10", sandbox.timeout)[0]
        database_checks(server, superuser, dbname, sandbox, add)
    except SourceError as exc:
        add(Check(phase, "failed", exc.message, time.monotonic() - started))
    except (QueryError, DrorchError) as exc:
        add(Check(phase, "failed", f"as {user} to {dbname}: {getattr(exc, 'message', None) or exc}",
                  time.monotonic() - started))
    finally:
        how = server.stop()
        add(Check("stop", "passed", f"the sandbox cluster {how}"))


def database_checks(server: SandboxServer, superuser: str, dbname: str, sandbox: Sandbox, add: Add) -> None:
    """pg_amcheck on every database, then the policy's assertions."""
    add(_amcheck(server, superuser, sandbox.timeout))
    for sql, expect, database in sandbox.assertions:
        add(_assertion(server, superuser, database or dbname, sql, expect, sandbox.timeout))


def _amcheck(server: SandboxServer, user: str, timeout: float) -> Check:
    started = time.monotonic()
    try:
        proc = server.host.run(server.client("pg_amcheck", user, "--all", "--install-missing"), timeout=timeout)
    except DrorchError as exc:
        return Check("pg_amcheck", "failed", f"could not run pg_amcheck: {exc.message}", time.monotonic() - started)
    seconds = time.monotonic() - started
    if proc.ok:
        return Check("pg_amcheck", "passed", "every database: heap and B-tree indexes consistent", seconds)
    output = (proc.text() + proc.stderr.decode(errors="replace")).strip().splitlines()
    what = "found corruption" if proc.exit_status == 2 else f"failed (exit {proc.exit_status})"
    return Check("pg_amcheck", "failed", f"pg_amcheck {what}: " + " | ".join(output[:OUTPUT_LINES]), seconds)


def _assertion(server: SandboxServer, user: str, dbname: str, sql: str, expect: str | None,
               timeout: float) -> Check:
    started = time.monotonic()
    try:
        row = server.query(user, dbname, sql, timeout)
    except QueryError as exc:
        return assertion_failed(sql, dbname, exc, time.monotonic() - started)
    return judge(sql, dbname, row, expect, time.monotonic() - started)


def verify_dumps(host, bin_dir: str, sandbox: Sandbox, facts: dict, dump_path, add: Add) -> bool:
    """A logical backup: each database's dump is an archive pg_restore can read."""
    ok = True
    for database in facts.get("databases") or []:
        path = posixpath.join(sandbox.target, dump_path(database))
        started = time.monotonic()
        proc = host.run([posixpath.join(bin_dir, "pg_restore"), "--list", path], timeout=sandbox.timeout)
        seconds = time.monotonic() - started
        if not proc.ok:
            ok = False
            add(Check(f"dump {database}", "failed", "pg_restore cannot read it: "
                      f"{proc.stderr.decode(errors='replace').strip()}", seconds))
        else:
            count = sum(1 for line in proc.text().splitlines() if line and not line.startswith(";"))
            add(Check(f"dump {database}", "passed", f"a readable pg_restore archive of {count} objects", seconds))
    return ok
