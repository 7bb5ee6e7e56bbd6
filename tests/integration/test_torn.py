"""A file that changes while it is read is re-read, and flagged torn when it
keeps changing: never silently stored torn."""

from __future__ import annotations

import subprocess
import sys
import time

WRITER = r"""
import os, sys
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
while True:
    os.write(fd, b"x" * 100)
    if os.fstat(fd).st_size > 3_000_000:
        os.ftruncate(fd, 0)
"""


def test_a_file_that_keeps_changing_is_flagged_torn(files_setup, drorch):
    data, repo, policy = files_setup
    (data / "stable.txt").write_text("stable\n")
    busy = data / "busy.log"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(busy)])
    try:
        while not busy.exists() or busy.stat().st_size < 1000:
            time.sleep(0.01)
        result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    finally:
        writer.kill()
        writer.wait()
    assert result.code == 0, result.err
    backup = result.json()
    assert backup["stats"]["torn_files"] == 1
    assert any("busy.log" in w and "torn" in w for w in backup["warnings"])
    shown = drorch("show", "--policy", policy, "--backup", backup["label"], "--files", "--json").json()
    flags = {e["path"].rsplit("/", 1)[-1]: e.get("flags") for e in shown["entries"]}
    assert flags["busy.log"] == ["torn"] and flags["stable.txt"] is None
    human = drorch("show", "--policy", policy, "--backup", backup["label"])
    assert "busy.log" in human.out and "torn" in human.out


def test_no_false_torn_alarms_on_a_quiet_tree(files_setup, drorch):
    data, repo, policy = files_setup
    for i in range(50):
        (data / f"f{i}").write_bytes(bytes([i]) * (i * 1000))
    backup = drorch("backup", "--policy", policy, "--type", "full", "--json").json()
    assert backup["stats"]["torn_files"] == 0 and backup["warnings"] == []
