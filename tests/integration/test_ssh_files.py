"""The files source on a host reached over SSH (a real sshd on loopback):
same fidelity as local, a full/incr/diff chain restored both here and back
onto the remote host with --target-host."""

from __future__ import annotations

import os

import pytest

from tests import treegen
from tests.sshd import sshd, write_remote_policy  # noqa: F401  (fixture)

CHAIN = ["full", "incr", "diff", "incr"]


def _restore_and_compare(drorch, policy, label, snap, data, target, *target_host):
    result = drorch("restore", "--policy", policy, "--backup", label, "--target", target, *target_host)
    assert result.code == 0, result.err
    restored = treegen.snapshot(target / str(data).lstrip("/"))
    assert treegen.diff(snap, restored) == [], f"backup {label} did not restore exactly ({target_host})"


@pytest.mark.parametrize("seed", [11, 12])
def test_remote_chain_restores_exactly_here_and_back_there(sshd, drorch, tmp_path, seed):
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, seed)
    (data / "large.bin").write_bytes(os.urandom(9 << 20) + b"tail")  # several reads of 4 MiB
    policy = write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, [data])
    expected = {}
    for step, btype in enumerate(CHAIN):
        if step:
            treegen.mutate(data, seed * 100 + step)
        result = drorch("backup", "--policy", policy, "--type", btype, "--json")
        assert result.code == 0, result.err
        backup = result.json()
        assert backup["type"] == btype and backup["warnings"] == []
        expected[backup["label"]] = treegen.snapshot(data)
    for label, snap in expected.items():
        _restore_and_compare(drorch, policy, label, snap, data, tmp_path / f"here-{label}")
        _restore_and_compare(drorch, policy, label, snap, data, tmp_path / f"there-{label}",
                             "--target-host", "remote")
    leftovers = [p for p in (tmp_path).rglob(".drorch-*")]
    assert leftovers == []


def test_remote_walk_records_what_a_local_walk_records(sshd, drorch, tmp_path):
    """The same tree backed up through `local` and through SSH: identical entries
    (types, modes, owners and names, times to the nanosecond, inodes, links)."""
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, 5)
    policy = write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, [data], more_sources=f"""\
          here:
            kind: files
            repository: local
            paths: [{data}]
        """)
    entries = {}
    for source in ("remote1", "here"):
        backup = drorch("backup", "--policy", policy, "--source", source, "--type", "full", "--json")
        assert backup.code == 0, backup.err
        shown = drorch("show", "--policy", policy, "--source", source, "--backup", backup.json()["label"],
                       "--files", "--json")
        entries[source] = [{k: v for k, v in e.items() if k != "blocks"}  # where the bytes are stored
                           for e in shown.json()["entries"]]
    assert entries["remote1"] == entries["here"]
    assert len(entries["here"]) > 60


def test_delta_restore_onto_the_remote_host(sshd, drorch, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, 21, files=30, big=1)
    policy = write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, [data])
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    snap = treegen.snapshot(data)
    target = tmp_path / "there"
    args = ("restore", "--policy", policy, "--target", target, "--target-host", "remote")
    assert drorch(*args).code == 0
    treegen.mutate(target / str(data).lstrip("/"), 99)  # damage the restored copy
    (target / "stray").write_text("not in the backup")
    refused = drorch(*args)
    assert refused.code == 1 and "not empty" in refused.err
    result = drorch(*args, "--delta", "--json")
    assert result.code == 0, result.err
    assert result.json()["unchanged_files"] > 0 and result.json()["removed"] >= 1
    assert treegen.diff(snap, treegen.snapshot(target / str(data).lstrip("/"))) == []
    assert not (target / "stray").exists()
