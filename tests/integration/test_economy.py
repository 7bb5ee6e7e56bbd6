"""Move only what changed: an incr after a small change to a large file stores
only the changed blocks."""

from __future__ import annotations

import os

MiB = 1 << 20


def test_incr_of_one_changed_region_stores_at_most_two_mib(files_setup, drorch):
    data, repo, policy = files_setup
    big = data / "big.bin"
    big.write_bytes(os.urandom(64 * MiB))
    small = data / "small.conf"
    small.write_text("setting = 1\n" * 50)
    for i in range(20):
        (data / f"other-{i}.txt").write_text(f"unchanged {i}\n")
    full = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert full.code == 0, full.err
    assert full.json()["stats"]["stored_bytes"] >= 64 * MiB  # random bytes do not compress

    with open(big, "r+b") as handle:  # overwrite one aligned 1 MiB region
        handle.seek(17 * MiB)
        handle.write(os.urandom(MiB))
    small.write_text("setting = 2\n" * 50)
    incr = drorch("backup", "--policy", policy, "--type", "incr", "--json")
    assert incr.code == 0, incr.err
    stats = incr.json()["stats"]
    assert stats["changed_files"] == 2 and stats["unchanged_files"] == 20
    assert stats["stored_bytes"] <= 2 * MiB + small.stat().st_size, stats

    # and the incr restores the big file exactly
    target = data.parent / "restore"
    assert drorch("restore", "--policy", policy, "--target", target).code == 0
    assert (target / str(big).lstrip("/")).read_bytes() == big.read_bytes()


def test_checksum_mode_rereads_but_stores_nothing_new(files_setup, drorch):
    data, repo, policy = files_setup
    (data / "big.bin").write_bytes(os.urandom(3 * MiB))
    (data / "a.txt").write_text("a" * 1000)
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    result = drorch("backup", "--policy", policy, "--type", "incr", "--checksum", "--json").json()
    assert result["stats"]["read_bytes"] >= 3 * MiB  # everything re-read
    assert result["stats"]["stored_bytes"] < 64 * 1024  # only the entries object
