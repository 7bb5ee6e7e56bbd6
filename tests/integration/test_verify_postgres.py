"""Restore verification of PostgreSQL backups against a real PostgreSQL 15
cluster with WAL archiving: the restored cluster starts in a sandbox, recovers,
passes pg_amcheck and the policy's SQL assertions; a false assertion fails with
the query and its value; the sandbox is stopped and removed whatever happens
(also when the verifying process is terminated or killed); missing WAL fails
the structure level; `check` reports each broken thing as its own item."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drorch.factory import open_repository
from drorch.policy import load_policy
from drorch.sources.base import SERVER_PID
from tests.pg import Cluster, shared_tmpdir

SOURCE = "main-db"
SHOP_ASSERTIONS = """\
      - sql: "SELECT count(*) > 0 FROM orders"
        database: shop
      - sql: "SELECT count(*) FROM pg_database WHERE datname = 'shop'"
        expect: "1"
"""


class Env:
    """A primary archiving WAL into a drorch repository, a sandbox directory, a policy."""

    def __init__(self, runtime):
        self.base = shared_tmpdir("drorch-verify-pg-")
        self.repo = self.base / "repo"
        self.sandbox = self.base / "sandbox"
        self.sandbox.mkdir()
        self.policy = self.base / "policy.yaml"
        self.runtime = runtime
        self.primary = Cluster(self.base, "primary")
        self.primary.init(archive_mode="on", archive_command=f"'{runtime} wal-push --policy {self.policy} "
                                                            f"--source {SOURCE} %p'", archive_timeout="0")
        self.write_policy()
        self.primary.start()

    def write_policy(self, assertions: str = SHOP_ASSERTIONS, extra: str = "") -> None:
        self.policy.write_text(f"""\
repositories:
  local:
    type: posix
    path: {self.repo}
    group: postgres
sources:
  {SOURCE}:
    kind: postgres
    repository: local
    pgdata: {self.primary.pgdata}
    connection: {{host: 127.0.0.1, port: {self.primary.port}, user: postgres, dbname: postgres}}
    drorch_command: {self.runtime}
    archive: {{timeout: 30s}}
    objectives: {{rpo: 1h, rto: 1h}}
    verify:
      level: restore
      sandbox: {self.sandbox}
      max_age: 1d
      timeout: 2m
      assertions:
{assertions}{extra}""")

    def close(self) -> None:
        self.primary.kill()
        for pid in sandbox_processes(self.base):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(self.base)], check=False)


def sandbox_processes(under: Path) -> list[int]:
    """PIDs of processes whose command line mentions a path under `under` (a sandbox's postgres)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(under) in cmdline and "postgres" in cmdline and "drorch-verify-" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def env(drorch_runtime):
    env = Env(drorch_runtime)
    try:
        env.primary.sql("CREATE DATABASE shop")
        env.primary.sql("CREATE TABLE orders (id int PRIMARY KEY, item text); "
                        "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 500) g", dbname="shop")
        env.primary.pgbench("-i", "-s", "1", "-q")
        yield env
    finally:
        env.close()


@pytest.fixture(scope="module")
def backups(env):
    from tests.conftest import invoke

    labels = []
    for btype in ("full", "incr"):
        env.primary.sql("INSERT INTO orders SELECT max(id) + 1, 'more' FROM orders", dbname="shop")
        result = invoke("backup", "--policy", env.policy, "--source", SOURCE, "--type", btype, "--json")
        assert result.code == 0, result.err
        labels.append(result.json()["label"])
    return labels


def verify(drorch, env, *args):
    result = drorch("verify", "--policy", env.policy, "--source", SOURCE, "--json", *args)
    assert "Traceback" not in result.err, result.err
    assert result.out.startswith("{"), result.err
    return result, result.json()["verifications"]


def assert_sandbox_gone(env, verification) -> None:
    path = verification["sandbox"]["path"]
    assert path.startswith(str(env.sandbox)) and not os.path.exists(path)
    assert list(env.sandbox.iterdir()) == []
    assert sandbox_processes(env.sandbox) == []


def test_restore_verification_starts_the_cluster_checks_it_and_records_evidence(env, backups, drorch):
    result, [done] = verify(drorch, env, "--latest")
    assert result.code == 0, result.out + result.err
    assert done["label"] == backups[-1] and done["result"] == "passed"
    checks = {c["name"]: c for c in done["checks"]}
    assert checks["restore"]["result"] == "passed" and checks["files"]["result"] == "passed"
    assert checks["recovery"]["result"] == "passed" and "promoted" in checks["recovery"]["detail"]
    assert checks["pg_amcheck"]["result"] == "passed"
    assert checks["assertion: SELECT count(*) > 0 FROM orders"]["result"] == "passed"
    assert "returned 1" in checks["assertion: SELECT count(*) FROM pg_database WHERE datname = 'shop'"]["detail"]
    assert checks["stop"]["result"] == "passed" and checks["cleanup"]["result"] == "passed"
    assert done["restore_seconds"] > 0 and done["ready_seconds"] > done["restore_seconds"]
    assert done["sandbox"]["pid"] and done["sandbox"]["port"]
    assert_sandbox_gone(env, done)
    assert env.primary.scalar("SELECT count(*) FROM orders", dbname="shop") == 502  # production untouched

    listed = {r["label"]: r for r in drorch("list", "--policy", env.policy, "--json").json()}
    evidence = listed[backups[-1]]["verification"]
    assert evidence["level"] == "restore" and evidence["result"] == "passed" and evidence["age_seconds"] < 120
    record = env.repo / done["record"]
    assert record.exists() and b'"ready_seconds"' in record.read_bytes()

    check = drorch("check", "--policy", env.policy, "--json").json()
    items = {i["name"]: i for i in check["items"]}
    assert items[f"source {SOURCE}: restore verification"]["status"] == "ok"
    assert items[f"source {SOURCE}: restore time"]["status"] == "ok"


def test_a_false_assertion_fails_with_the_query_and_value_and_the_sandbox_goes(env, backups, drorch):
    env.write_policy(assertions="""\
      - sql: "SELECT count(*) = 0 FROM orders"
        database: shop
      - sql: "SELECT count(*) FROM orders"
        database: shop
        expect: "7"
""")
    try:
        result, [done] = verify(drorch, env, "--backup", backups[0])
    finally:
        env.write_policy()
    assert result.code == 1 and done["result"] == "failed"
    checks = {c["name"]: c for c in done["checks"]}
    assert checks["assertion: SELECT count(*) = 0 FROM orders"]["result"] == "failed"
    assert "returned false, expected true" in checks["assertion: SELECT count(*) = 0 FROM orders"]["detail"]
    assert "returned 501, expected '7'" in checks["assertion: SELECT count(*) FROM orders"]["detail"]
    assert checks["pg_amcheck"]["result"] == "passed" and checks["stop"]["result"] == "passed"
    assert_sandbox_gone(env, done)
    text = drorch("verify", "--policy", env.policy, "--source", SOURCE, "--backup", backups[0], "--level", "structure")
    assert text.code == 0, text.out
    listed = {r["label"]: r for r in drorch("list", "--policy", env.policy, "--json").json()}
    assert listed[backups[0]]["verification"]["level"] == "structure"  # the newest record wins


def test_a_terminated_verification_stops_and_removes_its_sandbox(env, backups):
    proc = subprocess.Popen([sys.executable, "-m", "drorch.cli.main", "verify", "--policy", str(env.policy),
                             "--source", SOURCE, "--latest"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not sandbox_processes(env.sandbox):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert sandbox_processes(env.sandbox) == []
    assert list(env.sandbox.iterdir()) == []


def test_a_killed_verification_is_cleaned_up_by_the_next(env, backups, drorch):
    proc = subprocess.Popen([sys.executable, "-m", "drorch.cli.main", "verify", "--policy", str(env.policy),
                             "--source", SOURCE, "--latest"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not sandbox_processes(env.sandbox):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no cleanup can run
        proc.wait()
    left = sandbox_processes(env.sandbox)
    assert left and len(list(env.sandbox.iterdir())) == 1
    # as if killed before it noted the server's PID (a window of a few ms): found by its path
    (next(env.sandbox.iterdir()) / SERVER_PID).unlink(missing_ok=True)
    result, [done] = verify(drorch, env, "--latest", "--level", "restore")
    assert result.code == 0, result.out + result.err
    deadline = time.monotonic() + 10
    while sandbox_processes(env.sandbox) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_processes(env.sandbox) == []
    assert list(env.sandbox.iterdir()) == []


def test_missing_wal_fails_the_structure_and_read_levels(env, backups, drorch):
    facts = drorch("show", "--policy", env.policy, "--source", SOURCE, "--backup", backups[-1],
                   "--json").json()["manifest"]["source_facts"]
    name = facts["wal_required"][0]
    segment = next((env.repo / "wal" / SOURCE).rglob(name))
    aside = env.base / f"{name}.aside"
    shutil.move(segment, aside)
    try:
        result, [done] = verify(drorch, env, "--backup", backups[-1], "--level", "structure")
        assert result.code == 1 and done["result"] == "failed"
        assert any(name in p and "missing" in p and backups[-1] in p for p in done["problems"]), done["problems"]
        # present, but one record damaged (a valid blob of wrong WAL): read checks each record's CRC
        shutil.copy(aside, segment)
        repo = open_repository(load_policy(env.policy), "local")
        key = str(segment.relative_to(env.repo))
        data = bytearray(repo.get_blob(key))
        last = len(bytes(data).rstrip(b"\0")) - 1  # the last byte of WAL written
        data[last - 10] ^= 0x01  # inside the last record (the switch at the backup's end)
        repo.put_blob(key, bytes(data))
        result, [done] = verify(drorch, env, "--backup", backups[-1], "--level", "read")
        assert result.code == 1
        assert any(name in p and "fails its CRC" in p for p in done["problems"]), done["problems"]
        result, [done] = verify(drorch, env, "--backup", backups[-1], "--level", "structure")
        assert result.code == 0  # structure cannot see it: listing and sizes only
    finally:
        shutil.move(aside, segment)
    result, [done] = verify(drorch, env, "--backup", backups[-1], "--level", "read")
    assert result.code == 0, result.out
    assert "archive files" in {c["name"]: c for c in done["checks"]}["read"]["detail"]


def test_check_reports_a_broken_archive_and_a_stale_backup_as_separate_failures(env, backups, drorch, tmp_path):
    """(An SSH host with an unknown host key, the third such item: test_verify_ssh.py.)"""
    files = env.base / "stale-files"
    files.mkdir()
    (files / "a.txt").write_text("a")
    env.write_policy(extra=f"""\
  stale-files:
    kind: files
    repository: local
    paths: [{files}]
    objectives: {{rpo: 1s}}
""")
    assert drorch("backup", "--policy", env.policy, "--source", "stale-files", "--type", "full").code == 0
    broken = f"{env.runtime} wal-push --policy {env.base}/no-such-policy.yaml --source {SOURCE} %p"
    env.primary.sql(f"ALTER SYSTEM SET archive_command = '{broken}'")  # ours, but it fails
    env.primary.sql("SELECT pg_reload_conf()")
    try:
        env.primary.sql("CREATE TABLE IF NOT EXISTS churn (x int); INSERT INTO churn VALUES (1)")
        env.primary.sql("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        while not env.primary.scalar("SELECT last_failed_time IS NOT NULL FROM pg_stat_archiver"):
            assert time.monotonic() < deadline, "the archiver never tried"
            time.sleep(0.2)
        time.sleep(1.2)  # the files backup is now older than its RPO of 1s
        result = drorch("check", "--policy", env.policy, "--json")
    finally:
        env.primary.sql("ALTER SYSTEM RESET archive_command")
        env.primary.sql("SELECT pg_reload_conf()")
        env.write_policy()
    assert result.code == 1
    failed = {i["name"]: i for i in result.json()["items"] if i["status"] == "fail"}
    expected = {f"source {SOURCE}: archiving", "source stale-files: recovery point"}
    assert expected <= set(failed), failed
    # (when run alone, no restore verification has passed yet within verify.max_age: also a failure)
    assert set(failed) - expected <= {f"source {SOURCE}: restore verification"}, failed
    assert "archive_command is failing" in failed[f"source {SOURCE}: archiving"]["message"]
    assert "RPO of 1s" in failed["source stale-files: recovery point"]["message"]
    assert all(item["hint"] for item in failed.values())


def test_logical_backup_restore_verification_loads_the_dumps_and_checks_them(env, drorch):
    env.write_policy(extra=f"""\
  dumps:
    kind: postgres
    mode: logical
    repository: local
    databases: [shop]
    connection: {{host: 127.0.0.1, port: {env.primary.port}, user: postgres, dbname: postgres}}
    verify:
      level: restore
      sandbox: {env.sandbox}
      assertions:
        - sql: "SELECT count(*) > 0 FROM orders"
          database: shop
        - sql: "SELECT count(*) FROM orders WHERE item LIKE 'item %'"
          database: shop
          expect: "500"
""")
    try:
        assert drorch("backup", "--policy", env.policy, "--source", "dumps", "--type", "full").code == 0
        result = drorch("verify", "--policy", env.policy, "--source", "dumps", "--json")
    finally:
        env.write_policy()
    assert result.code == 0, result.out + result.err
    [done] = result.json()["verifications"]
    checks = {c["name"]: c["result"] for c in done["checks"]}
    assert checks == {"structure": "passed", "restore": "passed", "files": "passed", "dump shop": "passed",
                      "globals": "passed", "load shop": "passed", "pg_amcheck": "passed",
                      "assertion: SELECT count(*) > 0 FROM orders": "passed",
                      "assertion: SELECT count(*) FROM orders WHERE item LIKE 'item %'": "passed",
                      "stop": "passed", "cleanup": "passed"}, done["checks"]
    assert done["ready_seconds"] > done["restore_seconds"]
    assert_sandbox_gone(env, done)


def test_a_backup_of_a_damaged_page_fails_verification(env, drorch):
    """A page that failed its checksum when the backup was taken: the repository keeps it
    faithfully (read passes), but verification says so, and pg_amcheck finds it after a restore."""
    env.primary.sql("CREATE TABLE victim AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g",
                    dbname="shop")
    env.primary.sql("CHECKPOINT")
    path = env.primary.scalar("SELECT pg_relation_filepath('victim')", dbname="shop")
    env.primary.stop()
    with open(env.primary.pgdata / path, "r+b") as handle:
        handle.seek(8192 * 3 + 4000)
        byte = handle.read(1)
        handle.seek(8192 * 3 + 4000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    env.primary.start()
    try:
        label = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full", "--json").json()["label"]
        result, [done] = verify(drorch, env, "--backup", label, "--level", "read")
        assert result.code == 1
        checks = {c["name"]: c for c in done["checks"]}
        assert checks["read"]["result"] == "passed"  # the repository holds what was read
        assert checks["source damage"]["result"] == "failed" and path in checks["source damage"]["detail"]
        result, [done] = verify(drorch, env, "--backup", label, "--level", "restore")
        assert result.code == 1
        checks = {c["name"]: c for c in done["checks"]}
        assert checks["pg_amcheck"]["result"] == "failed" and "victim" in checks["pg_amcheck"]["detail"]
        assert_sandbox_gone(env, done)
    finally:
        env.primary.stop()
        with open(env.primary.pgdata / path, "r+b") as handle:
            handle.seek(8192 * 3 + 4000)
            handle.write(byte)
        env.primary.start()
