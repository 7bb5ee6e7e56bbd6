"""Source locks are leases: renewed while held, never taken from a live holder on
another host, taken over once a frozen holder's lease lapsed (and that holder
then stops before its commit), and racing takers never hold one together.

"Another host" is a process in a UTS namespace of its own (`unshare --uts`,
its own hostname), so the pid check of same-host locks cannot help: only the
lease decides.  Runs on a posix repository and on S3 (moto server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from drorch.errors import LockedError
from drorch.factory import open_repository
from drorch.policy import load_policy
from drorch.repo import lease
from drorch.repo.locks import SourceLock
from drorch.timefmt import iso, parse_iso, utcnow
from tests import s3server

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "files1"


@pytest.fixture(params=["posix", "s3"])
def repo_policy(request, tmp_path, monkeypatch):
    if request.param == "posix":
        repo = f"type: posix\n    path: {tmp_path / 'repo'}"
    else:
        server = request.getfixturevalue("moto_server")
        monkeypatch.setenv("DRORCH_TEST_KEY_ID", s3server.ACCESS_KEY)
        monkeypatch.setenv("DRORCH_TEST_SECRET", s3server.SECRET_KEY)
        repo = textwrap.dedent(f"""\
            type: s3
                bucket: {server.bucket()}
                endpoint_url: {server.url}
                path_style: true
                access_key_id: "${{env:DRORCH_TEST_KEY_ID}}"
                secret_access_key: "${{env:DRORCH_TEST_SECRET}}"
            """).rstrip()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"repositories:\n  main:\n    {repo}\nsources:\n  {SOURCE}:\n    kind: files\n"
                      f"    repository: main\n    paths: [{tmp_path}]\n")
    return policy


def open_repo(policy: Path):
    return open_repository(load_policy(policy), "main", create=True)


class Holders:
    """leaseholder processes, ended by PID whatever happens."""

    def __init__(self, tmp_path: Path, policy: Path):
        self.log = tmp_path / "holders.log"
        self.policy = policy
        self.procs: list[subprocess.Popen] = []

    def start(self, ttl: float, hold: float, wait: float = 0.0, hostname: str | None = None) -> subprocess.Popen:
        args = [sys.executable, "-m", "tests.leaseholder", str(self.policy), SOURCE, str(ttl), str(hold), str(wait),
                str(self.log)]
        if hostname:
            args = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *args]
        proc = subprocess.Popen(args, cwd=ROOT, env=os.environ.copy())
        self.procs.append(proc)
        return proc

    def lines(self, pid: int | None = None) -> list[str]:
        text = self.log.read_text() if self.log.exists() else ""
        rows = [line.split(" ", 1) for line in text.splitlines()]
        return [rest for who, rest in rows if pid is None or who == str(pid)]

    def wait_for(self, pid: int, word: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines(pid) if line.startswith(word)]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"pid {pid} never said {word!r}: {self.lines(pid)}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()


@pytest.fixture
def holders(tmp_path, repo_policy):
    group = Holders(tmp_path, repo_policy)
    try:
        yield group
    finally:
        group.stop()


def test_a_held_lease_is_renewed_and_released(repo_policy):
    repo = open_repo(repo_policy)
    lock = SourceLock(repo, SOURCE, "test", ttl=timedelta(seconds=2)).acquire()
    try:
        first = lock.read()
        time.sleep(2.5)  # longer than the lease: only renewal keeps it
        second = lock.read()
        assert second["token"] == first["token"] and second["since"] == first["since"]
        assert parse_iso(second["expires"]) > parse_iso(first["expires"]) + timedelta(seconds=0.5)
        assert lease.holder_alive(second)
        with pytest.raises(LockedError, match="locked by"):
            SourceLock(repo, SOURCE, "other").acquire()  # same host, live pid, running lease
    finally:
        lock.release()
    assert lock.read() is None


def test_a_live_holder_on_another_host_is_never_taken_over(holders, repo_policy):
    # leases short enough for a quick test, long enough for a busy machine: renewals every 0.7 s, and
    # a renewal may come 1.8 s late before the lease lapses
    holder = holders.start(ttl=2, hold=8, hostname="otherhost")
    holders.wait_for(holder.pid, "acquired")
    repo = open_repo(repo_policy)
    deadline = time.monotonic() + 4.5  # more than twice the lease
    while time.monotonic() < deadline:
        with pytest.raises(LockedError, match=f"locked by otherhost pid {holder.pid}"):
            SourceLock(repo, SOURCE, "test").acquire()
        time.sleep(0.2)
    assert holder.wait(timeout=30) == 0
    assert holders.lines(holder.pid)[-1].startswith("released")
    SourceLock(repo, SOURCE, "test").acquire().release()  # free again


def test_a_frozen_holder_on_another_host_loses_its_lease_and_stops_before_commit(holders, repo_policy):
    holder = holders.start(ttl=1, hold=4, hostname="otherhost")
    holders.wait_for(holder.pid, "acquired")
    os.kill(holder.pid, signal.SIGSTOP)  # a stalled host: no more renewals
    repo = open_repo(repo_policy)
    frozen = SourceLock(repo, SOURCE, "test").read()
    lock = SourceLock(repo, SOURCE, "test", ttl=timedelta(seconds=30))
    lock.acquire(wait=20)
    try:
        taken = utcnow()
        assert taken > parse_iso(frozen["expires"]) + lease.skew(timedelta(seconds=1))  # not one moment early
        os.kill(holder.pid, signal.SIGCONT)
        assert holder.wait(timeout=30) == 4
        said = holders.lines(holder.pid)
        assert any(line.startswith("lost ") for line in said) and said[-1] == "lost-before-commit", said
        assert lock.read()["token"] == lock.token  # the old holder left our lock alone
    finally:
        lock.release()


def test_racing_takers_of_a_lapsed_lease_never_hold_it_together(holders, repo_policy):
    repo = open_repo(repo_policy)
    stale = {"host": "gone-host", "pid": 4242, "token": "stale0", "purpose": "backup", "ttl": 60,
             "since": iso(utcnow() - timedelta(hours=2)), "expires": iso(utcnow() - timedelta(hours=1))}
    repo.put_plain_json(f"locks/{SOURCE}", stale)
    procs = [holders.start(ttl=5, hold=0.3, wait=60) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4, holders.lines()
    spans = []
    for proc in procs:
        said = holders.lines(proc.pid)
        start = float(next(line for line in said if line.startswith("acquired")).split()[1])
        end = float(next(line for line in said if line.startswith("released")).split()[1])
        spans.append((start, end))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, spans
    assert SourceLock(repo, SOURCE, "test").read() is None
    assert not list(repo.storage.list(lease.MARKER_PREFIX))  # take-over markers cleaned up


def test_a_lock_without_lease_from_another_host_counts_as_held(repo_policy):
    repo = open_repo(repo_policy)
    old = {"host": "old-drorch-host", "pid": 1, "token": "t0", "since": iso(utcnow() - timedelta(days=3)),
           "purpose": "backup"}
    repo.put_plain_json(f"locks/{SOURCE}", old)
    with pytest.raises(LockedError, match="locked by old-drorch-host pid 1"):
        SourceLock(repo, SOURCE, "test").acquire()
