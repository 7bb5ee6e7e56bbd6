"""The CLI end to end on a tiny tree: backup, list, restore."""

from __future__ import annotations


def test_full_backup_lists_and_restores(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    (data / "hello.txt").write_text("hello\n")
    result = drorch("backup", "--policy", policy, "--type", "full")
    assert result.code == 0, result.err
    listed = drorch("list", "--policy", policy, "--json").json()
    assert [row["type"] for row in listed] == ["full"]
    target = tmp_path / "restore"
    result = drorch("restore", "--policy", policy, "--target", target)
    assert result.code == 0, result.err
    assert (target / str(data).lstrip("/") / "hello.txt").read_text() == "hello\n"
