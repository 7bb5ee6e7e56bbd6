"""`drorch daemon` as a real process: schedules that fire within the test
(6-field cron, seconds first), reload with a broken policy, SIGTERM in the
middle of a backup, catch-up after downtime, two daemons on one repository,
and /metrics read with prometheus-client's parser and compared with what the
repository holds."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from drorch.timefmt import parse_iso, utcnow
from tests.daemonproc import DaemonProc, daemon_policy, port

EVERY_2S = '"*/2 * * * * *"'
PG_SOURCE = 'kind: postgres\nrepository: local\npgdata: /nonexistent/pgdata\nschedule:\n  full: "0 0 1 1 *"\n'


def files_source(data: Path, schedule: str) -> str:
    return f"kind: files\nrepository: local\npaths: [{data}]\nschedule:\n" + "".join(
        f"  {line}\n" for line in schedule.strip().splitlines())


@pytest.fixture
def env(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    daemons: list[DaemonProc] = []

    class Env:
        repo = tmp_path / "repo"

        def policy(self, sources: dict, name: str = "policy.yaml", daemon_extra: str = "", state: str = "state",
                   listen: int | None = None):
            self.port = listen or port()
            return daemon_policy(tmp_path / name, self.repo, sources, state=tmp_path / state, port=self.port,
                                 daemon_extra=daemon_extra)

        def start(self, policy: Path, log: str = "daemon.log", **kwargs) -> DaemonProc:
            daemon = DaemonProc(policy, tmp_path / log, port=self.port, **kwargs)
            daemons.append(daemon)
            return daemon

    Env.data, Env.tmp = data, tmp_path
    try:
        yield Env()
    finally:
        for daemon in daemons:
            daemon.kill()


def backups(drorch, policy, source="main", all_runs=False):
    args = ["list", "--policy", policy, "--source", source, "--json"] + (["--all"] if all_runs else [])
    result = drorch(*args)
    assert result.code == 0, result.err
    return result.json()


def finished(daemon: DaemonProc, **match) -> list[dict]:
    return daemon.events("job-finished", **match)


def test_schedules_fire_failures_are_logged_and_metrics_match_the_repository(env, drorch):
    policy = env.policy({"main": files_source(env.data, f"incr: {EVERY_2S}"),
                         "broken": files_source(env.data / "missing", f"full: {EVERY_2S}"),
                         "checked": files_source(env.data, 'verify: "*/3 * * * * *"'),
                         "pg": PG_SOURCE})
    # a WAL segment archived 100 s ago, for the archive lag of the PostgreSQL source
    assert drorch("repo", "init", "--policy", policy, "--repository", "local").code == 0
    segment = env.repo / "wal" / "pg" / "0000000100000000" / "000000010000000000000001"
    segment.parent.mkdir(parents=True)
    segment.write_bytes(b"wal")
    os.utime(segment, (time.time() - 100, time.time() - 100))
    daemon = env.start(policy)
    daemon.wait_for(lambda: len(finished(daemon, source="main", result="ok")) >= 3, what="three backups")
    daemon.wait_for(lambda: finished(daemon, source="checked"), what="a verification")
    # the verify schedule goes through `drorch verify`: a source with no backup fails its verification
    (verify, *_) = finished(daemon, source="checked")
    assert verify["result"] == "failed" and "no committed backup to verify" in verify["error"]
    # stop the schedules with a reload, so the figures hold still while we compare them
    env.policy({"main": files_source(env.data, 'incr: "0 0 1 1 *"'),
                "broken": files_source(env.data / "missing", 'full: "0 0 1 1 *"'),
                "checked": files_source(env.data, 'verify: "0 0 1 1 *"'), "pg": PG_SOURCE}, listen=env.port)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.events("reloaded"), what="the reload")
    daemon.wait_for(lambda: not daemon.status()["running"], what="no job running")

    rows = backups(drorch, policy)
    ok = finished(daemon, source="main", result="ok")
    assert [r["label"] for r in rows] == [line["label"] for line in ok]
    assert [r["type"] for r in rows] == ["full"] + ["incr"] * (len(rows) - 1)
    assert "ran as full: there is no full backup to build on" in ok[0]["why"]
    assert all(line["why"].startswith("incr scheduled at ") for line in ok)
    for row, line in zip(rows, ok):  # each ran for a 2-second slot, after it
        slot = parse_iso(line["slot"])
        assert slot.second % 2 == 0 and slot <= parse_iso(row["started"])
    # each job ends with one summary line: what, result, size, duration, why
    assert all({"stored_bytes", "size_bytes", "seconds", "type", "why"} <= set(line) for line in ok)
    failures = finished(daemon, source="broken")
    assert failures and all(line["result"] == "failed" for line in failures)
    assert "missing" in failures[0]["error"]

    metrics = daemon.metrics()

    def metric(name, **labels):
        return metrics.get((name, tuple(sorted(labels.items()))))

    newest = rows[-1]
    assert metric("drorch_backup_last_success_timestamp_seconds", source="main") == pytest.approx(
        parse_iso(newest["finished"]).timestamp(), abs=0.001)
    show = drorch("show", "--policy", policy, "--source", "main", "--backup", newest["label"], "--json").json()
    assert metric("drorch_backup_last_stored_bytes", source="main") == show["stored_bytes"]
    assert metric("drorch_backup_last_size_bytes", source="main") == show["size_bytes"]
    assert metric("drorch_backup_last_duration_seconds", source="main") == pytest.approx(
        (parse_iso(show["finished"]) - parse_iso(show["started"])).total_seconds(), abs=0.002)
    assert metric("drorch_backups", source="main", type="incr") == len(rows) - 1
    assert metric("drorch_jobs_total", job="backup", result="ok", type="incr") == len(rows) - 1
    assert metric("drorch_jobs_total", job="backup", result="failed", type="full") == len(failures)
    assert metric("drorch_backup_last_success_timestamp_seconds", source="broken") is None
    assert metric("drorch_backup_last_failure_timestamp_seconds", source="broken") > time.time() - 60
    assert metric("drorch_schedule_next_run_timestamp_seconds", source="main", job="incr") > time.time()
    assert metric("drorch_jobs_running") == 0
    assert 100 <= metric("drorch_archive_lag_seconds", source="pg") < 200
    assert metric("drorch_archive_lag_seconds", source="main") is None  # files: no archive
    if verify["result"] != "skipped":  # once `drorch verify` is there
        assert metric("drorch_verify_last_success", source="checked") == (verify["result"] == "ok")
    assert all(name.startswith("drorch_") for name, _ in metrics)
    status = daemon.status()
    assert status["sources"]["main"]["last_backup"]["label"] == newest["label"]
    assert daemon.get("/healthz") == (200, b"ok\n")
    assert daemon.stop() == 0


def test_sighup_with_a_broken_policy_keeps_the_old_one(env, drorch):
    policy = env.policy({"main": files_source(env.data, f"incr: {EVERY_2S}")})
    daemon = env.start(policy)
    daemon.wait_for(lambda: finished(daemon, result="ok"), what="a first backup")
    good = policy.read_text()
    policy.write_text(good.replace("incr:", "incr_typo:").replace("max_jobs", "max_jobs"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.events("reload-failed"), what="the failed reload")
    problems = daemon.events("reload-failed")[0]["problems"]
    assert any(p.startswith(f"{policy}:") and "incr_typo: unknown key" in p for p in problems), problems
    seen = len(finished(daemon, result="ok"))
    daemon.wait_for(lambda: len(finished(daemon, result="ok")) >= seen + 2, what="backups on the old policy")
    metrics = daemon.metrics()
    assert metrics[("drorch_policy_last_reload_success", ())] == 0
    assert metrics[("drorch_policy_reloads_total", (("result", "failed"),))] == 1
    # a good edit is taken: a second source appears
    policy.write_text(good.replace("sources:\n", "sources:\n  second:\n" + "".join(
        f"    {line}\n" for line in files_source(env.data, f"full: {EVERY_2S}").splitlines()), 1))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.events("reloaded"), what="the good reload")
    assert "added second" in daemon.events("reloaded")[0]["message"]
    daemon.wait_for(lambda: finished(daemon, source="second", result="ok"), what="a backup of the new source")
    assert daemon.stop() == 0


def test_sigterm_during_a_backup_aborts_it_cleanly_and_a_restart_catches_up(env, drorch):
    for i in range(3):
        (env.data / f"f{i}.bin").write_bytes(bytes([i]) * 200_000)
    policy = env.policy({"main": files_source(env.data, 'full: "0 0 * * *"')},
                        daemon_extra="stop_grace: 1s\ncatchup_grace: 25h\n")
    daemon = env.start(policy, env={"DRORCH_FAULT": "pause:before-entries"})  # the job stops before its commit
    runs = env.repo / "runs" / "main"
    daemon.wait_for(lambda: runs.is_dir() and any(runs.iterdir()), what="a backup under way")
    daemon.wait_for(lambda: list((env.repo / "data" / "main").glob("*/p*")), what="packs written")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=30) == 0
    assert time.monotonic() - started >= 1.0  # stop_grace was given
    (line,) = finished(daemon)
    assert line["result"] == "aborted" and "daemon is stopping" in line["error"]
    assert any("stop_grace is over" in entry["message"] for entry in daemon.lines())
    assert backups(drorch, policy) == []  # nothing half-listed
    (run,) = backups(drorch, policy, all_runs=True)
    assert run["status"] == "failed"
    assert not (env.repo / "locks" / "main").exists()  # the lock was released

    # the next start catches the aborted slot up (an aborted run does not count as the slot's try)
    again = env.start(policy, log="daemon2.log")
    again.wait_for(lambda: finished(again), what="the catch-up")
    (line,) = finished(again)
    assert line["result"] == "ok" and line["type"] == "full"
    assert "catching up once" in line["why"]
    assert [r["type"] for r in backups(drorch, policy)] == ["full"]
    assert again.stop() == 0


def test_catch_up_after_downtime_runs_once_not_once_per_missed_slot(env, drorch):
    policy = env.policy({"main": files_source(env.data, 'full: "0 0 1 1 *"')})
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    time.sleep(1.1)
    # four incr slots, one second apart, all between that backup and the daemon's start
    first = utcnow() + timedelta(seconds=1)
    slots = f"{first.second}-{first.second + 3}" if first.second <= 55 else None
    if slots is None:  # too close to a minute's end for the arithmetic: wait for the next minute
        time.sleep(60 - first.second + 1)
        first = utcnow() + timedelta(seconds=1)
        slots = f"{first.second}-{first.second + 3}"
    cron = f'"{slots} {first.minute} {first.hour} * * *"'
    policy = env.policy({"main": files_source(env.data, f"incr: {cron}")}, listen=env.port)
    time.sleep(max(0.0, (first + timedelta(seconds=4) - utcnow()).total_seconds()))
    daemon = env.start(policy)
    daemon.wait_for(lambda: finished(daemon), what="the catch-up")
    time.sleep(1.5)
    (line,) = finished(daemon)
    assert line["result"] == "ok" and line["type"] == "incr"
    assert "catching up once for 4 missed slots" in line["why"], line["why"]
    assert [r["type"] for r in backups(drorch, policy)] == ["full", "incr"]
    assert daemon.stop() == 0


def test_two_daemons_on_one_repository_back_up_each_slot_once(env, drorch):
    every3 = '"*/3 * * * * *"'
    a = env.policy({"main": files_source(env.data, f"incr: {every3}")}, name="a.yaml", state="state-a")
    daemon_a = env.start(a, log="a.log", hostname="hosta")
    b = env.policy({"main": files_source(env.data, f"incr: {every3}")}, name="b.yaml", state="state-b")
    daemon_b = env.start(b, log="b.log", hostname="hostb")
    both = (daemon_a, daemon_b)
    for daemon in both:
        daemon.wait_for(lambda d=daemon: d.events("started"), what="start-up")
    time.sleep(10)
    for daemon in both:
        daemon.signal(signal.SIGTERM)
    assert [d.proc.wait(timeout=60) for d in both] == [0, 0]

    rows = backups(drorch, a)
    assert len(rows) >= 3
    lines = [line for d in both for line in finished(d)]
    assert {line["result"] for line in lines} <= {"ok", "skipped", "locked"}, lines
    ok_slots = [line["slot"] for line in lines if line["result"] == "ok"]
    assert len(ok_slots) == len(set(ok_slots)) == len(rows), lines  # one backup per slot, never two
    assert {line["label"] for line in lines if line["result"] == "ok"} == {r["label"] for r in rows}
    for slot in {line["slot"] for line in lines}:  # where both daemons went for a slot, one of them ran it
        assert [line["result"] for line in lines if line["slot"] == slot].count("ok") <= 1
    starts = [parse_iso(r["started"]).timestamp() for r in rows]
    first, last = (parse_iso(s).timestamp() for s in (min(ok_slots), max(ok_slots)))
    for slot in range(int(first), int(last) + 1, 3):  # and no slot between the first and the last went without:
        covering = min(t for t in starts if t >= slot - 1.5)  # the backup that covers it (planner.satisfied)
        assert covering < slot + 6, (slot, rows)  # started for it, not slots later (a busy machine may be late)
    hosts = {drorch("show", "--policy", a, "--source", "main", "--backup", r["label"], "--json").json()
             ["manifest"]["host"] for r in rows}  # who ran them
    assert hosts and hosts <= {"hosta", "hostb"}
    outcomes = [line["result"] for d in both for line in finished(d)]
    assert outcomes.count("ok") == len(rows)
    assert set(outcomes) <= {"ok", "skipped", "locked"}, outcomes


def test_an_invalid_policy_refuses_to_start(tmp_path, drorch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("daemon:\n  max_jobs: 0\nrepositories: {}\nsources: {}\n")
    result = drorch("daemon", "--policy", bad)
    assert result.code == 2
    assert f"{bad}:2:" in result.err and "daemon.max_jobs" in result.err


@pytest.mark.parametrize("limits, words", [("max_jobs: 1\n", "(max_jobs 1)"),
                                           ("max_jobs: 4\nper_host_jobs: {local: 1}\n", "(per_host_jobs 1)")])
def test_job_limits_keep_jobs_apart(env, limits, words):
    policy = env.policy({name: files_source(env.data, f"full: {EVERY_2S}") for name in ("one", "two", "three")},
                        daemon_extra=limits)
    daemon = env.start(policy)
    daemon.wait_for(lambda: len(finished(daemon, result="ok")) >= 6, what="six backups")
    assert daemon.stop() == 0
    spans, open_jobs = [], {}
    for line in daemon.lines():  # (start, end) of each job, from the daemon's own log times
        if line.get("event") == "job-started":
            open_jobs[line["source"]] = parse_iso(line["time"])
        elif line.get("event") == "job-finished":
            spans.append((open_jobs.pop(line["source"]), parse_iso(line["time"])))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, spans
    assert any(words in line["message"] for line in daemon.lines())


def test_a_drill_schedule_runs_the_sources_runbooks_in_drill_mode(env, drorch):
    """`schedule.drill` runs `drorch runbook run ID --mode drill` for each runbook fed by the source;
    the journal lands in the daemon's state_dir and the repository, and a failing drill is a failed job."""
    marks = env.tmp / "drill.marks"
    book = env.tmp / "runbook.yaml"
    book.write_text(textwrap.dedent(f"""\
        runbook:
          id: rehearse
          title: Rehearse DR
          owners: [tests]
          summary: a drill made of shell steps on this machine
          topology:
            nodes:
              p: {{pgdata: /srv/p, connection: {{port: 1}}}}
              d: {{pgdata: /srv/d, connection: {{port: 2}}}}
            primary: p
            dr: [d]
            source: pg
          modes: [drill]
          dr_branch:
            steps:
              - id: mark
                title: leave a mark
                action: shell
                args: {{command: "echo $$ >> {marks}"}}
              - id: gate
                title: fail while the gate file exists
                action: shell
                args: {{command: "test ! -e {env.tmp}/gate"}}
        """))
    pg = PG_SOURCE.replace('full: "0 0 1 1 *"', 'full: "0 0 1 1 *"\n  drill: "*/2 * * * * *"')
    policy = env.policy({"pg": pg}, name="policy.yaml")
    (env.tmp / "gate").touch()
    check = drorch("policy", "check", "--policy", env.tmp / "policy.yaml")
    assert check.code == 2  # the runbook is not in the policy given: the drill schedule names nothing
    assert "schedule.drill: no runbook with mode drill has `topology.source: pg`" in check.err
    policies = env.tmp / "policies"
    policies.mkdir()
    os.rename(policy, policies / "policy.yaml")
    os.rename(book, policies / "runbook.yaml")
    daemon = env.start(policies)
    daemon.wait_for(lambda: finished(daemon, source="pg", job="drill"), what="a drill")
    (first, *_) = finished(daemon, source="pg", job="drill")
    assert first["result"] == "failed" and "rehearse" in first["error"]
    os.unlink(env.tmp / "gate")
    daemon.wait_for(lambda: finished(daemon, source="pg", job="drill", result="ok"), what="a drill that passes")
    daemon.stop()
    runs = sorted((env.tmp / "state" / "runbooks" / "runs").iterdir())
    assert len(runs) >= 2 and len(marks.read_text().split()) >= 2
    report = drorch("runbook", "report", runs[-1].name, "--policy", policies, "--state-dir",
                    env.tmp / "state" / "runbooks", "--json")
    assert report.code == 0, report.err
    assert report.json()["mode"] == "drill" and report.json()["status"] == "succeeded"
    assert report.json()["incident"]["severity"] == "IV"
