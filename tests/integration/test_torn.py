"""A file that changes while it is read is re-read, and flagged torn when it
keeps changing: never silently stored torn."""

from __future__ import annotations

import subprocess
import sys
import time

from drorch.repo.manifest import read_entries
from drorch.repo.repository import Repository
from drorch.storage.posix import PosixStorage

# Generation g rewrites the whole file in place (same size, so only the mtime
# could tell, and it only ticks every few milliseconds): every byte g % 251.
# The kernel writes front to back, so at any instant the file is generation g
# up to some point and g - 1 after it.  A copy with an older generation before
# a newer one was read across a rewrite: torn.
WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
g = 0
while True:
    g += 1
    os.pwrite(fd, bytes([g % 251]) * 200_000, 0)
"""


def consistent(data: bytes) -> bool:
    """A state the file had at one instant: one run, or run v then run v - 1."""
    runs = [data[0]] + [data[i] for i in range(1, len(data)) if data[i] != data[i - 1]]
    return len(data) == 200_000 and (len(runs) == 1 or (len(runs) == 2 and (runs[0] - runs[1]) % 251 == 1))


def test_a_file_that_keeps_changing_is_flagged_or_stored_consistent(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    (data / "stable.txt").write_text("stable\n")
    busy = data / "busy.bin"
    # Highest priority, so that it keeps rewriting the file even on a loaded machine.
    writer = subprocess.Popen(["nice", "-n", "-20", sys.executable, "-c", WRITER, str(busy)])
    flagged = []
    try:
        while not busy.exists() or busy.stat().st_size < 200_000:
            time.sleep(0.01)
        for run in range(20):
            result = drorch("backup", "--policy", policy, "--type", "full", "--json")
            assert result.code == 0, result.err
            backup = result.json()
            storage_repo = Repository.open(PosixStorage(repo))
            from drorch.repo.catalog import Catalog
            manifest = Catalog(storage_repo).manifest("files1", backup["label"])
            entry = next(e for e in read_entries(storage_repo, manifest) if e.path.endswith("busy.bin"))
            if entry.flags == ["torn"]:
                assert backup["stats"]["torn_files"] == 1
                assert any("busy.bin" in w and "torn" in w for w in backup["warnings"])
                flagged.append(backup["label"])
                break
            # not flagged: the stored copy must be one the file really had
            target = tmp_path / f"r{run}"
            assert drorch("restore", "--policy", policy, "--backup", backup["label"], "--target", target).code == 0
            assert consistent((target / str(busy).lstrip("/")).read_bytes()), "stored torn without a flag"
    finally:
        writer.kill()
        writer.wait()
    assert flagged, "a file rewritten continuously was never detected as changing"
    human = drorch("show", "--policy", policy, "--backup", flagged[0])
    assert "busy.bin" in human.out and "torn" in human.out


def test_no_false_torn_alarms_on_a_quiet_tree(files_setup, drorch):
    data, repo, policy = files_setup
    for i in range(50):
        (data / f"f{i}").write_bytes(bytes([i]) * (i * 1000))
    backup = drorch("backup", "--policy", policy, "--type", "full", "--json").json()
    assert backup["stats"]["torn_files"] == 0 and backup["warnings"] == []
