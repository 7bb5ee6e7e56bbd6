"""Restore verification of a logical PostgreSQL backup: every dump must be a
readable pg_restore archive, then a new cluster in the sandbox (initdb as the
source's OS user) gets the globals (roles; tablespaces left out: they name
production's directories) and every dump loaded with pg_restore, and the same
checks as a physical copy run on it: pg_amcheck and the policy's assertions.
The cluster is stopped by its PID whatever happens."""

from __future__ import annotations

import posixpath
import re
import time

from drorch.errors import DrorchError, SourceError
from drorch.sources.base import Check, Sandbox
from drorch.sources.pg_sandbox import QueryError, SandboxServer
from drorch.sources.pg_verify import Add, database_checks, verify_dumps
from drorch.sources.sandbox_server import make_private_dir

TABLESPACE_LINE = re.compile(r"^\s*(CREATE|ALTER|COMMENT ON|GRANT .* ON|REVOKE .* ON) TABLESPACE\b", re.I)
ERROR_LINES = 5


def verify_logical(bin_dir: str, os_user: str, sandbox: Sandbox, facts: dict, dump_path, host, add: Add) -> None:
    if not verify_dumps(host, bin_dir, sandbox, facts, dump_path, add):
        return
    data = posixpath.join(sandbox.path, "cluster")
    server = SandboxServer(host, bin_dir, os_user, data, sandbox.path)
    started = time.monotonic()
    try:
        _initdb(server, data)
        server.start()
        sandbox.info.update(pid=server.pid, port=server.port, socket_dir=server.socket_dir)
        server.wait_ready(os_user, "postgres", sandbox.timeout)
        add(_load_globals(server, os_user, posixpath.join(sandbox.target, "globals.sql"), sandbox.path))
        loaded = [_load_dump(server, os_user, db, posixpath.join(sandbox.target, dump_path(db)), sandbox.timeout)
                  for db in facts.get("databases") or []]
        for check in loaded:
            add(check)
        sandbox.info["startup_seconds"] = round(time.monotonic() - started, 3)
        if all(c.result == "passed" for c in loaded):
            database_checks(server, os_user, "postgres", sandbox, add)
    except (DrorchError, QueryError, OSError) as exc:
        add(Check("load", "failed", getattr(exc, "message", None) or str(exc).strip(), time.monotonic() - started))
    finally:
        add(Check("stop", "passed", f"the sandbox cluster {server.stop()}"))


def _initdb(server: SandboxServer, data: str) -> None:
    make_private_dir(server.host, data, server.os_user)
    proc = server.host.run([server.tool("initdb"), "-D", data, "-U", server.os_user, "-A", "trust", "--no-sync",
                            "-E", "UTF8", "--locale=C.UTF-8"], user=server.os_user, timeout=300)
    if not proc.ok:
        raise SourceError(f"initdb of the sandbox cluster failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")


def _load_globals(server: SandboxServer, user: str, path: str, workdir: str) -> Check:
    """Roles and their settings; a role that exists already (the superuser) is fine."""
    started = time.monotonic()
    if server.host.lstat(path) is None:
        return Check("globals", "skipped", "the backup holds no globals.sql")
    text = server.host.read(path).decode("utf-8", errors="replace")
    lines = [line for line in text.splitlines(keepends=True) if not TABLESPACE_LINE.match(line)]
    filtered = posixpath.join(workdir, "globals.sql")
    server.host.put(filtered, ["".join(lines).encode()], mode=0o644)
    proc = server.host.run(server.client("psql", user, "-X", "-q", "-d", "postgres", "-f", filtered), timeout=600)
    errors = [line for line in proc.stderr.decode(errors="replace").splitlines()
              if "ERROR" in line and "already exists" not in line]
    seconds = time.monotonic() - started
    if not proc.ok or errors:
        return Check("globals", "failed", "roles could not be created: " + " | ".join(errors[:ERROR_LINES]), seconds)
    return Check("globals", "passed", "roles created (tablespaces left out: they are production's directories)",
                 seconds)


def _load_dump(server: SandboxServer, user: str, database: str, path: str, timeout: float) -> Check:
    started = time.monotonic()
    quoted = '"' + database.replace('"', '""') + '"'
    literal = "'" + database.replace("'", "''") + "'"
    if server.query(user, "postgres", f"SELECT 1 FROM pg_database WHERE datname = {literal}", timeout) is None:
        made = server.psql(user, "postgres", f"CREATE DATABASE {quoted} TEMPLATE template0;\n", timeout)
        if not made.ok:
            raise SourceError(f"CREATE DATABASE {quoted} failed: {made.stderr.decode(errors='replace').strip()}")
    proc = server.host.run(server.client("pg_restore", user, "--exit-on-error", "--no-tablespaces", "-d", database,
                                         path), timeout=timeout)
    seconds = time.monotonic() - started
    if not proc.ok:
        lines = [line for line in proc.stderr.decode(errors="replace").strip().splitlines() if line.strip()]
        return Check(f"load {database}", "failed", "pg_restore failed: " + " | ".join(lines[-ERROR_LINES:]),
                     seconds)
    return Check(f"load {database}", "passed", "loaded into a new cluster with pg_restore", seconds)
