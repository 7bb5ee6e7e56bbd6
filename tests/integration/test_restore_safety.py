"""Restore safety: a non-empty target is refused and untouched; a crafted
manifest with '../' paths is rejected; --force and --delta do what they say."""

from __future__ import annotations

import hashlib
import json
import os

from drorch.repo import layout
from drorch.repo.manifest import decode_entries, encode_entries
from drorch.repo.repository import Repository
from drorch.storage.posix import PosixStorage
from tests import treegen


def _listing(root):
    return sorted((str(p), p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
                  for p in root.rglob("*"))


def test_non_empty_target_is_refused_and_untouched(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    (data / "a.txt").write_text("from backup\n")
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    target = tmp_path / "target"
    (target / "keep").mkdir(parents=True)
    (target / "keep" / "mine.txt").write_text("precious\n")
    before = _listing(target)
    result = drorch("restore", "--policy", policy, "--target", target)
    assert result.code == 1
    assert "not empty" in result.err and "--delta" in result.err and "--force" in result.err
    assert _listing(target) == before


def test_force_overwrites_and_delta_makes_identical(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    treegen.generate(data, seed=11, files=30, big=1)
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    expected = treegen.snapshot(data)
    target = tmp_path / "target"
    assert drorch("restore", "--policy", policy, "--target", target).code == 0
    restored = target / str(data).lstrip("/")
    treegen.mutate(restored, 5)  # damage the restored copy in many ways
    (restored / "extra-file").write_text("not in the backup")
    assert treegen.diff(expected, treegen.snapshot(restored))

    result = drorch("restore", "--policy", policy, "--target", target, "--delta", "--json")
    assert result.code == 0, result.err
    out = result.json()
    assert out["removed"] >= 1 and out["unchanged_files"] > 0
    assert treegen.diff(expected, treegen.snapshot(restored)) == []

    (restored / "extra-file").write_text("kept by --force")
    assert drorch("restore", "--policy", policy, "--target", target, "--force").code == 0
    assert (restored / "extra-file").read_text() == "kept by --force"
    snap = treegen.snapshot(restored)
    snap.pop(b"extra-file")
    assert treegen.diff(expected, snap) == []


def _rewrite_entries(repo_path, label, change):
    repo = Repository.open(PosixStorage(repo_path))
    manifest_key = layout.manifest_key("files1", label)
    manifest = json.loads(repo.get_blob(manifest_key))
    entries = list(decode_entries(repo.get_blob(manifest["entries"]["key"])))
    change(entries)
    blob = repo.put_blob(manifest["entries"]["key"], encode_entries(entries))
    manifest["entries"]["sha256"] = hashlib.sha256(blob).hexdigest()
    repo.put_blob(manifest_key, json.dumps(manifest).encode())


def test_crafted_manifest_with_dotdot_is_rejected(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    (data / "payload.txt").write_text("evil\n")
    label = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]

    def escape(entries):
        for entry in entries:
            if entry.path.endswith("payload.txt"):
                entry.path = "../../../../../../tmp/drorch-escape-" + str(os.getpid())
    _rewrite_entries(repo, label, escape)
    target = tmp_path / "target"
    result = drorch("restore", "--policy", policy, "--target", target)
    assert result.code == 1
    assert "unsafe path" in result.err and "Traceback" not in result.err
    assert not os.path.exists(f"/tmp/drorch-escape-{os.getpid()}")
    assert not target.exists() or not any(target.iterdir())


def test_time_selects_newest_backup_finished_at_or_before(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    labels = []
    for i, btype in enumerate(["full", "incr", "incr"]):
        (data / "v.txt").write_text(f"version {i}\n")
        labels.append(drorch("backup", "--policy", policy, "--type", btype, "--json").json())
    rows = drorch("list", "--policy", policy, "--json").json()
    middle = rows[1]["finished"]
    target = tmp_path / "t"
    assert drorch("restore", "--policy", policy, "--time", middle, "--target", target).code == 0
    assert (target / str(data).lstrip("/") / "v.txt").read_text() == "version 1\n"
    early = drorch("restore", "--policy", policy, "--time", "2000-01-01T00:00:00Z", "--target", tmp_path / "u")
    assert early.code == 1 and "no backup" in early.err
    bad = drorch("restore", "--policy", policy, "--time", "yesterday", "--target", tmp_path / "w")
    assert bad.code == 2 and "ISO 8601" in bad.err
