"""Locks: expire beside a running backup refuses and deletes nothing of it;
two backups of one source never run at once; the frozen backup still commits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

MiB = 1 << 20


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def _all_threads_stopped(pid: int) -> bool:
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat", "rb") as handle:
                states.append(handle.read().rsplit(b")", 1)[1].split()[0])
        except OSError:
            continue  # a thread that ended
    return all(state in (b"T", b"t") for state in states)


def test_expire_and_second_backup_refused_while_a_backup_runs(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    (data / "first.txt").write_text("first\n")
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    for i in range(4):
        (data / f"big-{i}.bin").write_bytes(os.urandom(24 * MiB))

    proc = subprocess.Popen([sys.executable, "-m", "drorch.cli.main", "backup", "--policy", str(policy),
                             "--type", "full"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        packs = lambda: list(repo.glob("data/files1/*-F/p*"))  # noqa: E731
        first_label = next(repo.glob("manifests/files1/*")).name
        assert _wait_for(lambda: any(p.parent.name != first_label for p in packs()))
        os.kill(proc.pid, signal.SIGSTOP)  # frozen mid-copy, holding the lock
        # every thread stopped: one inside a system call (creating a pack) stops only when it returns
        assert _wait_for(lambda: _all_threads_stopped(proc.pid))
        running = [p for p in repo.glob("runs/files1/*")]
        assert len(running) == 1 and not (repo / "manifests/files1" / running[0].name).exists()
        objects_before = sorted(repo.rglob("*"))

        expire = drorch("expire", "--policy", policy)
        assert expire.code == 1
        assert "locked by" in expire.err and f"pid {proc.pid}" in expire.err
        second = drorch("backup", "--policy", policy, "--type", "incr")
        assert second.code == 1 and "locked by" in second.err
        assert drorch("list", "--policy", policy, "--all", "--json").json()[-1]["status"] == "running"
        assert sorted(repo.rglob("*")) == objects_before  # nothing of the running backup was touched
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err

    rows = drorch("list", "--policy", policy, "--json").json()
    assert [r["type"] for r in rows] == ["full", "full"]
    target = tmp_path / "restore"
    assert drorch("restore", "--policy", policy, "--target", target).code == 0
    restored = target / str(data).lstrip("/")
    for i in range(4):
        assert (restored / f"big-{i}.bin").read_bytes() == (data / f"big-{i}.bin").read_bytes()
    assert not list(repo.glob("locks/*"))  # released


def test_concurrent_backups_of_one_source_never_overlap(files_setup, drorch):
    data, repo, policy = files_setup
    (data / "big.bin").write_bytes(os.urandom(16 * MiB))
    procs = [subprocess.Popen([sys.executable, "-m", "drorch.cli.main", "backup", "--policy", str(policy),
                               "--type", "full", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    ok = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] != 0]
    assert ok, results
    assert all(r[0] == 1 and "locked by" in r[2] for r in refused), refused
    # every committed backup ran alone: their [started, finished] intervals do not overlap
    rows = drorch("list", "--policy", policy, "--json").json()
    assert len(rows) == len(ok)
    spans = sorted((r["started"], r["finished"]) for r in rows)
    for (s1, f1), (s2, f2) in zip(spans, spans[1:]):
        assert f1 <= s2
