"""`drorch verify` on files backups: every level passes on good backups and
records evidence; a flipped byte passes structure but fails read (naming the
object and file) and restore; a deleted object fails structure naming it and
every backup that depends on it; the evidence shows in `list`, `show` and
`check`, survives in encrypted repositories and goes with expired backups."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import write_policy
from tests.treegen import generate, mutate

SOURCE = "files1"


@pytest.fixture
def chain(tmp_path, drorch):
    """A full, an incr and a diff of a generated tree; a sandbox directory."""
    data, repo, sandbox = tmp_path / "data", tmp_path / "repo", tmp_path / "sandbox"
    data.mkdir()
    sandbox.mkdir()
    generate(data, seed=7, files=40, big=2)
    policy = write_policy(tmp_path / "policy.yaml", repo, [data])
    with open(policy, "a") as handle:  # keys of the source (write_policy's extra is top level)
        handle.write(f"    verify: {{sandbox: {sandbox}, max_age: 1d}}\n    objectives: {{rpo: 1h, rto: 1h}}\n")
    labels = []
    for n, btype in enumerate(("full", "incr", "diff")):
        if n:
            mutate(data, seed=n)
        result = drorch("backup", "--policy", policy, "--type", btype, "--json")
        assert result.code == 0, result.err
        labels.append(result.json()["label"])
    return policy, repo, sandbox, labels


def verify(drorch, policy, *args):
    result = drorch("verify", "--policy", policy, "--json", *args)
    assert "Traceback" not in result.err, result.err
    return result, result.json()["verifications"]


def records(repo: Path, label: str) -> list[str]:
    folder = repo / "verify" / SOURCE / label
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def entry_blocks(drorch, policy, label):
    shown = drorch("show", "--policy", policy, "--backup", label, "--files", "--json").json()
    return [(e.get("path"), b) for e in shown["entries"] if e["type"] == "file" for b in e["blocks"]]


@pytest.mark.parametrize("level", ["structure", "read", "restore"])
def test_each_level_passes_on_good_backups_and_records_evidence(chain, drorch, level):
    policy, repo, sandbox, labels = chain
    result, done = verify(drorch, policy, "--level", level)
    assert result.code == 0, result.out
    expected = labels[-1:] if level == "restore" else labels  # restore: the newest by default
    assert [v["label"] for v in done] == expected
    for verification in done:
        assert verification["result"] == "passed" and verification["problems"] == []
        assert {c["result"] for c in verification["checks"]} == {"passed"}
        assert verification["phases"]["structure"] >= 0
        names = records(repo, verification["label"])
        assert len(names) == 1 and names[0].endswith(f"-{level}-passed")
        record = json.loads((repo / verification["record"]).read_text())
        assert record["level"] == level and record["result"] == "passed" and record["drorch_version"]
        assert [c["name"] for c in record["checks"]] == [c["name"] for c in verification["checks"]]
    if level == "restore":
        checks = {c["name"]: c for c in done[0]["checks"]}
        assert set(checks) == {"structure", "restore", "files", "cleanup"}
        assert done[0]["restore_seconds"] > 0 and done[0]["ready_seconds"] == done[0]["restore_seconds"]
        assert list(sandbox.iterdir()) == []
    if level == "read":
        assert "decoded and checked" in {c["name"]: c for c in done[0]["checks"]}["read"]["detail"]
    listed = {r["label"]: r for r in drorch("list", "--policy", policy, "--json").json()}
    for label in expected:
        assert listed[label]["verification"]["level"] == level
        assert listed[label]["verification"]["result"] == "passed"
        assert 0 <= listed[label]["verification"]["age_seconds"] < 60
    text = drorch("list", "--policy", policy).out
    assert f"{level} ok" in text


def test_a_flipped_byte_passes_structure_fails_read_and_restore(chain, drorch):
    policy, repo, sandbox, labels = chain
    named = [item for item in entry_blocks(drorch, policy, labels[0]) if item[0]]  # (not the _b64 names)
    path, block = max(named, key=lambda item: item[1][3])
    ref_label, pack, offset, length = block[:4]
    pack_key = f"data/{SOURCE}/{ref_label}/p{pack:06d}"
    with open(repo / pack_key, "r+b") as handle:
        handle.seek(offset + length // 2)
        byte = handle.read(1)
        handle.seek(offset + length // 2)
        handle.write(bytes([byte[0] ^ 0x40]))

    result, done = verify(drorch, policy, "--level", "structure", "--backup", labels[0])
    assert result.code == 0 and done[0]["result"] == "passed"

    result, done = verify(drorch, policy, "--level", "read", "--backup", labels[0])
    assert result.code == 1 and done[0]["result"] == "failed"
    [problem] = done[0]["problems"]
    assert pack_key in problem and f"/{path}" in problem and f"bytes {offset}-{offset + length}" in problem
    assert labels[0] in problem
    read_check = {c["name"]: c for c in done[0]["checks"]}["read"]
    assert read_check["result"] == "failed"

    dependents = [label for label in labels if any(b[:3] == block[:3] for _, b in entry_blocks(drorch, policy, label))]
    assert all(label in problem for label in dependents)  # every backup that needs the damaged block

    result, done = verify(drorch, policy, "--level", "restore", "--backup", labels[0])
    assert result.code == 1 and done[0]["result"] == "failed"
    checks = {c["name"]: c for c in done[0]["checks"]}
    assert checks["restore"]["result"] == "failed" and path in checks["restore"]["detail"]
    assert checks["cleanup"]["result"] == "passed" and list(sandbox.iterdir()) == []
    names = records(repo, labels[0])
    assert sorted(n.split("-", 1)[1] for n in names) == ["read-failed", "restore-failed", "structure-passed"]
    record = json.loads((repo / done[0]["record"]).read_text())
    assert record["result"] == "failed" and path in json.dumps(record["checks"])

    text = drorch("verify", "--policy", policy, "--level", "read", "--backup", labels[0])
    assert text.code == 1 and "FAIL" in text.out and pack_key in text.out
    check = drorch("check", "--policy", policy, "--json").json()
    items = {i["name"]: i for i in check["items"]}
    assert items[f"source {SOURCE}: verifications"]["status"] == "fail"
    assert labels[0] in items[f"source {SOURCE}: verifications"]["message"]


def test_a_deleted_object_fails_structure_naming_it_and_every_dependent(chain, drorch):
    policy, repo, sandbox, labels = chain
    used_by_incr = {(b[0], b[1]) for _, b in entry_blocks(drorch, policy, labels[1]) if b[0] == labels[0]}
    assert used_by_incr, "the incr references nothing of its parent"
    ref_label, pack = sorted(used_by_incr)[0]
    pack_key = f"data/{SOURCE}/{ref_label}/p{pack:06d}"
    os.unlink(repo / pack_key)
    dependents = sorted(label for label in labels
                        if any((b[0], b[1]) == (ref_label, pack) for _, b in entry_blocks(drorch, policy, label)))
    assert labels[0] in dependents and labels[1] in dependents

    result, done = verify(drorch, policy, "--level", "structure", "--backup", labels[1])
    assert result.code == 1 and done[0]["result"] == "failed"
    [problem] = done[0]["problems"]
    assert pack_key in problem and "missing" in problem
    for label in dependents:
        assert label in problem  # the incr, its parent, and any other backup that needs it
    assert {c["name"]: c for c in done[0]["checks"]}["structure"]["result"] == "failed"
    assert records(repo, labels[1])[-1].endswith("-structure-failed")

    result, done = verify(drorch, policy, "--level", "restore", "--backup", labels[1])
    assert result.code == 1
    assert {c["name"]: c["result"] for c in done[0]["checks"]}["restore"] == "skipped"
    assert list(sandbox.iterdir()) == []


def test_a_missing_parent_manifest_breaks_the_chain(chain, drorch):
    policy, repo, sandbox, labels = chain
    os.unlink(repo / "manifests" / SOURCE / labels[0])
    result, done = verify(drorch, policy, "--level", "structure")
    assert result.code == 1
    by_label = {v["label"]: v for v in done}
    assert set(by_label) == set(labels[1:])
    for label in labels[1:]:
        assert any(f"manifests/{SOURCE}/{labels[0]}" in p and "chain" in p for p in by_label[label]["problems"])


def test_sample_latest_and_bad_usage(chain, drorch):
    policy, repo, sandbox, labels = chain
    result, done = verify(drorch, policy, "--level", "structure", "--sample", "2")
    assert result.code == 0 and len(done) == 2 and {v["label"] for v in done} <= set(labels)
    result, done = verify(drorch, policy, "--level", "read", "--latest")
    assert [v["label"] for v in done] == labels[-1:]
    both = drorch("verify", "--policy", policy, "--latest", "--sample", "1")
    assert both.code == 2 and "one of" in both.err
    missing = drorch("verify", "--policy", policy, "--backup", "20000101T000000Z-F")
    assert missing.code == 2 and "no backup" in missing.err
    # default level comes from the policy (read, unless verify.level says otherwise)
    result, done = verify(drorch, policy, "--latest")
    assert done[0]["level"] == "read"


def test_evidence_in_an_encrypted_repository_and_expire_removes_it(tmp_path, drorch, monkeypatch):
    monkeypatch.setenv("VERIFY_PASS", "correct horse battery staple")
    data, repo = tmp_path / "data", tmp_path / "repo"
    data.mkdir()
    (data / "secret-name.txt").write_text("secret content")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""\
repositories:
  local:
    type: posix
    path: {repo}
    encryption: {{passphrase: "${{env:VERIFY_PASS}}"}}
sources:
  {SOURCE}:
    kind: files
    repository: local
    paths: [{data}]
    retention: {{full: 1}}
    verify: {{level: restore, sandbox: {tmp_path}}}
""")
    first = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    result, done = verify(drorch, policy, "--level", "restore")
    assert result.code == 0, result.out
    record = repo / done[0]["record"]
    assert b"secret-name" not in record.read_bytes() and b"passed" not in record.read_bytes()  # sealed
    listed = drorch("list", "--policy", policy, "--json").json()
    assert listed[0]["verification"]["result"] == "passed"
    drorch("backup", "--policy", policy, "--type", "full")
    assert drorch("expire", "--policy", policy).code == 0
    assert not (repo / "verify" / SOURCE / first).exists()  # the evidence went with the backup


def test_check_reports_a_stale_backup_and_missing_restore_verification(chain, drorch, tmp_path):
    policy, repo, sandbox, labels = chain
    stale = tmp_path / "stale.yaml"
    stale.write_text(policy.read_text().replace("rpo: 1h", "rpo: 1s").replace("max_age: 1d", "max_age: 1s"))
    time.sleep(1.5)
    result = drorch("check", "--policy", stale, "--json")
    assert result.code == 1
    items = {i["name"]: i for i in result.json()["items"]}
    point = items[f"source {SOURCE}: recovery point"]
    assert point["status"] == "fail" and labels[-1] in point["message"] and "RPO of 1s" in point["message"]
    assert point["hint"]
    assert items[f"source {SOURCE}: restore verification"]["status"] == "fail"
    assert items[f"source {SOURCE}: restore time"]["status"] == "skip"
    assert items["repository local"]["status"] == "ok"
    assert items["repository local: free space"]["status"] in ("ok", "warn")
    assert items["host local"]["status"] == "ok"
    text = drorch("check", "--policy", stale)
    assert text.code == 1 and "FAIL" in text.out and "Traceback" not in text.err
    # nothing configured: skipped, not failed
    plain = tmp_path / "plain.yaml"
    plain.write_text(policy.read_text().replace("    objectives: {rpo: 1h, rto: 1h}\n", "")
                     .replace(", max_age: 1d", ""))
    result = drorch("check", "--policy", plain, "--json")
    assert result.code == 0, result.out
    items = {i["name"]: i for i in result.json()["items"]}
    assert items[f"source {SOURCE}: recovery point"]["status"] == "skip"
    assert items[f"source {SOURCE}: restore verification"]["status"] == "skip"


def test_verify_a_copy_in_another_repository(chain, drorch, tmp_path):
    policy, repo, sandbox, labels = chain
    dr = tmp_path / "dr"
    text = policy.read_text().replace("sources:", f"  dr:\n    type: posix\n    path: {dr}\nsources:")
    policy.write_text(text.replace("    verify:", "    copy_to: [dr]\n    verify:"))
    assert drorch("copy", "--policy", policy).code == 0
    result, done = verify(drorch, policy, "--repository", "dr", "--level", "read")
    assert result.code == 0 and [v["label"] for v in done] == labels
    assert all((dr / v["record"]).exists() and not (repo / v["record"]).exists() for v in done)
    listed = drorch("list", "--policy", policy, "--repository", "dr", "--json").json()
    assert all(r["verification"]["level"] == "read" for r in listed)


def test_verify_on_an_s3_repository(tmp_path, drorch, moto_server, monkeypatch):
    from tests import s3server

    monkeypatch.setenv("DRORCH_TEST_KEY_ID", s3server.ACCESS_KEY)
    monkeypatch.setenv("DRORCH_TEST_SECRET", s3server.SECRET_KEY)
    data = tmp_path / "data"
    data.mkdir()
    generate(data, seed=3, files=20, big=1)
    bucket = moto_server.bucket()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""\
repositories:
  s3main:
    type: s3
    bucket: {bucket}
    prefix: drorch/
    region: us-east-1
    endpoint_url: {moto_server.url}
    path_style: true
    access_key_id: "${{env:DRORCH_TEST_KEY_ID}}"
    secret_access_key: "${{env:DRORCH_TEST_SECRET}}"
sources:
  {SOURCE}:
    kind: files
    repository: s3main
    paths: [{data}]
    verify: {{sandbox: {tmp_path}}}
""")
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    mutate(data, seed=5)
    label = drorch("backup", "--policy", policy, "--type", "incr", "--json").json()["label"]
    for level in ("structure", "read", "restore"):
        result, done = verify(drorch, policy, "--level", level)
        assert result.code == 0 and all(v["result"] == "passed" for v in done), result.out
    client = moto_server.client()
    packs = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="drorch/data/")["Contents"]
             if "/p0" in o["Key"] and label not in o["Key"]]
    client.delete_object(Bucket=bucket, Key=packs[0])
    result, done = verify(drorch, policy, "--level", "structure", "--latest")
    assert result.code == 1 and packs[0].removeprefix("drorch/") in done[0]["problems"][0]
    listed = {r["label"]: r for r in drorch("list", "--policy", policy, "--json").json()}
    assert listed[label]["verification"]["result"] == "failed"
