"""Restore verification of MariaDB physical backups against a real MariaDB 10.11
server: the chain is restored and prepared in a sandbox, the datadir starts,
CHECK TABLE passes on every InnoDB table, the policy's assertions run; a false
assertion fails with the query and its value; the sandbox server is stopped and
the sandbox removed either way.  A logical backup's dumps are loaded into a new
server made in the sandbox and checked the same way."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.mariadb import Server, mariadbd_in, shared_tmpdir

SOURCE = "shop-db"
LOGICAL = "shop-dump"
GOOD = """\
      - sql: "SELECT COUNT(*) > 0 FROM orders"
        database: shop
      - sql: "SELECT COUNT(*) FROM orders"
        database: shop
        expect: "300"
"""


class Env:
    def __init__(self):
        self.base = shared_tmpdir("drorch-verify-mdb-")
        self.server = Server(self.base, "primary").init().start()
        self.repo, self.sandbox = self.base / "repo", self.base / "sandbox"
        self.sandbox.mkdir()
        self.policy = self.base / "policy.yaml"
        self.write_policy()

    def write_policy(self, assertions: str = GOOD) -> None:
        self.policy.write_text(f"""\
repositories:
  local: {{type: posix, path: {self.repo}}}
sources:
  {SOURCE}:
    kind: mariadb
    repository: local
    datadir: {self.server.datadir}
    connection: {{socket: {self.server.socket}, user: root}}
    verify:
      level: restore
      sandbox: {self.sandbox}
      timeout: 2m
      assertions:
{assertions}
  {LOGICAL}:
    kind: mariadb
    mode: logical
    repository: local
    connection: {{socket: {self.server.socket}, user: root}}
    databases: [shop]
    verify:
      level: restore
      sandbox: {self.sandbox}
      timeout: 2m
      assertions:
{assertions}""")

    def close(self) -> None:
        self.server.kill()
        for pid in mariadbd_in(self.sandbox):
            os.kill(pid, 9)
        shutil.rmtree(self.base, ignore_errors=True)



@pytest.fixture(scope="module")
def env():
    env = Env()
    try:
        env.server.sql("CREATE DATABASE shop")
        env.server.sql("CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, item TEXT) ENGINE=InnoDB")
        env.server.sql("INSERT INTO shop.orders (item) SELECT CONCAT('item ', seq) FROM seq_1_to_200", database="shop")
        yield env
    finally:
        env.close()


@pytest.fixture(scope="module")
def backups(env):
    from tests.conftest import invoke

    labels = []
    for btype in ("full", "incr"):
        if labels:
            env.server.sql("INSERT INTO shop.orders (item) SELECT CONCAT('more ', seq) FROM seq_1_to_100", database="shop")
        result = invoke("backup", "--policy", env.policy, "--source", SOURCE, "--type", btype, "--json")
        assert result.code == 0, result.err
        labels.append(result.json()["label"])
    return labels


def test_restore_verification_starts_the_datadir_and_checks_every_table(env, backups, drorch):
    result = drorch("verify", "--policy", env.policy, "--source", SOURCE, "--json")
    assert result.code == 0, result.out + result.err
    [done] = result.json()["verifications"]
    assert done["label"] == backups[-1]
    checks = {c["name"]: c for c in done["checks"]}
    assert checks["restore"]["result"] == "passed" and "2 backup stream(s)" in checks["restore"]["detail"]
    assert checks["files"]["result"] == "skipped"
    assert checks["start"]["result"] == "passed"
    assert checks["CHECK TABLE"]["result"] == "passed" and "InnoDB tables OK" in checks["CHECK TABLE"]["detail"]
    assert checks["assertion: SELECT COUNT(*) > 0 FROM orders"]["result"] == "passed"
    assert "returned 300" in checks["assertion: SELECT COUNT(*) FROM orders"]["detail"]
    assert checks["stop"]["result"] == "passed" and checks["cleanup"]["result"] == "passed"
    assert any(name.startswith("restore: ") for name in done["phases"])  # extract, prepare, copy back
    assert done["ready_seconds"] > done["restore_seconds"] > 0
    assert list(env.sandbox.iterdir()) == [] and mariadbd_in(env.sandbox) == []
    listed = {r["label"]: r for r in drorch("list", "--policy", env.policy, "--json").json()}
    assert listed[backups[-1]]["verification"]["result"] == "passed"


def test_a_false_assertion_fails_and_the_sandbox_server_is_stopped(env, backups, drorch):
    env.write_policy("""\
      - sql: "SELECT COUNT(*) = 0 FROM orders"
        database: shop
      - sql: "SELECT no_such_column FROM orders"
        database: shop
""")
    try:
        result = drorch("verify", "--policy", env.policy, "--source", SOURCE, "--backup", backups[0], "--json")
    finally:
        env.write_policy()
    assert result.code == 1
    [done] = result.json()["verifications"]
    checks = {c["name"]: c for c in done["checks"]}
    assert "returned 0, expected true" in checks["assertion: SELECT COUNT(*) = 0 FROM orders"]["detail"]
    assert "the query failed" in checks["assertion: SELECT no_such_column FROM orders"]["detail"]
    assert checks["CHECK TABLE"]["result"] == "passed" and checks["stop"]["result"] == "passed"
    assert list(env.sandbox.iterdir()) == [] and mariadbd_in(env.sandbox) == []
    assert env.server.scalar("SELECT COUNT(*) FROM shop.orders") == 300  # production untouched


def test_a_logical_backup_is_loaded_into_a_new_server_and_checked(env, backups, drorch):
    result = drorch("backup", "--policy", env.policy, "--source", LOGICAL, "--type", "full", "--json")
    assert result.code == 0, result.err
    result = drorch("verify", "--policy", env.policy, "--source", LOGICAL, "--json")
    assert result.code == 0, result.out + result.err
    [done] = result.json()["verifications"]
    checks = {c["name"]: c for c in done["checks"]}
    assert checks["load shop"]["result"] == "passed"
    assert checks["CHECK TABLE"]["result"] == "passed" and "InnoDB tables OK" in checks["CHECK TABLE"]["detail"]
    assert "returned 300" in checks["assertion: SELECT COUNT(*) FROM orders"]["detail"]
    assert checks["stop"]["result"] == "passed" and checks["cleanup"]["result"] == "passed"
    assert list(env.sandbox.iterdir()) == [] and mariadbd_in(env.sandbox) == []
    assert done["ready_seconds"] > done["restore_seconds"]  # the load counts as getting the database ready
