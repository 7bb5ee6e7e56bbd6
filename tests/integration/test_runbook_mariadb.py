"""MariaDB runbooks against real servers: a MariaDB 10.11 primary and a GTID
replica on loopback ports (host `local`), in order on one topology: plan
(nothing changed), switchover under a committing writer (RPO 0 measured, the
old primary replicates from the new one), failover after the primary is
killed (fenced by its files, the replica promoted, the transactions lost
counted from the old primary's binlog on disk), the fenced old primary
restarted comes back read-only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import textwrap

import pymysql
import pytest

from drorch.runbook.context import mdb_spec
from tests.mariadb import Server, shared_tmpdir

RUNBOOK = "mdb-failover"
OPTIONS = ["--log-bin=binlog", "--binlog-format=ROW", "--log-slave-updates", "--innodb-buffer-pool-size=64M",
           "--innodb-log-file-size=48M", "--skip-name-resolve"]


class Topology:
    def __init__(self):
        self.base = shared_tmpdir("drorch-rb-mdb-")
        self.db1, self.db2 = Server(self.base, "db1"), Server(self.base, "db2")
        self.state, self.repo = self.base / "state", self.base / "repo"
        try:
            self._build()
        except BaseException:
            self.close()  # a server started before the failure is stopped, not left running
            raise

    def _build(self) -> None:
        for server, sid in ((self.db1, 1), (self.db2, 2)):
            server.init().start(f"--server-id={sid}", "--log-slave-updates")
        self.db1.sql("CREATE USER drorch@'127.0.0.1' IDENTIFIED BY 'dpw'")
        self.db1.sql("GRANT ALL ON *.* TO drorch@'127.0.0.1' WITH GRANT OPTION")
        self.db1.sql("CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'rpw'")
        self.db1.sql("GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'")
        self.db1.sql("CREATE USER app@'127.0.0.1' IDENTIFIED BY 'apw'")
        self.db1.sql("CREATE DATABASE shop")
        self.db1.sql("GRANT SELECT, INSERT ON shop.* TO app@'127.0.0.1'")
        self.db1.sql("CREATE TABLE shop.checks (seq int AUTO_INCREMENT PRIMARY KEY, note varchar(40))")
        self.follow(self.db2, self.db1)
        self.policies = self.base / "policies"
        self.policies.mkdir()
        for name, secret in (("drorch.pw", "dpw"), ("repl.pw", "rpw")):
            (self.base / name).write_text(secret)
        (self.policies / "policy.yaml").write_text(f"repositories:\n  local: {{type: posix, path: {self.repo}}}\n")
        (self.policies / "runbook.yaml").write_text(runbook_text(self))

    def follow(self, replica: Server, primary: Server) -> None:
        replica.sql("SET GLOBAL read_only = ON")
        replica.sql(f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, MASTER_USER='repl', "
                    "MASTER_PASSWORD='rpw', MASTER_USE_GTID=slave_pos")
        replica.sql("START SLAVE")
        self.wait_applied(replica, primary)

    def wait_applied(self, replica: Server, primary: Server, timeout: float = 30) -> None:
        target = primary.scalar("SELECT @@gtid_binlog_pos")
        assert replica.scalar("SELECT MASTER_GTID_WAIT(%s, %s)", target, timeout) == 0, replica.log()[-2000:]

    def writable(self) -> list[str]:
        out = []
        for server in (self.db1, self.db2):
            try:
                if server.scalar("SELECT @@read_only") == 0:
                    out.append(server.datadir.name)
            except pymysql.err.Error:
                pass
        return out

    def app(self, server: Server):
        return pymysql.connect(host="127.0.0.1", port=server.port, user="app", password="apw", database="shop",
                               autocommit=True)

    def close(self) -> None:
        for server in (self.db1, self.db2):
            server.kill()
            pid_file = server.datadir / "mysqld.pid"  # servers drorch started itself
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        subprocess.run(["rm", "-rf", str(self.base)], check=False)


def node(name: str, server: Server) -> str:
    secret = server.base
    return (f"      {name}:\n        datadir: {server.datadir}\n"
            f"        connection: {{host: 127.0.0.1, port: {server.port}, user: drorch, "
            f"password: \"${{file:{secret}/drorch.pw}}\"}}\n"
            f"        replication: {{user: repl, password: \"${{file:{secret}/repl.pw}}\"}}\n"
            f"        server_options: {json.dumps(OPTIONS + [f'--server-id={name[-1]}'])}\n")


def runbook_text(topo: Topology) -> str:
    steps = textwrap.dedent("""\
      steps:
        - id: confirm-primary-down
          title: Confirm that the primary is down
          modes: [failover]
          action: mariadb.status
          args: {node: primary, expect: {role: down}}
          timeout: 10s
        - id: check-candidate
          title: Check the replica that takes over
          action: mariadb.status
          args: {node: candidate, expect: {role: standby}}
        - id: nearly-caught-up
          title: Wait until the replica is nearly caught up
          modes: [switchover]
          action: mariadb.wait_caught_up
          args: {node: candidate, of: primary, max_lag: 1000}
          timeout: 1m
        - id: fence-old-primary
          title: Fence the old primary
          action: mariadb.fence
          args: {nodes: [primary], mode: read_only, approval_timeout: 5s}
          timeout: 1m
        - id: caught-up
          title: Wait until the replica has every committed transaction
          modes: [switchover]
          action: mariadb.wait_caught_up
          args: {node: candidate, of: primary}
          timeout: 1m
        - id: replayed
          title: Let the replica apply what it received
          modes: [failover]
          action: mariadb.wait_caught_up
          args: {node: candidate, received: true}
          timeout: 1m
        - id: promote
          title: Promote the replica
          action: mariadb.promote
          args: {node: candidate}
        - id: repoint
          title: The others replicate from the new primary
          action: mariadb.repoint
          args: {nodes: [standbys, primary], to: new_primary}
          timeout: 1m
        - id: check-writes
          title: The new primary takes writes
          action: sql.check
          args: {node: new_primary, query: "INSERT INTO shop.checks (note) VALUES ('check') RETURNING seq", write: true, expect: {min: 1}}
          milestone: verified
        - id: old-primary-not-writable
          title: The old primary does not take writes
          action: mariadb.status
          args: {node: primary, expect: {writable: false}}
    """)
    head = (f"runbook:\n  id: {RUNBOOK}\n  title: test pair\n  owners: [tests]\n"
            "  summary: a MariaDB primary and a GTID replica\n  topology:\n    engine: mariadb\n    nodes:\n")
    tail = ("    primary: db1\n    standbys: [db2]\n    repository: local\n    max_lag: 100000\n"
            "  objectives: {rto: 1m, rpo_transactions: 0}\n  modes: [switchover, failover]\n")
    return head + node("db1", topo.db1) + node("db2", topo.db2) + tail + textwrap.indent(steps, "  ")


@pytest.fixture(scope="module")
def topo():
    env = Topology()
    try:
        yield env
    finally:
        env.close()


def run_runbook(drorch, env, mode: str):
    return drorch("runbook", "run", "--policy", env.policies, RUNBOOK, "--mode", mode, "--state-dir", env.state,
                  "--json")


class Writer:
    """Commits rows as the application until the server stops taking them."""

    def __init__(self, topo, server):
        self.conn = topo.app(server)
        self.committed: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.conn.cursor() as cur:
                while True:
                    cur.execute("INSERT INTO checks (note) VALUES ('writer')")
                    self.committed.append(cur.lastrowid)
        except pymysql.err.Error:
            return

    def __enter__(self):
        self.thread.start()
        while len(self.committed) < 20:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(60)


def test_plan_changes_nothing(topo, drorch):
    before = (topo.writable(), topo.db2.scalar("SELECT @@gtid_slave_pos"))
    result = drorch("runbook", "plan", "--policy", topo.policies, RUNBOOK, "--mode", "switchover",
                    "--state-dir", topo.state, "--json")
    assert result.code == 0, result.out + result.err
    plan = result.json()
    assert plan["choice"]["primary"] == "db1" and plan["choice"]["candidate"] == "db2", plan["choice"]
    assert "chosen" in plan["choice"]["reasons"]["db2"] and "transactions" in plan["choice"]["reasons"]["db2"]
    steps = {s["id"]: s for s in plan["steps"]}
    assert steps["nearly-caught-up"]["now"]["ok"] is True
    assert "SET GLOBAL read_only = ON" in "\n".join(steps["fence-old-primary"]["would"])
    assert "it would be read_only ON" in steps["fence-old-primary"]["preview"]
    assert (topo.writable(), topo.db2.scalar("SELECT @@gtid_slave_pos")) == before == (["db1"], before[1])
    assert not (topo.state / "runs").exists() and not (topo.repo / "runbooks").exists()
    assert not os.path.exists(str(topo.db1.datadir) + ".drorch-fence.cnf")


def test_switchover_under_a_writer_loses_nothing_and_the_old_primary_follows(topo, drorch):
    with Writer(topo, topo.db1) as writer:
        result = run_runbook(drorch, topo, "switchover")
    assert result.code == 0, result.out + result.err
    report = result.json()
    assert report["roles"]["primary"] == "db1" and report["roles"]["new_primary"] == "db2"
    rpo = report["rpo"]
    assert rpo["transactions"] == 0 and rpo["bytes"] == 0 and rpo["estimate"] is False, rpo
    assert rpo["met"] is True and report["rto"]["seconds"] > 0
    assert {"fenced", "promoted", "writable", "verified"} <= set(report["milestones"])
    rows = {r[0] for r in topo.db2.sql("SELECT seq FROM shop.checks WHERE note = 'writer'")}
    assert len(writer.committed) > 20 and set(writer.committed) <= rows, "a committed row was lost"
    assert topo.writable() == ["db2"]
    replica = topo.db1.sql("SHOW SLAVE STATUS")
    assert replica and topo.db1.scalar("SELECT @@read_only") == 1
    with topo.app(topo.db2) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO checks (note) VALUES ('after-switchover')")
    topo.wait_applied(topo.db1, topo.db2)
    assert topo.db1.scalar("SELECT count(*) FROM shop.checks WHERE note = 'after-switchover'") == 1


def test_failover_after_the_primary_is_killed_counts_the_transactions_lost(topo, drorch):
    primary, replica = topo.db2, topo.db1
    assert topo.writable() == ["db2"]
    replica.sql("STOP SLAVE")  # it stops receiving: what follows is lost
    with topo.app(primary) as conn, conn.cursor() as cur:
        for _ in range(50):
            cur.execute("INSERT INTO checks (note) VALUES ('lost')")
    primary.kill()  # SIGKILL: its binlog stays on disk

    result = run_runbook(drorch, topo, "failover")
    assert result.code == 0, result.out + result.err
    report = result.json()
    assert report["roles"]["primary"] == "db2" and report["roles"]["new_primary"] == "db1"
    fence = next(s for s in report["steps"] if s["id"] == "fence-old-primary")
    assert "found not running" in fence["summary"], fence
    rpo = report["rpo"]
    assert rpo["estimate"] is False and rpo["transactions"] == 50 and rpo["bytes"] > 0, rpo
    assert rpo["met"] is False and "end of binlog" in rpo["basis"]
    repoint = next(s for s in report["steps"] if s["id"] == "repoint")
    assert "db2 (down" in repoint["summary"]
    assert topo.writable() == ["db1"]
    assert replica.scalar("SELECT count(*) FROM shop.checks WHERE note = 'lost'") == 0
    with topo.app(replica) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO checks (note) VALUES ('after-failover')")  # writes work
    markdown = drorch("runbook", "report", "--policy", topo.policies, report["run"], "--state-dir", topo.state)
    assert markdown.code == 0 and "RPO: 50 transactions" in markdown.out, markdown.out


def test_the_fenced_old_primary_restarted_comes_back_read_only(topo):
    old = topo.db2
    assert os.path.exists(str(old.datadir) + ".drorch-fence.cnf")
    from drorch.policy import load_policy

    book = load_policy(topo.policies).runbooks[RUNBOOK]
    spec = mdb_spec("db2", book.topology.nodes["db2"])
    subprocess.run(["sh", "-c", spec.default_start()], check=True)  # someone restarts it by its service
    deadline = time.monotonic() + 60
    while True:
        try:
            old.connect().close()
            break
        except pymysql.err.OperationalError:
            assert time.monotonic() < deadline, old.log()[-2000:]
            time.sleep(0.2)
    assert old.scalar("SELECT @@read_only") == 1
    with pytest.raises(pymysql.err.OperationalError) as caught, topo.app(old) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO checks (note) VALUES ('split brain')")
    assert caught.value.args[0] == 1290  # --read-only
    assert topo.writable() == ["db1"]  # never two writable primaries
