"""The whole CLI on an S3 repository: moto in server mode over HTTP, and a
fault-injecting proxy between drorch and it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests import s3server, treegen
from tests.faultproxy import FAULTS, FaultProxy

SECRET = s3server.SECRET_KEY


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("DRORCH_TEST_KEY_ID", s3server.ACCESS_KEY)
    monkeypatch.setenv("DRORCH_TEST_SECRET", SECRET)


@pytest.fixture
def proxy(moto_server):
    proxy = FaultProxy(moto_server.port, seed=7).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def s3_policy(path, endpoint: str, bucket: str, data, *, retention: str = "", repo_extra: str = "",
              retries: str = "{attempts: 12, max_delay: 1s}"):
    text = textwrap.dedent(f"""\
        repositories:
          s3main:
            type: s3
            bucket: {bucket}
            prefix: drorch/
            region: us-east-1
            endpoint_url: {endpoint}
            path_style: true
            access_key_id: "${{env:DRORCH_TEST_KEY_ID}}"
            secret_access_key: "${{env:DRORCH_TEST_SECRET}}"
            retries: {retries}
        """)
    text += textwrap.indent(textwrap.dedent(repo_extra), "    ")
    text += textwrap.dedent(f"""\
        sources:
          files1:
            kind: files
            repository: s3main
            paths: [{data}]
        """)
    if retention:
        text += f"    retention: {retention}\n"
    path.write_text(text)
    return path


@pytest.fixture
def setup(tmp_path, moto_server):
    data = tmp_path / "data"
    data.mkdir()
    bucket = moto_server.bucket()
    return data, bucket, s3_policy(tmp_path / "policy.yaml", moto_server.url, bucket, data)


def restore_matches(drorch, policy, label: str, target, data, expected) -> None:
    result = drorch("restore", "--policy", policy, "--backup", label, "--target", target)
    assert result.code == 0, result.err
    restored = treegen.snapshot(target / str(data).lstrip("/"))
    assert treegen.diff(expected, restored) == [], f"backup {label} did not restore exactly"


def run_chain(drorch, policy, data, chain, seed: int) -> dict:
    """Back up a generated tree as it changes; {label: snapshot at that backup}."""
    expected = {}
    treegen.generate(data, seed)
    for step, btype in enumerate(chain):
        if step:
            treegen.mutate(data, seed * 100 + step)
        result = drorch("backup", "--policy", policy, "--type", btype, "--json")
        assert result.code == 0, result.err
        assert result.json()["type"] == btype
        assert SECRET not in result.out + result.err
        expected[result.json()["label"]] = treegen.snapshot(data)
    return expected


def test_chain_full_incr_diff_on_s3_restores_each_exactly(setup, drorch, tmp_path, moto_server):
    data, bucket, policy = setup
    expected = run_chain(drorch, policy, data, ["full", "incr", "diff"], seed=11)
    listed = drorch("list", "--policy", policy, "--json")
    assert listed.code == 0, listed.err
    assert [row["label"] for row in listed.json()] == list(expected)
    assert [row["type"] for row in listed.json()] == ["full", "incr", "diff"]
    for label, snap in expected.items():
        restore_matches(drorch, policy, label, tmp_path / f"restore-{label}", data, snap)
    keys = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(key.startswith("drorch/") for key in keys)
    assert "drorch/config" in keys
    assert {f"drorch/manifests/files1/{label}" for label in expected} <= set(keys)
    assert not any(key.startswith(("drorch/locks/", "drorch/runs/")) for key in keys)


def test_backup_through_faults_completes_and_restores_exactly(tmp_path, moto_server, proxy, drorch):
    data = tmp_path / "data"
    data.mkdir()
    policy = s3_policy(tmp_path / "policy.yaml", proxy.url, moto_server.bucket(), data)
    proxy.rate = 0.3  # of every request: throttling, 500s, resets, cut answers
    expected = run_chain(drorch, policy, data, ["full", "incr"], seed=5)
    for label, snap in expected.items():
        restore_matches(drorch, policy, label, tmp_path / f"restore-{label}", data, snap)
    assert all(proxy.counts[fault] > 0 for fault in FAULTS), proxy.counts
    proxy.rate = 0.0
    listed = drorch("list", "--policy", policy, "--all", "--json").json()
    assert [(row["label"], row["status"]) for row in listed] == [(label, "ok") for label in expected]


def test_endpoint_that_always_fails_gives_a_clear_error_and_no_backup(tmp_path, moto_server, proxy, drorch):
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, 3, files=10, big=0)
    bucket = moto_server.bucket()
    direct = s3_policy(tmp_path / "direct.yaml", moto_server.url, bucket, data)
    assert drorch("repo", "init", "--policy", direct).code == 0
    faulty = s3_policy(tmp_path / "faulty.yaml", proxy.url, bucket, data, retries="{attempts: 3, max_delay: 1s}")
    proxy.rate = 1.0
    proxy.faults = ("503", "500", "reset")
    result = drorch("backup", "--policy", faulty, "--type", "full")
    assert result.code == 1, result
    assert "error: cannot " in result.err and "gave up after 3 attempts" in result.err
    assert "hint: the endpoint kept failing" in result.err
    assert "Traceback" not in result.err and SECRET not in result.err
    assert proxy.requests == 3
    listed = drorch("list", "--policy", direct, "--all", "--json")
    assert listed.code == 0, listed.err
    assert listed.json() == []


def test_endpoint_failing_in_the_middle_of_a_backup_leaves_no_listed_backup(tmp_path, moto_server, proxy, drorch):
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, 4)
    bucket = moto_server.bucket()
    policy = s3_policy(tmp_path / "policy.yaml", proxy.url, bucket, data, retries="{attempts: 3, max_delay: 1s}")
    # every write of backup data fails; the lock, run record and config go through
    proxy.rule = lambda method, path: "503" if method == "PUT" and "/data/" in path else None
    result = drorch("backup", "--policy", policy, "--type", "full")
    assert result.code == 1, result
    assert "503 SlowDown" in result.err and "gave up after 3 attempts" in result.err
    assert proxy.counts["503"] >= 3
    proxy.rule = None
    assert drorch("list", "--policy", policy, "--json").json() == []
    runs = drorch("list", "--policy", policy, "--all", "--json").json()
    assert [row["status"] for row in runs] == ["failed"]
    keys = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any(key.startswith("drorch/manifests/") for key in keys)
    # the endpoint is healthy again: the next backup commits and restores
    expected = treegen.snapshot(data)
    result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert result.code == 0, result.err
    restore_matches(drorch, policy, result.json()["label"], tmp_path / "restore", data, expected)


def test_missing_bucket_is_a_clear_error(tmp_path, moto_server, drorch):
    data = tmp_path / "data"
    data.mkdir()
    policy = s3_policy(tmp_path / "policy.yaml", moto_server.url, "no-such-bucket-x", data)
    for args in (["backup", "--type", "full"], ["list"], ["repo", "init"]):
        result = drorch(*args, "--policy", policy)
        assert result.code == 1, (args, result)
        assert "bucket no-such-bucket-x does not exist" in result.err
        assert "hint: create the bucket" in result.err
        assert "Traceback" not in result.err


# -- policy ------------------------------------------------------------------------------


LOCKED_REPO = """\
object_lock:
  mode: COMPLIANCE
  {extra}
"""


def test_policy_check_shows_the_derived_lock_period(tmp_path, drorch):
    policy = s3_policy(tmp_path / "p.yaml", "http://127.0.0.1:9", "bkt", tmp_path,
                       retention="{full: 2, max_age: 30d}",
                       repo_extra=LOCKED_REPO.format(extra="full_every: 7d"))
    result = drorch("policy", "check", "--policy", policy)
    assert result.code == 0, result.err
    assert ("repository s3main: Object Lock COMPLIANCE, each object locked 44d = 30d (max_age of files1) "
            "+ 7d (one chain: full_every) + 7d (margin)") in result.out
    as_json = drorch("policy", "check", "--policy", policy, "--json").json()
    assert as_json["object_lock"]["s3main"]["period_seconds"] == 44 * 86400


def test_lock_period_by_count_needs_full_every(tmp_path, drorch):
    policy = s3_policy(tmp_path / "p.yaml", "http://127.0.0.1:9", "bkt", tmp_path, retention="{full: 4}",
                       repo_extra=LOCKED_REPO.format(extra="margin: 1d"))
    result = drorch("policy", "check", "--policy", policy)
    assert result.code == 2, result
    assert f"{policy}:" in result.err and "repositories.s3main.object_lock" in result.err
    assert "set object_lock.full_every" in result.err
    policy.write_text(policy.read_text().replace("margin: 1d", "margin: 1d\n      full_every: 7d"))
    result = drorch("policy", "check", "--policy", policy)
    assert result.code == 0, result.err
    assert "36d = 28d (4 fulls of files1, full_every 7d) + 7d (one chain: full_every) + 1d (margin)" in result.out


@pytest.mark.parametrize("old,new,words", [
    ('access_key_id: "${env:DRORCH_TEST_KEY_ID}"', "access_key_id: AKIAEXAMPLE", "secrets are given by reference"),
    ('    secret_access_key: "${env:DRORCH_TEST_SECRET}"\n', "", "give both access_key_id and secret_access_key"),
    ("path_style: true", "storage_class: GLACIER", "cannot be read without a restore request"),
    ("path_style: true", "kms_key_id: alias/x", "kms_key_id needs server_side_encryption: SSE-KMS"),
    ("prefix: drorch/", "prefix: a/../b", "without '.' or '..'"),
    ("path_style: true", "max_connections: 0", "max_connections"),
    ("path_style: true", "object_lock: {mode: FOREVER}", "'GOVERNANCE' or 'COMPLIANCE'"),
    ("path_style: true", "path_stile: true", "did you mean 'path_style'"),
], ids=["inline-secret", "half-keys", "glacier", "kms", "prefix", "connections", "lock-mode", "typo"])
def test_bad_s3_settings_are_policy_errors(tmp_path, drorch, old, new, words):
    policy = s3_policy(tmp_path / "p.yaml", "http://127.0.0.1:9", "bkt", tmp_path, retention="{max_age: 1d}")
    assert old in policy.read_text()
    policy.write_text(policy.read_text().replace(old, new))
    result = drorch("policy", "check", "--policy", policy)
    assert result.code == 2, (result, policy.read_text())
    assert words in result.err
    assert f"{policy}:" in result.err and "repositories.s3main." in result.err


# -- Object Lock --------------------------------------------------------------------------


def locked_setup(tmp_path, moto_server, period: str):
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, 9, files=20, big=1)
    bucket = moto_server.bucket(object_lock=True)
    policy = s3_policy(tmp_path / "policy.yaml", moto_server.url, bucket, data, retention="{full: 1}",
                       repo_extra=LOCKED_REPO.format(extra=f"period: {period}"))
    return data, bucket, policy


def test_expire_skips_locked_backups_and_says_when_it_can(tmp_path, moto_server, drorch):
    data, bucket, policy = locked_setup(tmp_path, moto_server, "1h")
    snap = treegen.snapshot(data)
    labels = [drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"] for _ in range(2)]
    before = time.time()
    for dry in (["--dry-run"], []):
        result = drorch("expire", "--policy", policy, *dry, "--json")
        assert result.code == 0, result.err
        report = result.json()[0]
        assert report["expired"] == [] and [row["label"] for row in report["locked"]] == [labels[0]]
        until = report["locked"][0]["until"]
        assert until > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before + 3500))
    human = drorch("expire", "--policy", policy)
    assert human.code == 0, human.err
    assert f"{labels[0]}: still locked (Object Lock) until {until}; expire can remove it after then" in human.out
    assert "removed 0 backup(s)" in human.out
    assert [row["label"] for row in drorch("list", "--policy", policy, "--json").json()] == labels
    restore_matches(drorch, policy, labels[0], tmp_path / "restore", data, snap)


def test_expire_removes_a_backup_once_its_lock_ended(tmp_path, moto_server, drorch):
    data, bucket, policy = locked_setup(tmp_path, moto_server, "2s")
    labels = [drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"] for _ in range(2)]
    time.sleep(3.1)  # the first backup's objects (retained to the second) are free now
    result = drorch("expire", "--policy", policy, "--json")
    assert result.code == 0, result.err
    report = result.json()[0]
    assert report["expired"] == [labels[0]] and report["locked"] == []
    assert [row["label"] for row in drorch("list", "--policy", policy, "--json").json()] == [labels[1]]
    versions = moto_server.client().list_object_versions(Bucket=bucket, Prefix=f"drorch/data/files1/{labels[0]}/")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")  # gone, every version


def test_check_probes_a_locked_repository(tmp_path, moto_server, drorch):
    data, bucket, policy = locked_setup(tmp_path, moto_server, "1h")
    assert drorch("repo", "init", "--policy", policy).code == 0
    result = drorch("check", "--policy", policy, "--json")
    assert result.code == 0, result.out + result.err
    item = next(i for i in result.json()["items"] if i["name"] == "repository s3main")
    assert item["status"] == "ok", item
    keys = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["drorch/config"]  # the probe object is gone


def test_expire_aborts_uploads_that_crashed_backups_left(setup, drorch, moto_server):
    data, bucket, policy = setup
    (data / "f").write_text("x")
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    client = moto_server.client()
    client.create_multipart_upload(Bucket=bucket, Key="drorch/data/files1/20260101T000000Z-F/p000000")
    result = drorch("expire", "--policy", policy)
    assert result.code == 0, result.err
    assert "aborted 1 multipart upload(s) that interrupted backups left behind" in result.out
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_example_s3_policy_is_valid(drorch):
    example = Path(__file__).parents[2] / "examples" / "s3-policy.yaml"
    result = drorch("policy", "check", "--policy", example)
    assert result.code == 0, result.err
    assert "each object locked 49d" in result.out


@pytest.mark.parametrize("point", ["after-first-pack", "before-manifest"])
def test_backup_killed_midway_is_never_listed_and_expire_cleans_it(setup, drorch, moto_server, point):
    data, bucket, policy = setup
    treegen.generate(data, 8, files=20, big=1)
    (data / "large.bin").write_bytes(os.urandom(20 << 20))  # more than one pack
    first = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    (data / "large.bin").write_bytes(os.urandom(20 << 20))
    killed = subprocess.run([sys.executable, "-m", "drorch.cli.main", "backup", "--policy", str(policy),
                             "--type", "incr"], env={**os.environ, "DRORCH_FAULT": point},
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [r["label"] for r in drorch("list", "--policy", policy, "--json").json()] == [first]
    every = drorch("list", "--policy", policy, "--all", "--json").json()
    assert sorted(r["status"] for r in every) == ["incomplete", "ok"]
    leftover = next(r["label"] for r in every if r["status"] == "incomplete")
    result = drorch("expire", "--policy", policy, "--json").json()[0]
    assert result["leftovers"] == [leftover]
    keys = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert not any(leftover in key for key in keys)
    assert drorch("backup", "--policy", policy, "--type", "incr").code == 0


def test_copy_to_an_encrypted_locked_s3_site_through_faults(tmp_path, moto_server, proxy, drorch, monkeypatch):
    """3-2-1 with ransomware protection: backups on a local directory, copied to an
    encrypted S3 repository with Object Lock through a faulty link; each restores
    from the copy exactly, the copy shows no plaintext, an interrupted copy resumes."""
    monkeypatch.setenv("DRORCH_TEST_PASSPHRASE", "correct horse battery staple")
    data = tmp_path / "data"
    data.mkdir()
    bucket = moto_server.bucket(object_lock=True)
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        repositories:
          local:
            type: posix
            path: {tmp_path / "repo"}
          dr:
            type: s3
            bucket: {bucket}
            prefix: dr/
            endpoint_url: {proxy.url}
            path_style: true
            access_key_id: "${{env:DRORCH_TEST_KEY_ID}}"
            secret_access_key: "${{env:DRORCH_TEST_SECRET}}"
            retries: {{attempts: 12, max_delay: 1s}}
            encryption: {{passphrase: "${{env:DRORCH_TEST_PASSPHRASE}}"}}
            object_lock: {{mode: COMPLIANCE, period: 1h}}
        sources:
          files1:
            kind: files
            repository: local
            copy_to: [dr]
            paths: [{data}]
        """))
    expected = run_chain(drorch, policy, data, ["full", "incr"], seed=21)
    proxy.rate = 0.25
    result = drorch("copy", "--policy", policy, "--source", "files1")
    assert result.code == 0, result.err
    assert proxy.injected > 0
    for label, snap in expected.items():
        target = tmp_path / f"restore-{label}"
        result = drorch("restore", "--policy", policy, "--repository", "dr", "--backup", label, "--target", target)
        assert result.code == 0, result.err
        assert treegen.diff(snap, treegen.snapshot(target / str(data).lstrip("/"))) == []
    proxy.rate = 0.0

    client = moto_server.client()
    names = {os.fsencode(p.name) for p in data.rglob("*") if len(p.name) > 6}
    for obj in client.list_objects_v2(Bucket=bucket)["Contents"]:
        body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        assert not any(name in body for name in names), f"{obj['Key']} shows a file name"
        if obj["Key"] != "dr/config":
            head = client.head_object(Bucket=bucket, Key=obj["Key"])
            assert head.get("ObjectLockMode") == "COMPLIANCE", obj["Key"]

    # a copy killed half-way leaves locked objects; the next copy writes over them
    treegen.mutate(data, 2101)
    label = drorch("backup", "--policy", policy, "--type", "diff", "--json").json()["label"]
    killed = subprocess.run([sys.executable, "-m", "drorch.cli.main", "copy", "--policy", str(policy),
                             "--source", "files1"], env={**os.environ, "DRORCH_FAULT": "copy-before-manifest"},
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert label not in [r["label"] for r in drorch("list", "--policy", policy, "--repository", "dr",
                                                     "--json").json()]
    result = drorch("copy", "--policy", policy, "--source", "files1")
    assert result.code == 0, result.err
    target = tmp_path / "restore-diff"
    assert drorch("restore", "--policy", policy, "--repository", "dr", "--backup", label,
                  "--target", target).code == 0
    assert treegen.diff(treegen.snapshot(data), treegen.snapshot(target / str(data).lstrip("/"))) == []
