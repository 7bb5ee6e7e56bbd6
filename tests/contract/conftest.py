"""Fixtures of the contract suites.

Every storage driver passes tests/contract/test_storage.py.  To add a driver,
write a factory `make_<name>(request, tmp_path) -> Storage` that returns a
fresh, empty location, and add one line to STORAGE_FACTORIES; the `storage`
fixture then runs every contract test against it too.

`s3` is moto in server mode (a process on 127.0.0.1, over HTTP), a fresh
bucket per test.  `s3-real` is a real endpoint, in the suite only when
DRORCH_TEST_S3_ENDPOINT is set (see make_s3_real); when it is not,
test_real_s3.py reports one skip that says so (`pytest -ra` shows it).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Callable

import pytest

from drorch.storage.base import Storage
from drorch.storage.deferred import DeferredPuts
from drorch.storage.posix import PosixStorage
from drorch.storage.retrying import RetryingStorage
from drorch.storage.s3 import MiB, S3Storage, make_client
from tests import s3server

REAL_ENDPOINT = "DRORCH_TEST_S3_ENDPOINT"


def make_posix(request, tmp_path: Path) -> Storage:
    # The location does not exist yet: the driver creates it on the first put.
    return PosixStorage(tmp_path / "store")


def s3_stack(client, bucket: str, prefix: str, endpoint: str | None) -> Storage:
    """The S3 storage as drorch.factory builds it (retries, background uploads), with
    a small multipart threshold so that large objects go up in parts."""
    raw = S3Storage(client, bucket, prefix, endpoint=endpoint, max_connections=16,
                    multipart_threshold=8 * MiB, part_size=5 * MiB)
    return DeferredPuts(RetryingStorage(raw, attempts=4, max_delay=1.0), workers=8)


def make_s3(request, tmp_path: Path) -> Storage:
    server = request.getfixturevalue("moto_server")
    client = make_client(endpoint_url=server.url, region=s3server.REGION, path_style=True,
                         access_key_id=s3server.ACCESS_KEY, secret_access_key=s3server.SECRET_KEY,
                         max_connections=16)
    return s3_stack(client, server.bucket(), "repo/", server.url)


def make_s3_real(request, tmp_path: Path) -> Storage:
    """A real S3-compatible endpoint: DRORCH_TEST_S3_ENDPOINT (a URL, or `aws`),
    DRORCH_TEST_S3_BUCKET (an existing bucket; each test uses a fresh prefix in it
    and removes it), optional DRORCH_TEST_S3_REGION, DRORCH_TEST_S3_PATH_STYLE=1,
    DRORCH_TEST_S3_ACCESS_KEY_ID / DRORCH_TEST_S3_SECRET_ACCESS_KEY (default:
    boto3's credential chain)."""
    endpoint = os.environ[REAL_ENDPOINT]
    bucket = os.environ.get("DRORCH_TEST_S3_BUCKET")
    if not bucket:
        pytest.fail("DRORCH_TEST_S3_ENDPOINT is set but DRORCH_TEST_S3_BUCKET is not")
    endpoint_url = None if endpoint == "aws" else endpoint
    client = make_client(endpoint_url=endpoint_url, region=os.environ.get("DRORCH_TEST_S3_REGION"),
                         path_style=os.environ.get("DRORCH_TEST_S3_PATH_STYLE") == "1",
                         access_key_id=os.environ.get("DRORCH_TEST_S3_ACCESS_KEY_ID"),
                         secret_access_key=os.environ.get("DRORCH_TEST_S3_SECRET_ACCESS_KEY"),
                         max_connections=16)
    prefix = f"drorch-contract/{uuid.uuid4().hex}/"
    storage = s3_stack(client, bucket, prefix, endpoint_url)

    def remove_everything() -> None:
        for info in list(storage.list()):
            storage.delete(info.key)

    request.addfinalizer(remove_everything)
    return storage


#: driver name -> factory(request, tmp_path) returning a fresh, empty storage location
STORAGE_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], Storage]] = {
    "posix": make_posix,
    "s3": make_s3,
}
if os.environ.get(REAL_ENDPOINT):
    STORAGE_FACTORIES["s3-real"] = make_s3_real


@pytest.fixture(params=sorted(STORAGE_FACTORIES))
def storage(request, tmp_path) -> Storage:
    """A fresh, empty storage location of each driver in turn."""
    return STORAGE_FACTORIES[request.param](request, tmp_path)


@pytest.fixture
def posix(request, tmp_path) -> PosixStorage:
    """The posix driver as the contract suite builds it, for posix-only tests."""
    return STORAGE_FACTORIES["posix"](request, tmp_path)


@pytest.fixture
def busy_threads():
    """Switch threads far more often than usual, so that races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)
