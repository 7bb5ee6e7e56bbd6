"""Remote metadata parsing, checked against os.lstat on real files with GNU
find and stat run here: times exact to the nanosecond, before 1970 too."""

from __future__ import annotations

import os
import subprocess

import pytest

from drorch.hosts.findstat import STAT_FORMAT, decimal_ns, parse_stat, parse_stream, sort_key, time_ns, touch_time
from drorch.hosts.shell import FIND_FORMAT

TIMES = [0, 1, 1_500_000_000_123_456_789, -1_750_000_000, -1, -999_999_999, 4_102_444_800_999_999_999]


@pytest.fixture
def files(tmp_path):
    paths = []
    for i, ns in enumerate(TIMES):
        path = tmp_path / f"f{i} odd\nname"
        path.write_bytes(b"x" * i)
        os.utime(path, ns=(ns, ns))
        paths.append(path)
    os.symlink("f0 odd\nname", tmp_path / "link")
    return paths + [tmp_path / "link"]


def _same(st, path):
    real = os.lstat(path)
    assert (st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size) == tuple(real)[:7]
    assert (st.st_mtime_ns, st.st_ctime_ns) == (real.st_mtime_ns, real.st_ctime_ns)


def test_find_records_match_lstat(files):
    out = subprocess.run(["find", *map(str, files), "-maxdepth", "0", "-printf", FIND_FORMAT],
                         capture_output=True, check=True).stdout
    found = {f.path: f for f in parse_stream([out[:7], out[7:]])}  # split mid-record on purpose
    for path in files:
        _same(found[str(path)].st, path)
    assert found[str(files[-1])].target == "f0 odd\nname"


def test_stat_records_match_lstat(files):
    out = subprocess.run(["stat", "--printf", STAT_FORMAT, "--", *map(str, files)],
                         capture_output=True, check=True).stdout
    got = parse_stat(out)
    for path in files:
        _same(got[str(path)], path)


@pytest.mark.parametrize("ns", TIMES)
def test_touch_time_round_trips(ns, tmp_path):
    path = tmp_path / "t"
    path.touch()
    subprocess.run(["touch", "-h", "-d", touch_time(ns), str(path)], check=True)
    assert os.lstat(path).st_mtime_ns == ns
    assert decimal_ns(touch_time(ns)[1:].encode()) == ns


def test_find_prints_negative_times_as_seconds_then_fraction():
    assert time_ns(b"-2.2500000000") == -1_750_000_000  # find's own way of writing -1.75 s
    assert time_ns(b"1.0000000010") == 1_000_000_001


@pytest.mark.parametrize("text, ns", [(b"12", 12_000_000_000), (b"1.5", 1_500_000_000),
                                      (b"1700000000.1234", 1_700_000_000_123_400_000),
                                      (b"0.000000001", 1), (b"-1.75", -1_750_000_000), (b"-0.5", -500_000_000)])
def test_decimal_times_as_tar_writes_them(text, ns):
    assert decimal_ns(text) == ns  # pax headers drop trailing zeros of the fraction


def test_sort_key_orders_as_the_tuple_of_names():
    paths = ["/a/b", "/a-c", "/a", "/a/b/c", "/ab", "/a.b/x", "/a\u00e9", os.fsdecode(b"/a\xff"), "/a/\x01", "/"]
    assert sorted(paths, key=sort_key) == sorted(paths, key=lambda p: tuple(os.fsencode(p).split(b"/")))
