"""Fixtures of the contract suites.

Every storage driver passes tests/contract/test_storage.py.  To add a driver,
write a factory `make_<name>(tmp_path) -> Storage` that returns a fresh,
empty location, and add one line to STORAGE_FACTORIES; the `storage` fixture
then runs every contract test against it too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

from drorch.storage.base import Storage
from drorch.storage.posix import PosixStorage


def make_posix(tmp_path: Path) -> Storage:
    # The location does not exist yet: the driver creates it on the first put.
    return PosixStorage(tmp_path / "store")


#: driver name -> factory(tmp_path) returning a fresh, empty storage location
STORAGE_FACTORIES: dict[str, Callable[[Path], Storage]] = {
    "posix": make_posix,
}


@pytest.fixture(params=sorted(STORAGE_FACTORIES))
def storage(request, tmp_path) -> Storage:
    """A fresh, empty storage location of each driver in turn."""
    return STORAGE_FACTORIES[request.param](tmp_path)


@pytest.fixture
def posix(tmp_path) -> PosixStorage:
    """The posix driver as the contract suite builds it, for posix-only tests."""
    return STORAGE_FACTORIES["posix"](tmp_path)


@pytest.fixture
def busy_threads():
    """Switch threads far more often than usual, so that races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)
