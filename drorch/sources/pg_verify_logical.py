"""Restore verification of a logical PostgreSQL backup: every dump must be a
readable pg_restore archive, then a new cluster in the sandbox (initdb as the
source's OS user) gets the globals (roles; tablespaces left out: they name
production's directories) and every dump loaded with pg_restore, and the same
checks as a physical copy run on it: pg_amcheck and the policy's assertions.
The cluster is stopped by its PID whatever happens."""

from __future__ import annotations

import os
import re
import subprocess
import time

import psycopg
from psycopg import sql

from drorch.errors import SourceError
from drorch.sources.base import Check, Sandbox
from drorch.sources.pg_sandbox import SandboxServer, run_as
from drorch.sources.pg_verify import Add, database_checks, verify_dumps

TABLESPACE_LINE = re.compile(r"^\s*(CREATE|ALTER|COMMENT ON|GRANT .* ON|REVOKE .* ON) TABLESPACE\b", re.I)
ERROR_LINES = 5


def verify_logical(bin_dir: str, os_user: str, sandbox: Sandbox, facts: dict, dump_path, host, add: Add) -> None:
    if not verify_dumps(bin_dir, sandbox, facts, dump_path, add):
        return
    if host.name != "local":
        add(Check("load", "failed", f"dumps are loaded on the backup host only (not yet on verify host "
                                    f"{host.name}): leave `verify.host` out for this source"))
        return
    data = os.path.join(sandbox.path, "cluster")
    server = SandboxServer(bin_dir, os_user, data, sandbox.path)
    started = time.monotonic()
    try:
        _initdb(bin_dir, os_user, data)
        server.start()
        sandbox.info.update(pid=server.proc.pid, port=server.port, socket_dir=server.socket_dir)
        server.wait_ready(os_user, "postgres", sandbox.timeout)
        add(_load_globals(server, bin_dir, os_user, os.path.join(sandbox.target, "globals.sql"), sandbox.path))
        loaded = [_load_dump(server, bin_dir, os_user, db, os.path.join(sandbox.target, dump_path(db)),
                             sandbox.timeout) for db in facts.get("databases") or []]
        for check in loaded:
            add(check)
        sandbox.info["startup_seconds"] = round(time.monotonic() - started, 3)
        if all(c.result == "passed" for c in loaded):
            database_checks(server, os_user, "postgres", bin_dir, sandbox, add)
    except (SourceError, psycopg.Error, OSError, subprocess.SubprocessError) as exc:
        add(Check("load", "failed", getattr(exc, "message", None) or str(exc).strip(), time.monotonic() - started))
    finally:
        add(Check("stop", "passed", f"the sandbox cluster {server.stop()}"))


def _initdb(bin_dir: str, os_user: str, data: str) -> None:
    user = run_as(os_user)
    os.makedirs(data, mode=0o700)
    if user:
        os.chown(data, user["user"], user["group"])
    proc = subprocess.run([os.path.join(bin_dir, "initdb"), "-D", data, "-U", os_user, "-A", "trust",
                           "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"], capture_output=True, text=True, **user)
    if proc.returncode:
        raise SourceError(f"initdb of the sandbox cluster failed: {proc.stderr.strip()[-500:]}")


def _client(server: SandboxServer, bin_dir: str, tool: str, user: str, *args: str) -> list[str]:
    return [os.path.join(bin_dir, tool), "-h", server.socket_dir, "-p", str(server.port), "-U", user, *args]


def _load_globals(server, bin_dir, user, path, workdir) -> Check:
    """Roles and their settings; a role that exists already (the superuser) is fine."""
    started = time.monotonic()
    if not os.path.exists(path):
        return Check("globals", "skipped", "the backup holds no globals.sql")
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = [line for line in handle if not TABLESPACE_LINE.match(line)]
    filtered = os.path.join(workdir, "globals.sql")
    with open(filtered, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
    proc = subprocess.run(_client(server, bin_dir, "psql", user, "-X", "-q", "-d", "postgres", "-f", filtered),
                          capture_output=True, text=True)
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line and "already exists" not in line]
    seconds = time.monotonic() - started
    if proc.returncode or errors:
        return Check("globals", "failed", "roles could not be created: " + " | ".join(errors[:ERROR_LINES]), seconds)
    return Check("globals", "passed", "roles created (tablespaces left out: they are production's directories)",
                 seconds)


def _load_dump(server, bin_dir, user, database, path, timeout) -> Check:
    started = time.monotonic()
    with server.connect(user, "postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(database)))
    proc = subprocess.run(_client(server, bin_dir, "pg_restore", user, "--exit-on-error", "--no-tablespaces",
                                  "-d", database, path), capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    if proc.returncode:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return Check(f"load {database}", "failed", "pg_restore failed: " + " | ".join(lines[-ERROR_LINES:]),
                     seconds)
    return Check(f"load {database}", "passed", "loaded into a new cluster with pg_restore", seconds)
