"""The host interface, the same on `local` and over SSH: commands (argv,
exit status, stdout and stderr, stdin streams, timeouts, shell strings),
streamed reads and writes, and what a walk reports."""

from __future__ import annotations

import io
import os
import time

import pytest

from drorch.errors import HostError
from drorch.factory import close_hosts, make_host
from drorch.policy import load_policy
from tests import treegen
from tests.sshd import sshd, write_remote_policy  # noqa: F401  (fixture)


@pytest.fixture(params=["local", "remote"])
def host(request, sshd, tmp_path):
    policy = load_policy(write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, ["/tmp"]))
    yield make_host(policy, request.param)
    close_hosts()


def test_run_returns_status_stdout_and_stderr_apart(host):
    result = host.run(["sh", "-c", "printf 'out\\0put'; echo err >&2; exit 7"])
    assert (result.exit_status, result.stdout, result.stderr) == (7, b"out\0put", b"err\n")


def test_argv_words_are_passed_as_they_are(host):
    words = ["it's", "a b", "$(rm -rf /nonexistent)", "new\nline", "*", "ünï", os.fsdecode(b"\xff")]
    result = host.run(["printf", "%s\\0", *words])
    assert result.stdout.split(b"\0")[:-1] == [os.fsencode(w) for w in words]
    assert host.run("echo $((6 * 7))", shell=True).stdout == b"42\n"
    with pytest.raises(TypeError):
        host.run("echo no shell asked for")


@pytest.mark.parametrize("kind", ["bytes", "chunks", "file"])
def test_stdin_streams(host, kind):
    blob = os.urandom(3 << 20)
    stdin = {"bytes": blob, "chunks": (blob[i:i + 65536] for i in range(0, len(blob), 65536)),
             "file": io.BytesIO(blob)}[kind]
    result = host.run(["sha256sum"], stdin=stdin)
    import hashlib
    assert result.stdout.split()[0].decode() == hashlib.sha256(blob).hexdigest()


def test_a_command_past_its_timeout_is_stopped(host):
    started = time.monotonic()
    with pytest.raises(HostError, match="did not finish within 1s"):
        host.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - started < 10


def test_start_streams_output(host):
    process = host.start(["sh", "-c", "head -c 5000000 /dev/zero; echo done >&2"])
    total = 0
    while chunk := process.read(1 << 16):
        total += len(chunk)
    result = process.wait()
    assert total == 5_000_000 and result.exit_status == 0 and result.stderr == b"done\n"


def test_put_and_open_read_stream_whole_files(host, tmp_path):
    blob = os.urandom(9 << 20) + b"end"
    path = str(tmp_path / "put.bin")
    assert host.put(path, (blob[i:i + 1_000_000] for i in range(0, len(blob), 1_000_000)), 0o640) == len(blob)
    assert (tmp_path / "put.bin").read_bytes() == blob
    assert oct((tmp_path / "put.bin").stat().st_mode & 0o7777) == "0o640"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".drorch-")] == []
    stream = host.open_read(path, 100)
    got = b""
    while chunk := stream.read(777_777):
        got += chunk
    stream.close()
    assert got == blob[100:]
    assert host.put(path, []) == 0 and (tmp_path / "put.bin").read_bytes() == b""


def test_put_of_a_failing_stream_leaves_nothing(host, tmp_path):
    def chunks():
        yield b"x" * 100
        raise RuntimeError("the source broke")
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(RuntimeError):
        host.put(str(target / "never"), chunks())
    assert list(target.iterdir()) == []


def test_walks_agree(sshd, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, 61)
    policy = load_policy(write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, [data]))
    local, remote = make_host(policy, "local"), make_host(policy, "remote")
    try:
        def prune(path, is_dir):
            return path.endswith("7") and is_dir

        def listing(host):
            return [(p, tuple(st)[:7], st.st_mtime_ns, st.st_ctime_ns, st.st_rdev, target)
                    for p, st, target in host.walk(str(data), prune)]
        assert listing(remote) == listing(local)
        assert remote.lstat(str(data / "nope")) is None
        with pytest.raises(FileNotFoundError):
            remote.read(str(data / "nope"))
    finally:
        close_hosts()


def test_key_re_exchanges_in_the_middle_of_many_commands(sshd, tmp_path, monkeypatch):
    """paramiko's own thread deadlocks when a channel closes during a re-key;
    drorch's transport defers that reply (here: a re-key every 2 MiB)."""
    from concurrent.futures import ThreadPoolExecutor

    from drorch.hosts import ssh
    monkeypatch.setattr(ssh._Transport, "REKEY_BYTES", 2 << 20)
    policy = load_policy(write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, ["/tmp"]))
    host = make_host(policy, "remote")
    try:
        with ThreadPoolExecutor(4) as pool:
            sizes = list(pool.map(lambda i: len(host.run(["head", "-c", "1500000", "/dev/zero"]).stdout), range(60)))
        assert sizes == [1_500_000] * 60
        assert host.read("/dev/zero", 0, 9 << 20) == bytes(9 << 20)  # through a shell, many re-keys
    finally:
        close_hosts()


def test_read_many_reads_a_batch_in_one_request(sshd, tmp_path):
    data = tmp_path / "batch"
    data.mkdir()
    names = ["plain", "with space", "it's", "new\nline", os.fsdecode(b"raw\xff"), "x" * 200, "empty"]
    for i, name in enumerate(names):
        (data / name).write_bytes(os.urandom(i * 1000))
    (data / "big").write_bytes(b"b" * 300_000)
    os.link(data / "plain", data / "hard")  # tar would store a hard link without its bytes
    paths = [str(data / n) for n in [*names, "big", "hard", "missing"]]
    policy = load_policy(write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, ["/tmp"]))
    host = make_host(policy, "remote")
    try:
        got = host.read_many(paths, 100_001)
        assert sorted(got) == sorted(paths[:-1])  # the missing one is left out
        for path in paths[:-1]:
            data_read, st = got[path]
            whole = open(path, "rb").read()
            assert data_read == whole[:100_001]
            assert st.st_mtime_ns == os.lstat(path).st_mtime_ns and st.st_size == len(whole)
    finally:
        close_hosts()


def test_channels_stay_within_max_channels(sshd, tmp_path):
    """Threads share the one connection: with max_channels 2, eight threads reading
    and running commands all finish, never with more than 2 channels open."""
    from concurrent.futures import ThreadPoolExecutor

    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(1 << 20))
    policy = load_policy(write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, ["/tmp"],
                                             host_options={"max_channels": 2}))
    host = make_host(policy, "remote")
    most = []

    def work(i):
        if i % 3 == 0:
            assert host.run(["true"]).exit_status == 0
        else:
            assert host.read(str(blob), 0, 1 << 20) == blob.read_bytes()
        most.append(host.connection.channels_in_use)

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(40)))
        assert max(most) <= 2
    finally:
        close_hosts()


def test_user_and_group_names_come_from_the_host(host):
    import grp
    import pwd
    assert host.user_name(0) == pwd.getpwuid(0).pw_name and host.group_name(0) == grp.getgrgid(0).gr_name
    assert host.user_name(4_000_000) is None and host.group_name(4_000_000) is None
