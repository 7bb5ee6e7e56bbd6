"""Crash safety: a backup killed with SIGKILL part-way leaves nothing listed as
restorable from that run; earlier backups still restore; the next backup
succeeds; expire cleans the leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from drorch.faults import POINTS
from tests import treegen

MiB = 1 << 20


def run_cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "drorch.cli.main", *map(str, args)],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, **kwargs)


@pytest.fixture
def chain_with_data(files_setup, drorch):
    data, repo, policy = files_setup
    treegen.generate(data, seed=7, files=40, big=1)
    (data / "large.bin").write_bytes(os.urandom(20 * MiB))  # more than one pack
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    before = treegen.snapshot(data)
    treegen.mutate(data, 70)
    (data / "large.bin").write_bytes(os.urandom(20 * MiB))
    return data, repo, policy, before


@pytest.mark.parametrize("point", [p for p in POINTS if p != "after-manifest"])
def test_killed_backup_is_never_listed_and_is_cleaned(chain_with_data, drorch, tmp_path, point):
    data, repo, policy, before = chain_with_data
    killed = run_cli("backup", "--policy", policy, "--type", "incr", env={"DRORCH_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    rows = drorch("list", "--policy", policy, "--json").json()
    assert [r["type"] for r in rows] == ["full"]  # nothing restorable from the killed run
    every = drorch("list", "--policy", policy, "--all", "--json").json()
    assert sorted(r["status"] for r in every) == ["incomplete", "ok"]

    # the earlier backup still restores exactly
    target = tmp_path / "restore"
    assert drorch("restore", "--policy", policy, "--target", target).code == 0
    assert treegen.diff(before, treegen.snapshot(target / str(data).lstrip("/"))) == []

    # the next backup takes over the dead process's lock and succeeds
    after = drorch("backup", "--policy", policy, "--type", "incr", "--json")
    assert after.code == 0, after.err
    assert after.json()["parent"] == rows[0]["label"]

    # expire removes the leftovers of the killed run, and nothing else
    leftovers = [r["label"] for r in every if r["status"] == "incomplete"]
    result = drorch("expire", "--policy", policy, "--json").json()[0]
    assert result["leftovers"] == leftovers
    assert not any(repo.joinpath("data", "files1", leftovers[0]).exists() for _ in [0])
    assert [r["status"] for r in drorch("list", "--policy", policy, "--all", "--json").json()] == ["ok", "ok"]


def test_killed_after_the_manifest_is_committed_and_listed(chain_with_data, drorch):
    data, repo, policy, before = chain_with_data
    killed = run_cli("backup", "--policy", policy, "--type", "incr", env={"DRORCH_FAULT": "after-manifest"})
    assert killed.returncode == -signal.SIGKILL
    rows = drorch("list", "--policy", policy, "--all", "--json").json()
    assert [(r["type"], r["status"]) for r in rows] == [("full", "ok"), ("incr", "ok")]
    assert drorch("backup", "--policy", policy, "--type", "incr").code == 0  # stale lock taken over


def test_killed_at_random_moments(chain_with_data, drorch, tmp_path):
    """SIGKILL from outside at a few moments during a backup."""
    data, repo, policy, before = chain_with_data
    committed = {r["label"] for r in drorch("list", "--policy", policy, "--json").json()}
    for delay in (0.05, 0.15, 0.3):
        (data / "large.bin").write_bytes(os.urandom(20 * MiB))
        proc = subprocess.Popen([sys.executable, "-m", "drorch.cli.main", "backup", "--policy", str(policy),
                                 "--type", "full"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        rows = drorch("list", "--policy", policy, "--json").json()
        for row in rows:  # whatever is listed restores
            if row["label"] in committed:
                continue
            committed.add(row["label"])
        for label in committed:
            target = tmp_path / f"r-{label}-{delay}"
            result = drorch("restore", "--policy", policy, "--backup", label, "--target", target)
            assert result.code == 0, result.err
    assert drorch("backup", "--policy", policy, "--type", "incr").code == 0
    assert drorch("expire", "--policy", policy).code == 0
    assert all(r["status"] == "ok" for r in drorch("list", "--policy", policy, "--all", "--json").json())
