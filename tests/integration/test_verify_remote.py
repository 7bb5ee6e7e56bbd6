"""Restore verification of database backups on a verify host over SSH (a real
sshd on loopback; the servers become postgres/mysql through sudo -n): a
PostgreSQL 15 physical backup and a MariaDB 10.11 chain are restored into a
sandbox there, started and checked there (recovery, pg_amcheck / CHECK TABLE,
assertions), the evidence names the host; a verification killed mid-way leaves
a sandbox and a running server that the next verification on that host sweeps;
a false assertion fails and the sandbox and its server are gone.  (The psql
error path of assertions is the local one: test_verify_postgres.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.mariadb import mariadbd_in
from tests.integration.test_verify_postgres import sandbox_processes
from tests.mariadb import Server
from tests.pg import Cluster, shared_tmpdir
from tests.sshd import scratch_dir, sshd  # noqa: F401  (fixture)

PG, MDB = "main-db", "shop-db"
GOOD_PG = """\
        - sql: "SELECT count(*) > 0 FROM orders"
          database: shop
        - sql: "SELECT sum(id) FROM orders"
          database: shop
          expect: "5050"
"""
GOOD_MDB = """\
        - sql: "SELECT COUNT(*) > 0 FROM orders"
          database: shop
        - sql: "SELECT COUNT(*) FROM orders"
          database: shop
          expect: "50"
"""


class Env:
    """A PostgreSQL primary archiving WAL, a MariaDB server, a repository, and a
    sandbox directory on the verify host (the sshd on loopback)."""

    def __init__(self, runtime, ssh):
        self.base = shared_tmpdir("drorch-verify-remote-")
        self.repo, self.policy, self.ssh = self.base / "repo", self.base / "policy.yaml", ssh
        self.sandbox = scratch_dir("drorch-verify-host-")  # "on the verify host"
        self.runtime = runtime
        self.primary = Cluster(self.base, "primary")
        self.mariadb = None
        self.primary.init(archive_mode="on", archive_command=f"'{runtime} wal-push --policy {self.policy} "
                                                            f"--source {PG} %p'", archive_timeout="0")
        self.write_policy()
        self.primary.start()
        mdb_base = self.base / "mdb"
        mdb_base.mkdir()
        os.chmod(mdb_base, 0o755)
        self.mariadb = Server(mdb_base, "primary").init().start()
        self.write_policy()

    def write_policy(self, pg_assertions: str = GOOD_PG, mdb_assertions: str = GOOD_MDB, extra: str = "") -> None:
        mariadb = "" if self.mariadb is None else f"""\
  {MDB}:
    kind: mariadb
    repository: local
    datadir: {self.mariadb.datadir}
    connection: {{socket: {self.mariadb.socket}, user: root}}
    verify:
      level: restore
      host: verify1
      sandbox: {self.sandbox}
      timeout: 2m
      assertions:
{mdb_assertions}"""
        self.policy.write_text(f"""\
hosts:
{self.ssh.host_yaml("verify1")}
repositories:
  local: {{type: posix, path: {self.repo}, group: postgres}}
sources:
  {PG}:
    kind: postgres
    repository: local
    pgdata: {self.primary.pgdata}
    connection: {{host: 127.0.0.1, port: {self.primary.port}, user: postgres, dbname: postgres}}
    drorch_command: {self.runtime}
    archive: {{timeout: 30s}}
    verify:
      level: restore
      host: verify1
      sandbox: {self.sandbox}
      max_age: 1d
      timeout: 2m
      assertions:
{pg_assertions}{mariadb}{extra}""")

    def leftovers(self) -> tuple[list, list[int]]:
        return list(self.sandbox.iterdir()), sandbox_processes(self.sandbox) + mariadbd_in(self.sandbox)

    def close(self) -> None:
        self.primary.kill()
        if self.mariadb is not None:
            self.mariadb.kill()
        for pid in sandbox_processes(self.sandbox) + mariadbd_in(self.sandbox):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(self.base), str(self.sandbox)], check=False)


@pytest.fixture(scope="module")
def env(drorch_runtime, sshd):  # noqa: F811
    env = Env(drorch_runtime, sshd)
    try:
        env.primary.sql("CREATE DATABASE shop")
        env.primary.sql("CREATE TABLE orders (id int PRIMARY KEY, item text); "
                        "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 100) g", dbname="shop")
        env.mariadb.sql("CREATE DATABASE shop")
        env.mariadb.sql("CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, item TEXT) ENGINE=InnoDB")
        env.mariadb.sql("INSERT INTO shop.orders (item) SELECT CONCAT('item ', seq) FROM seq_1_to_50",
                        database="shop")
        from tests.conftest import invoke

        for source in (PG, MDB):
            result = invoke("backup", "--policy", env.policy, "--source", source, "--type", "full", "--json")
            assert result.code == 0, result.err
        yield env
    finally:
        env.close()


def verify(drorch, env, source, *args):
    result = drorch("verify", "--policy", env.policy, "--source", source, "--json", *args)
    assert "Traceback" not in result.err, result.err
    assert result.out.startswith("{"), result.err
    [done] = result.json()["verifications"]
    return result, done, {c["name"]: c for c in done["checks"]}


def test_postgres_on_a_verify_host_a_killed_verification_is_swept_and_the_next_passes(env, drorch):
    """(One restore fewer: the verification that sweeps the killed one's sandbox is the passing one.)"""
    proc = subprocess.Popen([sys.executable, "-m", "drorch.cli.main", "verify", "--policy", str(env.policy),
                             "--source", PG], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        # the sandbox server started on the verify host and recorded (server.pid): killed earlier, the
        # SSH session's end takes the starting shell with it and no server is left to sweep
        while not (sandbox_processes(env.sandbox) and list(env.sandbox.glob("*/server.pid"))):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no cleanup can run
        proc.wait()
    left, servers = env.leftovers()
    assert len(left) == 1 and servers

    logins = env.ssh.server.logins()
    result, done, checks = verify(drorch, env, PG)
    assert result.code == 0, result.out + result.err
    assert env.leftovers() == ([], [])  # the killed one's sandbox and server, and its own
    assert not any(_state(pid) not in (b"Z", b"") for pid in servers)
    assert done["sandbox"]["host"] == "verify1" and done["sandbox"]["path"].startswith(str(env.sandbox))
    assert done["sandbox"]["pid"] and done["sandbox"]["port"]
    assert checks["archive"]["result"] == "passed" and "host verify1" in checks["archive"]["detail"]
    assert checks["recovery"]["result"] == "passed" and "of host verify1" in checks["recovery"]["detail"]
    assert checks["files"]["result"] == "passed" and checks["pg_amcheck"]["result"] == "passed"
    assert checks["assertion: SELECT count(*) > 0 FROM orders"]["result"] == "passed"
    assert "returned 5050" in checks["assertion: SELECT sum(id) FROM orders"]["detail"]
    assert checks["stop"]["result"] == "passed" and "stopped (shutdown)" in checks["stop"]["detail"]
    assert checks["cleanup"]["result"] == "passed"
    assert done["ready_seconds"] > done["restore_seconds"] > 0
    assert env.ssh.server.logins() > logins  # it went through the verify host's sshd
    record = json.loads((env.repo / done["record"]).read_text())
    assert record["sandbox"]["host"] == "verify1" and record["result"] == "passed"
    listed = {r["label"]: r for r in drorch("list", "--policy", env.policy, "--source", PG, "--json").json()}
    assert listed[done["label"]]["verification"]["result"] == "passed"
    assert env.primary.scalar("SELECT count(*) FROM orders", dbname="shop") == 100  # production untouched


def _state(pid: int) -> bytes:
    """A process's state letter (b"" when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b""


def test_mariadb_restore_verification_on_a_verify_host(env, drorch):
    result, done, checks = verify(drorch, env, MDB)
    assert result.code == 0, result.out + result.err
    assert done["sandbox"]["host"] == "verify1" and done["sandbox"]["path"].startswith(str(env.sandbox))
    assert checks["start"]["result"] == "passed" and "on host verify1" in checks["start"]["detail"]
    assert checks["CHECK TABLE"]["result"] == "passed" and "InnoDB tables OK" in checks["CHECK TABLE"]["detail"]
    assert checks["assertion: SELECT COUNT(*) > 0 FROM orders"]["result"] == "passed"
    assert "returned 50" in checks["assertion: SELECT COUNT(*) FROM orders"]["detail"]
    assert checks["stop"]["result"] == "passed" and checks["cleanup"]["result"] == "passed"
    assert done["ready_seconds"] > done["restore_seconds"] > 0
    assert env.leftovers() == ([], [])
    assert json.loads((env.repo / done["record"]).read_text())["sandbox"]["host"] == "verify1"


def test_a_false_assertion_on_a_verify_host_fails_and_leaves_nothing(env, drorch):
    env.write_policy(mdb_assertions="""\
        - sql: "SELECT COUNT(*) = 0 FROM orders"
          database: shop
        - sql: "SELECT no_such_column FROM orders"
          database: shop
""")
    try:
        result, done, checks = verify(drorch, env, MDB)
    finally:
        env.write_policy()
    assert result.code == 1 and done["result"] == "failed"
    assert "returned 0, expected true" in checks["assertion: SELECT COUNT(*) = 0 FROM orders"]["detail"]
    failed = checks["assertion: SELECT no_such_column FROM orders"]
    assert failed["result"] == "failed" and "no_such_column" in failed["detail"], failed
    assert checks["CHECK TABLE"]["result"] == "passed" and checks["stop"]["result"] == "passed"
    assert checks["cleanup"]["result"] == "passed"
    assert env.leftovers() == ([], [])
    assert env.mariadb.scalar("SELECT COUNT(*) FROM shop.orders") == 50  # production untouched


def test_a_logical_backup_is_loaded_and_checked_on_a_verify_host(env, drorch):
    env.write_policy(extra=f"""\
  dumps:
    kind: postgres
    mode: logical
    repository: local
    databases: [shop]
    connection: {{host: 127.0.0.1, port: {env.primary.port}, user: postgres, dbname: postgres}}
    verify:
      level: restore
      host: verify1
      sandbox: {env.sandbox}
      assertions:
        - sql: "SELECT count(*) FROM orders"
          database: shop
          expect: "100"
""")
    try:
        assert drorch("backup", "--policy", env.policy, "--source", "dumps", "--type", "full").code == 0
        result, done, checks = verify(drorch, env, "dumps")
    finally:
        env.write_policy()
    assert result.code == 0, result.out + result.err
    assert done["sandbox"]["host"] == "verify1"
    assert {name: c["result"] for name, c in checks.items()} == {
        "structure": "passed", "restore": "passed", "files": "passed", "dump shop": "passed", "globals": "passed",
        "load shop": "passed", "pg_amcheck": "passed", "assertion: SELECT count(*) FROM orders": "passed",
        "stop": "passed", "cleanup": "passed"}, done["checks"]
    assert env.leftovers() == ([], [])


def test_the_policy_takes_a_verify_host_for_postgres(env, drorch):
    result = drorch("check", "--policy", env.policy, "--json")
    items = {i["name"]: i for i in result.json()["items"]}
    assert items["host verify1"]["status"] == "ok", items["host verify1"]
