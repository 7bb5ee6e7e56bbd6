"""Throwaway OpenSSH servers on loopback for tests (and bench/ssh).

`start_sshd(workdir)` starts `/usr/sbin/sshd -D` with its own host key,
authorized_keys and a known_hosts line for clients; `Sshd.stop()` stops it
by PID (and the per-connection children it forked).  The pytest fixtures at
the bottom share one server per module; import them into a test module:

    from tests.sshd import sshd, ssh_client_key  # noqa: F401  (fixtures)

Logins are as the user running the tests (root in CI), key only.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def keygen(path: Path, passphrase: str = "", kind: str = "ed25519") -> Path:
    """A new key pair at path / path.pub."""
    if path.exists():
        path.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "drorch-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (one pass over /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    out[int(entry)] = int(handle.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _children(pid: int) -> list[int]:
    return [child for child, parent in _parents().items() if parent == pid]


def descendants(pid: int) -> list[int]:
    parents = _parents()
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        out += kids
        todo += kids
    return out


@dataclass
class Sshd:
    dir: Path
    address: str
    port: int
    host_key: Path
    authorized_keys: Path
    config: Path
    process: subprocess.Popen | None = None
    user: str = field(default_factory=getpass.getuser)

    @property
    def pid(self) -> int:
        return self.process.pid

    def known_hosts_line(self, key: Path | None = None) -> str:
        """`[addr]:port type base64` for this server's host key (or another key)."""
        kind, blob = (key or self.host_key).with_suffix(".pub").read_text().split()[:2]
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {kind} {blob}\n"

    def write_known_hosts(self, path: Path, key: Path | None = None) -> Path:
        path.write_text(self.known_hosts_line(key))
        return path

    def authorize(self, public_key: Path) -> None:
        with open(self.authorized_keys, "a") as handle:
            handle.write(public_key.with_suffix(".pub").read_text())

    def logins(self) -> int:
        """Successful logins so far (from the server's log)."""
        return (self.dir / "sshd.log").read_text(errors="replace").count("Accepted publickey")

    def sessions(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        return _children(self.pid)

    def commands(self) -> list[tuple[int, bytes]]:
        """(pid, command line) of everything the server runs for its clients."""
        out = []
        for pid in descendants(self.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    out.append((pid, handle.read().replace(b"\0", b" ")))
            except OSError:
                pass
        return out

    def kill_sessions(self) -> int:
        killed = 0
        for pid in self.sessions():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed

    def stop(self) -> None:
        if self.process is None:
            return
        for pid in [*descendants(self.pid), self.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        self.process = None


def start_sshd(workdir: Path, *, address: str = "127.0.0.1", port: int | None = None,
               extra_config: str = "") -> Sshd:
    """Start an sshd on address:port (a free port by default); returns when it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_key = keygen(workdir / "host_ed25519")
    authorized = workdir / "authorized_keys"
    authorized.touch()
    last_error = ""
    for _ in range(5):  # a free port can be taken between the probe and the bind
        chosen = port or free_port(address)
        config = workdir / "sshd_config"
        config.write_text(textwrap.dedent(f"""\
            Port {chosen}
            ListenAddress {address}
            HostKey {host_key}
            PidFile {workdir}/sshd.pid
            AuthorizedKeysFile {authorized}
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PubkeyAuthentication yes
            PermitRootLogin prohibit-password
            UsePAM no
            StrictModes no
            MaxSessions 64
            MaxStartups 100
            Subsystem sftp internal-sftp
            LogLevel INFO
            """) + textwrap.dedent(extra_config))
        log = open(workdir / "sshd.log", "wb")
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log)
        log.close()
        server = Sshd(workdir, address, chosen, host_key, authorized, config, process)
        if _wait_listening(address, chosen, process):
            return server
        server.stop()
        last_error = (workdir / "sshd.log").read_text(errors="replace")
    raise RuntimeError(f"sshd did not start: {last_error}")


def _wait_listening(address: str, port: int, process: subprocess.Popen, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((address, port), timeout=0.5) as sock:
                sock.settimeout(2)
                if sock.recv(4).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


class SessionKiller:
    """Kill the server's connections whenever a command matching `needle`
    runs for a client (at most `times` times), from a background thread;
    with relentless=True, every connection from the first kill on."""

    def __init__(self, server: Sshd, needle: bytes, times: int = 1, relentless: bool = False):
        self.server, self.needle, self.times, self.relentless = server, needle, times, relentless
        self.kills = 0
        self._stop = False
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop and self.kills < self.times:
            if (self.relentless and self.kills) or any(self.needle in line for _, line in self.server.commands()):
                if self.server.kill_sessions():
                    self.kills += 1
            time.sleep(0.001)

    def __enter__(self) -> "SessionKiller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join(10)


@dataclass
class SshSetup:
    """One server plus what a client needs: its key and a known_hosts file."""

    server: Sshd
    client_key: Path
    known_hosts: Path
    dir: Path

    def host_yaml(self, name: str = "remote", **options) -> str:
        """An entry of `hosts:` for this server; options add or override keys."""
        values = {"address": self.server.address, "port": self.server.port, "user": self.server.user,
                  "key_file": self.client_key, "known_hosts": self.known_hosts, **options}
        return "\n".join([f"  {name}:"] + [f"    {key}: {value}" for key, value in values.items()]) + "\n"


def make_setup(workdir: Path, **kwargs) -> SshSetup:
    server = start_sshd(workdir / "sshd", **kwargs)
    try:
        key = keygen(workdir / "client_ed25519")
        server.authorize(key)
        known = server.write_known_hosts(workdir / "known_hosts")
    except BaseException:
        server.stop()
        raise
    return SshSetup(server, key, known, workdir)


def scratch_dir(prefix: str = "drorch-ssh-") -> Path:
    """A temp dir other OS users can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def sshd():
    """One throwaway sshd for the module, with a client key and known_hosts (SshSetup)."""
    workdir = scratch_dir()
    setup = make_setup(workdir)
    try:
        yield setup
    finally:
        setup.server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def write_remote_policy(path: Path, repo: Path, setup: SshSetup, paths: list, *, source: str = "remote1",
                        host: str = "remote", host_options: dict | None = None, more_sources: str = "",
                        more_hosts: str = "") -> Path:
    """A policy with one posix repository and a files source on an SSH host
    (more_sources / more_hosts: YAML entries added to those sections)."""
    text = (f"hosts:\n{setup.host_yaml(host, **(host_options or {}))}"
            + textwrap.indent(textwrap.dedent(more_hosts), "  ") +
            f"repositories:\n  local:\n    type: posix\n    path: {repo}\n"
            f"sources:\n  {source}:\n    kind: files\n    host: {host}\n    repository: local\n"
            f"    paths: [{', '.join(str(p) for p in paths)}]\n"
            + textwrap.indent(textwrap.dedent(more_sources), "  "))
    path.write_text(text)
    return path


class Tripwire:
    """Cuts (or stalls) a connection from inside the host, at a chosen command, without
    racing it (SessionKiller polls and can miss a short command on a loaded
    machine).  The sshd's sessions find wrappers of `commands` first in PATH
    (`extra_config()` for start_sshd); once armed, the first `times` runs of
    `command` whose arguments hold `needle` kill their connection's sshd
    processes and fail; every other run execs the real command."""

    def __init__(self, workdir: Path, commands: tuple[str, ...] = ("tar", "dd", "cat", "find")):
        self.dir = workdir
        (workdir / "bin").mkdir(parents=True, exist_ok=True)
        for name in commands:
            wrapper = workdir / "bin" / name
            wrapper.write_text(_TRIPWIRE.replace("@DIR@", str(workdir)).replace("@NAME@", name)
                               .replace("@REAL@", shutil.which(name)))
            wrapper.chmod(0o755)

    def extra_config(self) -> str:
        return f"SetEnv PATH={self.dir}/bin:/usr/bin:/bin\n"

    def arm(self, server: Sshd, command: str, needle: str = "", times: int = 1,
            action: str = "cut") -> "Tripwire":
        """action: "cut" kills the connection; "stall" leaves it up and sleeps
        instead of running the command (a host that stops answering)."""
        (self.dir / "listener").write_text(str(server.pid))
        (self.dir / "action").write_text(action)
        (self.dir / "needle").write_text(needle)
        (self.dir / "left").write_text(str(times))
        (self.dir / "kills").write_text("")
        (self.dir / "armed").write_text(command)
        return self

    def disarm(self) -> None:
        (self.dir / "armed").unlink(missing_ok=True)

    def __enter__(self) -> "Tripwire":
        return self

    def __exit__(self, *exc) -> None:
        self.disarm()

    @property
    def kills(self) -> int:
        return len((self.dir / "kills").read_text().splitlines())


_TRIPWIRE = r"""#!/bin/sh
# test tripwire (tests/sshd.py Tripwire): armed for @NAME@ and this run's
# arguments hold the needle -> kill this connection's sshd processes
caller_path=$PATH PATH=/usr/bin:/bin  # (not these wrappers again)
a=@DIR@
if [ "$(cat "$a/armed" 2>/dev/null)" = @NAME@ ] && mkdir "$a/lock" 2>/dev/null; then
  fire=
  case "$*" in *"$(cat "$a/needle")"*)
    left=$(cat "$a/left")
    if [ "$left" -gt 0 ]; then
      echo $((left - 1)) >"$a/left"; echo kill >>"$a/kills"; fire=1
      [ "$left" -gt 1 ] || rm -f "$a/armed"
    fi;;
  esac
  rmdir "$a/lock"
  if [ -n "$fire" ] && [ "$(cat "$a/action")" = stall ]; then
    sleep 30
    exit 1
  elif [ -n "$fire" ]; then
    listener=$(cat "$a/listener") p=$PPID chain=
    while [ "$p" -gt 1 ] && [ "$p" != "$listener" ]; do
      [ "$(cat /proc/$p/comm)" = sshd ] && chain="$chain $p"
      p=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2)
    done
    kill -9 $chain
    exit 1
  fi
fi
PATH=$caller_path
exec @REAL@ "$@"
"""
