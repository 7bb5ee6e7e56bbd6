"""PostgreSQL physical backups against real PostgreSQL 15 clusters: consistency
under pgbench load, PITR, backup from a standby, the WAL archive's rules,
page checksum errors."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from tests.pg import BIN, Cluster, as_postgres, shared_tmpdir

SOURCE = "main-db"


def policy_text(repo, cluster, runtime, extra: str = "", archive: str = "{timeout: 30s}") -> str:
    return f"""\
repositories:
  local:
    type: posix
    path: {repo}
    group: postgres   # root (backups) and postgres (archive_command) share it
sources:
  {SOURCE}:
    kind: postgres
    repository: local
    pgdata: {cluster.pgdata}
    connection: {{host: 127.0.0.1, port: {cluster.port}, user: postgres, dbname: postgres}}
    drorch_command: {runtime}
    archive: {archive}
{extra}"""


class Env:
    """A primary with WAL archiving into a drorch repository, and its policy."""

    def __init__(self, runtime):
        self.base = shared_tmpdir("drorch-pg-")
        self.repo = self.base / "repo"
        self.primary = Cluster(self.base, "primary")
        self.policy = self.base / "policy.yaml"
        self.runtime = runtime
        self.clusters = [self.primary]
        self.primary.init(archive_mode="on", archive_command=f"'{runtime} wal-push --policy {self.policy} "
                                                            f"--source {SOURCE} %p'", archive_timeout="0")
        self.write_policy()
        self.primary.start()

    def write_policy(self, extra: str = "", archive: str = "{timeout: 30s}") -> None:
        self.policy.write_text(policy_text(self.repo, self.primary, self.runtime, extra, archive))

    def restored(self, name: str) -> Cluster:
        cluster = Cluster(self.base, name)
        self.clusters.append(cluster)
        return cluster

    def start_restored(self, cluster: Cluster) -> Cluster:
        cluster.configure(unix_socket_directories=f"'{cluster.pgdata}'")
        cluster.start(wait=False)
        cluster.started = True
        return cluster

    def close(self) -> None:
        for cluster in self.clusters:
            cluster.kill()
        subprocess.run(["rm", "-rf", str(self.base)], check=False)


@pytest.fixture(scope="module")
def env(drorch_runtime):
    env = Env(drorch_runtime)
    try:
        env.primary.pgbench("-i", "-s", "2", "-q")
        env.primary.sql("CREATE TABLE checks (seq int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        # ~25 MB nobody writes to: pgbench's updates touch nearly every 1 MiB block of its own tables, so
        # without untouched data an incr's size depends on how long the load ran, not on block-level reuse
        env.primary.sql("CREATE TABLE untouched AS SELECT g, md5(g::text) || md5((-g)::text) AS pad "
                        "FROM generate_series(1, 250000) g")
        env.primary.sql("CHECKPOINT")
        yield env
    finally:
        env.close()


class Writer:
    """Commits rows 1, 2, 3... into `checks` until stopped, and runs pgbench beside it."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.stop = threading.Event()
        self.committed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.bench = None

    def _run(self) -> None:
        with self.cluster.connect() as conn:
            seq = conn.execute("SELECT coalesce(max(seq), 0) FROM checks").fetchone()[0]
            while not self.stop.is_set():
                seq += 1
                conn.execute("INSERT INTO checks (seq) VALUES (%s)", (seq,))
                self.committed = seq

    def __enter__(self) -> "Writer":
        self.thread.start()
        self.bench = subprocess.Popen([str(BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(self.cluster.port),
                                       "-U", "postgres", "-c", "2", "-T", "600", "-n", "postgres"],
                                      user="postgres", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while self.committed < 5:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.bench.terminate()
        self.bench.wait()


def assert_consistent(cluster: Cluster, at_least: int) -> int:
    seqs = [row[0] for row in cluster.sql("SELECT seq FROM checks ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1)), "restored check rows are not a gap-free prefix"
    assert len(seqs) >= at_least
    balances = cluster.sql("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
                           "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
                           "(SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(bbalance) FROM pgbench_branches)")[0]
    assert len(set(balances)) == 1, f"pgbench invariant broken: {balances}"
    amcheck = as_postgres([BIN / "pg_amcheck", "-h", "127.0.0.1", "-p", cluster.port, "-U", "postgres",
                           "--all", "--install-missing"], check=False)
    assert amcheck.returncode == 0, amcheck.stdout + amcheck.stderr
    return len(seqs)


def test_full_incr_diff_under_load_each_restores_consistent(env, drorch):
    rows_before = {}
    labels = []
    for btype in ["full", "incr", "diff"]:
        with Writer(env.primary) as writer:
            rows_before[btype] = writer.committed
            result = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", btype, "--json")
        assert result.code == 0, result.err
        backup = result.json()
        assert backup["type"] == btype
        assert backup["warnings"] == [], backup["warnings"]  # no false page-checksum alarms under load
        labels.append(backup["label"])
    incr = drorch("show", "--policy", env.policy, "--source", SOURCE, "--backup", labels[1], "--json").json()
    full = drorch("show", "--policy", env.policy, "--source", SOURCE, "--backup", labels[0], "--json").json()
    assert incr["stored_bytes"] < full["stored_bytes"] / 2  # block-level: only changed blocks
    facts = full["manifest"]["source_facts"]
    assert facts["system_identifier"] and facts["start_lsn"] and facts["stop_lsn"] and facts["data_checksums"]
    assert "START WAL LOCATION" in facts["backup_label"]

    for label, btype in zip(labels, ["full", "incr", "diff"]):
        target = env.base / f"restore-{btype}"
        result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--backup", label,
                        "--target", target, "--immediate", "--target-action", "promote")
        assert result.code == 0, result.err
        assert oct(target.stat().st_mode & 0o777) == "0o700"
        cluster = env.start_restored(env.restored(target.name))
        cluster.wait_recovered()
        assert_consistent(cluster, at_least=rows_before[btype])
        cluster.kill()


def test_pitr_restores_exactly_the_first_of_two_commits(env, drorch):
    assert drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full").code == 0
    env.primary.sql("CREATE TABLE IF NOT EXISTS pitr (name text)")
    env.primary.sql("INSERT INTO pitr VALUES ('first')")
    first = env.primary.scalar("SELECT clock_timestamp()")
    time.sleep(1.2)
    env.primary.sql("INSERT INTO pitr VALUES ('second')")
    env.primary.sql("SELECT pg_switch_wal()")
    between = (first + timedelta(seconds=0.6)).astimezone(timezone.utc).isoformat()
    target = env.base / "restore-pitr"
    result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--time", between,
                    "--target", target, "--target-action", "promote")
    assert result.code == 0, result.err
    cluster = env.start_restored(env.restored(target.name))
    deadline = time.monotonic() + 60
    while True:  # wait for the needed WAL to be archived and replayed
        try:
            cluster.wait_recovered(timeout=5)
            break
        except TimeoutError:
            assert time.monotonic() < deadline, cluster.log()[-3000:]
    assert [r[0] for r in cluster.sql("SELECT name FROM pitr ORDER BY name")] == ["first"]

    # a restored copy never archives into production's archive
    cluster.sql("SELECT pg_switch_wal()")
    assert cluster.scalar("SHOW archive_mode") == "off"
    cluster.kill()


def test_wal_archive_refuses_conflicts_and_foreign_clusters(env, drorch, tmp_path):
    env.primary.sql("SELECT pg_switch_wal()")
    env.primary.sql("CREATE TABLE IF NOT EXISTS bump (x int); INSERT INTO bump VALUES (1)")
    env.primary.sql("SELECT pg_switch_wal()")
    time.sleep(1)
    archived = sorted(p for p in (env.repo / "wal" / SOURCE).rglob("0*") if len(p.name) == 24)
    assert archived, "archive_command did not archive anything"
    name = archived[-1].name
    # the same content again: accepted; other content: refused
    fetched = tmp_path / name
    assert drorch("wal-get", "--policy", env.policy, "--source", SOURCE, name, fetched).code == 0
    assert drorch("wal-push", "--policy", env.policy, "--source", SOURCE, fetched).code == 0
    data = bytearray(fetched.read_bytes())
    data[5000] ^= 0xFF
    fetched.write_bytes(bytes(data))
    conflict = drorch("wal-push", "--policy", env.policy, "--source", SOURCE, fetched)
    assert conflict.code == 1 and "different content" in conflict.err
    # WAL of another cluster is refused
    other = Cluster(env.base, "other")
    env.clusters.append(other)
    other.init().start()
    other.sql("SELECT pg_switch_wal()")
    segment = sorted((other.pgdata / "pg_wal").glob("0*"))[0]
    foreign = drorch("wal-push", "--policy", env.policy, "--source", SOURCE, segment)
    assert foreign.code == 1 and "system identifier" in foreign.err
    other.kill()
    missing = drorch("wal-get", "--policy", env.policy, "--source", SOURCE, "00000009000000000000FFFF", tmp_path / "x")
    assert missing.code == 1 and "not in the archive" in missing.err


def test_backup_from_a_streaming_standby(env, drorch):
    standby = Cluster(env.base, "standby")
    env.clusters.append(standby)
    as_postgres([BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", env.primary.port, "-U", "postgres",
                 "-D", standby.pgdata, "-R", "-X", "stream", "-c", "fast"])
    standby.configure(unix_socket_directories=f"'{standby.pgdata}'")
    standby.start()
    env.write_policy(f"""\
    backup_from: standby
    standby: {{host: local, pgdata: {standby.pgdata}, connection: {{host: 127.0.0.1, port: {standby.port}, user: postgres}}}}
""")
    try:
        with Writer(env.primary) as writer:
            before = writer.committed
            result = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full", "--json")
        assert result.code == 0, result.err
        facts = drorch("show", "--policy", env.policy, "--source", SOURCE, "--backup", result.json()["label"],
                       "--json").json()["manifest"]["source_facts"]
        assert facts["backup_from"] == "standby"
        target = env.base / "restore-from-standby"
        assert drorch("restore", "--policy", env.policy, "--source", SOURCE, "--target", target,
                      "--immediate", "--target-action", "promote").code == 0
        restored = env.start_restored(env.restored(target.name))
        restored.wait_recovered()
        assert_consistent(restored, at_least=before)
        restored.kill()
    finally:
        env.write_policy()
        standby.kill()


def test_restore_refuses_a_running_cluster_even_with_force(env, drorch):
    result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--target", env.primary.pgdata,
                    "--force")
    assert result.code == 1 and "is running" in result.err
    assert env.primary.scalar("SELECT 1") == 1


def test_corrupted_page_is_reported_with_file_and_block(env, drorch):
    env.primary.sql("CREATE TABLE victim AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
    env.primary.sql("CHECKPOINT")
    path = env.primary.scalar("SELECT pg_relation_filepath('victim')")
    env.primary.stop()
    with open(env.primary.pgdata / path, "r+b") as handle:
        handle.seek(8192 * 3 + 4000)  # inside page 3, away from its header
        byte = handle.read(1)
        handle.seek(8192 * 3 + 4000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    env.primary.start()
    try:
        result = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full", "--json")
        assert result.code == 0, result.err
        warnings = result.json()["warnings"]
        assert any(path in w and "block 3" in w and "checksum" in w for w in warnings), warnings
    finally:
        env.primary.stop()
        with open(env.primary.pgdata / path, "r+b") as handle:  # undo, for the other tests
            handle.seek(8192 * 3 + 4000)
            handle.write(byte)
        env.primary.start()


def test_logical_backup_and_restore_of_one_database(env, drorch):
    env.primary.sql("CREATE DATABASE shop")
    env.primary.sql("CREATE TABLE orders (id int PRIMARY KEY, item text); "
                    "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 500) g", dbname="shop")
    env.primary.sql("CREATE TABLE notes (t text); INSERT INTO notes VALUES ('hello')", dbname="shop")
    logical = env.base / "logical.yaml"
    logical.write_text(policy_text(env.repo, env.primary, env.runtime).replace(
        f"  {SOURCE}:\n    kind: postgres", "  dumps:\n    kind: postgres\n    mode: logical\n    databases: [shop]"))
    assert drorch("backup", "--policy", logical, "--source", "dumps", "--type", "incr").code == 2
    result = drorch("backup", "--policy", logical, "--source", "dumps", "--type", "full", "--json")
    assert result.code == 0, result.err
    assert result.json()["stats"]["files"] == 2  # globals.sql and the shop dump
    restored = drorch("restore", "--policy", logical, "--source", "dumps", "--database", "shop", "--into", "shop_copy")
    assert restored.code == 0, restored.err
    assert env.primary.scalar("SELECT count(*) FROM orders", dbname="shop_copy") == 500
    assert env.primary.scalar("SELECT t FROM notes", dbname="shop_copy") == "hello"
    again = drorch("restore", "--policy", logical, "--source", "dumps", "--database", "shop", "--into", "shop_copy")
    assert again.code == 1 and "already exists" in again.err
    one = drorch("restore", "--policy", logical, "--source", "dumps", "--database", "shop", "--into", "shop_orders",
                 "--table", "orders")
    assert one.code == 0, one.err
    assert env.primary.scalar("SELECT count(*) FROM orders", dbname="shop_orders") == 500
    assert env.primary.scalar("SELECT to_regclass('notes') IS NULL", dbname="shop_orders")
    bad = env.base / "bad.yaml"
    bad.write_text(logical.read_text().replace("    databases: [shop]", "    databases: [shop]\n    retention: {diff: 2}"))
    check = drorch("policy", "check", bad)
    assert check.code == 2 and "full backups only" in check.err


def test_check_reports_a_broken_archive_command_and_probes(env, drorch):
    good = drorch("check", "--policy", env.policy, "--source", SOURCE, "--archive-probe", "--json")
    assert good.code == 0, good.out + good.err
    items = {i["name"]: i for i in good.json()["items"]}
    assert items[f"source {SOURCE}: archive probe"]["status"] == "ok"
    assert items[f"source {SOURCE}: archive_command"]["status"] == "ok"

    good_command = env.primary.scalar("SHOW archive_command")
    env.primary.sql("ALTER SYSTEM SET archive_command = '/bin/false'")
    env.primary.sql("SELECT pg_reload_conf()")
    try:
        env.primary.sql("CREATE TABLE IF NOT EXISTS churn (x int); INSERT INTO churn VALUES (1)")
        env.primary.sql("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        while not env.primary.scalar("SELECT last_failed_time IS NOT NULL FROM pg_stat_archiver"):
            assert time.monotonic() < deadline, "the archiver never tried"
            time.sleep(0.2)
        bad = drorch("check", "--policy", env.policy, "--source", SOURCE)
        assert bad.code == 1
        assert "FAIL" in bad.out and "archive_command is failing" in bad.out
        assert "Traceback" not in bad.out + bad.err
    finally:
        env.primary.sql("ALTER SYSTEM RESET archive_command")
        env.primary.sql("SELECT pg_reload_conf()")
    assert env.primary.scalar("SHOW archive_command") == good_command


def test_expire_keeps_exactly_the_wal_kept_backups_need(env, drorch):
    env.write_policy("    retention: {full: 1}\n")
    try:
        assert drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full").code == 0
        for _ in range(3):
            env.primary.sql("INSERT INTO checks (seq) SELECT coalesce(max(seq), 0) + 1 FROM checks")
            env.primary.sql("SELECT pg_switch_wal()")
        newest = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full", "--json").json()
        start_wal = drorch("show", "--policy", env.policy, "--source", SOURCE, "--backup", newest["label"],
                           "--json").json()["manifest"]["source_facts"]["start_wal"]
        result = drorch("expire", "--policy", env.policy, "--source", SOURCE, "--json")
        assert result.code == 0, result.err
        out = result.json()[0]
        assert out["wal_removed"] and all(name[8:24] < start_wal[8:24] for name in out["wal_removed"])
        left = sorted(p.name for p in (env.repo / "wal" / SOURCE).rglob("0*") if len(p.name) == 24)
        assert left and min(name[8:24] for name in left) == start_wal[8:24]
        assert [r["label"] for r in drorch("list", "--policy", env.policy, "--source", SOURCE,
                                           "--json").json()] == [newest["label"]]
        target = env.base / "restore-after-expire"
        assert drorch("restore", "--policy", env.policy, "--source", SOURCE, "--target", target,
                      "--immediate", "--target-action", "promote").code == 0
        cluster = env.start_restored(env.restored(target.name))
        cluster.wait_recovered()
        assert_consistent(cluster, at_least=1)
        cluster.kill()
    finally:
        env.write_policy()


def test_permission_error_names_the_user_and_the_access(env, drorch):
    private = env.base / "private.yaml"
    private.write_text(policy_text(env.base / "private-repo", env.primary, env.runtime).replace(
        "    group: postgres   # root (backups) and postgres (archive_command) share it\n", ""))
    assert drorch("repo", "init", "--policy", private).code == 0  # as root: private to root (0700)
    segment = sorted(p for p in (env.primary.pgdata / "pg_wal").glob("0*") if len(p.name) == 24)[0]
    result = as_postgres([env.runtime, "wal-push", "--policy", private, "--source", SOURCE, segment], check=False)
    assert result.returncode == 1
    assert "user postgres cannot" in result.stderr and "owned by root" in result.stderr
    assert "group:" in result.stderr and "Traceback" not in result.stderr


def test_async_wal_push_and_get_through_a_spool(env, drorch):
    spool = env.base / "spool"
    spool.mkdir()
    subprocess.run(["chown", "postgres:postgres", str(spool)], check=True)
    env.write_policy(archive=f"{{timeout: 30s, spool: {spool}, prefetch: 4}}")
    command = f"{env.runtime} wal-push --async --spool {spool} --policy {env.policy} --source {SOURCE} %p"
    env.primary.sql(f"ALTER SYSTEM SET archive_command = '{command}'")
    env.primary.sql("SELECT pg_reload_conf()")
    try:
        before = env.primary.scalar("SELECT archived_count FROM pg_stat_archiver")
        for _ in range(5):
            env.primary.sql("INSERT INTO checks (seq) SELECT coalesce(max(seq), 0) + 1 FROM checks")
            env.primary.sql("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 60
        while env.primary.scalar("SELECT archived_count FROM pg_stat_archiver") < before + 5:
            assert time.monotonic() < deadline, (spool / SOURCE / "push.log").read_text()
            time.sleep(0.1)
        assert env.primary.scalar("SELECT last_failed_wal FROM pg_stat_archiver") is None or \
            env.primary.scalar("SELECT last_failed_time < last_archived_time FROM pg_stat_archiver")
        last = env.primary.scalar("SELECT last_archived_wal FROM pg_stat_archiver")
        assert any(p.name == last for p in (env.repo / "wal" / SOURCE).rglob(last))

        backup = drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "incr", "--json")
        assert backup.code == 0, backup.err
        target = env.base / "restore-async"
        assert drorch("restore", "--policy", env.policy, "--source", SOURCE, "--target", target,
                      "--immediate", "--target-action", "promote").code == 0
        assert "--async" in (target / "postgresql.auto.conf").read_text()
        cluster = env.start_restored(env.restored(target.name))
        cluster.wait_recovered()
        assert_consistent(cluster, at_least=5)
        cluster.kill()
    finally:
        env.primary.sql("ALTER SYSTEM RESET archive_command")
        env.primary.sql("SELECT pg_reload_conf()")
        env.write_policy()


def test_tablespaces_and_config_outside_the_data_directory(env, drorch):
    """Debian's layout (config in /etc/postgresql) and a tablespace: a restored copy
    starts with no manual step and never touches production's paths."""
    etc, space = env.base / "etc-tsdb", env.base / "space1"
    for path in (etc, space):
        path.mkdir()
        subprocess.run(["chown", "postgres:postgres", str(path)], check=True)
    db = Cluster(env.base, "tsdb")
    env.clusters.append(db)
    db.init(archive_mode="on", archive_command=f"'{env.runtime} wal-push --policy {env.policy}.ts --source ts-db %p'")
    for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        (db.pgdata / name).rename(etc / name)
    with open(etc / "postgresql.conf", "a") as conf:
        conf.write(f"data_directory = '{db.pgdata}'\nhba_file = '{etc}/pg_hba.conf'\n"
                   f"ident_file = '{etc}/pg_ident.conf'\n")
    as_postgres([BIN / "pg_ctl", "-D", etc, "-l", env.base / "tsdb.log", "-w", "start"])
    db.started = True
    policy = env.base / "policy.yaml.ts"
    policy.write_text(policy_text(env.repo, db, env.runtime).replace(f"  {SOURCE}:", "  ts-db:"))
    db.sql(f"CREATE TABLESPACE space1 LOCATION '{space}'")
    db.sql("CREATE TABLE far (x int) TABLESPACE space1; INSERT INTO far SELECT generate_series(1, 1000)")
    oid = str(db.scalar("SELECT oid FROM pg_tablespace WHERE spcname = 'space1'"))
    assert drorch("backup", "--policy", policy, "--source", "ts-db", "--type", "full").code == 0
    production = sorted(p.name for p in space.rglob("*"))

    for name, extra in (("ts-inside", []), ("ts-mapped", ["--tablespace-map", f"{oid}={env.base / 'mapped'}"])):
        target = env.base / name
        result = drorch("restore", "--policy", policy, "--source", "ts-db", "--target", target, "--immediate",
                        "--target-action", "promote", *extra)
        assert result.code == 0, result.err
        conf = (target / "postgresql.conf").read_text()
        assert "# drorch restore: data_directory" in conf and "# drorch restore: hba_file" in conf
        assert (target / "pg_hba.conf").exists() and not (target / "drorch.external-config").exists()
        link = target / "pg_tblspc" / oid
        if extra:
            assert link.is_symlink() and str(link.readlink()) == str(env.base / "mapped")
        else:
            assert link.is_dir() and not link.is_symlink()
        restored = env.start_restored(env.restored(name))
        restored.wait_recovered()
        assert restored.scalar("SELECT count(*) FROM far") == 1000
        restored.kill()
    assert sorted(p.name for p in space.rglob("*")) == production  # production's tablespace untouched
    bad = drorch("restore", "--policy", policy, "--source", "ts-db", "--target", env.base / "ts-bad",
                 "--tablespace-map", "99999=/tmp/x")
    assert bad.code == 2 and "no tablespace 99999" in bad.err
    as_postgres([BIN / "pg_ctl", "-D", etc, "-m", "immediate", "stop"], check=False)
    db.started = False


def test_rebuild_a_standby_and_reseed_it_with_delta(env, drorch):
    assert drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "full").code == 0
    target = env.base / "rebuilt-standby"
    conninfo = f"host=127.0.0.1 port={env.primary.port} user=postgres"
    result = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--target", target, "--standby",
                    "--primary-conninfo", conninfo)
    assert result.code == 0, result.err
    assert (target / "standby.signal").exists() and not (target / "recovery.signal").exists()
    standby = env.start_restored(env.restored(target.name))
    standby.wait_ready()
    assert standby.scalar("SELECT pg_is_in_recovery()")
    env.primary.sql("CREATE TABLE IF NOT EXISTS streamed (x int); INSERT INTO streamed VALUES (42)")
    deadline = time.monotonic() + 60
    while True:  # it follows the primary by streaming
        try:
            if standby.scalar("SELECT count(*) FROM streamed WHERE x = 42") == 1:
                break
        except psycopg.Error:
            pass
        assert time.monotonic() < deadline, standby.log()[-2000:]
        time.sleep(0.2)
    standby.stop()

    env.primary.sql("INSERT INTO streamed SELECT generate_series(1, 1000)")
    assert drorch("backup", "--policy", env.policy, "--source", SOURCE, "--type", "incr").code == 0
    reseed = drorch("restore", "--policy", env.policy, "--source", SOURCE, "--target", target, "--standby",
                    "--primary-conninfo", conninfo, "--delta", "--json")
    assert reseed.code == 0, reseed.err
    assert reseed.json()["unchanged_files"] > 100  # only what differed was rewritten
    env.start_restored(standby)  # the delta brought back the primary's postgresql.conf: its port again
    deadline = time.monotonic() + 60
    while True:
        try:
            if standby.scalar("SELECT count(*) FROM streamed") == 1001:
                break
        except psycopg.Error:
            pass
        assert time.monotonic() < deadline, standby.log()[-2000:]
        time.sleep(0.2)
    assert standby.scalar("SELECT pg_is_in_recovery()")
    standby.kill()


def test_over_ssh_backup_and_restore_onto_another_host(env, drorch):
    """The database "host" is reached through a throwaway sshd on loopback: the
    data directory is read over SSH, and restored over SSH with --target-host."""
    from tests.sshd import make_setup, scratch_dir

    workdir = scratch_dir()
    setup = make_setup(workdir)
    try:
        policy = env.base / "ssh-policy.yaml"
        text = policy_text(env.repo, env.primary, env.runtime).replace("    kind: postgres\n",
                                                                      "    kind: postgres\n    host: db1\n")
        policy.write_text(f"hosts:\n{setup.host_yaml('db1')}" + text)
        with Writer(env.primary) as writer:
            before = writer.committed
            result = drorch("backup", "--policy", policy, "--source", SOURCE, "--type", "full", "--json")
        assert result.code == 0, result.err
        logins = setup.server.logins()
        assert logins >= 1  # the files really came over SSH
        target = env.base / "restore-over-ssh"
        result = drorch("restore", "--policy", policy, "--source", SOURCE, "--target", target, "--target-host",
                        "db1", "--immediate", "--target-action", "promote")
        assert result.code == 0, result.err
        assert setup.server.logins() > logins
        assert target.stat().st_uid == env.primary.pgdata.stat().st_uid  # owned by postgres
        cluster = env.start_restored(env.restored(target.name))
        cluster.wait_recovered()
        assert_consistent(cluster, at_least=before)
        cluster.kill()
    finally:
        setup.server.stop()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
