"""MariaDB physical backups against real MariaDB 10.11 servers: a chain under
write load, point-in-time restore from archived binlogs, a broken chain
refused, logical dumps."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pymysql
import pytest

from tests.mariadb import Server, shared_tmpdir

SOURCE = "shop-db"


class Env:
    def __init__(self):
        self.base = shared_tmpdir("drorch-mdb-")
        self.server = Server(self.base, "primary").init().start()
        self.repo = self.base / "repo"
        self.policy = self.base / "policy.yaml"
        self.servers = [self.server]
        self.policy.write_text(f"""\
repositories:
  local: {{type: posix, path: {self.repo}}}
sources:
  {SOURCE}:
    kind: mariadb
    repository: local
    datadir: {self.server.datadir}
    connection: {{socket: {self.server.socket}, user: root}}
  shop-dumps:
    kind: mariadb
    mode: logical
    repository: local
    databases: [shop]
    connection: {{socket: {self.server.socket}, user: root}}
""")

    def restored(self, target) -> Server:
        server = Server(self.base, target.name)
        self.servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in self.servers:
            server.kill()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def env():
    env = Env()
    try:
        env.server.sql("CREATE DATABASE shop")
        env.server.sql("CREATE TABLE shop.seqs (seq INT PRIMARY KEY, pad VARCHAR(200)) ENGINE=InnoDB")
        env.server.sql("CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, item TEXT) ENGINE=InnoDB")
        yield env
    finally:
        env.close()


class Writer:
    """Commits rows 1, 2, 3... into shop.seqs until stopped."""

    def __init__(self, server: Server):
        self.server = server
        self.stop = threading.Event()
        self.committed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.connect("shop") as conn, conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM seqs")
            seq = cur.fetchone()[0]
            while not self.stop.is_set():
                seq += 1
                cur.execute("INSERT INTO seqs VALUES (%s, REPEAT('x', 150))", (seq,))
                self.committed = seq

    def __enter__(self) -> "Writer":
        self.thread.start()
        while self.committed < 5:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def assert_consistent(server: Server, at_least: int) -> None:
    seqs = [row[0] for row in server.sql("SELECT seq FROM shop.seqs ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1)), "restored rows are not a gap-free prefix"
    assert len(seqs) >= at_least
    for table in ("seqs", "orders"):
        status = server.sql(f"CHECK TABLE shop.{table}")
        assert status[-1][-1] == "OK", status


def test_chain_under_load_restores_consistent(env, drorch):
    plan = ["full", "incr", "incr", "diff", "incr"]
    backups = []
    for btype in plan:
        with Writer(env.server) as writer:
            before = writer.committed
            result = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", btype, "--json")
        assert result.code == 0, result.err
        backups.append((result.json()["label"], before))
    rows = drorch("list", "--policy", env.policy, "--source", SOURCE, "--json").json()
    assert [r["type"] for r in rows] == plan
    assert rows[3]["parent"] == rows[0]["label"]  # the diff builds on the full
    assert rows[4]["parent"] == rows[3]["label"]
    facts = drorch("show", "--policy", env.policy, "--source", SOURCE, "--backup", rows[1]["label"],
                   "--json").json()["manifest"]["source_facts"]
    assert 0 < facts["from_lsn"] <= facts["to_lsn"] < facts["last_lsn"] and facts["binlog_file"]

    for label, before in backups:
        target = env.base / f"r-{label}"
        result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--backup", label,
                        "--target", target)
        assert result.code == 0, result.err
        assert "prepare" in result.out  # it says what it did and how long each phase took
        assert not (env.base / f"r-{label}.drorch-staging").exists()
        server = env.restored(target)
        assert_consistent(server, at_least=before)
        server.kill()


def test_point_in_time_from_archived_binlogs(env, drorch):
    assert drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full").code == 0
    env.server.sql("INSERT INTO shop.orders (item) VALUES ('first')")
    after_first = env.server.sql("SHOW MASTER STATUS")[0]
    first_gtid = env.server.scalar("SELECT @@gtid_binlog_pos")
    first_at = datetime.now(timezone.utc)
    time.sleep(2.2)
    env.server.sql("INSERT INTO shop.orders (item) VALUES ('second')")
    archived = drorch("binlog-archive", "--policy", env.policy, "--source", SOURCE, "--flush", "--json")
    assert archived.code == 0, archived.err

    by_time = env.base / "pitr-time"
    moment = (first_at + timedelta(seconds=1)).replace(microsecond=0).isoformat()
    result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--time", moment, "--target", by_time)
    assert result.code == 0, result.err
    server = env.restored(by_time)
    assert [r[0] for r in server.sql("SELECT item FROM shop.orders ORDER BY id")] == ["first"]
    server.kill()

    by_position = env.base / "pitr-position"
    result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--position",
                    f"{after_first[0]}:{after_first[1]}", "--target", by_position)
    assert result.code == 0, result.err
    server = env.restored(by_position)
    assert [r[0] for r in server.sql("SELECT item FROM shop.orders ORDER BY id")] == ["first"]
    server.kill()

    by_gtid = env.base / "pitr-gtid"
    result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--gtid", first_gtid, "--target", by_gtid)
    assert result.code == 0, result.err
    server = env.restored(by_gtid)
    assert [r[0] for r in server.sql("SELECT item FROM shop.orders ORDER BY id")] == ["first"]
    server.kill()


def test_a_chain_with_a_missing_middle_increment_is_refused(env, drorch):
    labels = []
    for btype in ("full", "incr", "incr"):
        env.server.sql("INSERT INTO shop.orders (item) VALUES (%s)", btype)
        labels.append(drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", btype,
                             "--json").json()["label"])
    (env.repo / "manifests" / SOURCE / labels[1]).unlink()  # the middle increment is gone
    target = env.base / "broken-chain"
    result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--backup", labels[2], "--target", target)
    assert result.code == 1
    assert labels[1] in result.err and "missing" in result.err and "Traceback" not in result.err
    assert not target.exists() and not (env.base / "broken-chain.drorch-staging").exists()


def test_logical_dump_and_restore_into_a_new_name(env, drorch):
    env.server.sql("INSERT INTO shop.orders (item) VALUES ('dumped')")
    assert drorch("backup", "--policy", env.policy, "--source", "shop-dumps", "--type", "incr").code == 2
    result = drorch("backup", "--policy", env.policy, "--source", "shop-dumps", "--type", "full", "--json")
    assert result.code == 0, result.err
    restored = drorch("restore", "--policy", env.policy, "--source", "shop-dumps", "--database", "shop",
                      "--into", "shop_copy")
    assert restored.code == 0, restored.err
    count = env.server.scalar("SELECT COUNT(*) FROM shop_copy.orders WHERE item = 'dumped'")
    assert count == 1
    again = drorch("restore", "--policy", env.policy, "--source", "shop-dumps", "--database", "shop",
                   "--into", "shop_copy")
    assert again.code == 1 and "already exists" in again.err


def test_check_reports_binlog_lag_and_gaps_and_expire_keeps_needed_binlogs(env, drorch):
    assert drorch("binlog-archive", "--policy", env.policy, "--source", SOURCE, "--flush").code == 0
    ok = drorch("check", "--policy", env.policy, "--source", SOURCE, "--json")
    assert ok.code == 0, ok.out
    items = {i["name"]: i for i in ok.json()["items"]}
    assert items[f"source {SOURCE}: binlog archive"]["status"] == "ok"
    env.server.sql("FLUSH BINARY LOGS")  # a closed binlog the archive lacks: lag (a warning)
    lag = drorch("check", "--policy", env.policy, "--source", SOURCE, "--json").json()
    item = next(i for i in lag["items"] if i["name"].endswith("binlog archive"))
    assert item["status"] == "warn" and "not archived" in item["message"]
    assert drorch("binlog-archive", "--policy", env.policy, "--source", SOURCE, "--flush").code == 0
    names = sorted(p.name for p in (env.repo / "binlog" / SOURCE).iterdir())
    for key in (env.repo / "binlog" / SOURCE / names[-2]).iterdir():  # a hole in the middle
        key.unlink()
    (env.repo / "binlog" / SOURCE / names[-2]).rmdir()
    gap = drorch("check", "--policy", env.policy, "--source", SOURCE)
    assert gap.code == 1 and "gap" in gap.out and names[-2] in gap.out

    policy = env.base / "retention.yaml"
    policy.write_text(env.policy.read_text().replace("    datadir:", "    retention: {full: 1}\n    datadir:", 1))
    newest = drorch("backup", "--policy", policy, "--source", SOURCE, "--type", "full", "--json").json()
    first_needed = drorch("show", "--policy", policy, "--source", SOURCE, "--backup", newest["label"],
                          "--json").json()["manifest"]["source_facts"]["binlog_file"]
    result = drorch("expire", "--policy", policy, "--source", SOURCE, "--json")
    assert result.code == 0, result.err
    removed = result.json()[0]["binlogs_removed"]
    assert removed and all(name < first_needed for name in removed)
    left = sorted(p.name for p in (env.repo / "binlog" / SOURCE).iterdir())
    assert left[0] == first_needed


def test_over_ssh_backup_and_restore_onto_another_host(env, drorch):
    """mariabackup runs on the database "host" behind a throwaway sshd and streams
    over the SSH channel; the restore prepares and moves back on the target host."""
    from tests.sshd import make_setup, scratch_dir

    workdir = scratch_dir()
    setup = make_setup(workdir)
    try:
        policy = env.base / "ssh.yaml"
        policy.write_text(f"hosts:\n{setup.host_yaml('db2')}" +
                          env.policy.read_text().replace("    kind: mariadb\n    repository", "    kind: mariadb\n"
                                                         "    host: db2\n    repository", 1))
        with Writer(env.server) as writer:
            before = writer.committed
            result = drorch("backup", "--policy", policy, "--source", SOURCE, "--type", "full", "--json")
        assert result.code == 0, result.err
        logins = setup.server.logins()
        assert logins >= 1  # mariabackup ran through db2's sshd
        target = env.base / "restore-over-ssh"
        result = drorch("restore", "--policy", policy, "--source", SOURCE, "--target", target, "--target-host", "db2")
        assert result.code == 0, result.err
        assert setup.server.logins() > logins
        server = env.restored(target)
        assert_consistent(server, at_least=before)
        server.kill()
    finally:
        setup.server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
