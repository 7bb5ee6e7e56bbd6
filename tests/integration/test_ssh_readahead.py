"""Batches of small files sent ahead to an SSH host (SshHost.start_read_many,
hosts/readahead.py): every answer exact and in place whatever the order it is
asked for, odd names, missing files left out, a stat after the read that shows
a change made after the walk, and a connection cut while batches are in
flight (everything sent again, answers exact)."""

from __future__ import annotations

import os

import pytest

from drorch.errors import HostUnreachableError
from drorch.factory import close_hosts, make_host
from drorch.policy import load_policy
from tests.sshd import SessionKiller, sshd, write_remote_policy  # noqa: F401  (fixture)

ODD = ["plain", "with space", "it's", "new\nline", os.fsdecode(b"raw\xff\xfe"), "x" * 200, "empty", "tab\there"]


def _host(sshd, tmp_path, **options):
    policy = load_policy(write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, ["/tmp"],
                                             host_options=options or None))
    return make_host(policy, "remote")


def _tree(root, count: int) -> list[str]:
    root.mkdir()
    paths = []
    for i in range(count):
        name = ODD[i % len(ODD)] + f"-{i}"
        (root / name).write_bytes(os.urandom(i * 37 % 5000))
        paths.append(str(root / name))
    return paths


@pytest.fixture(autouse=True)
def _close():
    yield
    close_hosts()


def test_batches_sent_ahead_are_answered_exactly_in_any_order(sshd, tmp_path):
    paths = _tree(tmp_path / "t", 600)
    os.link(paths[3], tmp_path / "t" / "hard")  # read as a file, not as tar's link member
    batches = [paths[i:i + 50] for i in range(0, len(paths), 50)]
    batches[-1] += [str(tmp_path / "t" / "hard"), str(tmp_path / "t" / "missing")]
    host = _host(sshd, tmp_path)
    answers = [host.start_read_many(batch, 100_000) for batch in batches]
    for batch, answer in reversed(list(zip(batches, answers))):  # asked for in reverse: still each its own
        got = answer()
        present = [p for p in batch if os.path.lexists(p)]
        assert sorted(got) == sorted(present)  # the missing file is left out
        for path in present:
            data, st = got[path]
            assert data == open(path, "rb").read()
            local = os.lstat(path)
            # the stat tar took before the read (pax headers); tar records no inode: 0
            assert (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid, st.st_gid, st.st_ino) == (
                local.st_size, local.st_mtime_ns, local.st_ctime_ns, local.st_mode, local.st_uid, local.st_gid, 0)
    assert host.read_many(batches[0], 100_000) == answers[0]()  # the one-request way agrees


def test_the_stat_tar_took_shows_a_change_made_after_the_walk(sshd, tmp_path):
    paths = _tree(tmp_path / "t", 20)
    host = _host(sshd, tmp_path)
    walked = {path: st for path, st, _ in host.walk(str(tmp_path / "t"), lambda p, d: False)}
    with open(paths[5], "ab") as handle:
        handle.write(b"grown after the walk")
    os.unlink(paths[6])
    got = host.start_read_many(paths, 100_000)()
    data, st = got[paths[5]]
    assert data.endswith(b"grown after the walk")
    assert st.st_size == len(data) != walked[paths[5]].st_size  # the pipeline sees the change and re-reads
    assert st.st_ctime_ns >= walked[paths[5]].st_ctime_ns
    assert paths[6] not in got  # vanished: left out


def test_a_connection_cut_while_batches_are_in_flight_sends_them_again(sshd, tmp_path):
    paths = _tree(tmp_path / "t", 2000)
    (tmp_path / "t" / "slow").write_bytes(bytes(128 << 20))  # tar runs long enough to be seen and cut
    paths.insert(150, str(tmp_path / "t" / "slow"))
    batches = [paths[i:i + 100] for i in range(0, len(paths), 100)]
    host = _host(sshd, tmp_path)
    host.connect()
    logins = sshd.server.logins()
    with SessionKiller(sshd.server, b"tar -c") as killer:
        answers = [host.start_read_many(batch, 100_000) for batch in batches]
        results = [answer() for answer in answers]
    assert killer.kills == 1
    assert sshd.server.logins() > logins  # connected again
    for batch, got in zip(batches, results):
        assert sorted(got) == sorted(batch)
        for path in batch:
            assert got[path][0] == open(path, "rb").read()[:100_000]


def test_a_connection_that_keeps_dropping_fails_the_batches_cleanly(sshd, tmp_path):
    paths = _tree(tmp_path / "t", 200)
    (tmp_path / "t" / "slow").write_bytes(bytes(256 << 20))  # tar runs long enough to be seen
    host = _host(sshd, tmp_path)
    host.connect()
    with SessionKiller(sshd.server, b"tar -c", times=1000, relentless=True):
        answer = host.start_read_many([str(tmp_path / "t" / "slow"), *paths], 100_000)
        with pytest.raises(HostUnreachableError, match="(lost the connection to|cannot connect to) host remote"):
            answer()


def test_with_one_channel_batches_are_read_one_request_at_a_time(sshd, tmp_path):
    paths = _tree(tmp_path / "t", 30)
    host = _host(sshd, tmp_path, max_channels=1)
    got = host.start_read_many(paths, 100_000)()
    assert {p: d for p, (d, _) in got.items()} == {p: open(p, "rb").read() for p in paths}
    assert host.connection.channels_in_use <= 1
