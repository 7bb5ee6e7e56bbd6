"""The S3 driver against moto in server mode, through a fault-injecting proxy:
which errors are retried and which fail at once, multipart uploads and their
cleanup, the shared connection limit, background uploads, Object Lock."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from drorch.errors import StorageError
from drorch.storage.base import AlreadyExists, ObjectLocked
from drorch.storage.deferred import DeferredPuts
from drorch.storage.retrying import RetryingStorage
from drorch.storage.s3 import MiB, ObjectLockSettings, S3Storage, make_client, part_size_for
from tests import s3server
from tests.faultproxy import FaultProxy


@pytest.fixture
def proxy(moto_server):
    proxy = FaultProxy(moto_server.port, seed=4).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def raw(endpoint: str, bucket: str, *, prefix: str = "repo/", max_connections: int = 8, **kwargs) -> S3Storage:
    client = make_client(endpoint_url=endpoint, region=s3server.REGION, path_style=True,
                         access_key_id=s3server.ACCESS_KEY, secret_access_key=s3server.SECRET_KEY,
                         max_connections=max_connections)
    return S3Storage(client, bucket, prefix, endpoint=endpoint, max_connections=max_connections, **kwargs)


def retrying(storage: S3Storage, attempts: int = 5) -> RetryingStorage:
    return RetryingStorage(storage, attempts=attempts, first_delay=0.01, max_delay=0.05)


# -- what is retried, what is not -------------------------------------------------------


@pytest.mark.parametrize("fault", ["503", "500", "reset", "reset-after", "truncate"])
def test_transient_faults_are_retried_until_they_pass(moto_server, proxy, fault):
    storage = retrying(raw(proxy.url, moto_server.bucket()))
    data = os.urandom(100_000)
    for op in ("put", "get", "stat", "list", "delete"):
        failures = iter([fault, fault])  # the first two tries of each operation fail
        proxy.rule = lambda method, path: next(failures, None)
        if op == "put":
            storage.put("data/obj", data)
        elif op == "get":
            assert storage.get("data/obj") == data
        elif op == "stat":
            assert storage.stat("data/obj").size == len(data)
        elif op == "list":
            assert [info.key for info in storage.list("data/")] == ["data/obj"]
        else:
            storage.delete("data/obj")
            proxy.rule = None
            assert storage.stat("data/obj") is None
    assert proxy.counts[fault] == 10


@pytest.mark.parametrize("fault,words", [("403", "access denied"), ("invalid-key", "access key id")])
def test_permanent_errors_fail_at_once_and_say_what_to_fix(moto_server, proxy, fault, words):
    storage = retrying(raw(proxy.url, moto_server.bucket()), attempts=8)
    proxy.rule = lambda method, path: fault
    with pytest.raises(StorageError) as excinfo:
        storage.put("config", b"{}")
    assert proxy.requests == 1  # not retried
    assert words in excinfo.value.message
    assert excinfo.value.hint and ("grant" in excinfo.value.hint or "access_key_id" in excinfo.value.hint)


def test_missing_bucket_fails_at_once(moto_server, proxy):
    storage = retrying(raw(proxy.url, "no-such-bucket-here"), attempts=8)
    with pytest.raises(StorageError) as excinfo:
        storage.get("config")
    assert proxy.requests == 1
    assert "bucket no-such-bucket-here does not exist" in excinfo.value.message
    assert "create the bucket" in excinfo.value.hint


def test_endless_throttling_gives_up_with_a_clear_message(moto_server, proxy):
    storage = retrying(raw(proxy.url, moto_server.bucket()), attempts=4)
    proxy.rule = lambda method, path: "503"
    with pytest.raises(StorageError) as excinfo:
        storage.put("config", b"{}")
    assert proxy.requests == 4
    message = excinfo.value.message
    assert "503 SlowDown" in message and "gave up after 4 attempts" in message
    assert "check that it is up" in excinfo.value.hint


def test_unreachable_endpoint_gives_up(moto_server):
    port = s3server.free_port()  # nothing listens there
    storage = retrying(raw(f"http://127.0.0.1:{port}", "some-bucket"), attempts=3)
    with pytest.raises(StorageError) as excinfo:
        storage.get("config")
    assert f"127.0.0.1:{port}" in excinfo.value.message
    assert "gave up after 3 attempts" in excinfo.value.message


def test_conditional_put_whose_answer_was_lost_succeeds(moto_server, proxy):
    # The first try lands but its answer is lost; the retry finds the object
    # there (412) and, since it is ours byte for byte, reports success.
    storage = retrying(raw(proxy.url, moto_server.bucket()))
    failures = iter(["reset-after"])
    proxy.rule = lambda method, path: next(failures, None)
    storage.put("locks/src", b"my token", if_absent=True)
    assert proxy.counts["reset-after"] == 1
    assert storage.get("locks/src") == b"my token"
    with pytest.raises(AlreadyExists):  # someone else's object still wins
        failures = iter(["reset-after"])
        storage.put("manifests/s/l", b"theirs", if_absent=True)
        storage.put("manifests/s/l", b"mine", if_absent=True)


# -- multipart ----------------------------------------------------------------------------


def test_part_size_fits_any_object_in_ten_thousand_parts():
    assert part_size_for(20 * MiB, 16 * MiB) == 16 * MiB
    assert part_size_for(1, 1) == 5 * MiB  # S3's smallest part
    huge = 5 * 1024 ** 4  # 5 TiB, S3's largest object
    size = part_size_for(huge, 16 * MiB)
    assert -(-huge // size) <= 10_000 and size % MiB == 0


def test_multipart_upload_round_trip_and_failed_upload_is_aborted(moto_server, proxy):
    bucket = moto_server.bucket()
    storage = raw(proxy.url, bucket, multipart_threshold=5 * MiB, part_size=5 * MiB)
    data = os.urandom(12 * MiB)  # three parts
    storage.put("data/big", data)
    assert storage.get("data/big") == data
    assert storage.get_range("data/big", 5 * MiB - 2, 4) == data[5 * MiB - 2:5 * MiB + 2]
    assert proxy.counts == {}
    proxy.rule = lambda method, path: "403" if "partNumber=2" in path else None
    with pytest.raises(StorageError):
        storage.put("data/big2", data)
    proxy.rule = None
    assert moto_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert storage.stat("data/big2") is None


def test_cleanup_removes_uploads_a_crash_left_behind(moto_server):
    bucket = moto_server.bucket()
    storage = raw(moto_server.url, bucket)
    client = moto_server.client()
    client.create_multipart_upload(Bucket=bucket, Key="repo/data/s/l/p000000")
    client.create_multipart_upload(Bucket=bucket, Key="elsewhere/x")  # not under the prefix
    # moto dates every upload 2010-11-10: one "started less than 20 years ago" counts as
    # possibly a live writer's and stays; with AWS the default is one day.
    assert storage.cleanup_interrupted(timedelta(days=20 * 365)) == 0
    assert storage.cleanup_interrupted(timedelta(days=1)) == 1
    left = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == ["elsewhere/x"]


# -- connections and background uploads ------------------------------------------------------


def test_connections_are_limited_per_repository_across_storages(moto_server, proxy):
    bucket = moto_server.bucket()
    # two storages of one repository (two jobs of one process) share one limit
    first = raw(proxy.url, bucket, max_connections=2)
    second = raw(proxy.url, bucket, max_connections=2)
    assert first._slots is second._slots
    assert raw(proxy.url, bucket, prefix="other/")._slots is not first._slots
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: (first if n % 2 else second).put(f"k{n}", os.urandom(300_000)), range(40)))
    assert proxy.requests == 40
    assert proxy.max_in_flight == 2


def test_background_upload_error_is_raised_by_sync(moto_server, proxy):
    storage = DeferredPuts(retrying(raw(proxy.url, moto_server.bucket())), workers=4)
    proxy.rule = lambda method, path: "403" if "p000002" in path else None
    for n in range(4):
        storage.put(f"data/s/l/p{n:06d}", b"x" * 1000, sync=False)  # returns before the upload ends
    with pytest.raises(StorageError) as excinfo:
        storage.sync()
    assert "access denied" in excinfo.value.message
    assert "p000002" in excinfo.value.message
    storage.sync()  # reported once; nothing pending any more
    proxy.rule = None
    landed = [info.key for info in storage.list("data/")]
    assert "data/s/l/p000002" not in landed
    assert set(landed) <= {f"data/s/l/p{n:06d}" for n in (0, 1, 3)}


def test_uploads_queued_behind_a_failed_one_are_dropped(moto_server, proxy):
    storage = DeferredPuts(retrying(raw(proxy.url, moto_server.bucket())), workers=1)
    proxy.rule = lambda method, path: "403" if "p000000" in path else None
    storage.put("data/s/l/p000000", b"x", sync=False)
    for n in range(1, 6):
        try:
            storage.put(f"data/s/l/p{n:06d}", b"x", sync=False)
        except StorageError:
            break  # the failure shows at the next deferred put already
    with pytest.raises(StorageError) as excinfo:
        storage.sync()
    assert "p000000" in excinfo.value.message
    assert proxy.requests == 1  # nothing more was sent after the failure


def test_background_uploads_keep_memory_bounded(moto_server):
    storage = DeferredPuts(raw(moto_server.url, moto_server.bucket()), workers=4, max_pending_bytes=3 * MiB)
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, storage._pending_bytes)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for n in range(12):
            storage.put(f"p{n}", os.urandom(MiB), sync=False)
        storage.sync()
    finally:
        stop.set()
        watcher.join()
    assert 0 < peak <= 3 * MiB
    assert len(list(storage.list())) == 12


# -- Object Lock ------------------------------------------------------------------------------


def locked(moto_server, bucket: str, period: timedelta, mode: str = "COMPLIANCE") -> S3Storage:
    lock = ObjectLockSettings(mode, period, ("locks/", "runs/", "pins/"))
    return raw(moto_server.url, bucket, object_lock=lock)


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
def test_locked_object_cannot_be_deleted_before_its_retention_ends(moto_server, mode):
    bucket = moto_server.bucket(object_lock=True)
    storage = locked(moto_server, bucket, timedelta(hours=1), mode)
    before = datetime.now(timezone.utc)
    storage.put("data/s/l/p000000", b"pack")
    until = storage.locked_until("data/s/l/p000000")
    assert before + timedelta(minutes=59) < until <= datetime.now(timezone.utc) + timedelta(hours=1)
    with pytest.raises(ObjectLocked) as excinfo:
        storage.delete("data/s/l/p000000")
    assert excinfo.value.until == until
    assert "locked (Object Lock) until" in excinfo.value.message
    assert storage.get("data/s/l/p000000") == b"pack"
    # the server itself refuses, not only drorch: delete the version directly
    client = moto_server.client()
    version = client.head_object(Bucket=bucket, Key="repo/data/s/l/p000000")["VersionId"]
    with pytest.raises(Exception) as refused:
        client.delete_object(Bucket=bucket, Key="repo/data/s/l/p000000", VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert storage.get("data/s/l/p000000") == b"pack"


def test_locks_run_records_and_pins_are_not_locked(moto_server):
    bucket = moto_server.bucket(object_lock=True)
    storage = locked(moto_server, bucket, timedelta(hours=1))
    for key in ("locks/src", "runs/src/l", "pins/src/l"):
        storage.put(key, b"{}", if_absent=True)
        assert storage.locked_until(key) is None
        storage.delete(key)
        assert storage.stat(key) is None
        storage.put(key, b"{}", if_absent=True)  # free again for the next holder
    versions = moto_server.client().list_object_versions(Bucket=bucket, Prefix="repo/locks/")
    assert len(versions.get("Versions", [])) == 1 and not versions.get("DeleteMarkers")


def test_object_is_deleted_with_all_its_versions_once_its_retention_ended(moto_server):
    bucket = moto_server.bucket(object_lock=True)
    storage = locked(moto_server, bucket, timedelta(seconds=1))
    storage.put("config", b"v1")
    storage.put("config", b"v2")  # a second version, locked as well
    time.sleep(2.1)  # moto keeps retention to the second
    assert storage.locked_until("config") is None
    storage.delete("config")
    assert storage.stat("config") is None
    versions = moto_server.client().list_object_versions(Bucket=bucket, Prefix="repo/")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")


def test_legal_hold_blocks_deletion_without_end(moto_server):
    bucket = moto_server.bucket(object_lock=True)
    storage = locked(moto_server, bucket, timedelta(seconds=1))
    storage.put("manifests/s/l", b"m")
    moto_server.client().put_object_legal_hold(Bucket=bucket, Key="repo/manifests/s/l", LegalHold={"Status": "ON"})
    with pytest.raises(ObjectLocked) as excinfo:
        storage.delete("manifests/s/l")
    assert "legal hold" in excinfo.value.message
    assert storage.get("manifests/s/l") == b"m"


def test_object_lock_on_a_bucket_without_it_is_a_clear_error(moto_server):
    storage = locked(moto_server, moto_server.bucket(object_lock=False), timedelta(days=1))
    with pytest.raises(StorageError) as excinfo:
        storage.put("config", b"{}")
    assert "does not have Object Lock enabled" in excinfo.value.message
    assert "object_lock" in excinfo.value.hint
