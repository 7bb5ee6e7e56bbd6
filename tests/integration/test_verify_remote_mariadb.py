"""Restore verification of a MariaDB *logical* backup on a verify host over SSH
(a real sshd on loopback as `verify1`, login root; the sandbox server runs as
mysql through sudo -n): the dumps are restored into a sandbox there, a new
server is made there with mariadb-install-db, every dump is loaded with the
mariadb client on that host, CHECK TABLE and the assertions run there, and the
evidence names the host.  A dump that does not load (a view on a database the
backup does not hold) fails the verification with the client's message, and
the sandbox and its server are gone either way."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from tests.mariadb import Server, mariadbd_in, shared_tmpdir
from tests.sshd import scratch_dir, sshd  # noqa: F401  (fixture)

GOOD, BROKEN = "shop-dumps", "reports-dump"
ASSERTIONS = """\
        - sql: "SELECT COUNT(*) FROM orders"
          database: shop
          expect: "50"
        - sql: "SELECT MD5(GROUP_CONCAT(photo ORDER BY id)) FROM orders"
          database: shop
          expect: "{photos}"
        - sql: "SELECT note FROM customers WHERE id = 1"
          database: crm
          expect: "Grüße, 東京 🙂"
        - sql: "SELECT COUNT(*) FROM orders_audit"
          database: shop
          expect: "50"
        - sql: "SELECT shop.order_total(7)"
          expect: "14"
"""


class Env:
    def __init__(self, ssh):
        self.base = shared_tmpdir("drorch-verify-remote-mdb-")
        self.ssh, self.repo, self.policy = ssh, self.base / "repo", self.base / "policy.yaml"
        self.sandbox = scratch_dir("drorch-verify-host-")  # "on the verify host"
        self.server = Server(self.base, "primary").init().start()

    def write_policy(self, photos: str, assertions: str = ASSERTIONS) -> None:
        verify = f"""\
    verify:
      level: restore
      host: verify1
      sandbox: {self.sandbox}
      timeout: 2m
"""
        self.policy.write_text(f"""\
hosts:
{self.ssh.host_yaml("verify1")}
repositories:
  local: {{type: posix, path: {self.repo}}}
sources:
  {GOOD}:
    kind: mariadb
    mode: logical
    repository: local
    databases: [shop, crm]
    connection: {{socket: {self.server.socket}, user: root}}
{verify}      assertions:
{assertions.format(photos=photos)}
  {BROKEN}:
    kind: mariadb
    mode: logical
    repository: local
    databases: [reports]
    connection: {{socket: {self.server.socket}, user: root}}
{verify}""")

    def leftovers(self) -> tuple[list, list[int]]:
        return list(self.sandbox.iterdir()), mariadbd_in(self.sandbox)

    def close(self) -> None:
        self.server.kill()
        for pid in mariadbd_in(self.sandbox):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.sandbox, ignore_errors=True)


@pytest.fixture(scope="module")
def env(sshd):  # noqa: F811
    env = Env(sshd)
    try:
        sql = env.server.sql
        for database in ("shop", "crm", "reports", "warehouse"):
            sql(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
        sql("CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, qty INT, photo BLOB) ENGINE=InnoDB")
        sql("CREATE TABLE shop.orders_audit (order_id INT PRIMARY KEY) ENGINE=InnoDB")
        sql("CREATE TRIGGER shop.audit AFTER INSERT ON shop.orders FOR EACH ROW "
            "INSERT INTO shop.orders_audit VALUES (NEW.id)")
        sql("CREATE FUNCTION shop.order_total(n INT) RETURNS INT DETERMINISTIC RETURN n * 2")
        # binary data that only survives a dump written with --hex-blob and loaded byte for byte
        sql("INSERT INTO shop.orders (qty, photo) SELECT seq, UNHEX(SHA2(seq, 512)) FROM seq_1_to_50", database="shop")
        sql("CREATE TABLE crm.customers (id INT PRIMARY KEY, note VARCHAR(50)) ENGINE=InnoDB CHARACTER SET utf8mb4")
        sql("INSERT INTO crm.customers VALUES (1, 'Grüße, 東京 🙂')")
        sql("CREATE TABLE warehouse.stock (id INT PRIMARY KEY, qty INT) ENGINE=InnoDB")
        sql("CREATE VIEW reports.stock_view AS SELECT id, qty FROM warehouse.stock")  # needs warehouse
        env.write_policy(env.server.scalar("SELECT MD5(GROUP_CONCAT(photo ORDER BY id)) FROM shop.orders"))
        yield env
    finally:
        env.close()


def verify(drorch, env, source):
    assert drorch("backup", "--policy", env.policy, "--source", source, "--type", "full").code == 0
    result = drorch("verify", "--policy", env.policy, "--source", source, "--json")
    assert "Traceback" not in result.err and result.out.startswith("{"), result.out + result.err
    [done] = result.json()["verifications"]
    return result, done, {c["name"]: c for c in done["checks"]}


def test_a_logical_backup_is_loaded_and_checked_on_the_verify_host(env, drorch):
    logins = env.ssh.server.logins()
    result, done, checks = verify(drorch, env, GOOD)
    assert result.code == 0, json.dumps(done["checks"], indent=1)
    assert done["sandbox"]["host"] == "verify1" and done["sandbox"]["path"].startswith(str(env.sandbox))
    assert [name for name in checks if not name.startswith("assertion")] == [
        "structure", "restore", "files", "load shop", "load crm", "CHECK TABLE", "stop", "cleanup"], done["checks"]
    assert all(c["result"] == "passed" for c in checks.values()), done["checks"]
    # orders, orders_audit, customers and mysql's 4 (gtid_slave_pos, innodb_*_stats, transaction_registry)
    assert "all 7 InnoDB tables OK" in checks["CHECK TABLE"]["detail"]
    assert len([n for n in checks if n.startswith("assertion")]) == 5
    assert env.ssh.server.logins() > logins  # it ran through the verify host's sshd
    assert json.loads((env.repo / done["record"]).read_text())["sandbox"]["host"] == "verify1"
    assert env.leftovers() == ([], [])


def test_a_dump_that_does_not_load_on_the_verify_host_fails_and_leaves_nothing(env, drorch):
    result, done, checks = verify(drorch, env, BROKEN)
    assert result.code == 1 and done["result"] == "failed"
    load = checks["load reports"]
    assert load["result"] == "failed" and "warehouse" in load["detail"], load
    assert "CHECK TABLE" not in checks  # nothing is checked on a half-loaded server
    assert checks["stop"]["result"] == "passed" and checks["cleanup"]["result"] == "passed"
    assert env.leftovers() == ([], [])
    assert env.server.scalar("SELECT COUNT(*) FROM reports.stock_view") == 0  # production untouched
