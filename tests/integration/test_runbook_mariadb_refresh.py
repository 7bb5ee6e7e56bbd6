"""`drorch runbook report RUN --refresh` of a MariaDB failover, against real
servers (the primary+GTID replica pair of test_runbook_mariadb.py): the
primary is killed after transactions its replica never received, and its
binlog cannot be read while the failover runs (its index is out of reach), so
the run reports an estimate.  Later the old primary comes back: while it runs
the refresh is refused; once it is stopped the refresh reads its binlog and
the report gives the exact count of transactions and binlog bytes lost."""

from __future__ import annotations

import pytest

from tests.integration.test_runbook_mariadb import RUNBOOK, Topology, run_runbook

LOST = 30


@pytest.fixture(scope="module")
def topo():
    env = Topology()
    try:
        yield env
    finally:
        env.close()


def refresh(drorch, topo, run: str, *more: str):
    return drorch("runbook", "report", "--policy", topo.policies, run, "--state-dir", topo.state, "--refresh", *more)


def test_an_estimated_rpo_is_made_exact_by_refresh_once_the_old_primary_is_stopped(topo, drorch):
    primary, replica = topo.db1, topo.db2
    topo.wait_applied(replica, primary)
    replica.sql("STOP SLAVE")  # it stops receiving: what follows is lost
    start = primary.sql("SHOW MASTER STATUS")[0][:2]
    with topo.app(primary) as conn, conn.cursor() as cur:
        for _ in range(LOST):
            cur.execute("INSERT INTO checks (note) VALUES ('lost')")
    end = primary.sql("SHOW MASTER STATUS")[0][:2]
    assert end[0] == start[0]
    primary.kill()  # SIGKILL: its binlog stays on disk...
    index = primary.datadir / "binlog.index"
    hidden = index.with_name("binlog.index.out-of-reach")
    index.rename(hidden)  # ...but cannot be read during the failover

    result = run_runbook(drorch, topo, "failover")
    assert result.code == 0, result.out + result.err
    report = result.json()
    run, rpo = report["run"], report["rpo"]
    assert report["roles"]["new_primary"] == "db2" and topo.writable() == ["db2"]
    assert rpo["estimate"] is True and rpo["transactions"] < LOST, rpo
    assert "cannot read" in rpo["basis"] and "--refresh" in rpo["basis"], rpo
    assert rpo["met"] is None  # a lower bound within the objective says nothing about it
    markdown = drorch("runbook", "report", "--policy", topo.policies, run, "--state-dir", topo.state).out
    assert "objective: not known (an estimate)" in markdown, markdown

    hidden.rename(index)  # the old primary's host is back, and someone starts its server
    primary.start("--server-id=1", "--read-only", "--skip-slave-start")
    refused = refresh(drorch, topo, run)
    assert refused.code == 1 and "db1 runs" in refused.err and "Traceback" not in refused.err, refused.err
    assert "standby.signal" not in refused.err and "pg.rewind" not in refused.err  # MariaDB words
    assert run_report(drorch, topo, run)["rpo"]["estimate"] is True  # nothing recorded

    primary.stop()
    exact = refresh(drorch, topo, run, "--json")
    assert exact.code == 0, exact.out + exact.err
    rpo = exact.json()["rpo"]
    # exact, and a restart's binlog holding no transaction is not counted
    assert rpo["estimate"] is False and rpo["transactions"] == LOST and rpo["bytes"] == end[1] - start[1], rpo
    assert rpo["met"] is False and "end of binlog" in rpo["basis"], rpo
    markdown = drorch("runbook", "report", "--policy", topo.policies, run, "--state-dir", topo.state)
    assert markdown.code == 0 and f"RPO: {LOST} transactions" in markdown.out, markdown.out
    assert replica.scalar("SELECT count(*) FROM shop.checks WHERE note = 'lost'") == 0


def run_report(drorch, topo, run: str) -> dict:
    result = drorch("runbook", "report", "--policy", topo.policies, run, "--state-dir", topo.state, "--json")
    assert result.code == 0, result.out + result.err
    return result.json()
