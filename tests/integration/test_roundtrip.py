"""Round trip: each backup of a chain full -> incr -> incr -> diff -> incr
restores exactly the tree as it was when that backup was taken."""

from __future__ import annotations

import pytest

from tests import treegen

CHAIN = ["full", "incr", "incr", "diff", "incr"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_backup_of_a_chain_restores_exactly(files_setup, drorch, tmp_path, seed, monkeypatch):
    if seed == 3:  # files handed to the restore workers in many small chunks (packs read in parts)
        monkeypatch.setattr("drorch.engine.restore.CHUNK_FILES", 3)
    data, repo, policy = files_setup
    treegen.generate(data, seed)
    expected = {}
    for step, btype in enumerate(CHAIN):
        if step:
            treegen.mutate(data, seed * 100 + step)
        result = drorch("backup", "--policy", policy, "--type", btype, "--json")
        assert result.code == 0, result.err
        backup = result.json()
        assert backup["type"] == btype
        expected[backup["label"]] = treegen.snapshot(data)

    listed = drorch("list", "--policy", policy, "--json").json()
    assert [row["label"] for row in listed] == list(expected)
    assert [row["type"] for row in listed] == CHAIN
    for label, snap in expected.items():
        target = tmp_path / f"restore-{label}"
        result = drorch("restore", "--policy", policy, "--backup", label, "--target", target)
        assert result.code == 0, result.err
        restored = treegen.snapshot(target / str(data).lstrip("/"))
        assert treegen.diff(snap, restored) == [], f"backup {label} did not restore exactly"


def test_parents_follow_the_chain_rules(files_setup, drorch):
    data, repo, policy = files_setup
    (data / "f").write_text("1")
    labels = []
    for btype in CHAIN:
        (data / "f").write_text(str(len(labels)))
        labels.append(drorch("backup", "--policy", policy, "--type", btype, "--json").json()["label"])
    rows = {r["label"]: r for r in drorch("list", "--policy", policy, "--json").json()}
    full, incr1, incr2, diff, incr3 = labels
    assert rows[full]["parent"] is None
    assert rows[incr1]["parent"] == full
    assert rows[incr2]["parent"] == incr1
    assert rows[diff]["parent"] == full  # a diff builds on the last full, not on incrs
    assert rows[incr3]["parent"] == diff
    assert labels == sorted(labels)
    assert [label[-1] for label in labels] == ["F", "I", "I", "D", "I"]


def test_incr_without_a_full_runs_as_full_and_says_so(files_setup, drorch):
    data, repo, policy = files_setup
    (data / "f").write_text("x")
    result = drorch("backup", "--policy", policy, "--type", "incr", "--json")
    assert result.code == 0, result.err
    out = result.json()
    assert out["type"] == "full" and out["requested_type"] == "incr"
    assert "no full backup" in out["why"]
    human = drorch("backup", "--policy", policy, "--type", "diff")
    assert human.code == 0 and "(diff" in human.out
