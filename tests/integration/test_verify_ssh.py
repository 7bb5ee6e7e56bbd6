"""Restore verification on a verify host over SSH (a real sshd on loopback), and
`drorch check` reporting an SSH host it cannot trust (unknown host key) as its own
failed item."""

from __future__ import annotations

import shutil

from tests.sshd import scratch_dir, sshd  # noqa: F401  (fixture)
from tests.treegen import generate


def _policy(tmp_path, setup, data, sandbox, **host_options) -> str:
    values = {"address": setup.server.address, "port": setup.server.port, "user": setup.server.user,
              "key_file": setup.client_key, "known_hosts": setup.known_hosts, **host_options}
    host = "\n".join(f"    {k}: {v}" for k, v in values.items())
    path = tmp_path / "policy.yaml"
    path.write_text(f"""\
hosts:
  verify1:
{host}
repositories:
  local: {{type: posix, path: {tmp_path / "repo"}}}
sources:
  files1:
    kind: files
    repository: local
    paths: [{data}]
    verify: {{level: restore, host: verify1, sandbox: {sandbox}, max_age: 1d}}
""")
    return path


def test_restore_verification_on_a_verify_host(sshd, drorch, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    generate(data, seed=11, files=25, big=1)
    sandbox = scratch_dir("drorch-verify-ssh-")
    try:
        policy = _policy(tmp_path, sshd, data, sandbox)
        assert drorch("backup", "--policy", policy, "--type", "full").code == 0
        result = drorch("verify", "--policy", policy, "--json")
        assert result.code == 0, result.out + result.err
        [done] = result.json()["verifications"]
        checks = {c["name"]: c for c in done["checks"]}
        assert done["sandbox"]["host"] == "verify1" and done["sandbox"]["path"].startswith(str(sandbox))
        assert checks["files"]["result"] == "passed" and checks["cleanup"]["result"] == "passed"
        assert list(sandbox.iterdir()) == []
        check = drorch("check", "--policy", policy, "--json").json()
        items = {i["name"]: i for i in check["items"]}
        assert items["host verify1"]["status"] == "ok" and "host key verified" in items["host verify1"]["message"]
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def test_check_reports_an_unknown_host_key_as_a_failed_item(sshd, drorch, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("x")
    known = tmp_path / "known_hosts"
    known.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdyb3VuZGhvZ2dvZ3JvdW5kaG9nZ29ncm91bmRo\n")
    policy = _policy(tmp_path, sshd, data, "/tmp", known_hosts=known)
    before = sshd.server.logins()
    result = drorch("check", "--policy", policy, "--json")
    assert result.code == 1
    failed = {i["name"]: i for i in result.json()["items"] if i["status"] == "fail"}
    assert "host verify1" in failed, failed
    assert "unknown host key" in failed["host verify1"]["message"] and failed["host verify1"]["hint"]
    assert sshd.server.logins() == before  # refused before logging in
    text = drorch("check", "--policy", policy)
    assert "FAIL" in text.out and "Traceback" not in text.err
