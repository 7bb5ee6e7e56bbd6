"""A connection cut in the middle of a transfer (the per-connection sshd
killed): the transfer is repeated on a new connection and the result is
exact, or the job fails cleanly and earlier backups are intact."""

from __future__ import annotations

import os
import shutil

import pytest

from tests import treegen
from tests.sshd import Tripwire, make_setup, scratch_dir, write_remote_policy

MiB = 1 << 20


@pytest.fixture(scope="module")
def tripwire():
    """(sshd setup, Tripwire): a connection cut at a chosen command, never missed."""
    workdir = scratch_dir("drorch-ssh-drop-")
    wire = Tripwire(workdir / "tripwire")
    setup = make_setup(workdir / "ssh", extra_config=wire.extra_config())
    try:
        yield setup, wire
    finally:
        setup.server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def sshd(tripwire):
    return tripwire[0]


def _setup(tmp_path, sshd):
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, 31, files=40, big=1)
    (data / "large.bin").write_bytes(os.urandom(48 * MiB))
    policy = write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, [data])
    return data, policy


def _restores_exactly(drorch, policy, label, snap, data, target, *extra):
    result = drorch("restore", "--policy", policy, "--backup", label, "--target", target, *extra)
    assert result.code == 0, result.err
    assert treegen.diff(snap, treegen.snapshot(target / str(data).lstrip("/"))) == []


def test_backup_cut_mid_read_is_repeated_and_exact(sshd, tripwire, drorch, tmp_path):
    data, policy = _setup(tmp_path, sshd)
    logins = sshd.server.logins()
    with tripwire[1].arm(sshd.server, "dd", "large.bin") as killer:  # as a block of it is read
        result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert killer.kills == 1
    assert result.code == 0, result.err
    assert sshd.server.logins() >= logins + 2  # connected again after the cut
    _restores_exactly(drorch, policy, result.json()["label"], treegen.snapshot(data), data, tmp_path / "r")


def test_backup_cut_during_the_small_file_batches_is_exact(sshd, tripwire, drorch, tmp_path):
    data, policy = _setup(tmp_path, sshd)
    many = data / "many"
    many.mkdir()
    for i in range(3000):  # a few dozen batches
        (many / f"f{i:04}").write_bytes(os.urandom(i % 5000))
    with tripwire[1].arm(sshd.server, "tar", "-c") as killer:
        result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert killer.kills == 1 and result.code == 0, result.err
    _restores_exactly(drorch, policy, result.json()["label"], treegen.snapshot(data), data, tmp_path / "r")


def test_a_host_that_stops_answering_mid_walk_is_given_up_on_and_the_walk_repeated(sshd, tripwire, drorch,
                                                                                   tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, 33, files=40)
    policy = write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, [data],
                                 host_options={"io_timeout": "2s"})
    logins = sshd.server.logins()
    with tripwire[1].arm(sshd.server, "find", str(data), action="stall") as stalled:  # silent, connection up
        result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert stalled.kills == 1
    assert result.code == 0, result.err
    assert sshd.server.logins() >= logins + 2  # the silent connection was given up, a new one made
    _restores_exactly(drorch, policy, result.json()["label"], treegen.snapshot(data), data, tmp_path / "r")


def test_backup_that_keeps_losing_the_connection_fails_cleanly(sshd, tripwire, drorch, tmp_path):
    data, policy = _setup(tmp_path, sshd)
    first = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert first.code == 0, first.err
    snap = treegen.snapshot(data)
    treegen.mutate(data, 32)
    (data / "large.bin").write_bytes(os.urandom(48 * MiB))
    with tripwire[1].arm(sshd.server, "dd", "large.bin", times=1000) as killer:  # every read of it
        result = drorch("backup", "--policy", policy, "--type", "incr")
    assert killer.kills >= 3
    assert result.code == 1, result.err
    assert "lost the connection to host remote" in result.err or "cannot connect to host remote" in result.err
    assert "Traceback" not in result.err
    listed = drorch("list", "--policy", policy, "--json").json()
    assert [row["label"] for row in listed] == [first.json()["label"]]  # the cut backup is not listed
    _restores_exactly(drorch, policy, first.json()["label"], snap, data, tmp_path / "r")


def test_restore_onto_the_remote_cut_mid_write_is_repeated_and_exact(sshd, tripwire, drorch, tmp_path):
    data, policy = _setup(tmp_path, sshd)
    result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert result.code == 0, result.err
    snap = treegen.snapshot(data)
    target = tmp_path / "there"
    with tripwire[1].arm(sshd.server, "dd", ".drorch-", times=2) as killer:  # writing a temporary file
        restored = drorch("restore", "--policy", policy, "--target", target, "--target-host", "remote")
    assert killer.kills == 2
    assert restored.code == 0, restored.err
    assert treegen.diff(snap, treegen.snapshot(target / str(data).lstrip("/"))) == []
    assert list(target.rglob(".drorch-*")) == []  # no temporary left behind


def test_restore_that_keeps_losing_the_connection_leaves_no_half_file(sshd, tripwire, drorch, tmp_path):
    data, policy = _setup(tmp_path, sshd)
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    target = tmp_path / "there"
    with tripwire[1].arm(sshd.server, "dd", ".drorch-", times=10_000) as killer:  # every temporary file
        restored = drorch("restore", "--policy", policy, "--target", target, "--target-host", "remote")
    assert killer.kills >= 3
    assert restored.code == 1, restored.err
    assert "lost the connection to host remote" in restored.err or "cannot connect to host remote" in restored.err
    assert "Traceback" not in restored.err
    restored_root = target / str(data).lstrip("/")
    for path in restored_root.rglob("*"):  # whatever has its real name is complete
        if path.is_file() and not path.is_symlink() and not path.name.startswith(".drorch-"):
            original = data / path.relative_to(restored_root)
            assert path.read_bytes() == original.read_bytes(), path
