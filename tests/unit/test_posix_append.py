"""posix storage: objects appended piece by piece (packs as they fill) are
invisible until committed, an aborted one leaves nothing, and expire's
discard_partial removes what a dead writer left half written."""

from __future__ import annotations

from drorch.storage.posix import PosixStorage


def test_an_appended_object_appears_whole_at_commit_and_is_durable_after_sync(tmp_path):
    storage = PosixStorage(tmp_path / "repo")
    out = storage.open_append("data/s/L/p000000")
    out.write(b"abc")
    out.write(memoryview(b"defg"))
    assert storage.stat("data/s/L/p000000") is None  # not there until committed
    assert [i.key for i in storage.list("data/")] == []
    out.commit()
    storage.sync()
    assert storage.get("data/s/L/p000000") == b"abcdefg"
    assert storage.get_range("data/s/L/p000000", 3, 2) == b"de"


def test_an_aborted_append_leaves_nothing(tmp_path):
    storage = PosixStorage(tmp_path / "repo")
    out = storage.open_append("data/s/L/p000001")
    out.write(b"half")
    out.abort()
    assert storage.stat("data/s/L/p000001") is None
    assert list((tmp_path / "repo" / "data" / "s" / "L").iterdir()) == []


def test_discard_partial_removes_a_dead_writers_half_object_and_empty_directories(tmp_path):
    storage = PosixStorage(tmp_path / "repo")
    storage.put("data/s/OTHER/p000000", b"kept")
    out = storage.open_append("data/s/L/p000002")
    out.write(b"half")  # the writer dies here: its file stays behind
    assert storage.discard_partial("data/s/L/") == 1
    assert not (tmp_path / "repo" / "data" / "s" / "L").exists()
    assert storage.get("data/s/OTHER/p000000") == b"kept"
    assert storage.discard_partial("data/s/NONE/") == 0
