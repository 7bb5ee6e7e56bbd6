"""Restore verification of a MariaDB physical backup (the `verify_restored` hook
of the mariadb source): the restored, prepared datadir is started in the
sandbox — as the source's OS user, listening on nothing but a unix socket in a
private directory, without binary logging or replication, grant tables skipped
(a private socket: only root and the server's user reach it) — then
CHECK TABLE runs on every InnoDB table and the policy's SQL assertions run;
the server is stopped by its PID, its process group killed if it lingers,
whatever happened."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time

import pymysql

from drorch.errors import SourceError
from drorch.sources.assertions import failed as assertion_failed
from drorch.sources.assertions import judge
from drorch.sources.base import SERVER_PID, Check, Sandbox

STOP_WAIT = 60.0
MAX_REPORTED = 10


class SandboxMariadb:
    def __init__(self, datadir: str, workdir: str, os_user: str):
        self.datadir, self.os_user = datadir, os_user
        self.run_dir = os.path.join(workdir, "run")  # the server's user writes its socket, pid and log here
        self.socket = os.path.join(self.run_dir, "mysqld.sock")
        self.log_path = os.path.join(self.run_dir, "mariadbd.err")
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        owner = pwd.getpwnam(self.os_user)
        os.makedirs(self.run_dir, mode=0o700)
        os.chown(self.run_dir, owner.pw_uid, owner.pw_gid)
        argv = ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", "--skip-networking",
                f"--socket={self.socket}", f"--pid-file={os.path.join(self.run_dir, 'mysqld.pid')}",
                f"--log-error={self.log_path}", f"--user={self.os_user}", "--skip-log-bin", "--skip-slave-start",
                "--skip-grant-tables", "--skip-name-resolve", "--innodb-buffer-pool-size=128M"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        with open(os.path.join(self.workdir, SERVER_PID), "w") as handle:
            handle.write(f"{self.proc.pid}\n")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SourceError(f"the restored server stopped (exit {self.proc.returncode}) while starting: "
                                  f"{self.log_tail()}")
            try:
                self.connect().close()
                return
            except pymysql.err.OperationalError:
                pass
            if time.monotonic() >= deadline:
                raise SourceError(f"the restored server did not start within {timeout:.0f}s: {self.log_tail()}",
                                  "raise `verify.timeout` if crash recovery needs longer")
            time.sleep(0.2)

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=self.socket, user="root", database=database, autocommit=True,
                               connect_timeout=5)

    def log_tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no server log)"
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def stop(self) -> str:
        """Normal shutdown (SIGTERM); the process group is killed if it does not end. Never raises."""
        if self.proc is None:
            return "never started"
        how = "had exited by itself"
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_WAIT)
                    how = "stopped (shutdown)"
                except subprocess.TimeoutExpired:
                    how = "killed: it did not stop in time"
        finally:
            if self.proc.poll() is None:
                _kill_group(self.proc.pid)
                self.proc.wait()
            _kill_group(self.proc.pid)
        return f"{how}, pid {self.proc.pid}"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def verify_physical(os_user: str, sandbox: Sandbox, host, add) -> None:
    if host.name != "local":
        add(Check("start", "failed", f"a restored MariaDB datadir is started on the backup host only (not yet on "
                                     f"verify host {host.name}): leave `verify.host` out for this source"))
        return
    server = SandboxMariadb(sandbox.target, sandbox.path, os_user)
    started = time.monotonic()
    try:
        server.start()
        sandbox.info.update(pid=server.proc.pid, socket=server.socket)
        server.wait_ready(sandbox.timeout)
        sandbox.info["startup_seconds"] = round(time.monotonic() - started, 3)
        add(Check("start", "passed", f"mariadbd started on the restored datadir as {os_user} (socket only) and "
                                     "finished crash recovery", time.monotonic() - started))
        add(_check_tables(server))
        for sql, expect, database in sandbox.assertions:
            add(_assertion(server, sql, expect, database))
    except (SourceError, pymysql.err.Error) as exc:
        add(Check("start", "failed", getattr(exc, "message", None) or str(exc), time.monotonic() - started))
    finally:
        add(Check("stop", "passed", f"the sandbox server {server.stop()}"))


def _check_tables(server: SandboxMariadb) -> Check:
    """CHECK TABLE on every InnoDB table: each must end with status OK."""
    started = time.monotonic()
    bad = []
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE engine = 'InnoDB' AND table_type = 'BASE TABLE' ORDER BY 1, 2")
        tables = cur.fetchall()
        for schema, table in tables:
            name = f"`{schema.replace('`', '``')}`.`{table.replace('`', '``')}`"
            cur.execute(f"CHECK TABLE {name}")
            rows = cur.fetchall()
            errors = [row[3] for row in rows if str(row[2]).lower() == "error"]
            if errors or not rows or rows[-1][3] not in ("OK", "Table is already up to date"):
                bad.append(f"{schema}.{table}: {'; '.join(errors) or (rows[-1][3] if rows else 'no answer')}")
    seconds = time.monotonic() - started
    if bad:
        return Check("CHECK TABLE", "failed", f"{len(bad)} of {len(tables)} InnoDB tables failed: "
                                              + " | ".join(bad[:MAX_REPORTED]), seconds)
    return Check("CHECK TABLE", "passed", f"all {len(tables)} InnoDB tables OK", seconds)


def _assertion(server: SandboxMariadb, sql: str, expect: str | None, database: str | None) -> Check:
    started = time.monotonic()
    shown = database or "(none)"
    try:
        with server.connect(database) as conn, conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
    except pymysql.err.Error as exc:
        return assertion_failed(sql, shown, exc, time.monotonic() - started)
    return judge(sql, shown, row, expect, time.monotonic() - started, int_booleans=True)
