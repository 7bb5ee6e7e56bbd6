"""Runbooks against a real topology: PostgreSQL 15 primary + streaming standby
+ a DR data directory, each "host" behind its own sshd on loopback, WAL archived
into a drorch repository.  The tests run in order on one topology: plan, drill,
switchover, a runner killed mid-run and resumed, failover, the fenced old
primary restarted, and finally both servers lost -> DR from the repository."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.rbtopology import RUNBOOK, SOURCE, Topology

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def topo(drorch_runtime):
    from tests.conftest import invoke

    env = Topology(drorch_runtime)
    try:
        env.db1.sql("CREATE TABLE checks (seq int PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())")
        env.db1.sql("INSERT INTO checks (seq, note) SELECT g, 'seed' FROM generate_series(1, 100) g")
        result = invoke("backup", "--policy", env.policies, "--source", SOURCE, "--type", "full")
        assert result.code == 0, result.err
        env.wait_streaming(env.db2)
        yield env
    finally:
        env.close()


def run_runbook(drorch, env, mode: str, *extra):
    return drorch("runbook", "run", "--policy", env.policies, RUNBOOK, "--mode", mode, "--state-dir", env.state,
                  "--json", *extra)


def journal(env, run_id: str) -> dict:
    return json.loads((env.state / "runs" / run_id / "journal.json").read_text())


def runs(env) -> list[str]:
    return sorted(p.name for p in (env.state / "runs").iterdir()) if (env.state / "runs").exists() else []


def cli_subprocess(env, *args, fault: str | None = None) -> subprocess.Popen:
    environ = {**os.environ, "DRORCH_NO_PROGRESS": "1"}
    if fault:
        environ["DRORCH_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "drorch.cli.main", "runbook", *args, "--policy",
                             str(env.policies), "--state-dir", str(env.state)], cwd=REPO_ROOT, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


class Writer:
    """Commits rows into `checks` on one server until it stops taking them."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.committed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.cluster.connect() as conn:
                seq = conn.execute("SELECT max(seq) FROM checks").fetchone()[0]
                while True:
                    conn.execute("INSERT INTO checks (seq, note) VALUES (%s, 'writer')", (seq + 1,))
                    seq += 1
                    self.committed = seq
        except psycopg.Error:
            return  # the server went away: everything up to self.committed was committed

    def __enter__(self) -> "Writer":
        self.thread.start()
        while self.committed == 0:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(60)


def test_plan_reports_a_lagging_standby_and_changes_nothing(topo, drorch):
    topo.db2.sql("SELECT pg_wal_replay_pause()")
    try:
        topo.db1.sql("CREATE TABLE bulk AS SELECT g, repeat('x', 300) AS pad FROM generate_series(1, 30000) g")
        lag = topo.db2.scalar("SELECT pg_wal_lsn_diff(%s, pg_last_wal_replay_lsn())",
                              topo.db1.scalar("SELECT pg_current_wal_flush_lsn()::text"))
        assert lag > 4 << 20, lag
        before = (topo.db1.scalar("SELECT pg_is_in_recovery()"), topo.db2.scalar("SELECT pg_is_in_recovery()"),
                  topo.db2.scalar("SELECT pg_is_wal_replay_paused()"))
        result = drorch("runbook", "plan", "--policy", topo.policies, RUNBOOK, "--mode", "failover",
                        "--state-dir", topo.state, "--json")
        assert result.code == 1, result.err  # the run would not get through
        plan = result.json()
        assert plan["choice"]["primary"] == "db1" and plan["choice"]["candidate"] is None
        why = plan["choice"]["reasons"]["db2"]
        assert "lags" in why and "beyond the bound of 4.0 MB" in why and "replay is paused" in why, why
        assert "DR branch" in plan["escalation"]
        steps = {s["id"]: s for s in plan["steps"]}
        assert steps["dr-restore"]["would"] and "would restore full backup" in steps["dr-restore"]["preview"]
        human = drorch("runbook", "plan", "--policy", topo.policies, RUNBOOK, "--mode", "switchover",
                       "--state-dir", topo.state)
        assert human.code == 1 and "db2: lags" in human.out and "no standby can take over" in human.out
        # nothing changed
        after = (topo.db1.scalar("SELECT pg_is_in_recovery()"), topo.db2.scalar("SELECT pg_is_in_recovery()"),
                 topo.db2.scalar("SELECT pg_is_wal_replay_paused()"))
        assert after == before == (False, True, True)
        assert runs(topo) == [] and not (topo.repo / "runbooks").exists()
        assert not (topo.db1.pgdata / "standby.signal").exists()
    finally:
        topo.db2.sql("SELECT pg_wal_replay_resume()")
        topo.db1.sql("DROP TABLE IF EXISTS bulk")
    topo.wait_replayed(topo.db2, topo.db1)
    ok = drorch("runbook", "plan", "--policy", topo.policies, RUNBOOK, "--mode", "switchover",
                "--state-dir", topo.state, "--json")
    assert ok.code == 0, ok.out + ok.err
    assert ok.json()["choice"]["candidate"] == "db2"


def test_drill_restores_checks_and_tears_down_without_touching_production(topo, drorch):
    topo.db1.sql("INSERT INTO checks (seq, note) SELECT max(seq) + 1, 'before-dr' FROM checks")
    topo.db1.sql("SELECT pg_switch_wal()")
    result = run_runbook(drorch, topo, "drill")
    assert result.code == 0, result.out + result.err
    report = result.json()
    assert report["status"] == "succeeded" and report["roles"]["dr"] == "dr1"
    states = {s["id"]: s["state"] for s in report["steps"]}
    assert states["dr-fence"] == "skipped" and states["dr-restore"] == "succeeded"
    assert all(c["ok"] for c in report["data_checks"]) and len(report["data_checks"]) == 2
    assert report["rto"]["seconds"] > 0 and report["rpo"]["kind"] == "dr"
    drill_dir = Path(str(topo.dr1.pgdata) + "-drill")
    assert not drill_dir.exists() and report["cleanups"][0]["done"]
    assert topo.writable() == ["db1"]  # production untouched


def test_switchover_loses_nothing_and_the_old_primary_rejoins(topo, drorch):
    with Writer(topo.db1) as writer:
        result = run_runbook(drorch, topo, "switchover")
    assert result.code == 0, result.out + result.err
    report = result.json()
    assert report["roles"]["primary"] == "db1" and report["roles"]["new_primary"] == "db2"
    assert report["rpo"]["bytes"] == 0 and report["rpo"]["estimate"] is False, report["rpo"]
    assert report["rto"]["seconds"] > 0 and report["rto"]["until"] == "verified"
    assert {"fenced", "promoted", "writable", "verified"} <= set(report["milestones"])
    assert writer.committed > 100
    seqs = [r[0] for r in topo.db2.sql("SELECT seq FROM checks WHERE note = 'writer' ORDER BY seq")]
    assert seqs and seqs[-1] == writer.committed, "a committed row was lost"
    assert topo.writable() == ["db2"]
    topo.wait_streaming(topo.db1)
    topo.db2.sql("INSERT INTO checks (seq, note) SELECT max(seq) + 1, 'after-switchover' FROM checks")
    topo.wait_replayed(topo.db1, topo.db2)
    assert topo.db1.scalar("SELECT count(*) FROM checks WHERE note = 'after-switchover'") == 1


def test_runner_killed_mid_run_and_resumed_does_not_repeat_the_promote(topo, drorch):
    assert topo.writable() == ["db2"]
    timeline = topo.db2.scalar("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int")
    killed = cli_subprocess(topo, "run", RUNBOOK, "--mode", "switchover", fault="runbook-after-action-promote")
    out, err = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, out + err
    run_id = runs(topo)[-1]
    before = journal(topo, run_id)
    assert before["steps"]["promote"]["state"] == "running"  # killed after promoting, before journaling it
    assert topo.writable() == ["db1"]  # ... and the promotion had happened
    resumed = drorch("runbook", "resume", "--policy", topo.policies, run_id, "--state-dir", topo.state, "--json")
    assert resumed.code == 0, resumed.out + resumed.err
    after = journal(topo, run_id)
    promote = after["steps"]["promote"]
    assert promote["state"] == "succeeded" and promote["attempts"] == 1
    assert "not run again" in promote["summary"]
    assert after["status"] == "succeeded" and len(after["resumed"]) == 1
    new_timeline = topo.db1.scalar("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
                                   "::bit(32)::int")
    assert new_timeline == timeline + 1  # promoted exactly once
    assert after["outcome"]["rpo"]["bytes"] == 0
    topo.wait_streaming(topo.db2)
    assert topo.writable() == ["db1"]


def test_failover_after_the_primary_is_killed_reports_the_data_lost_in_bytes(topo, drorch):
    primary, standby = topo.db1, topo.db2
    assert topo.writable() == ["db1"]
    plan = drorch("runbook", "plan", "--policy", topo.policies, RUNBOOK, "--mode", "switchover",
                  "--state-dir", topo.state, "--json")
    assert plan.code == 0, plan.out + plan.err  # the last time db1's WAL position is seen
    standby.sql("ALTER SYSTEM SET primary_conninfo = ''")  # it stops receiving: what follows is lost
    standby.sql("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 30
    while standby.scalar("SELECT count(*) FROM pg_stat_wal_receiver"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    primary.sql("INSERT INTO checks (seq, note) SELECT max(seq) + g, 'lost' FROM checks, generate_series(1, 500) g "
                "GROUP BY g")
    end = primary.scalar("SELECT pg_current_wal_insert_lsn()::text")
    received = standby.scalar("SELECT pg_last_wal_receive_lsn()::text")
    expected = standby.scalar("SELECT pg_wal_lsn_diff(%s, %s)", end, received)
    assert expected > 0
    topo.kill_postmaster(primary)
    topo.ssh["db1"].server.stop()  # and its host cannot be reached: only its fence command can act

    result = run_runbook(drorch, topo, "failover")
    assert result.code == 0, result.out + result.err
    report = result.json()
    assert report["roles"] == {**report["roles"], "primary": "db1", "candidate": "db2", "new_primary": "db2"}
    fence = next(s for s in report["steps"] if s["id"] == "fence-old-primary")
    assert "fence command succeeded" in fence["summary"] and (topo.base / "fenced-db1").exists()
    estimate = report["rpo"]
    assert estimate["kind"] == "promotion" and estimate["estimate"] is True, estimate
    assert estimate["bytes"] < expected and "the last WAL position seen on db1" in estimate["basis"]
    assert standby.scalar("SELECT count(*) FROM checks WHERE note = 'lost'") == 0  # what the bytes stand for
    standby.sql("INSERT INTO checks (seq, note) SELECT max(seq) + 1, 'after-failover' FROM checks")  # writes work

    topo.restart_sshd("db1")  # the old primary's host comes back: its end of WAL can be read
    refreshed = drorch("runbook", "report", "--policy", topo.policies, report["run"], "--state-dir", topo.state,
                       "--refresh", "--json")
    assert refreshed.code == 0, refreshed.err
    rpo = refreshed.json()["rpo"]
    assert rpo["estimate"] is False and "pg_waldump" in rpo["basis"], rpo
    assert expected <= rpo["bytes"] <= expected + 65536, (rpo, expected)
    markdown = drorch("runbook", "report", "--policy", topo.policies, report["run"], "--state-dir", topo.state)
    assert markdown.code == 0 and f"RPO: {rpo['text']}" in markdown.out and "| promote |" in markdown.out


def test_the_fenced_old_primary_restarted_does_not_come_back_writable(topo):
    old = topo.db1
    assert topo.writable() == ["db2"], "runs after the failover test"
    old.start(wait=False)  # someone restarts it by hand, or its unit does
    old.started = True
    old.wait_ready()
    assert old.scalar("SELECT pg_is_in_recovery()") is True
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        old.sql("INSERT INTO checks (seq, note) VALUES (-1, 'split brain')")
    assert topo.writable() == ["db2"]  # never two writable primaries
    old.stop()


def test_primary_and_standby_lost_the_dr_branch_restores_from_the_repository(topo, drorch):
    primary = topo.primary()
    assert primary is topo.db2
    primary.sql("INSERT INTO checks (seq, note) SELECT max(seq) + 1, 'before-dr' FROM checks")
    segment = primary.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")
    primary.sql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 60
    while (primary.scalar("SELECT last_archived_wal FROM pg_stat_archiver") or "") < segment:
        assert time.monotonic() < deadline, "the segment was not archived"
        time.sleep(0.2)
    rows = primary.scalar("SELECT count(*) FROM checks")
    topo.kill_postmaster(primary)
    for name in ("db1", "db2"):  # both hosts gone: only their fence commands can act on them
        topo.ssh[name].server.stop()

    runner = cli_subprocess(topo, "run", RUNBOOK, "--mode", "failover", "--json")
    run_id = waiting = None
    deadline = time.monotonic() + 120
    while waiting is None:
        assert runner.poll() is None, runner.communicate()
        assert time.monotonic() < deadline, "the run never asked to escalate"
        if runs(topo) and (journal_now := _read(topo, runs(topo)[-1])):
            run_id, waiting = runs(topo)[-1], journal_now.get("waiting")
        time.sleep(0.2)
    assert waiting["step"] == "escalate" and "No standby can take over" in waiting["prompt"]
    approved = drorch("runbook", "approve", "--policy", topo.policies, run_id, "escalate",
                      "--state-dir", topo.state)
    assert approved.code == 0, approved.err
    out, err = runner.communicate(timeout=600)
    assert runner.returncode == 0, out + err
    report = json.loads(out)
    assert report["status"] == "succeeded" and report["roles"]["dr"] == "dr1"
    assert report["escalation"]["approval"].startswith("approved")
    fence = next(s for s in report["steps"] if s["id"] == "dr-fence")
    assert "fence command succeeded" in fence["summary"]
    assert (topo.base / "fenced-db1").exists() and (topo.base / "fenced-db2").exists()
    assert topo.dr1.scalar("SELECT count(*) FROM checks") == rows  # everything archived came back
    assert all(c["ok"] for c in report["data_checks"]) and report["data_checks"]
    assert report["rto"]["seconds"] > 0 and report["rto"]["until"] == "verified"
    rpo = report["rpo"]
    assert rpo["kind"] == "dr" and rpo["seconds"] >= 0 and "last commit replayed" in rpo["basis"]
    assert topo.writable() == ["dr1"]


def _read(topo, run_id: str) -> dict | None:
    try:
        return journal(topo, run_id)
    except (OSError, ValueError):
        return None
