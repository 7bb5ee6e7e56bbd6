"""Restoring a mariabackup chain onto a host: extract every stream of the chain
(full, then each diff/incr) into a staging directory beside the target,
prepare the full, apply the increments in order, move the result into the
target datadir, give it to the mysql user, and for a point in time replay
the archived binlogs from the backup's position through a temporary server
that listens on nothing but a socket in the staging directory.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from drorch.errors import RestoreError
from drorch.hosts.base import Host

log = logging.getLogger(__name__)


@dataclass
class ChainPart:
    label: str
    type: str
    facts: dict
    chunks: Callable[[], Iterator[bytes]]  # the part's xbstream, from the repository


@dataclass
class MariadbRestore:
    host: Host
    target: str
    os_user: str = "mysql"
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def staging(self) -> str:
        return self.target.rstrip("/") + ".drorch-staging"

    def run(self, argv: list[str], what: str, stdin=None, timeout: float | None = 3600) -> str:
        result = self.host.run(argv, stdin=stdin, timeout=timeout)
        if not result.ok:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
            raise RestoreError(f"{what} failed on {self.host.name} (exit {result.exit_status}): {reason}",
                               f"the staging directory {self.staging} is kept for inspection; the target "
                               f"{self.target} was not started")
        return result.text()

    def _phase(self, name: str, started: float) -> None:
        self.phases[name] = round(self.phases.get(name, 0.0) + time.monotonic() - started, 3)

    def refuse_unsafe(self, force: bool) -> None:
        """A running server, or a non-empty datadir without --force: refuse before writing."""
        pidfiles = [n for n in (self.host.listdir(self.target) or []) if n.endswith(".pid")]
        for name in pidfiles:
            try:
                pid = int(self.host.read(posixpath.join(self.target, name)).split()[0])
            except (ValueError, IndexError):
                continue
            if self.host.lstat(f"/proc/{pid}") is not None:
                raise RestoreError(f"a MariaDB server (pid {pid}) is running on {self.target}; nothing was written",
                                   "stop it first; drorch never restores over a running server")
        if self.host.listdir(self.target) and not force:
            raise RestoreError(f"restore target {self.target} is not empty; nothing was written",
                               "restore into an empty or new directory, or pass --force to replace it")
        if self.host.lstat(self.staging) is not None:
            self.host.remove(self.staging)

    def restore(self, chain: list[ChainPart], force: bool) -> None:
        self.refuse_unsafe(force)
        self.host.makedirs(self.staging)
        dirs = []
        for index, part in enumerate(chain):
            started = time.monotonic()
            directory = posixpath.join(self.staging, f"{index:02d}-{part.label}")
            self.host.makedirs(directory)
            self.run(["mbstream", "-x", "-C", directory], f"extracting {part.label}", stdin=part.chunks())
            dirs.append(directory)
            self._phase("fetch and extract", started)
        started = time.monotonic()
        self.run(["mariabackup", "--prepare", f"--target-dir={dirs[0]}"], f"preparing full {chain[0].label}")
        for directory, part in zip(dirs[1:], chain[1:]):
            self.run(["mariabackup", "--prepare", f"--target-dir={dirs[0]}", f"--incremental-dir={directory}"],
                     f"applying {part.type} {part.label}")
        self._phase("prepare", started)
        started = time.monotonic()
        if force:
            self.host.remove(self.target)
        self.host.makedirs(self.target)
        self.run(["mariabackup", "--move-back", f"--target-dir={dirs[0]}", f"--datadir={self.target}"],
                 "moving the prepared files into the target")
        self.run(["chown", "-R", f"{self.os_user}:{self.os_user}", self.target], "giving the datadir to "
                 f"{self.os_user}")
        self.run(["chmod", "0750", self.target], "chmod")
        self._phase("copy back", started)

    def replay(self, binlogs: list[tuple[str, Callable[[], Iterator[bytes]]]], start_position: int,
               stop: dict) -> None:
        """Replay archived binlogs (the first from start_position) up to stop
        (time / position / gtid) through a temporary, socket-only server."""
        started = time.monotonic()
        logs = posixpath.join(self.staging, "binlogs")
        self.host.makedirs(logs)
        paths = []
        for name, chunks in binlogs:
            path = posixpath.join(logs, name)
            self.host.put(path, chunks())
            paths.append(path)
        self._phase("fetch binlogs", started)
        started = time.monotonic()
        socket = posixpath.join(self.target, "drorch-replay.sock")
        server = self.host.start(["mariadbd", "--no-defaults", f"--datadir={self.target}", "--skip-networking",
                                  f"--socket={socket}", f"--pid-file={posixpath.join(self.target, 'drorch-replay.pid')}",
                                  f"--user={self.os_user}", "--skip-log-bin",
                                  f"--log-error={posixpath.join(self.staging, 'replay.err')}"])
        try:
            self._wait_socket(socket)
            argv = ["mariadb-binlog", f"--start-position={start_position}"]
            if stop.get("time"):
                argv.append(f"--stop-datetime={stop['time']}")
            elif stop.get("position"):
                argv.append(f"--stop-position={stop['position'][1]}")
            elif stop.get("gtid"):
                argv.append(f"--stop-position={stop['gtid']}")
            command = ("TZ=UTC " + " ".join(shlex.quote(a) for a in argv + paths) + " | mariadb --no-defaults "
                       f"--socket={shlex.quote(socket)} -u root")
            self.run(["sh", "-c", command], "replaying binlogs")
        finally:
            self.run(["mariadb-admin", "--no-defaults", f"--socket={socket}", "-u", "root", "shutdown"],
                     "stopping the replay server")
            server.wait(timeout=120)
        self._phase("replay binlogs", started)

    def _wait_socket(self, socket: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.host.run(["mariadb-admin", "--no-defaults", f"--socket={socket}", "-u", "root", "ping"],
                                   timeout=10)
            if result.ok:
                return
            time.sleep(0.2)
        raise RestoreError(f"the replay server on {self.target} did not start",
                           f"see {posixpath.join(self.staging, 'replay.err')}")

    def finish(self) -> None:
        self.host.remove(self.staging)
