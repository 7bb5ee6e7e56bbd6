"""Throwaway PostgreSQL 15 clusters for tests (REAL-SERVERS.md).

Run as the postgres user (it refuses root), in temp dirs under /tmp that it
can reach, with its own socket directory and a free loopback port.  Every
cluster is stopped (immediate mode, by its pg_ctl, then by PID) at teardown.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

BIN = Path("/usr/lib/postgresql/15/bin")
PG = pwd.getpwnam("postgres")
ENV = {**os.environ, "HOME": "/var/lib/postgresql", "LC_ALL": "C.UTF-8"}


def as_postgres(argv, check=True, **kwargs):
    result = subprocess.run([str(a) for a in argv], user="postgres", group="postgres", extra_groups=[],
                            env={**ENV, **kwargs.pop("env", {})}, capture_output=True, text=True, **kwargs)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shared_tmpdir(prefix: str, owner: str = "postgres") -> Path:
    """A temp dir under /tmp that the postgres user can reach (0755) and write."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    shutil.chown(path, owner, owner)
    return path


class Cluster:
    def __init__(self, base: Path, name: str = "pg"):
        self.base = base
        self.pgdata = base / name
        self.port = free_port()
        self.started = False

    # -- life cycle ------------------------------------------------------------

    def init(self, checksums: bool = True, **settings) -> "Cluster":
        self.pgdata.mkdir(mode=0o700)
        shutil.chown(self.pgdata, "postgres", "postgres")
        args = [BIN / "initdb", "-D", self.pgdata, "-U", "postgres", "-A", "trust", "--no-sync"]
        as_postgres(args + (["--data-checksums"] if checksums else []))
        self.configure(**{"listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{self.pgdata}'",
                          "wal_level": "replica", "max_wal_senders": "5", "fsync": "off",
                          "full_page_writes": "on", "shared_buffers": "32MB", **settings})
        return self

    def configure(self, **settings) -> None:
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        self.conf_port()

    def conf_port(self) -> None:
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.port}\n")

    def start(self, wait: bool = True) -> "Cluster":
        as_postgres([BIN / "pg_ctl", "-D", self.pgdata, "-l", self.base / f"{self.pgdata.name}.log",
                     "-w" if wait else "-W", "-t", "60", "start"])
        self.started = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if not self.started:
            return
        as_postgres([BIN / "pg_ctl", "-D", self.pgdata, "-m", mode, "-w", "-t", "60", "stop"], check=False)
        self.started = False

    def kill(self) -> None:
        """Stop it whatever state it is in (teardown)."""
        pid = self.pid()
        self.stop("immediate")
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log(self) -> str:
        try:
            return (self.base / f"{self.pgdata.name}.log").read_text()
        except OSError:
            return ""

    # -- SQL ------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def connect(self, dbname: str = "postgres", **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.conninfo(dbname), autocommit=True, **kwargs)

    def sql(self, query: str, *params, dbname: str = "postgres"):
        with self.connect(dbname) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else None

    def scalar(self, query: str, *params, dbname: str = "postgres"):
        rows = self.sql(query, *params, dbname=dbname)
        return rows[0][0] if rows else None

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.scalar("SELECT 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise TimeoutError(f"cluster on port {self.port} not ready:\n{self.log()[-3000:]}")

    def wait_recovered(self, timeout: float = 120.0) -> None:
        """Until the server accepts connections and is out of recovery."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.scalar("SELECT NOT pg_is_in_recovery()"):
                    return
            except psycopg.OperationalError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"cluster on port {self.port} did not finish recovery:\n{self.log()[-3000:]}")

    def pgbench(self, *args, dbname: str = "postgres", check: bool = True):
        return as_postgres([BIN / "pgbench", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", *args,
                            dbname], check=check)
