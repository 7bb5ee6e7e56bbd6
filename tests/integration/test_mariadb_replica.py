"""`backup_from: replica` against real MariaDB 10.11 servers: a primary taking
writes and a GTID replica of it (log_slave_updates).  A full and an incr are
taken from the replica (mariabackup --slave-info --safe-slave-backup), each
restored into a fresh datadir and started: its rows are exactly the primary's
at the GTID the backup records, and a server made from it replicates from the
primary from there; the replica's own archived binlogs replay to a GTID.
Without GTID replication the primary's binlog file and position are recorded
and a copy replicating from them ends equal to the primary."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from tests.mariadb import Server, shared_tmpdir

SOURCE = "shop-replica"


def seq_no(gtid: str) -> int:
    """The sequence number of a single-domain GTID position (0-1-42 -> 42)."""
    (one,) = gtid.split(",")
    return int(one.split("-")[2])


class Env:
    def __init__(self):
        self.base = shared_tmpdir("drorch-mdb-replica-")
        self.primary = Server(self.base, "primary").init().start("--server-id=1")
        self.servers = [self.primary]
        try:
            self.replica = self.extra("replica").init().start("--server-id=2", "--log-slave-updates")
        except BaseException:
            self.close()  # the primary is not left running
            raise
        self.repo = self.base / "repo"
        self.policy = self.base / "policy.yaml"
        self.policy.write_text(f"""\
repositories:
  local: {{type: posix, path: {self.repo}}}
sources:
  {SOURCE}:
    kind: mariadb
    repository: local
    backup_from: replica
    datadir: {self.replica.datadir}
    connection: {{socket: {self.replica.socket}, user: root}}
  not-a-replica:
    kind: mariadb
    repository: local
    backup_from: replica
    datadir: {self.primary.datadir}
    connection: {{socket: {self.primary.socket}, user: root}}
""")

    def extra(self, name: str) -> Server:
        server = Server(self.base, name)
        self.servers.append(server)
        return server

    def follow(self, replica: Server) -> None:
        replica.sql("SET GLOBAL read_only = ON")
        replica.sql(f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={self.primary.port}, "
                    "MASTER_USER='repl', MASTER_PASSWORD='rpw', MASTER_USE_GTID=slave_pos")
        replica.sql("START SLAVE")
        self.caught_up(replica)

    def caught_up(self, replica: Server) -> str:
        target = self.primary.scalar("SELECT @@gtid_binlog_pos")
        assert replica.scalar("SELECT MASTER_GTID_WAIT(%s, 30)", target) == 0, replica.log()[-2000:]
        return target

    def close(self) -> None:
        for server in self.servers:
            server.kill()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def env():
    env = Env()
    try:
        env.primary.sql("CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'rpw'")
        env.primary.sql("GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'")
        env.primary.sql("CREATE DATABASE shop")
        env.primary.sql("CREATE TABLE shop.seqs (seq INT PRIMARY KEY, pad CHAR(32)) ENGINE=InnoDB")
        env.primary.sql("CREATE TABLE shop.marks (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT) ENGINE=InnoDB")
        env.follow(env.replica)
        yield env
    finally:
        env.close()


class Writer:
    """Commits rows 1, 2, 3... into shop.seqs on the primary until stopped, noting each one's GTID."""

    def __init__(self, server: Server):
        self.server = server
        self.stop = threading.Event()
        self.gtids: dict[int, int] = {}  # seq -> sequence number of its transaction's GTID
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.connect("shop") as conn, conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM seqs")
            seq = cur.fetchone()[0]
            while not self.stop.is_set():
                seq += 1
                cur.execute("INSERT INTO seqs VALUES (%s, MD5(RAND()))", (seq,))
                cur.execute("SELECT @@last_gtid")
                self.gtids[seq] = seq_no(cur.fetchone()[0])

    def __enter__(self) -> "Writer":
        self.thread.start()
        while len(self.gtids) < 20:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def committed_by(self, gtid: str) -> list[int]:
        upto = seq_no(gtid)
        return sorted(seq for seq, number in self.gtids.items() if number <= upto)


def rows(server: Server, seqs: list[int] | None = None) -> list[tuple]:
    found = server.sql("SELECT seq, pad FROM shop.seqs ORDER BY seq")
    return [row for row in found if seqs is None or row[0] in set(seqs)]


def test_backup_from_a_server_that_is_no_replica_is_refused(env, drorch):
    result = drorch("backup", "--policy", env.policy, "--source", "not-a-replica", "--type", "full")
    assert result.code == 1
    assert "not a replica" in result.err and "Traceback" not in result.err
    assert not (env.repo / "manifests" / "not-a-replica").exists() or not any(
        (env.repo / "manifests" / "not-a-replica").iterdir())


def test_full_and_incr_from_the_replica_restore_the_primary_at_the_recorded_gtid(env, drorch):
    writer = Writer(env.primary)
    with writer:
        labels = []
        for btype in ("full", "incr"):
            result = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", btype, "--json")
            assert result.code == 0, result.err
            labels.append(result.json()["label"])
    env.caught_up(env.replica)

    for label in labels:
        shown = drorch("show", "--policy", env.policy, "--source", SOURCE, "--backup", label, "--json").json()
        facts = shown["manifest"]["source_facts"]
        assert facts["backup_from"] == "replica" and facts["replica_of"] == f"127.0.0.1:{env.primary.port}"
        assert facts["replica_using_gtid"] == "Slave_Pos"
        gtid = facts["primary_gtid"]
        expected = writer.committed_by(gtid)
        assert len(expected) >= 20  # the backup saw rows the primary committed while it ran
        human = drorch("show", "--policy", env.policy, "--source", SOURCE, "--backup", label)
        assert f"primary position: GTID {gtid}" in human.out
        assert f"taken from: replica of 127.0.0.1:{env.primary.port}" in human.out

        target = env.base / f"restored-{label}"
        result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--backup", label, "--target", target)
        assert result.code == 0, result.err
        restored = env.extra(target.name).start("--server-id=3")
        # Exactly the primary's rows at the recorded GTID: nothing later, nothing missing, same content.
        assert rows(restored) == rows(env.primary, expected)
        assert restored.scalar("SELECT @@gtid_slave_pos") == gtid
        assert restored.sql("CHECK TABLE shop.seqs")[-1][-1] == "OK"
        if label == labels[-1]:  # a new replica made from the backup continues from the recorded GTID
            env.follow(restored)
            assert rows(restored) == rows(env.primary)
        restored.kill()


def test_point_in_time_from_the_replicas_archived_binlogs(env, drorch):
    result = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full", "--json")
    assert result.code == 0, result.err
    env.primary.sql("INSERT INTO shop.marks (note) VALUES ('first')")
    first = env.caught_up(env.replica)
    env.primary.sql("INSERT INTO shop.marks (note) VALUES ('second')")
    env.caught_up(env.replica)
    archived = drorch("binlog-archive", "--policy", env.policy, "--source", SOURCE, "--flush")
    assert archived.code == 0, archived.err

    target = env.base / "pitr-gtid"
    result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--gtid", first, "--target", target)
    assert result.code == 0, result.err
    restored = env.extra(target.name).start("--server-id=4")
    assert [r[0] for r in restored.sql("SELECT note FROM shop.marks ORDER BY id")] == ["first"]
    assert rows(restored) == rows(env.primary)  # the writer's rows came through the replay too
    restored.kill()


def test_without_gtid_replication_the_primarys_binlog_coordinates_are_recorded(env, drorch):
    env.replica.sql("STOP SLAVE")
    env.replica.sql("CHANGE MASTER TO MASTER_USE_GTID=no")
    env.replica.sql("START SLAVE")
    try:
        with Writer(env.primary):
            result = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full", "--json")
        assert result.code == 0, result.err
        env.caught_up(env.replica)
        label = result.json()["label"]
        facts = drorch("show", "--policy", env.policy, "--source", SOURCE, "--backup", label,
                       "--json").json()["manifest"]["source_facts"]
        assert facts["replica_using_gtid"] == "No" and facts["primary_binlog_position"] > 0, facts
        assert facts["primary_binlog_file"] in {row[0] for row in env.primary.sql("SHOW BINARY LOGS")}
        target = env.base / "restored-file-position"
        result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--backup", label, "--target", target)
        assert result.code == 0, result.err
        restored = env.extra(target.name).start("--server-id=5")
        # replicating from the recorded coordinates gives the primary's rows: nothing skipped, nothing twice
        restored.sql(f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={env.primary.port}, MASTER_USER='repl', "
                     f"MASTER_PASSWORD='rpw', MASTER_LOG_FILE='{facts['primary_binlog_file']}', "
                     f"MASTER_LOG_POS={facts['primary_binlog_position']}")
        restored.sql("START SLAVE")
        env.caught_up(restored)
        assert rows(restored) == rows(env.primary)
        restored.kill()
    finally:
        env.replica.sql("STOP SLAVE")
        env.replica.sql("CHANGE MASTER TO MASTER_USE_GTID=slave_pos")
        env.replica.sql("START SLAVE")
