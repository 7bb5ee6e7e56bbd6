"""Restore verification of a MariaDB logical backup: a new, empty server is
made in the sandbox (mariadb-install-db as the source's OS user), started on a
private socket like a physical copy (mariadb_verify.py), every dump is loaded
into a database of its name, then CHECK TABLE on every InnoDB table and the
policy's SQL assertions.  The server is stopped by its PID whatever happens."""

from __future__ import annotations

import posixpath
import time

from drorch.errors import DrorchError, SourceError
from drorch.sources.base import Check, Sandbox
from drorch.sources.mariadb_verify import QueryError, SandboxMariadb, _assertion, _check_tables
from drorch.sources.sandbox_server import make_private_dir

ERROR_LINES = 3


def verify_logical(os_user: str, sandbox: Sandbox, facts: dict, dump_path, host, add) -> None:
    datadir = posixpath.join(sandbox.path, "data")
    server = SandboxMariadb(host, datadir, sandbox.path, os_user)
    started = time.monotonic()
    try:
        _install(host, datadir, os_user)
        server.start()
        sandbox.info.update(pid=server.process.pid, socket=server.socket)
        server.wait_ready(sandbox.timeout)
        loaded = [_load(server, db, posixpath.join(sandbox.target, dump_path(db)), sandbox.timeout)
                  for db in facts.get("databases") or []]
        for check in loaded:
            add(check)
        sandbox.info["startup_seconds"] = round(time.monotonic() - started, 3)
        if all(c.result == "passed" for c in loaded):
            add(_check_tables(server, sandbox.timeout))
            for sql, expect, database in sandbox.assertions:
                add(_assertion(server, sql, expect, database, sandbox.timeout))
    except (DrorchError, QueryError) as exc:
        add(Check("load", "failed", getattr(exc, "message", None) or str(exc), time.monotonic() - started))
    finally:
        add(Check("stop", "passed", f"the sandbox server {server.stop()}"))


def _install(host, datadir: str, os_user: str) -> None:
    make_private_dir(host, datadir, os_user)
    proc = host.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", f"--user={os_user}",
                     "--auth-root-authentication-method=socket", "--skip-test-db"], user=os_user, timeout=600)
    if not proc.ok:
        text = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise SourceError(f"mariadb-install-db of the sandbox server failed: {text[-500:]}")


def _load(server: SandboxMariadb, database: str, path: str, timeout: float) -> Check:
    """The dump into a new database of its name, with the mariadb client (its input: a failing
    statement fails the load)."""
    started = time.monotonic()
    quoted = "`" + database.replace("`", "``") + "`"
    try:
        server.sql(f"CREATE DATABASE {quoted};\n", timeout=timeout)
        server.load(path, database, timeout)
    except QueryError as exc:
        return Check(f"load {database}", "failed", f"the dump did not load: {exc}", time.monotonic() - started)
    return Check(f"load {database}", "passed", "loaded into a new server with the mariadb client",
                 time.monotonic() - started)
