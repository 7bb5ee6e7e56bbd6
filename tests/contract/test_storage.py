"""The storage contract: what every driver (posix, later s3) must do.

The `storage` fixture (tests/contract/conftest.py) gives a fresh, empty
location of each driver in turn.  The tests at the end of the file check
what only the posix driver has (temporary files, directories).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

from drorch.errors import NotFoundError, StorageError
from drorch.storage.base import AlreadyExists, ObjectInfo
from drorch.storage.posix import TMP_MARK, PosixStorage

THREADS = 8


def keys_of(storage, prefix: str = "") -> list[str]:
    return [info.key for info in storage.list(prefix)]


def run_threads(target, count: int = THREADS) -> list[BaseException]:
    """Run target(n) in count threads started together; return what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(n: int) -> None:
        try:
            barrier.wait()
            target(n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a storage call hung"
    return errors


def describe(errors: list[BaseException]) -> str:
    """The first few errors, each with the OS error behind it and where that was raised."""
    parts = []
    for exc in errors[:5]:
        text = f"{type(exc).__name__}: {exc}"
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            where = traceback.extract_tb(cause.__traceback__)[-1] if cause.__traceback__ else None
            text += f" (from {type(cause).__name__}: {cause}" + (
                f" in {where.name}, {os.path.basename(where.filename)}:{where.lineno})" if where else ")")
        parts.append(text)
    return "; ".join(parts)


# -- put / get ------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00\xff\x01binary\r\n\x00" * 7, bytes(range(256))],
                         ids=["empty", "binary", "all-bytes"])
def test_put_get_round_trip(storage, data):
    storage.put("data/src/obj", data)
    assert storage.get("data/src/obj") == data
    assert storage.stat("data/src/obj").size == len(data)


def test_put_get_large_object(storage):
    data = os.urandom(20 * 1024 * 1024)
    storage.put("big", data)
    assert storage.stat("big").size == len(data)
    assert storage.get("big") == data
    assert storage.get_range("big", 10 * 1024 * 1024 - 3, 7) == data[10 * 1024 * 1024 - 3:10 * 1024 * 1024 + 4]


def test_put_top_level_and_nested_keys(storage):
    storage.put("config", b"c")
    storage.put("a/b/c/d/e", b"deep")
    assert storage.get("config") == b"c"
    assert storage.get("a/b/c/d/e") == b"deep"


def test_put_overwrites(storage):
    storage.put("k", b"first version, longer")
    storage.put("k", b"second")
    assert storage.get("k") == b"second"
    assert storage.stat("k").size == len(b"second")
    assert keys_of(storage) == ["k"]


def test_put_if_absent_creates_a_missing_key(storage):
    storage.put("locks/src", b"mine", if_absent=True)
    assert storage.get("locks/src") == b"mine"


def test_put_if_absent_on_existing_key_raises_and_keeps_old(storage):
    storage.put("locks/src", b"old holder")
    with pytest.raises(AlreadyExists):
        storage.put("locks/src", b"new holder", if_absent=True)
    assert storage.get("locks/src") == b"old holder"
    assert keys_of(storage) == ["locks/src"]


def test_already_exists_is_a_storage_error(storage):
    storage.put("k", b"1")
    with pytest.raises(StorageError):
        storage.put("k", b"2", if_absent=True)


def test_put_if_absent_after_delete_succeeds(storage):
    storage.put("locks/src", b"one", if_absent=True)
    storage.delete("locks/src")
    storage.put("locks/src", b"two", if_absent=True)
    assert storage.get("locks/src") == b"two"


# -- get / get_range ------------------------------------------------------------


def test_get_missing_raises_not_found(storage):
    with pytest.raises(NotFoundError):
        storage.get("nothing/here")
    storage.put("something/else", b"x")
    with pytest.raises(NotFoundError):
        storage.get("something/missing")


def test_get_range_missing_raises_not_found(storage):
    with pytest.raises(NotFoundError):
        storage.get_range("nothing/here", 0, 10)


@pytest.mark.parametrize("offset,length,expected", [
    (0, 10, b"0123456789"),      # all of it
    (3, 4, b"3456"),             # the middle
    (6, 4, b"6789"),             # up to the end exactly
    (7, 100, b"789"),            # past the end: what exists
    (10, 5, b""),                # starting at the end
    (50, 5, b""),                # starting past the end
    (4, 0, b""),                 # nothing asked
], ids=["all", "middle", "at-end", "past-end", "from-end", "beyond", "zero-length"])
def test_get_range(storage, offset, length, expected):
    storage.put("obj", b"0123456789")
    assert storage.get_range("obj", offset, length) == expected


# -- stat -------------------------------------------------------------------------


def test_stat_missing_is_none(storage):
    assert storage.stat("missing") is None
    storage.put("dir/present", b"x")
    assert storage.stat("dir/absent") is None


def test_stat_present(storage):
    before = time.time()
    storage.put("dir/obj", b"12345")
    info = storage.stat("dir/obj")
    assert isinstance(info, ObjectInfo)
    assert info.key == "dir/obj"
    assert info.size == 5
    assert before - 300 < info.mtime < time.time() + 300  # a real time, clocks may differ a little


# -- list ---------------------------------------------------------------------------


def test_list_empty_location(storage):
    assert list(storage.list()) == []
    assert list(storage.list("data/")) == []


def test_list_in_key_order_with_sizes(storage):
    # Inserted out of order; '-' < '.' < '/' < '0' in key order, so a driver
    # that walks directory by directory must still sort by the whole key.
    objects = {"b": b"22", "a/z": b"1", "a-b": b"333", "a.b": b"4444", "a0": b"", "a/b/c": b"55555", "a_": b"6"}
    for key, data in objects.items():
        storage.put(key, data)
    infos = list(storage.list())
    assert all(isinstance(info, ObjectInfo) for info in infos)
    assert [info.key for info in infos] == sorted(objects)
    assert {info.key: info.size for info in infos} == {k: len(v) for k, v in objects.items()}


def test_list_prefix_only_matching_keys(storage):
    for key in ["data/a", "data/ab/x", "data/ab/y", "data/abc", "data/b/a", "dat", "datax/a", "manifests/a"]:
        storage.put(key, key.encode())
    assert keys_of(storage, "data/") == ["data/a", "data/ab/x", "data/ab/y", "data/abc", "data/b/a"]
    # a prefix that ends in the middle of a name
    assert keys_of(storage, "data/a") == ["data/a", "data/ab/x", "data/ab/y", "data/abc"]
    assert keys_of(storage, "data/ab") == ["data/ab/x", "data/ab/y", "data/abc"]
    assert keys_of(storage, "data/ab/") == ["data/ab/x", "data/ab/y"]
    assert keys_of(storage, "dat") == ["dat", "data/a", "data/ab/x", "data/ab/y", "data/abc", "data/b/a", "datax/a"]
    assert keys_of(storage, "data/ab/x") == ["data/ab/x"]
    assert keys_of(storage, "data/z") == []
    assert keys_of(storage, "nothing/") == []
    assert keys_of(storage, "data/ab/x/") == []  # an object is not a directory


def test_list_many_keys(storage):
    keys = [f"many/d{i % 7}/k{i:05d}" for i in range(3000)]
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda key: storage.put(key, key.encode()), keys))
    storage.put("other/k", b"x")
    infos = list(storage.list("many/"))
    assert [info.key for info in infos] == sorted(keys)
    assert all(info.size == len(info.key) for info in infos)
    assert keys_of(storage, "many/d3/") == sorted(k for k in keys if k.startswith("many/d3/"))
    assert len(keys_of(storage)) == 3001


def test_list_never_returns_keys_outside_the_location(storage, tmp_path):
    # A prefix that climbs out of the location must not list what is beside it.
    (tmp_path / "outside").write_bytes(b"not a key of this storage")
    storage.put("inside", b"x")
    for prefix in ["../", "../outside", "./", "a/../"]:
        try:
            found = keys_of(storage, prefix)
        except ValueError:
            continue
        assert found == [], f"list({prefix!r}) returned {found}"


def test_every_accepted_key_is_listed(storage):
    # Keys are characters [A-Za-z0-9._-] per part (FORMAT.md); a driver may
    # refuse a key, but a key it stored must be listed like any other.
    for key in ["d/x.tmp-1", "d/.hidden", "d/.y.tmp-0123456789ab"]:
        try:
            storage.put(key, b"v")
        except ValueError:
            continue
        assert storage.get(key) == b"v"
        assert key in keys_of(storage, "d/"), f"{key!r} was stored but list() does not show it"


@pytest.mark.parametrize("key", ["x.tmp-1", ".y.tmp-0123456789ab", "plain"])
def test_is_empty_is_false_after_any_accepted_put(storage, key):
    try:
        storage.put(key, b"v")
    except ValueError:
        return  # a driver may refuse such a key, but then it must not store it
    assert storage.is_empty() is False, f"{key!r} was stored but the location looks empty"


# -- a key that is only the prefix of other keys is not an object ---------------------


@pytest.mark.parametrize("op", ["stat", "get", "get_range", "delete"])
def test_prefix_of_keys_is_not_an_object(storage, op):
    storage.put("dir/sub/obj", b"x")
    if op == "stat":
        assert storage.stat("dir/sub") is None
    elif op == "get":
        with pytest.raises(NotFoundError):
            storage.get("dir/sub")
    elif op == "get_range":
        with pytest.raises(NotFoundError):
            storage.get_range("dir/sub", 0, 1)
    else:
        storage.delete("dir/sub")  # missing key: not an error
    assert storage.get("dir/sub/obj") == b"x"


# -- delete -----------------------------------------------------------------------------


def test_delete_missing_is_not_an_error(storage):
    storage.delete("missing")
    storage.delete("deep/missing/key")
    storage.put("dir/a", b"1")
    storage.delete("dir/b")
    assert keys_of(storage) == ["dir/a"]


def test_delete_removes_from_get_stat_list(storage):
    storage.put("dir/a", b"1")
    storage.put("dir/b", b"2")
    storage.delete("dir/a")
    assert keys_of(storage) == ["dir/b"]
    assert storage.stat("dir/a") is None
    with pytest.raises(NotFoundError):
        storage.get("dir/a")
    storage.delete("dir/a")  # twice is fine
    storage.delete("dir/b")
    assert keys_of(storage) == []
    assert keys_of(storage, "dir/") == []


def test_put_after_delete_of_the_last_key_in_a_directory(storage):
    storage.put("a/b/c/x", b"1")
    storage.delete("a/b/c/x")
    storage.put("a/b/c/y", b"2")
    storage.put("a/b/z", b"3")
    assert keys_of(storage) == ["a/b/c/y", "a/b/z"]


# -- is_empty -----------------------------------------------------------------------------


def test_is_empty(storage):
    assert storage.is_empty() is True
    storage.put("config", b"{}")
    assert storage.is_empty() is False


def test_is_empty_after_a_nested_put(storage):
    storage.put("a/b/c", b"")
    assert storage.is_empty() is False


def test_is_empty_again_after_deleting_everything(storage):
    storage.put("a/b/c", b"1")
    storage.put("d", b"2")
    storage.delete("a/b/c")
    storage.delete("d")
    assert storage.is_empty() is True


def test_location_is_a_string(storage):
    assert isinstance(storage.location, str) and storage.location


# -- key validation ------------------------------------------------------------------------

BAD_KEYS = ["", "..", "../x", "a/../b", "a/..", "/abs", "/", "a//b", "a/", ".", "./a", "a/./b", "a\\b", "a\0b"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(storage, key):
    with pytest.raises(ValueError):
        storage.put(key, b"x")
    with pytest.raises(ValueError):
        storage.put(key, b"x", if_absent=True)
    with pytest.raises(ValueError):
        storage.get(key)
    with pytest.raises(ValueError):
        storage.get_range(key, 0, 1)
    with pytest.raises(ValueError):
        storage.stat(key)
    with pytest.raises(ValueError):
        storage.delete(key)
    assert storage.is_empty()


def test_bad_key_writes_nothing_outside(storage, tmp_path):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for key in ["../escaped", "../../escaped", "/tmp/escaped-drorch-test"]:
        with pytest.raises(ValueError):
            storage.put(key, b"x")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not os.path.exists("/tmp/escaped-drorch-test")


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_writers_all_land(storage):
    def writer(n: int) -> None:
        for i in range(200):
            # half in a directory of the thread's own, half in one they all share
            key = f"w/t{n}/k{i:03d}" if i % 2 else f"w/shared/t{n}-{i:03d}"
            storage.put(key, f"{n}:{i}".encode())

    errors = run_threads(writer)
    assert not errors, describe(errors)
    infos = list(storage.list("w/"))
    assert len(infos) == THREADS * 200
    for n in range(THREADS):
        for i in (0, 1, 198, 199):
            key = f"w/t{n}/k{i:03d}" if i % 2 else f"w/shared/t{n}-{i:03d}"
            assert storage.get(key) == f"{n}:{i}".encode()


@pytest.mark.parametrize("size", [16, 256 * 1024], ids=["small", "256KiB"])
def test_racing_put_if_absent_has_exactly_one_winner(storage, busy_threads, size):
    for round_ in range(5):
        key = f"locks/race{round_}"
        winners: list[int] = []
        payloads = [bytes([n]) * size for n in range(THREADS)]

        def contender(n: int) -> None:
            try:
                storage.put(key, payloads[n], if_absent=True)
            except AlreadyExists:
                return
            winners.append(n)

        errors = run_threads(contender)
        assert not errors, describe(errors)
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert storage.get(key) == payloads[winners[0]]
    assert keys_of(storage) == [f"locks/race{r}" for r in range(5)]


def test_readers_never_see_a_partial_object(storage, busy_threads):
    versions = [bytes([65 + n]) * (512 * 1024) for n in range(4)]
    storage.put("obj", versions[0])
    done = threading.Event()

    def worker(n: int) -> None:
        if n == 0:
            try:
                for i in range(40):
                    storage.put("obj", versions[i % len(versions)])
            finally:
                done.set()
        else:
            while not done.is_set():
                data = storage.get("obj")
                assert data in versions, f"read {len(data)} bytes that are no whole version"

    errors = run_threads(worker, 4)
    assert not errors, describe(errors)


def put_delete_race(storage, depth: int = 4, rounds: int = 200) -> list[BaseException]:
    """Threads put and delete keys that share (deep) directories, so that a
    delete removes directories that have just become empty while another
    thread is finding, creating or writing into them."""
    base = "/".join(f"d{j}" for j in range(depth))

    def worker(n: int) -> None:
        for i in range(rounds):
            key = f"{base}/t{n}-{i}"
            storage.put(key, b"x")
            storage.delete(key)

    return run_threads(worker)


def test_concurrent_put_and_delete_in_a_shared_directory(storage, busy_threads):
    errors = put_delete_race(storage)
    assert not errors, f"{len(errors)} thread(s) failed: {describe(errors)}"
    # the location is still usable: puts land and list sees them
    storage.put("d0/d1/d2/d3/final", b"f")
    assert storage.get("d0/d1/d2/d3/final") == b"f"
    assert "d0/d1/d2/d3/final" in keys_of(storage, "d0/")


# -- posix only ------------------------------------------------------------------------------------


def temporary_files(root) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(root):
        found += [os.path.join(dirpath, name) for name in filenames if TMP_MARK in name]
    return found


def test_posix_puts_leave_no_temporary_files(posix):
    posix.put("config", b"{}", if_absent=True)
    posix.put("a/b", b"1")
    posix.put("a/b", b"2")  # overwrite
    with pytest.raises(AlreadyExists):
        posix.put("config", b"{}", if_absent=True)
    with pytest.raises(ValueError):
        posix.put("../x", b"")
    errors = run_threads(lambda n: [posix.put(f"c/k{n}-{i}", b"z" * 100) for i in range(20)])
    assert not errors, describe(errors)
    assert temporary_files(posix.root) == []
    assert sorted(os.listdir(posix.root)) == ["a", "c", "config"]


def test_posix_failed_put_leaves_no_temporary_file(posix):
    posix.put("a", b"an object, not a directory")
    with pytest.raises(StorageError):
        posix.put("a/b", b"x")
    assert temporary_files(posix.root) == []
    assert posix.get("a") == b"an object, not a directory"


def test_posix_racing_put_if_absent_leaves_no_temporary_files(posix):
    def contender(n: int) -> None:
        try:
            posix.put("config", bytes([n]) * 4096, if_absent=True)
        except AlreadyExists:
            pass

    errors = run_threads(contender)
    assert not errors, describe(errors)
    assert temporary_files(posix.root) == []
    assert os.listdir(posix.root) == ["config"]


def test_posix_list_ignores_temporary_files(posix):
    posix.put("data/s/a", b"1")
    posix.put("top", b"2")
    # what a writer in progress (or one that crashed) leaves
    (posix.root / f".top{TMP_MARK}0123456789ab").write_bytes(b"partial")
    (posix.root / "data" / "s" / f".b{TMP_MARK}0123456789ab").write_bytes(b"partial")
    assert keys_of(posix) == ["data/s/a", "top"]
    assert keys_of(posix, "data/s/") == ["data/s/a"]
    assert keys_of(posix, "data/s/.b") == []


def test_posix_is_empty_ignores_temporary_files(posix):
    # a writer racing us to create the first object is not a foreign file
    posix.root.mkdir()
    (posix.root / f".config{TMP_MARK}0123456789ab").write_bytes(b"partial")
    assert posix.is_empty() is True
    assert keys_of(posix) == []


def test_posix_is_empty_on_an_existing_empty_directory(posix):
    posix.root.mkdir()
    assert posix.is_empty() is True
    (posix.root / "foreign.txt").write_text("someone else's")
    assert posix.is_empty() is False
    assert keys_of(posix) == ["foreign.txt"]


def test_posix_delete_removes_empty_directories_but_not_the_root(posix):
    posix.put("a/b/c/x", b"1")
    posix.put("a/y", b"2")
    posix.delete("a/b/c/x")
    assert not (posix.root / "a" / "b").exists()
    assert (posix.root / "a" / "y").exists()
    posix.delete("a/y")
    assert posix.root.is_dir() and os.listdir(posix.root) == []


def test_posix_files_are_where_the_keys_say(posix):
    posix.put("manifests/src/label", b"m")
    assert (posix.root / "manifests" / "src" / "label").read_bytes() == b"m"


def test_posix_put_and_delete_race_without_fsync(tmp_path, busy_threads):
    # Without fsync a put is quick, so the window in which a concurrent delete
    # removes a directory that put has just found or made is hit far more often.
    storage = PosixStorage(tmp_path / "store", fsync=False)
    errors = put_delete_race(storage, depth=6, rounds=150)
    assert not errors, f"{len(errors)} thread(s) failed: {describe(errors)}"
    assert temporary_files(storage.root) == []


def test_deferred_puts_are_readable_at_once_and_sync_is_a_barrier(storage):
    for i in range(5):
        storage.put(f"data/p{i}", bytes([i]) * 1000, sync=False)
    assert storage.get("data/p3") == bytes([3]) * 1000  # readable before the barrier
    storage.delete("data/p4")  # deleted before sync: sync must not fail on it
    storage.sync()
    storage.sync()  # nothing pending: a no-op
    assert [info.key for info in storage.list("data/")] == [f"data/p{i}" for i in range(4)]
