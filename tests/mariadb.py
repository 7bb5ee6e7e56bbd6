"""Throwaway MariaDB 10.11 servers for tests (REAL-SERVERS.md): their own
datadir, port and socket, running as the mysql user, always stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from tests.pg import free_port


def shared_tmpdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


class Server:
    def __init__(self, base: Path, name: str = "mariadb"):
        self.base = base
        self.datadir = base / name
        self.port = free_port()
        self.socket = self.datadir / "mysqld.sock"
        self.proc: subprocess.Popen | None = None

    def init(self) -> "Server":
        self.datadir.mkdir(mode=0o750)
        shutil.chown(self.datadir, "mysql", "mysql")
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=mysql",
                        "--auth-root-authentication-method=socket", "--skip-test-db"], check=True,
                       capture_output=True)
        return self

    def args(self) -> list[str]:
        return ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--socket={self.socket}", f"--pid-file={self.datadir}/mysqld.pid",
                f"--log-error={self.base}/{self.datadir.name}.err", "--user=mysql", "--log-bin=binlog",
                "--server-id=1", "--binlog-format=ROW", "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=48M", "--skip-name-resolve"]

    def start(self, *extra: str) -> "Server":
        self.proc = subprocess.Popen(self.args() + list(extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited:\n{self.log()[-3000:]}")
            try:
                self.connect().close()
                return self
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        raise TimeoutError(f"mariadbd on {self.port} did not start:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None

    def log(self) -> str:
        try:
            return (self.base / f"{self.datadir.name}.err").read_text()
        except OSError:
            return ""

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=str(self.socket), user="root", database=database, autocommit=True)

    def sql(self, query: str, *params, database: str | None = None):
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(query, params or None)
            return cur.fetchall()

    def scalar(self, query: str, *params, database: str | None = None):
        rows = self.sql(query, *params, database=database)
        return rows[0][0] if rows else None


def mariadbd_in(under: Path) -> list[int]:
    """PIDs of mariadbd processes whose command line names a path under `under` (servers a test's
    code started there: sandboxes, DR drill servers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "mariadbd" in cmdline and str(under) in cmdline:
                found.append(int(entry.name))
    return found
