"""A restored PostgreSQL cluster, started in a verification sandbox and checked,
on the backup host or on a verify host over SSH — the same code for both: the
server and the client tools run through the host interface (sandbox_server.py).

The server runs as the source's OS user on a free loopback port of that host
with its own unix socket directory and its own pg_hba.conf (trust on that
private socket only), never archives (archive_mode off), never writes
production's pid file or logs, and is stopped by its PID — and its process
group killed — whatever happens.  It recovers with drorch's own restore
settings (pg_recovery.py): recovery target immediate, promote.  Queries run
with psql on that host, as the login (root) through the private socket.
"""

from __future__ import annotations

import posixpath
import random
import socket
import time
from decimal import Decimal, InvalidOperation

from drorch.errors import DrorchError, SourceError
from drorch.hosts.base import Host, RunResult
from drorch.sources.sandbox_server import HostServer, make_private_dir

STOP_WAIT = 30.0  # seconds for a fast shutdown before the process group is killed
PORT_TRIES = 3
SOCKET_PATH_MAX = 107  # bytes of a unix socket path (sun_path)
REMOTE_PORTS = (20000, 60999)  # a port is tried there; taken ones are tried again
_FS, _RS, _NULL = "\x1f", "\x1e", "\x1dnull\x1d"  # separators psql prints, and its null
_MARK = "drorch-verify-result"
_INTS = {"smallint", "integer", "bigint", "oid"}


class QueryError(Exception):
    """A query failed; the text is the server's message."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SandboxServer:
    """postgres -D TARGET on a host, started and stopped by PID."""

    def __init__(self, host: Host, bin_dir: str, os_user: str, data: str, workdir: str):
        self.host, self.bin_dir, self.os_user, self.data, self.workdir = host, bin_dir, os_user, data, workdir
        self.socket_dir = posixpath.join(workdir, "run")  # socket and log, private to os_user
        self._own_socket_dir = False  # a short one of its own when workdir's path is too long
        self.log_path = posixpath.join(self.socket_dir, "postgres.log")
        self.port = 0
        self.process = HostServer(host, os_user, workdir, self.log_path)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def tool(self, name: str) -> str:
        return posixpath.join(self.bin_dir, name)

    def _options(self) -> list[str]:
        settings = {"port": self.port, "listen_addresses": "127.0.0.1", "unix_socket_directories": self.socket_dir,
                    "hba_file": posixpath.join(self.workdir, "pg_hba.conf"), "data_directory": self.data,
                    "archive_mode": "off", "external_pid_file": "", "logging_collector": "off",
                    "log_destination": "stderr", "ssl": "off", "fsync": "off", "synchronous_standby_names": "",
                    "shared_buffers": "128MB", "huge_pages": "off", "cluster_name": "drorch-verify"}
        out = []
        for key, value in settings.items():
            out += ["-c", f"{key}={value}"]
        return out

    def _prepare(self) -> None:
        if len(posixpath.join(self.socket_dir, ".s.PGSQL.65535")) > SOCKET_PATH_MAX:
            made = self.host.run(["mktemp", "-d", "/tmp/drorch-verify-s-XXXXXXXX"], timeout=30)
            if not made.ok:
                raise SourceError(f"cannot make a socket directory in /tmp on host {self.host.name}")
            self.socket_dir = made.text().strip()
            self._own_socket_dir = True
        make_private_dir(self.host, self.socket_dir, self.os_user)
        if self._own_socket_dir:  # the log stays in the sandbox
            make_private_dir(self.host, posixpath.join(self.workdir, "run"), self.os_user)
        self.host.put(posixpath.join(self.workdir, "pg_hba.conf"),
                      [b"# drorch verify: only the sandbox's private socket, nothing over TCP\n"
                       b"local all all trust\n"], mode=0o644)

    def start(self) -> None:
        self._prepare()
        for _ in range(PORT_TRIES):
            self.port = free_port() if self.host.name == "local" else random.randint(*REMOTE_PORTS)
            self.process.start([self.tool("postgres"), "-D", self.data, *self._options()])
            time.sleep(0.3)
            if self.process.alive() or "could not bind" not in self.log_tail(20):
                return  # running (or failed for another reason, which wait_ready reports)

    def wait_ready(self, user: str, dbname: str, timeout: float) -> None:
        """Until the server is consistent and promoted (out of recovery)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.query(user, dbname, "SELECT pg_is_in_recovery()", 30) == (False,):
                    return
            except QueryError:
                pass
            if not self.process.alive():
                raise SourceError(f"the restored cluster stopped before it was consistent: {self.log_tail()}",
                                  "see the server log lines above")
            if time.monotonic() >= deadline:
                raise SourceError(f"the restored cluster did not finish recovery within {timeout:.0f}s: "
                                  f"{self.log_tail()}", "raise `verify.timeout` if recovery needs longer")
            time.sleep(0.2)

    # -- clients, on the server's host ---------------------------------------------------

    def client(self, tool: str, user: str, *args: str) -> list[str]:
        return [self.tool(tool), "-h", self.socket_dir, "-p", str(self.port), "-U", user, *args]

    def psql(self, user: str, dbname: str, script: str, timeout: float) -> RunResult:
        """A psql script (stdin), stopping at the first error."""
        argv = self.client("psql", user, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname)
        return self.host.run(argv, stdin=script.encode(), timeout=timeout)

    def query(self, user: str, dbname: str, sql: str, timeout: float) -> tuple | None:
        """The first row of a query, values typed as psycopg would (bool, int,
        Decimal, None, else text); None without a row.  QueryError when it fails."""
        sql = sql.strip().rstrip(";").strip()
        script = (f"SET statement_timeout = {int(timeout * 1000)};\n\\pset format unaligned\n\\pset tuples_only on\n"
                  f"\\pset fieldsep '\\x1f'\n\\pset recordsep '\\x1e'\n\\pset null '\\x1dnull\\x1d'\n"
                  f"{sql}\n\\gdesc\n\\echo {_MARK}\n{sql}\n\\g\n")
        try:
            result = self.psql(user, dbname, script, timeout + 30)
        except DrorchError as exc:
            raise QueryError(exc.message) from None
        if not result.ok:
            raise QueryError(_psql_error(result.stderr.decode(errors="replace")))
        described, _, rows = result.stdout.decode(errors="replace").partition(_MARK + "\n")
        types = [record.split(_FS)[-1] for record in described.strip("\n").split(_RS) if record]
        first = rows.rstrip("\n").split(_RS)[0] if rows.strip("\n") else None
        if first is None:
            return None
        return tuple(_typed(value, kind) for value, kind in zip(first.split(_FS), types))

    def log_tail(self, lines: int = 8) -> str:
        return self.process.log_tail(lines)

    def stop(self) -> str:
        """Fast shutdown (SIGINT); the process group is killed if it does not end in
        time.  Never raises: this runs in finally blocks."""
        how = self.process.stop("INT", STOP_WAIT)
        if self._own_socket_dir:
            try:
                self.host.remove(self.socket_dir)
            except (OSError, DrorchError):
                pass
        return how


def _typed(value: str, kind: str):
    if value == _NULL:
        return None
    if kind == "boolean":
        return value == "t"
    try:
        if kind in _INTS:
            return int(value)
        if kind == "numeric":
            return Decimal(value)
    except (ValueError, InvalidOperation):
        pass
    return value


def _psql_error(stderr: str) -> str:
    """The server's message from psql's stderr, without psql's `psql:<stdin>:N:` prefix."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    for line in lines:
        text = line.split(": ", 1)[1] if line.startswith("psql:") and ": " in line else line
        if text.startswith(("ERROR:", "FATAL:")):
            return text.split(":", 1)[1].strip()
    return lines[0] if lines else "psql failed"
