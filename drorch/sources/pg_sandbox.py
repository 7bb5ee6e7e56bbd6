"""A restored PostgreSQL cluster, started in a verification sandbox and checked.

The server runs as the source's OS user on a free loopback port with its own
unix socket directory and its own pg_hba.conf (trust on that private socket
only), never archives (archive_mode off), never writes production's pid file
or logs, and is stopped by its PID — and its process group killed — whatever
happens.  It recovers with drorch's own restore settings (pg_recovery.py):
restore_command through drorch, recovery target immediate, promote.
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

import psycopg

from drorch.errors import SourceError
from drorch.sources.base import SERVER_PID

STOP_WAIT = 30.0  # seconds for a fast shutdown before the process group is killed
PORT_TRIES = 3
SOCKET_PATH_MAX = 107  # bytes of a unix socket path (sun_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_as(os_user: str) -> dict:
    """subprocess arguments that run a command as os_user (from root), or nothing
    when this process already is that user."""
    me = os.geteuid()
    entry = pwd.getpwnam(os_user)
    if me == entry.pw_uid:
        return {}
    if me != 0:
        raise SourceError(f"a restore verification starts PostgreSQL as {os_user}, and this process "
                          f"(uid {me}) cannot switch to it", f"run drorch verify as root or as {os_user}")
    env = {**os.environ, "HOME": entry.pw_dir, "USER": os_user, "LOGNAME": os_user}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}


class SandboxServer:
    """postgres -D TARGET, started and stopped by PID."""

    def __init__(self, bin_dir: str, os_user: str, data: str, workdir: str):
        self.bin_dir, self.os_user, self.data, self.workdir = bin_dir, os_user, data, workdir
        self.socket_dir = os.path.join(workdir, "socket")
        self._own_socket_dir = False  # a short one of its own when workdir's path is too long
        self.log_path = os.path.join(workdir, "postgres.log")
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def _options(self) -> list[str]:
        settings = {"port": self.port, "listen_addresses": "127.0.0.1", "unix_socket_directories": self.socket_dir,
                    "hba_file": os.path.join(self.workdir, "pg_hba.conf"), "data_directory": self.data,
                    "archive_mode": "off", "external_pid_file": "", "logging_collector": "off",
                    "log_destination": "stderr", "ssl": "off", "fsync": "off", "synchronous_standby_names": "",
                    "shared_buffers": "128MB", "huge_pages": "off", "cluster_name": "drorch-verify"}
        out = []
        for key, value in settings.items():
            out += ["-c", f"{key}={value}"]
        return out

    def _prepare(self) -> None:
        if len(os.path.join(self.socket_dir, ".s.PGSQL.65535")) > SOCKET_PATH_MAX:
            self.socket_dir = tempfile.mkdtemp(prefix="drorch-verify-s-", dir="/tmp")
            self._own_socket_dir = True
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        owner = pwd.getpwnam(self.os_user)
        os.chown(self.socket_dir, owner.pw_uid, owner.pw_gid)
        with open(os.path.join(self.workdir, "pg_hba.conf"), "w") as hba:
            hba.write("# drorch verify: only the sandbox's private socket, nothing over TCP\n"
                      "local all all trust\n")
        os.chmod(os.path.join(self.workdir, "pg_hba.conf"), 0o644)

    def start(self) -> None:
        user = run_as(self.os_user)
        self._prepare()
        for _ in range(PORT_TRIES):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([os.path.join(self.bin_dir, "postgres"), "-D", self.data,
                                              *self._options()], stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True, **user)
            with open(os.path.join(self.workdir, SERVER_PID), "w") as handle:
                handle.write(f"{self.proc.pid}\n")
            time.sleep(0.3)
            if self.proc.poll() is None or "could not bind" not in self.log_tail():
                return  # running (or failed for another reason, which wait_ready reports)

    def wait_ready(self, user: str, dbname: str, timeout: float) -> None:
        """Until the server is consistent and promoted (out of recovery)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SourceError(f"the restored cluster stopped (exit {self.proc.returncode}) before it was "
                                  f"consistent: {self.log_tail()}", "see the server log lines above")
            try:
                with self.connect(user, dbname) as conn:
                    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        return
            except psycopg.OperationalError:
                pass
            if time.monotonic() >= deadline:
                raise SourceError(f"the restored cluster did not finish recovery within {timeout:.0f}s: "
                                  f"{self.log_tail()}", "raise `verify.timeout` if recovery needs longer")
            time.sleep(0.2)

    def connect(self, user: str, dbname: str) -> psycopg.Connection:
        return psycopg.connect(host=self.socket_dir, port=self.port, user=user, dbname=dbname,
                               autocommit=True, connect_timeout=5, application_name="drorch-verify")

    def log_tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no server log)"
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def stop(self) -> str:
        """Fast shutdown; the whole process group is killed if it does not end in time.
        Never raises: this runs in finally blocks."""
        if self.proc is None:
            return "never started"
        how = "had exited by itself"
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # fast shutdown
                try:
                    self.proc.wait(STOP_WAIT)
                    how = "stopped (fast shutdown)"
                except subprocess.TimeoutExpired:
                    how = "killed: it did not stop in time"
        finally:  # even when interrupted while waiting
            if self.proc.poll() is None:
                kill_group(self.proc.pid)
                self.proc.wait()
            kill_group(self.proc.pid)  # backends a dead postmaster left behind (same process group)
            if self._own_socket_dir:
                shutil.rmtree(self.socket_dir, ignore_errors=True)
        return f"{how}, pid {self.proc.pid}"


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
