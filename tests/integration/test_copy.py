"""Copies to a second repository (3-2-1): what is missing is copied, parents
first, checked, manifest last; the copy restores alone; an interrupted copy
leaves nothing listed and the next one completes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import zstandard

from drorch.faults import COPY_POINTS
from tests import treegen
from tests.multirepo import SOURCE, every_byte, fast_kdf, run_cli, tree_state, write_policy  # noqa: F401

CHAIN = ["full", "incr", "diff", "incr"]
MiB = 1 << 20
KINDS = {"plain": None, "sealed": "PW_DR"}


@pytest.fixture
def two_repos(tmp_path, monkeypatch, fast_kdf):
    """make(main_kind, dr_kind) -> (data, main, dr, policy); kinds 'plain' or 'sealed'."""
    monkeypatch.setenv("PW_MAIN", "main passphrase")
    monkeypatch.setenv("PW_DR", "another passphrase for the DR site")

    def make(main_kind="plain", dr_kind="plain"):
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        main, dr = tmp_path / "main", tmp_path / "dr"
        repos = {"main": (main, "PW_MAIN" if main_kind == "sealed" else None), "dr": (dr, KINDS[dr_kind])}
        policy = write_policy(tmp_path / "policy.yaml", data, repos, main="main", copy_to=["dr"])
        return data, main, dr, policy
    return make


def backup_chain(drorch, policy, data, seed, chain=CHAIN) -> dict:
    expected = {}
    for step, btype in enumerate(chain):
        if step or expected:
            treegen.mutate(data, seed * 100 + step)
        result = drorch("backup", "--policy", policy, "--type", btype, "--json")
        assert result.code == 0, result.err
        expected[result.json()["label"]] = treegen.snapshot(data)
    return expected


def restores_exactly(drorch, policy, data, expected, root, *extra):
    for label, snap in expected.items():
        target = root / f"restore-{label}"
        result = drorch("restore", "--policy", policy, "--backup", label, "--target", target, *extra)
        assert result.code == 0, result.err
        assert treegen.diff(snap, treegen.snapshot(target / str(data).lstrip("/"))) == [], label


def listed(drorch, policy, *extra):
    result = drorch("list", "--policy", policy, "--source", SOURCE, *extra, "--json")
    assert result.code == 0, result.err
    return [(r["label"], r["type"], r["parent"], r["status"]) for r in result.json()]


@pytest.mark.parametrize("kinds", [("plain", "plain"), ("sealed", "sealed"), ("plain", "sealed"),
                                   ("sealed", "plain")], ids="-to-".join)
def test_a_copy_restores_alone_after_the_first_repository_is_gone(two_repos, drorch, tmp_path, kinds):
    data, main, dr, policy = two_repos(*kinds)
    treegen.generate(data, seed=21, files=50, big=2)
    expected = backup_chain(drorch, policy, data, 21)
    originals = listed(drorch, policy)

    result = drorch("copy", "--policy", policy, "--json")  # to the source's copy_to
    assert result.code == 0, result.err
    (copied,) = result.json()
    assert copied["copied"] == list(expected) and copied["repository"] == "dr"
    assert listed(drorch, policy, "--repository", "dr") == originals
    label = list(expected)[2]
    shown = drorch("show", "--policy", policy, "--repository", "dr", "--backup", label, "--json").json()
    assert shown["manifest"]["copy"]["from"] == json.loads((main / "config").read_bytes())["id"]

    shutil.rmtree(main)  # the main site is lost
    assert drorch("list", "--policy", policy).code == 1
    restores_exactly(drorch, policy, data, expected, tmp_path, "--repository", "dr")
    if kinds[1] == "sealed":  # nothing readable in an encrypted copy either
        names = {os.fsencode(p.name) for p in data.rglob("*") if len(p.name) >= 5}
        assert not [n for _, blob in every_byte(dr) for n in names if n in blob]


def test_copying_twice_copies_nothing_the_second_time(two_repos, drorch, tmp_path):
    data, main, dr, policy = two_repos("sealed", "sealed")
    treegen.generate(data, seed=22, files=30, big=1)
    first = backup_chain(drorch, policy, data, 22, ["full", "incr"])
    assert drorch("copy", "--policy", policy, "--source", SOURCE, "--to", "dr").code == 0
    state = tree_state(dr)
    again = drorch("copy", "--policy", policy, "--source", SOURCE, "--to", "dr", "--json").json()[0]
    assert again["copied"] == [] and again["present"] == list(first) and again["read_bytes"] == 0
    assert tree_state(dr) == state  # not one object rewritten
    human = drorch("copy", "--policy", policy)
    assert human.code == 0 and "nothing copied" in human.out

    later = backup_chain(drorch, policy, data, 23, ["diff", "incr"])  # only what is new is copied
    third = drorch("copy", "--policy", policy, "--json").json()[0]
    assert third["copied"] == list(later)
    assert {k: v for k, v in tree_state(dr).items() if k in state and not k.startswith("locks/")} == state
    shutil.rmtree(main)
    restores_exactly(drorch, policy, data, {**first, **later}, tmp_path, "--repository", "dr")


def test_a_damaged_blob_stops_the_copy_of_its_backup_before_the_commit(two_repos, drorch, tmp_path):
    data, main, dr, policy = two_repos("plain", "plain")
    for i in range(8):
        (data / f"f{i}").write_bytes(os.urandom(4000))
    label = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    entries = drorch("show", "--policy", policy, "--backup", label, "--files", "--json").json()["entries"]
    victim = next(e for e in entries if e.get("path", "").endswith("f3"))
    _, pack, offset, length, *_ = victim["blocks"][0]
    with open(main / "data" / SOURCE / label / f"p{pack:06d}", "r+b") as handle:
        handle.seek(offset + length // 2)
        byte = handle.read(1)
        handle.seek(offset + length // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = drorch("copy", "--policy", policy)
    assert result.code == 1 and "fails its checksum" in result.err and "Traceback" not in result.err
    assert listed(drorch, policy, "--repository", "dr") == []
    runs = drorch("list", "--policy", policy, "--repository", "dr", "--all", "--json").json()
    assert [(r["status"], r["phase"]) for r in runs] == [("failed", "copy")]


def test_a_target_holding_another_backup_of_the_same_label_is_refused(two_repos, drorch):
    data, main, dr, policy = two_repos("plain", "plain")
    (data / "f").write_text("x")
    label = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    assert drorch("copy", "--policy", policy).code == 0
    manifest = main / "manifests" / SOURCE / label  # make the source's backup differ from the copy
    body = manifest.read_bytes()
    doc = json.loads(zstandard.ZstdDecompressor().decompress(body[1:]) if body[0] == 1 else body[1:])
    doc["finished"] = "2030-01-01T00:00:00Z"
    manifest.write_bytes(b"\0" + json.dumps(doc).encode())
    state = tree_state(dr)
    result = drorch("copy", "--policy", policy)
    assert result.code == 1 and "already holds a different backup" in result.err
    assert {k: v for k, v in tree_state(dr).items() if not k.startswith("runs/")} == state


def test_copy_usage_errors(two_repos, drorch, tmp_path):
    data, main, dr, policy = two_repos("plain", "plain")
    (data / "f").write_text("x")
    assert drorch("backup", "--policy", policy).code == 0
    itself = drorch("copy", "--policy", policy, "--to", "main")
    assert itself.code == 2 and "cannot be a copy of itself" in itself.err
    unknown = drorch("copy", "--policy", policy, "--to", "nowhere")
    assert unknown.code == 2 and "no repository named 'nowhere'" in unknown.err
    alias = tmp_path / "alias.yaml"  # the same directory under a second name
    alias.write_text(policy.read_text().replace("  dr:\n", f"  same:\n    type: posix\n    path: {main}\n  dr:\n"))
    same = drorch("copy", "--policy", alias, "--to", "same")
    assert same.code == 1 and "are the same repository" in same.err


@pytest.mark.parametrize("line, message", [
    ("copy_to: [nowhere]", "no repository named 'nowhere'"),
    ("copy_to: [main]", "is the source's own repository"),
])
def test_copy_to_must_name_other_repositories(two_repos, drorch, line, message):
    data, main, dr, policy = two_repos()
    policy.write_text(policy.read_text().replace("copy_to: [dr]", line))
    result = drorch("policy", "check", str(policy))
    assert result.code == 2 and message in result.err
    assert f"{policy}:" in result.err  # FILE:LINE


# -- interrupted copies --------------------------------------------------------------------


@pytest.fixture
def half_copied(two_repos, drorch):
    """A sealed main with a chain of three; the DR site (sealed) already holds the full."""
    data, main, dr, policy = two_repos("sealed", "sealed")
    treegen.generate(data, seed=31, files=40, big=1)
    (data / "large.bin").write_bytes(os.urandom(20 * MiB))  # more than one pack
    expected = backup_chain(drorch, policy, data, 31, ["full"])
    assert drorch("copy", "--policy", policy).code == 0
    (data / "large.bin").write_bytes(os.urandom(20 * MiB))
    expected.update(backup_chain(drorch, policy, data, 32, ["incr", "diff"]))
    return data, main, dr, policy, expected


def _check_completes(drorch, policy, data, main, dr, expected, root):
    result = drorch("copy", "--policy", policy, "--json")
    assert result.code == 0, result.err
    assert listed(drorch, policy, "--repository", "dr") == listed(drorch, policy)
    assert listed(drorch, policy, "--repository", "dr", "--all") == listed(drorch, policy)  # no run left over
    data_labels = sorted(p.name for p in (dr / "data" / SOURCE).iterdir())
    assert data_labels == sorted(expected)  # leftovers of the interrupted copy are gone
    shutil.rmtree(main)
    restores_exactly(drorch, policy, data, expected, root, "--repository", "dr")


@pytest.mark.parametrize("point", [p for p in COPY_POINTS if p != "copy-after-manifest"])
def test_an_interrupted_copy_lists_nothing_and_the_next_completes(half_copied, drorch, tmp_path, point):
    data, main, dr, policy, expected = half_copied
    full = list(expected)[0]
    killed = run_cli("copy", "--policy", policy, env={"DRORCH_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [row[0] for row in listed(drorch, policy, "--repository", "dr")] == [full]
    every = listed(drorch, policy, "--repository", "dr", "--all")
    assert sorted(row[3] for row in every) == ["incomplete", "ok"]
    _check_completes(drorch, policy, data, main, dr, expected, tmp_path)


def test_a_copy_killed_after_a_commit_keeps_what_it_committed(half_copied, drorch, tmp_path):
    data, main, dr, policy, expected = half_copied
    killed = run_cli("copy", "--policy", policy, env={"DRORCH_FAULT": "copy-after-manifest"})
    assert killed.returncode == -signal.SIGKILL
    assert [row[0] for row in listed(drorch, policy, "--repository", "dr")] == list(expected)[:2]
    _check_completes(drorch, policy, data, main, dr, expected, tmp_path)


def _kill_when(policy, ready, timeout=30.0) -> bool:
    """Run a copy and SIGKILL it from outside as soon as ready() is true; False if it finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "drorch.cli.main", "copy", "--policy", str(policy)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.001)
        return proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_a_copy_killed_from_outside_while_it_writes(half_copied, drorch, tmp_path):
    data, main, dr, policy, expected = half_copied
    full, incr, diff = expected
    moments = {  # what the copy has written when it is killed
        "first pack of the incr": lambda: any((dr / "data" / SOURCE / incr).glob("p*")),
        "incr committed": lambda: (dr / "manifests" / SOURCE / incr).exists(),
        "first pack of the diff": lambda: any((dr / "data" / SOURCE / diff).glob("p*")),
    }
    for step, (name, ready) in enumerate(moments.items()):
        assert _kill_when(policy, ready), f"the copy finished before: {name}"
        for label, *_ in listed(drorch, policy, "--repository", "dr"):  # whatever is listed restores
            target = tmp_path / f"r-{label}-{step}"
            result = drorch("restore", "--policy", policy, "--repository", "dr", "--backup", label,
                            "--target", target)
            assert result.code == 0, result.err
            assert treegen.diff(expected[label], treegen.snapshot(target / str(data).lstrip("/"))) == []
        if name == "incr committed":
            assert [row[0] for row in listed(drorch, policy, "--repository", "dr")] == [full, incr]
    _check_completes(drorch, policy, data, main, dr, expected, tmp_path / "final")
