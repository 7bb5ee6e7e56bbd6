"""The tar reader of SSH batched reads (hosts/tarstream.py) on real GNU tar
output: pax headers give each file's stat before the read exactly (odd and
long names, whole-second mtimes), and tar's warnings name files exactly."""

from __future__ import annotations

import io
import os
import subprocess

from drorch.hosts.remote import _TAR
from drorch.hosts.tarstream import TarReader, named_in_warnings

NAMES = ["plain", "new\nline", os.fsdecode(b"raw\xff\xfe"), "x" * 200, 'q"uote\\back', "tab\there", "empty"]


def _tar(listing: bytes, cwd) -> subprocess.CompletedProcess:
    line = _TAR.decode().replace('"$i"', "-")  # the command remote.py sends, fed the list on stdin
    return subprocess.run(line, shell=True, input=listing, capture_output=True, cwd=cwd,
                          env={**os.environ, "LC_ALL": "C"})


def test_members_carry_the_stat_tar_took_before_the_read(tmp_path):
    paths = []
    for i, name in enumerate(NAMES):
        path = tmp_path / name
        path.write_bytes(os.urandom(i * 700))
        paths.append(path)
    os.utime(paths[0], ns=(0, 1_500_000_000_000_000_000))  # whole seconds: mtime from the ustar header
    os.utime(paths[1], ns=(0, 1_500_000_000_123_456_789))
    os.chmod(paths[2], 0o4751)
    out = _tar(b"".join(os.fsencode(p) + b"\0" for p in paths), tmp_path)
    assert out.returncode == 0, out.stderr
    got = {m[0]: m for m in TarReader(io.BytesIO(out.stdout).read).members(1 << 20)}
    assert sorted(got) == sorted(str(p) for p in paths)
    for path in paths:
        name, data, size, mode, uid, gid, mtime_ns, ctime_ns = got[str(path)]
        st = os.lstat(path)
        assert data == path.read_bytes() and size == st.st_size
        assert (mode, uid, gid, mtime_ns, ctime_ns) == (st.st_mode & 0o7777, st.st_uid, st.st_gid,
                                                        st.st_mtime_ns, st.st_ctime_ns)


def test_a_limit_keeps_the_first_bytes_and_the_stream_stays_in_step(tmp_path):
    (tmp_path / "big").write_bytes(os.urandom(100_000))
    (tmp_path / "after").write_bytes(b"next")
    out = _tar(os.fsencode(tmp_path / "big") + b"\0" + os.fsencode(tmp_path / "after") + b"\0", tmp_path)
    members = list(TarReader(io.BytesIO(out.stdout).read).members(1000))
    assert [(m[1], m[2]) for m in members] == [((tmp_path / "big").read_bytes()[:1000], 100_000), (b"next", 4)]


def test_missing_files_are_named_in_the_warnings(tmp_path):
    (tmp_path / "here").write_bytes(b"x")
    gone = tmp_path / os.fsdecode(b"gone \xff\nname")
    out = _tar(os.fsencode(tmp_path / "here") + b"\0" + os.fsencode(gone) + b"\0", tmp_path)
    assert out.returncode == 2
    assert [m[0] for m in TarReader(io.BytesIO(out.stdout).read).members(10)] == [str(tmp_path / "here")]
    assert named_in_warnings(out.stderr) == {str(gone)}
