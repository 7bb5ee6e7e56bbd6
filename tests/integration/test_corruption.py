"""Corruption: one flipped byte in a pack fails the restore of the affected file
(named, with the backup); the other files restore, also with --include."""

from __future__ import annotations

import os


def test_flipped_byte_names_the_file_and_others_restore(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    contents = {f"file-{i}.txt": os.urandom(3000 + i) for i in range(10)}
    for name, body in contents.items():
        (data / name).write_bytes(body)
    backup = drorch("backup", "--policy", policy, "--type", "full", "--json").json()
    label = backup["label"]
    shown = drorch("show", "--policy", policy, "--backup", label, "--files", "--json").json()
    victim = next(e for e in shown["entries"] if e.get("path", "").endswith("file-4.txt"))
    ref_label, pack, offset, length, raw, sha = victim["blocks"][0]
    pack_path = repo / "data" / "files1" / ref_label / f"p{pack:06d}"
    with open(pack_path, "r+b") as handle:
        handle.seek(offset + length // 2)
        byte = handle.read(1)
        handle.seek(offset + length // 2)
        handle.write(bytes([byte[0] ^ 0x01]))

    target = tmp_path / "restore"
    result = drorch("restore", "--policy", policy, "--target", target)
    assert result.code == 1
    assert "file-4.txt" in result.err and label in result.err
    assert "Traceback" not in result.err
    restored = target / str(data).lstrip("/")
    assert not (restored / "file-4.txt").exists()  # never left looking good
    for name, body in contents.items():
        if name != "file-4.txt":
            assert (restored / name).read_bytes() == body

    subset = tmp_path / "subset"
    result = drorch("restore", "--policy", policy, "--target", subset, "--include", "*/file-[0-35-9].txt")
    assert result.code == 0, result.err
    got = sorted(p.name for p in (subset / str(data).lstrip("/")).iterdir())
    assert got == sorted(n for n in contents if n != "file-4.txt")


def test_missing_pack_names_the_object(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    (data / "a.txt").write_text("a" * 5000)
    label = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    for pack in (repo / "data" / "files1" / label).glob("p*"):
        pack.unlink()
    result = drorch("restore", "--policy", policy, "--target", tmp_path / "r")
    assert result.code == 1
    assert "a.txt" in result.err and "missing" in result.err
