"""Restore verification of a MariaDB physical backup (the `verify_restored` hook
of the mariadb source): the restored, prepared datadir is started in the
sandbox — as the source's OS user, listening on nothing but a unix socket in a
private directory, without binary logging or replication, grant tables skipped
(a private socket: only root and the server's user reach it) — then
CHECK TABLE runs on every InnoDB table and the policy's SQL assertions run;
the server is stopped by its PID, its process group killed if it lingers,
whatever happened."""

from __future__ import annotations

import posixpath
import re
import time
from decimal import Decimal

from drorch.errors import DrorchError, SourceError
from drorch.hosts.base import Host
from drorch.sources.assertions import failed as assertion_failed
from drorch.sources.assertions import judge
from drorch.sources.base import Check, Sandbox
from drorch.sources.sandbox_server import HostServer, make_private_dir

STOP_WAIT = 60.0
MAX_REPORTED = 10
_INT = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?\d+\.\d+")
_UNESCAPE = {"\\n": "\n", "\\t": "\t", "\\\\": "\\", "\\0": "\0"}


class QueryError(Exception):
    """A statement failed; the text is the client's message."""


class SandboxMariadb:
    def __init__(self, host: Host, datadir: str, workdir: str, os_user: str):
        self.host, self.datadir, self.os_user = host, datadir, os_user
        self.run_dir = posixpath.join(workdir, "run")  # the server's user writes its socket, pid and log here
        self.socket = posixpath.join(self.run_dir, "mysqld.sock")
        self.log_path = posixpath.join(self.run_dir, "mariadbd.err")
        self.process = HostServer(host, os_user, workdir, posixpath.join(self.run_dir, "mariadbd.out"))

    def start(self) -> None:
        make_private_dir(self.host, self.run_dir, self.os_user)
        self.process.start(["mariadbd", "--no-defaults", f"--datadir={self.datadir}", "--skip-networking",
                            f"--socket={self.socket}", f"--pid-file={posixpath.join(self.run_dir, 'mysqld.pid')}",
                            f"--log-error={self.log_path}", "--skip-log-bin", "--skip-slave-start",
                            "--skip-grant-tables", "--skip-name-resolve", "--innodb-buffer-pool-size=128M"])

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sql("SELECT 1", timeout=30)
                return
            except QueryError:
                pass
            if not self.process.alive():
                raise SourceError(f"the restored server stopped while starting: {self.log_tail()}")
            if time.monotonic() >= deadline:
                raise SourceError(f"the restored server did not start within {timeout:.0f}s: {self.log_tail()}",
                                  "raise `verify.timeout` if crash recovery needs longer")
            time.sleep(0.2)

    def sql(self, statements: str, database: str | None = None, timeout: float = 3600) -> list[list[str]]:
        """Rows of the statements' results (batch mode: tab-separated, NULL as NULL),
        run with the mariadb client on the server's host through its private socket."""
        result = self._client(self._client_argv(database), statements.encode(), timeout)
        return [[_unescape(v) for v in line.split("\t")] for line in result.text().splitlines()]

    def load(self, path: str, database: str, timeout: float) -> None:
        """A dump file on the server's host into `database`, read by the client as its input: the
        first failing statement stops it with an error (the client's `source` command only prints
        errors and exits 0)."""
        self._client(["sh", "-c", 'exec "$@" < "$0"', path, *self._client_argv(database)], None, timeout)

    def _client_argv(self, database: str | None) -> list[str]:
        # utf8mb4 whatever the host's locale (a command over SSH has none: latin1, text turned to '?')
        argv = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", "root", "--batch", "--skip-column-names",
                "--default-character-set=utf8mb4"]
        return argv + ([f"--database={database}"] if database else [])

    def _client(self, argv: list[str], stdin: bytes | None, timeout: float):
        try:
            result = self.host.run(argv, stdin=stdin, timeout=timeout)
        except DrorchError as exc:
            raise QueryError(exc.message) from None
        if not result.ok:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            raise QueryError(lines[-1] if lines else f"the mariadb client exited {result.exit_status}")
        return result

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.host.read(self.log_path).decode(errors="replace")
        except (OSError, DrorchError):
            return "(no server log)"
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def stop(self) -> str:
        """Normal shutdown (SIGTERM); the process group is killed if it does not end. Never raises."""
        return self.process.stop("TERM", STOP_WAIT)


def _unescape(value: str) -> str:
    return re.sub(r"\\[nt0\\]", lambda m: _UNESCAPE[m.group(0)], value)


def _typed(value: str):
    """A value of the client's batch output as pymysql would type it (NULL, integers, decimals)."""
    if value == "NULL":
        return None
    if _INT.fullmatch(value):
        return int(value)
    if _DECIMAL.fullmatch(value):
        return Decimal(value)
    return value


def verify_physical(os_user: str, sandbox: Sandbox, host, add) -> None:
    server = SandboxMariadb(host, sandbox.target, sandbox.path, os_user)
    started = time.monotonic()
    try:
        server.start()
        sandbox.info.update(pid=server.process.pid, socket=server.socket)
        server.wait_ready(sandbox.timeout)
        sandbox.info["startup_seconds"] = round(time.monotonic() - started, 3)
        add(Check("start", "passed", f"mariadbd started on the restored datadir on host {host.name} as {os_user} "
                                     "(socket only) and finished crash recovery", time.monotonic() - started))
        add(_check_tables(server, sandbox.timeout))
        for sql, expect, database in sandbox.assertions:
            add(_assertion(server, sql, expect, database, sandbox.timeout))
    except (DrorchError, QueryError) as exc:
        add(Check("start", "failed", getattr(exc, "message", None) or str(exc), time.monotonic() - started))
    finally:
        add(Check("stop", "passed", f"the sandbox server {server.stop()}"))


def _check_tables(server: SandboxMariadb, timeout: float) -> Check:
    """CHECK TABLE on every InnoDB table: each must end with status OK."""
    started = time.monotonic()
    tables = server.sql("SELECT table_schema, table_name FROM information_schema.tables "
                        "WHERE engine = 'InnoDB' AND table_type = 'BASE TABLE' ORDER BY 1, 2", timeout=timeout)
    names = {f"{schema}.{table}": f"`{schema.replace('`', '``')}`.`{table.replace('`', '``')}`"
             for schema, table in tables}
    rows: dict[str, list[list[str]]] = {name: [] for name in names}
    if names:
        script = "".join(f"CHECK TABLE {quoted};\n" for quoted in names.values())
        for row in server.sql(script, timeout=timeout):  # Table, Op, Msg_type, Msg_text
            rows.setdefault(row[0], []).append(row)
    bad = []
    for name, answer in rows.items():
        errors = [row[3] for row in answer if row[2].lower() == "error"]
        if errors or not answer or answer[-1][3] not in ("OK", "Table is already up to date"):
            bad.append(f"{name}: {'; '.join(errors) or (answer[-1][3] if answer else 'no answer')}")
    seconds = time.monotonic() - started
    if bad:
        return Check("CHECK TABLE", "failed", f"{len(bad)} of {len(tables)} InnoDB tables failed: "
                                              + " | ".join(bad[:MAX_REPORTED]), seconds)
    return Check("CHECK TABLE", "passed", f"all {len(tables)} InnoDB tables OK", seconds)


def _assertion(server: SandboxMariadb, sql: str, expect: str | None, database: str | None, timeout: float) -> Check:
    started = time.monotonic()
    shown = database or "(none)"
    try:
        rows = server.sql(sql.strip().rstrip(";") + ";\n", database, timeout)
    except QueryError as exc:
        return assertion_failed(sql, shown, exc, time.monotonic() - started)
    row = tuple(_typed(v) for v in rows[0]) if rows else None
    return judge(sql, shown, row, expect, time.monotonic() - started, int_booleans=True)
