"""Whether the storage contract also ran against a real S3 endpoint.

With DRORCH_TEST_S3_ENDPOINT set (see make_s3_real in conftest.py) every
contract test runs as `s3-real` too, and this test checks the endpoint
answers.  Without it, this test is skipped, and the skip's reason in the
report says that no real endpoint was tested: never a silent gap.
"""

from __future__ import annotations

import os

import pytest

from tests.contract.conftest import REAL_ENDPOINT, STORAGE_FACTORIES


def test_storage_contract_ran_against_a_real_s3_endpoint(request, tmp_path):
    if not os.environ.get(REAL_ENDPOINT):
        pytest.skip(f"no real S3 endpoint tested: set {REAL_ENDPOINT} (a URL, or `aws`) and "
                    "DRORCH_TEST_S3_BUCKET (and credentials) to run the storage contract against one")
    storage = STORAGE_FACTORIES["s3-real"](request, tmp_path)
    storage.put("probe", b"drorch")
    assert storage.get("probe") == b"drorch"
    storage.delete("probe")
    assert storage.stat("probe") is None
