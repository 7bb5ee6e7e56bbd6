"""A MariaDB DR drill from the repository, against a real MariaDB 10.11: the
primary's mariabackup chain and archived binlogs restored onto a DR node's
drill datadir by `mariadb.restore`, started, its data checked (rows committed
after the backup came back from the binlog archive), RPO/RTO recorded, and
the drill server stopped and removed; production untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap

import pytest

from tests.mariadb import Server, mariadbd_in, shared_tmpdir
from tests.pg import free_port

OPTIONS = ["--log-bin=binlog", "--binlog-format=ROW", "--innodb-buffer-pool-size=64M",
           "--innodb-log-file-size=48M", "--skip-name-resolve", "--server-id=3"]



@pytest.fixture(scope="module")
def site():
    base = shared_tmpdir("drorch-rb-mdb-dr-")
    db1 = Server(base, "db1")
    try:
        db1.init().start()
        db1.sql("CREATE USER drorch@'127.0.0.1' IDENTIFIED BY 'dpw'")
        db1.sql("GRANT ALL ON *.* TO drorch@'127.0.0.1' WITH GRANT OPTION")
        db1.sql("CREATE DATABASE shop")
        db1.sql("CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, item TEXT) ENGINE=InnoDB")
        db1.sql("INSERT INTO shop.orders (item) SELECT CONCAT('item ', seq) FROM seq_1_to_100", database="shop")
        (base / "drorch.pw").write_text("dpw")
        policies = base / "policies"
        policies.mkdir()
        (policies / "policy.yaml").write_text(textwrap.dedent(f"""\
            repositories:
              local: {{type: posix, path: {base}/repo}}
            sources:
              shop-db:
                kind: mariadb
                repository: local
                datadir: {db1.datadir}
                connection: {{socket: {db1.socket}, user: root}}
            """))
        dr_port = free_port()
        (policies / "runbook.yaml").write_text(textwrap.dedent(f"""\
            runbook:
              id: mdb-dr
              title: Bring shop-db up on the DR node from the repository
              owners: [tests]
              summary: a DR drill of a MariaDB source
              topology:
                engine: mariadb
                nodes:
                  db1:
                    datadir: {db1.datadir}
                    connection: {{host: 127.0.0.1, port: {db1.port}, user: drorch, password: "${{file:{base}/drorch.pw}}"}}
                  dr1:
                    datadir: {base}/dr1/data
                    drill_datadir: {base}/dr1/drill
                    connection: {{host: 127.0.0.1, port: {dr_port}, user: drorch, password: "${{file:{base}/drorch.pw}}"}}
                    server_options: {json.dumps(OPTIONS)}
                primary: db1
                dr: [dr1]
                source: shop-db
              objectives: {{rto: 10m, rpo: 1h}}
              modes: [drill]
              dr_branch:
                steps:
                  - id: dr-restore
                    title: Restore the newest backup and the archived binlogs onto the DR node
                    action: mariadb.restore
                    args: {{node: dr}}
                    timeout: 5m
                  - id: dr-check-data
                    title: Every order is there, those after the backup too
                    action: sql.check
                    args: {{node: dr, database: shop, query: "SELECT count(*) FROM orders", expect: {{equals: 150}}}}
                    milestone: verified
            """))
        (base / "dr1").mkdir()
        subprocess.run(["chown", "mysql:", str(base / "dr1")], check=True)
        yield base, db1, policies
    finally:
        db1.kill()
        for pid in mariadbd_in(base / "dr1"):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_drill_restores_backup_and_binlogs_onto_the_dr_node_checks_and_tears_down(site, drorch):
    base, db1, policies = site
    result = drorch("backup", "--policy", policies, "--source", "shop-db", "--type", "full", "--json")
    assert result.code == 0, result.err
    db1.sql("INSERT INTO shop.orders (item) SELECT CONCAT('later ', seq) FROM seq_1_to_50", database="shop")
    archived = drorch("binlog-archive", "--policy", policies, "--source", "shop-db", "--flush")
    assert archived.code == 0, archived.err
    run = drorch("runbook", "run", "mdb-dr", "--mode", "drill", "--policy", policies, "--state-dir", base / "state",
                 "--json")
    assert run.code == 0, run.out + run.err
    report = run.json()
    assert report["status"] == "succeeded", report["error"]
    steps = {s["id"]: s for s in report["steps"]}
    assert steps["dr-restore"]["state"] == "succeeded" and "restored onto dr1" in steps["dr-restore"]["summary"]
    assert steps["dr-check-data"]["state"] == "succeeded" and "returned 150" in steps["dr-check-data"]["summary"]
    assert report["rto"]["seconds"] is not None and report["rto"]["until"] == "verified"
    assert report["rpo"]["kind"] == "dr" and report["rpo"]["seconds"] >= 0
    # torn down: the drill server stopped and its datadir removed; production untouched
    assert mariadbd_in(base / "dr1") == [] and not (base / "dr1" / "drill").exists()
    assert db1.scalar("SELECT count(*) FROM shop.orders") == 150 and db1.scalar("SELECT @@read_only") == 0
