"""A database server in a verification sandbox, on any host: this machine or a
verify host over SSH, through the host interface only (host.run as the
database's OS user; no local process handles, no tunnel).

The server is started detached in a session of its own (setsid, so its PID is
its process group and every backend it forks is in that group), with its
output in a log inside a private directory of the sandbox owned by the OS
user.  Its PID and user go to SERVER_PID in the sandbox, so a later
verification can stop what a killed one left running (kill_left_server).
Processes are read with `ps` on the host (procps: a dependency of the
PostgreSQL and MariaDB server packages).
"""

from __future__ import annotations

import logging
import posixpath
import time

from drorch.errors import DrorchError, SourceError
from drorch.hosts.base import Host
from drorch.sources.base import SERVER_PID

log = logging.getLogger(__name__)
GROUP_EXIT_WAIT = 15.0  # seconds for a killed server's processes to end
POLL = 0.2
_PS = ["ps", "-e", "-o", "pid=,pgid=,stat=,args="]
# the server's output to a log, stdin closed, in a new session; prints its PID
_START = 'log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!'
_KILL = 'kill -s "$1" -- "$2"'


def processes(host: Host) -> list[tuple[int, int, str, str]]:
    """(pid, process group, state, command line) of every process on the host."""
    result = host.run(_PS, timeout=30)
    out = []
    for line in result.text().splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3 and parts[0].isdigit() and parts[1].isdigit():
            out.append((int(parts[0]), int(parts[1]), parts[2], parts[3] if len(parts) > 3 else ""))
    return out


def _running(rows, pid: int | None = None, group: int | None = None) -> list[tuple[int, int, str, str]]:
    """Rows of that pid or process group that are not zombies."""
    return [row for row in rows if not row[2].startswith("Z")
            and (pid is None or row[0] == pid) and (group is None or row[1] == group)]


def make_private_dir(host: Host, path: str, os_user: str) -> None:
    """A directory only os_user may enter (0700, owned by it), for the server's socket and log."""
    result = host.run(["sh", "-c", 'mkdir -p -m 0700 "$1" && chmod 0700 "$1" && chown "$2": "$1"', "sh", path,
                       os_user], timeout=30)
    if not result.ok:
        raise SourceError(f"cannot make {path} on host {host.name} for {os_user}: "
                          f"{result.stderr.decode(errors='replace').strip()}",
                          "a restore verification needs root on that host (or `become: root`)")


def signal_group(host: Host, pgid: int, user: str | None, sig: str = "KILL") -> None:
    host.run(["sh", "-c", _KILL, "sh", sig, f"-{pgid}"], user=user, timeout=30)


def wait_group_gone(host: Host, pgid: int, timeout: float = GROUP_EXIT_WAIT) -> bool:
    deadline = time.monotonic() + timeout  # SIGKILL is delivered, not yet done: let them go
    while _running(processes(host), group=pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


class HostServer:
    """One server process on a host, started and stopped by its PID."""

    def __init__(self, host: Host, os_user: str, sandbox_path: str, log_path: str):
        self.host, self.os_user, self.sandbox_path, self.log_path = host, os_user, sandbox_path, log_path
        self.pid: int | None = None

    def start(self, argv: list[str]) -> int:
        result = self.host.run(["sh", "-c", _START, "sh", self.log_path, *argv], user=self.os_user, timeout=60)
        text = result.text().strip()
        if not result.ok or not text.isdigit():
            raise SourceError(f"could not start {argv[0]} on host {self.host.name} as {self.os_user}: "
                              f"{result.stderr.decode(errors='replace').strip() or text}",
                              f"check that {self.os_user} exists there and may be switched to (sudo -n)")
        self.pid = int(text)
        self.host.put(posixpath.join(self.sandbox_path, SERVER_PID), [f"{self.pid} {self.os_user}\n".encode()],
                      mode=0o644)
        return self.pid

    def alive(self) -> bool:
        return self.pid is not None and bool(_running(processes(self.host), pid=self.pid))

    def signal(self, sig: str) -> None:
        self.host.run(["sh", "-c", _KILL, "sh", sig, str(self.pid)], user=self.os_user, timeout=30)

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.host.read(self.log_path).decode(errors="replace")
        except (OSError, DrorchError):
            return "(no server log)"
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def stop(self, sig: str, wait: float) -> str:
        """Shut down with sig; the whole process group is killed if it does not end
        in time, and also afterwards (backends a dead server left).  Never raises:
        this runs in finally blocks."""
        if self.pid is None:
            return "never started"
        how = "had exited by itself"
        try:
            if self.alive():
                self.signal(sig)
                how = "killed: it did not stop in time"
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline:
                    if not self.alive():
                        how = "stopped (shutdown)"
                        break
                    time.sleep(POLL)
        except DrorchError as exc:
            how = f"could not be stopped cleanly ({exc.message})"
        finally:  # even when interrupted while waiting
            try:
                signal_group(self.host, self.pid, self.os_user)
                if not wait_group_gone(self.host, self.pid):
                    how += "; processes of its group were still there after SIGKILL"
            except DrorchError as exc:
                how += f"; killing its process group failed: {exc.message}"
        return f"{how}, pid {self.pid}"


def kill_left_server(host: Host, path: str) -> None:
    """Kill the process group of the server a killed verification left in the sandbox
    at path (SERVER_PID), if that process still runs from this sandbox."""
    try:
        words = host.read(posixpath.join(path, SERVER_PID)).decode().split()
        pid, user = int(words[0]), (words[1] if len(words) > 1 else None)
    except (OSError, DrorchError, ValueError, IndexError):
        pid, user = None, None  # killed between starting the server and noting it: find it by its path
    try:
        rows = processes(host)
        if pid is not None:
            found = _running(rows, pid=pid)
            groups = [pid] if found and path in found[0][3] else []
        else:  # session leaders (setsid) running from this sandbox
            groups = sorted({row[1] for row in _running(rows) if row[0] == row[1] and path + "/" in row[3]})
        for group in groups:
            signal_group(host, group, user)
            wait_group_gone(host, group)
    except DrorchError as exc:
        log.warning("could not stop the server (pid %s) left in %s on host %s: %s", pid, path, host.name,
                    exc.message)
