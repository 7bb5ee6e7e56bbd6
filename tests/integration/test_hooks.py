"""Hook scripts around backups (hooks/README.md), with the example scripts
shipped in hooks/: a failing pre_backup hook aborts the backup (nothing
committed, the failure recorded, on_failure told); a failing post_backup hook
is reported and the backup stays good; the environment, timeouts and
missing scripts."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

from tests.conftest import write_policy

HOOKS = Path(__file__).resolve().parents[2] / "hooks"


def policy_with_hooks(tmp_path: Path, hooks: str, data: Path) -> Path:
    policy = write_policy(tmp_path / "policy.yaml", tmp_path / "repo", [data], source="main")
    policy.write_text(policy.read_text() + "    hooks:\n" + textwrap.indent(textwrap.dedent(hooks), "      "))
    return policy


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def runs(drorch, policy) -> list[dict]:
    result = drorch("list", "--policy", policy, "--all", "--json")
    assert result.code == 0, result.err
    return result.json()


def test_failing_pre_backup_hook_aborts_the_backup(tmp_path, drorch, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    flag, log = tmp_path / "maintenance", tmp_path / "hooks.log"
    env_dump = script(tmp_path / "env-dump.sh", f"env | grep ^DRORCH_ | sort > {tmp_path}/env.$DRORCH_EVENT\n")
    policy = policy_with_hooks(tmp_path, f"""\
        pre_backup: [{env_dump}, {HOOKS}/pre-backup-check.sh]
        on_failure: [{HOOKS}/on-failure.sh, {env_dump}]
        """, data)
    monkeypatch.setenv("DRORCH_MAINTENANCE_FILE", str(flag))
    monkeypatch.setenv("DRORCH_MIN_FREE_MB", "1")
    monkeypatch.setenv("DRORCH_HOOK_LOG", str(log))
    flag.write_text("disk swap until 03:00")

    result = drorch("backup", "--policy", policy, "--type", "full")
    assert result.code == 1
    assert "pre-backup-check.sh exited 1" in result.err
    assert "main is in maintenance" in result.err and "the backup was not taken" in result.err
    (failed,) = runs(drorch, policy)  # recorded, and nothing committed
    assert failed["status"] == "failed" and failed["phase"] == "pre-backup hook"
    assert "main is in maintenance" in failed["error"]
    assert not list((tmp_path / "repo" / "manifests").glob("*/*"))
    assert not list((tmp_path / "repo" / "data").glob("main/*/p*"))  # nothing read from the source
    # on_failure was told what failed, where, and why
    (line,) = log.read_text().splitlines()
    assert f"backup FAILED source=main label={failed['label']} phase=pre-backup hook" in line
    assert "main is in maintenance" in line
    pre_env = dict(line.split("=", 1) for line in (tmp_path / "env.pre_backup").read_text().splitlines())
    assert pre_env["DRORCH_EVENT"] == "pre_backup" and pre_env["DRORCH_STATUS"] == "running"
    assert pre_env["DRORCH_SOURCE"] == "main" and pre_env["DRORCH_SOURCE_KIND"] == "files"
    assert pre_env["DRORCH_BACKUP_LABEL"] == failed["label"] and pre_env["DRORCH_TYPE"] == "full"
    assert pre_env["DRORCH_REQUESTED_TYPE"] == "full" and pre_env["DRORCH_REPOSITORY"] == "local"
    assert pre_env["DRORCH_POLICY"] == str(policy.resolve()) and pre_env["DRORCH_HOOK_TIMEOUT"] == "300"
    fail_env = dict(line.split("=", 1) for line in (tmp_path / "env.on_failure").read_text().splitlines())
    assert fail_env["DRORCH_STATUS"] == "failed" and fail_env["DRORCH_PHASE"] == "pre-backup hook"
    assert "main is in maintenance" in fail_env["DRORCH_ERROR"]

    # the maintenance is over: the same hooks let the backup through
    flag.unlink()
    result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert result.code == 0, result.err
    backup = result.json()
    assert [h["ok"] for h in backup["hooks"]] == [True, True]
    assert "may run" in backup["hooks"][1]["output"]
    statuses = {r["label"]: r["status"] for r in runs(drorch, policy)}
    assert statuses == {failed["label"]: "failed", backup["label"]: "ok"}
    assert len(log.read_text().splitlines()) == 1  # on_failure ran once


def test_failing_post_backup_hook_keeps_the_backup_good(tmp_path, drorch, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n" * 1000)
    log = tmp_path / "backups.log"
    failing = script(tmp_path / "post-fail.sh", "echo starting the upload\necho upload to the archive refused\n"
                                                "exit 7\n")
    policy = policy_with_hooks(tmp_path, f"""\
        post_backup: [{failing}, {HOOKS}/post-backup-notify.sh]
        """, data)
    monkeypatch.setenv("DRORCH_HOOK_LOG", str(log))
    result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert result.code == 0, result.err
    backup = result.json()
    bad, good = backup["hooks"]
    assert (bad["event"], bad["exit_code"], bad["ok"]) == ("post_backup", 7, False)
    assert bad["summary"].endswith("exited 7: upload to the archive refused") and bad["seconds"] >= 0
    assert good["ok"]  # a failing hook does not stop the next one
    assert any("upload to the archive refused" in w and "(the backup is good)" in w for w in backup["warnings"])
    (row,) = runs(drorch, policy)
    assert row["status"] == "ok" and row["label"] == backup["label"]
    # the example hook logged the committed backup's figures
    (line,) = log.read_text().splitlines()
    assert f"backup ok source=main label={backup['label']} type=full" in line
    assert f"stored={backup['stats']['stored_bytes']}" in line and "files=1" in line
    # and the backup restores
    target = tmp_path / "restored"
    assert drorch("restore", "--policy", policy, "--source", "main", "--target", target).code == 0
    assert (target / str(data).lstrip("/") / "a.txt").read_text() == "alpha\n" * 1000


def test_a_hook_that_times_out_is_killed_with_everything_it_started(tmp_path, drorch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    pids = tmp_path / "pids"
    slow = script(tmp_path / "slow.sh", f"sleep 120 &\necho $! > {pids}\necho waiting\nwait\n")
    policy = policy_with_hooks(tmp_path, f"pre_backup: [{slow}]\ntimeout: 1s\n", data)
    start = time.monotonic()
    result = drorch("backup", "--policy", policy, "--type", "full")
    took = time.monotonic() - start
    assert result.code == 1
    assert "timed out after 1s and was killed: waiting" in result.err
    assert took < 8, took
    child = int(pids.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the hook's background child survived"
    (failed,) = runs(drorch, policy)
    assert failed["phase"] == "pre-backup hook" and "timed out" in failed["error"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_missing_hooks_relative_paths_and_no_hooks(tmp_path, drorch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    (tmp_path / "hooks").mkdir()
    script(tmp_path / "hooks" / "mark.sh", f"pwd > {tmp_path}/cwd\n")
    policy = policy_with_hooks(tmp_path, "pre_backup: [hooks/mark.sh, hooks/absent.sh]\n", data)
    check = drorch("check", "--policy", policy)
    assert check.code == 1
    assert f"pre_backup {tmp_path}/hooks/absent.sh: missing" in check.out
    result = drorch("backup", "--policy", policy, "--type", "full")
    assert result.code == 1
    assert f"pre_backup hook {tmp_path}/hooks/absent.sh could not be started: No such file or directory" \
        in result.err
    # the relative path was read from the policy's directory, and ran there
    assert (tmp_path / "cwd").read_text().strip() == str(tmp_path)
    assert drorch("backup", "--policy", policy, "--type", "full", "--no-hooks").code == 0
    os.chmod(tmp_path / "hooks" / "mark.sh", 0o644)
    (tmp_path / "hooks" / "absent.sh").write_text("#!/bin/sh\nexit 0\n")
    check = drorch("check", "--policy", policy, "--json").json()
    (item,) = [i for i in check["items"] if i["name"] == "source main: hooks"]
    assert item["status"] == "fail"
    assert "mark.sh: not executable" in item["message"] and "absent.sh: not executable" in item["message"]


def test_post_verify_hooks_are_told_the_result(tmp_path, drorch, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    log = tmp_path / "verifications.log"
    failing = script(tmp_path / "ticket.sh", "echo ticket system down\nexit 3\n")
    policy = policy_with_hooks(tmp_path, f"post_verify: [{HOOKS}/post-verify.sh, {failing}]\n", data)
    monkeypatch.setenv("DRORCH_HOOK_LOG", str(log))
    backup = drorch("backup", "--policy", policy, "--type", "full", "--json").json()
    result = drorch("verify", "--policy", policy, "--source", "main", "--level", "read", "--json")
    assert result.code == 0, result.err  # a hook's failure does not fail the verification
    body = result.json()
    (hook,) = body["hooks"]
    assert (hook["event"], hook["exit_code"], hook["path"]) == ("post_verify", 3, str(tmp_path / "ticket.sh"))
    (line,) = log.read_text().splitlines()
    (verification,) = body["verifications"]
    assert f"verify passed source=main label={backup['label']} level=read seconds={verification['seconds']}" in line
    # a damaged backup: the hook hears `failed` and why
    pack = next((tmp_path / "repo" / "data" / "main" / backup["label"]).glob("p*"))
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    pack.write_bytes(bytes(raw))
    result = drorch("verify", "--policy", policy, "--source", "main", "--level", "read")
    assert result.code == 1
    failed_line = log.read_text().splitlines()[-1]
    assert f"verify failed source=main label={backup['label']} level=read" in failed_line
    assert f"error=data/main/{backup['label']}/" in failed_line
    assert drorch("verify", "--policy", policy, "--source", "main", "--level", "read", "--no-hooks").code == 1
    assert len(log.read_text().splitlines()) == 2
