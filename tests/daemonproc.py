"""`drorch daemon` as a real process for tests: started with JSON logs into a
file, optionally in a UTS namespace with a hostname of its own (a second
"host"), read through its log lines and its HTTP endpoint, and ended by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.s3server import free_port

ROOT = Path(__file__).resolve().parents[1]


def daemon_policy(path: Path, repo: Path, sources: dict[str, str], *, state: Path, port: int,
                  daemon_extra: str = "") -> Path:
    """A policy file: one posix repository, `sources` name -> its YAML body (indented 4)."""
    text = textwrap.dedent(f"""\
        daemon:
          listen: 127.0.0.1:{port}
          state_dir: {state}
        """) + textwrap.indent(textwrap.dedent(daemon_extra), "  ")
    text += f"repositories:\n  local:\n    type: posix\n    path: {repo}\nsources:\n"
    for name, body in sources.items():
        text += f"  {name}:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    path.write_text(text)
    return path


class DaemonProc:
    def __init__(self, policy: Path, log: Path, *, port: int, hostname: str | None = None,
                 env: dict | None = None):
        self.policy, self.log, self.port = policy, log, port
        args = [sys.executable, "-m", "drorch.cli.main", "daemon", "--policy", str(policy), "--log-format", "json"]
        if hostname:
            args = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *args]
        self.err = open(log, "ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.err,
                                     env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- what it says --------------------------------------------------------------

    def lines(self) -> list[dict]:
        out = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"message": raw, "level": "raw"})
        return out

    def events(self, event: str, **match) -> list[dict]:
        return [line for line in self.lines() if line.get("event") == event
                and all(line.get(k) == v for k, v in match.items())]

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.proc.returncode}) waiting for {what}:\n"
                                     + self.log.read_text(errors="replace")[-4000:])
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.log.read_text(errors="replace")[-4000:])

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """{(sample name, sorted labels): value}, parsed by prometheus-client's own parser."""
        code, body = self.get("/metrics")
        assert code == 200
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def status(self) -> dict:
        code, body = self.get("/status")
        assert code == 200
        return json.loads(body)

    # -- its end -------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the daemon and the job processes it started (their own sessions), by PID."""
        if self.proc.poll() is None:
            for child in children(self.proc.pid):
                os.kill(child, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def children(pid: int) -> list[int]:
    """PIDs whose parent is pid (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def port() -> int:
    return free_port()
