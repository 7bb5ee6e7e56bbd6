"""Daily and incident reports built from a repository with a known history —
backups, failed runs, a copy, a runbook run — compared field by field with
what `drorch list` says happened; and the early warning of abnormal change
volume on a tree where most files changed (as ransomware would leave it)."""

from __future__ import annotations

import os
import random
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from drorch.factory import open_repository
from drorch.notify.channels import make_channels
from drorch.notify.facts import RepoCache
from drorch.notify.notifier import Notifier
from drorch.notify.objectives import Evaluator
from drorch.notify.text import local
from drorch.policy import load_policy
from drorch.policy.notify_models import WebhookChannel
from drorch.timefmt import iso, parse_iso, utcnow
from tests import treegen
from tests.notifyservers import WebhookServer


def make_policy(tmp_path: Path, data: Path, gate: Path) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        reports:
          daily: {{at: "07:30", timezone: Asia/Shanghai}}
        repositories:
          local: {{type: posix, path: {tmp_path}/repo}}
          dr: {{type: posix, path: {tmp_path}/dr}}
        sources:
          main:
            kind: files
            repository: local
            copy_to: [dr]
            paths: [{data}]
            schedule: {{timezone: Asia/Shanghai, full: "0 1 * * sun", incr: "0 1 * * mon-sat"}}
            hooks: {{pre_backup: [{gate}]}}
        """))
    return policy


def listing(drorch, policy, *extra) -> dict[str, dict]:
    result = drorch("list", "--policy", policy, "--all", "--json", *extra)
    assert result.code == 0, result.err
    return {row["label"]: row for row in result.json()}


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """B1 full, B2 incr, F1 and F2 failed (the gate hook said no), a copy to dr, B3 incr,
    and a failed runbook run's journal in the repository."""
    from tests.conftest import invoke as drorch

    tmp_path = tmp_path_factory.mktemp("reports")
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, seed=7, files=30, big=1)
    flag = tmp_path / "gate-closed"
    gate = tmp_path / "gate.sh"
    gate.write_text(f"#!/bin/sh\n[ -e {flag} ] && {{ echo 'replica lag too high'; exit 4; }}\nexit 0\n")
    gate.chmod(0o755)
    policy = make_policy(tmp_path, data, gate)
    labels = {}

    def backup(name, btype="incr", fail=False):
        if fail:
            flag.write_text("")
        result = drorch("backup", "--policy", policy, "--type", btype, "--json")
        if fail:
            flag.unlink()
            assert result.code == 1
        else:
            assert result.code == 0, result.err
            labels[name] = result.json()["label"]
        treegen.mutate(data, seed=len(labels) + 100 * fail)

    backup("B1", "full")
    backup("B2")
    backup("F1", fail=True)
    backup("F2", fail=True)
    assert drorch("copy", "--policy", policy).code == 0
    backup("B3")
    rows = listing(drorch, policy)
    failed = sorted((r for r in rows.values() if r["status"] == "failed"), key=lambda r: r["label"])
    labels["F1"], labels["F2"] = failed[0]["label"], failed[1]["label"]
    repo = open_repository(load_policy(policy), "local")
    time.sleep(1.05)
    started = utcnow().replace(microsecond=0)  # after B3
    assert started > parse_iso(rows[labels["B3"]]["finished"])
    journal = {"run": f"pg-failover.{started.strftime('%Y%m%dT%H%M%SZ')}", "runbook": "pg-failover",
               "title": "Fail over main-db to its standby", "mode": "failover", "status": "failed",
               "error": "step promote failed: the standby did not leave recovery within 60s",
               "started": iso(started), "saved": iso(started + timedelta(seconds=75)), "host": "backup1",
               "order": ["fence", "promote"],
               "steps": {"fence": {"id": "fence", "title": "Fence the old primary", "action": "pg.fence",
                                   "state": "done", "attempts": 1, "started": iso(started),
                                   "ended": iso(started + timedelta(seconds=5)), "seconds": 5.0,
                                   "summary": "old primary stopped"},
                         "promote": {"id": "promote", "title": "Promote the standby", "action": "pg.promote",
                                     "state": "failed", "attempts": 2, "started": iso(started + timedelta(seconds=5)),
                                     "ended": iso(started + timedelta(seconds=75)), "seconds": 70.0,
                                     "summary": "still in recovery after 60s"}}}
    repo.put_json(f"runbooks/runs/{journal['run']}", journal)
    return tmp_path, policy, labels, listing(drorch, policy), journal


def backup_rows(rows: dict, names, labels) -> list[dict]:
    return [{k: rows[labels[n]][k] for k in ("label", "type", "started", "finished", "size_bytes", "stored_bytes",
                                               "files")} for n in names]


def test_daily_report_says_what_ran(history, drorch):
    tmp_path, policy, labels, rows, journal = history
    result = drorch("report", "daily", "--policy", policy, "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert report["report"] == "daily" and report["timezone"] == "Asia/Shanghai"
    assert parse_iso(report["until"]) - parse_iso(report["since"]) == timedelta(hours=24)
    (section,) = report["sources"]
    assert (section["name"], section["kind"], section["repository"], section["error"]) == \
        ("main", "files", "local", None)
    got = [{k: b[k] for k in ("label", "type", "started", "finished", "size_bytes", "stored_bytes", "files")}
           for b in section["backups"]]
    assert got == backup_rows(rows, ["B1", "B2", "B3"], labels)
    for b in section["backups"]:
        expected = sum(p.stat().st_size for p in (tmp_path / "repo" / "data" / "main" / b["label"]).glob("p*"))
        assert b["changed_bytes"] == expected  # what the backup stored of changed data: its packs
        assert b["seconds"] == round((parse_iso(b["finished"]) - parse_iso(b["started"])).total_seconds(), 3)
    assert [(f["label"], f["operation"], f["phase"], f["aborted"]) for f in section["failures"]] == \
        [(labels["F1"], "backup", "pre-backup hook", False), (labels["F2"], "backup", "pre-backup hook", False)]
    for failure in section["failures"]:
        row = rows[failure["label"]]
        assert failure["error"] == row["error"] and "replica lag too high" in failure["error"]
        assert failure["failed"] == row["finished"] and failure["started"] == row["started"]
    dr = listing(drorch, policy, "--repository", "dr")
    assert sorted(c["label"] for c in section["copies"]) == sorted(dr) == [labels["B1"], labels["B2"]]
    assert {c["repository"] for c in section["copies"]} == {"dr"}
    totals = section["totals"]
    assert totals == {"backups": 3, "failed": 2, "copies": 2, "copies_failed": 0, "verifications": 0,
                      "verifications_failed": 0,
                      "stored_bytes": sum(rows[labels[n]]["stored_bytes"] for n in ("B1", "B2", "B3")),
                      "seconds": round(sum(b["seconds"] for b in section["backups"]), 3),
                      "size_bytes": rows[labels["B3"]]["size_bytes"]}
    state = section["state"]
    assert state["last_backup"]["label"] == labels["B3"] and state["last_failure"]["label"] == labels["F2"]
    assert state["rpo"]["recovery_point"] == rows[labels["B3"]]["finished"]
    assert state["rpo"]["basis"] == f"backup {labels['B3']} finished {rows[labels['B3']]['finished']}"
    assert state["rpo"]["objective_seconds"] is None and state["rpo"]["met"] is None
    # next runs: 01:00 in Shanghai (17:00 UTC), full on Sundays
    runs = {job: parse_iso(at) for job, at in section["next_runs"].items()}
    assert set(runs) == {"full", "incr"}
    assert all(at > parse_iso(report["generated"]) and (at.hour, at.minute) == (17, 0) for at in runs.values())
    assert runs["full"].weekday() == 5  # Sunday 01:00 CST is Saturday 17:00 UTC
    assert report["summary"] == {**report["summary"], "sources": 1, "backups": 3, "failed": 2, "copies": 2,
                                 "rpo_unset": 1, "worst_severity": "II"}
    assert report["title"].startswith("drorch daily report ") and "3 backup(s), 2 failed" in report["title"]
    # the same report for people: times in Asia/Shanghai
    markdown = drorch("report", "daily", "--policy", policy).out
    b1 = parse_iso(rows[labels["B1"]]["started"]) + timedelta(hours=8)
    assert f"| {labels['B1']} | full | {b1.strftime('%Y-%m-%d %H:%M:%S')} CST |" in markdown
    assert "replica lag too high" in markdown and "## Source main (files, repository local)" in markdown
    # a window that ends before F1 holds B1 and B2 only
    until = rows[labels["B2"]]["finished"]
    early = drorch("report", "daily", "--policy", policy, "--until", until, "--json").json()
    assert [b["label"] for b in early["sources"][0]["backups"]] == [labels["B1"], labels["B2"]]
    assert early["sources"][0]["failures"] == [] and early["sources"][0]["copies"] == []


def test_incident_report_says_what_failed_its_impact_and_what_was_done(history, drorch):
    tmp_path, policy, labels, rows, journal = history
    since = iso(parse_iso(rows[labels["B1"]]["started"]) - timedelta(minutes=1))
    result = drorch("report", "incident", "--policy", policy, "--since", since, "--json")
    assert result.code == 0, result.err
    report = result.json()
    backup, runbook = report["incidents"]
    f1, f2, b2, b3 = (rows[labels[n]] for n in ("F1", "F2", "B2", "B3"))
    assert {k: backup[k] for k in ("key", "kind", "source", "severity", "status", "failures", "started", "ended")} \
        == {"key": "backup/main", "kind": "backup", "source": "main", "severity": "II", "status": "resolved",
            "failures": 2, "started": f1["finished"], "ended": b3["finished"]}
    assert backup["cause"] == f"pre-backup hook: {f1['error']}"
    assert backup["errors"] == [f"pre-backup hook: {f1['error']}"]  # the same error twice, said once
    impact = backup["impact"]
    assert impact["at_risk_from"] == b2["finished"] and impact["at_risk_until"] == b3["finished"]
    assert impact["data_at_risk_seconds"] == round(
        (parse_iso(b3["finished"]) - parse_iso(b2["finished"])).total_seconds(), 1)
    assert impact["rpo_exceeded"] is False and impact["rpo_seconds"] is None
    assert [(a["what"], a["result"]) for a in backup["actions"]] == [
        (f"backup {labels['F1']} (incr) on {f1.get('host') or os.uname().nodename}", "failed"),
        (f"backup {labels['F2']} (incr) on {f2.get('host') or os.uname().nodename}", "failed"),
        (f"incr backup {labels['B3']}", "ok")]
    assert backup["resolution"] == f"incr backup {labels['B3']} committed at " \
        f"{local(parse_iso(b3['finished']), 'Asia/Shanghai')}"
    assert backup["resolution"].endswith(" CST")
    assert backup["targets"] == {"respond_by": None,
                                 "resolve_by": iso(parse_iso(f1["finished"]) + timedelta(hours=24)),
                                 "resolved_in_time": True}
    # the failed runbook run: an incident of severity I, with its steps
    assert (runbook["kind"], runbook["severity"], runbook["status"]) == ("runbook", "I", "open")
    assert runbook["cause"] == journal["error"] and runbook["started"] == journal["started"]
    assert runbook["targets"]["respond_by"] == iso(parse_iso(journal["started"]) + timedelta(minutes=30))
    assert [(a["what"], a["result"]) for a in runbook["actions"]] == [
        ("step fence: Fence the old primary", "done"), ("step promote: Promote the standby", "failed")]
    (run,) = report["runbook_runs"]
    assert run["run"] == journal["run"] and run["ended"] == journal["saved"]
    assert [s["id"] for s in run["steps"]] == ["fence", "promote"] and run["steps"][1]["attempts"] == 2
    assert report["summary"] == {**report["summary"], "incidents": 2, "open": 1, "resolved": 1,
                                 "by_severity": {"I": 1, "II": 1}, "worst_severity": "I"}
    (current,) = report["current"]
    assert current["last_backup"]["label"] == labels["B3"] and current["last_failure"]["label"] == labels["F2"]
    # a window after the failures holds only the runbook run
    after = iso(parse_iso(b3["finished"]) + timedelta(milliseconds=1))
    later = drorch("report", "incident", "--policy", policy, "--since", after, "--json").json()
    assert [i["kind"] for i in later["incidents"]] == ["runbook"]
    markdown = drorch("report", "incident", "--policy", policy, "--since", since).out
    assert "## 1. [II] backup of main failed (2 times)" in markdown
    assert "## 2. [I] runbook pg-failover run" in markdown and "| promote | Promote the standby | failed |" in markdown


def encrypt_everything(root: Path, seed: int) -> int:
    """What ransomware leaves: every file rewritten with bytes that neither compress nor dedupe."""
    rng, count = random.Random(seed), 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            size = path.stat().st_size
            path.write_bytes(rng.randbytes(size))
            count += 1
    return count


def small_change(root: Path, n: int) -> None:
    (root / f"journal-{n}.log").write_text(f"entry {n}\n" * 50)


def test_mass_change_then_no_change_are_early_warnings(tmp_path, drorch):
    data = tmp_path / "data"
    data.mkdir()
    treegen.generate(data, seed=11, files=80, big=2)
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        repositories:
          local: {{type: posix, path: {tmp_path}/repo}}
        sources:
          main:
            kind: files
            repository: local
            paths: [{data}]
            warnings: {{change_factor: 5}}
        """))
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    for n in range(4):  # the usual day: a little changes
        small_change(data, n)
        assert drorch("backup", "--policy", policy, "--type", "incr").code == 0
    changed = encrypt_everything(data, seed=3)
    result = drorch("backup", "--policy", policy, "--type", "incr", "--json")
    assert result.code == 0
    mass = result.json()["label"]
    loaded = load_policy(policy)
    repos = RepoCache(lambda name: open_repository(loaded, name))
    findings = {f.key: f for f in Evaluator(loaded, repos, utcnow).source("main")}
    warning = findings["change/main"]
    assert warning.active and warning.severity == "III" and warning.facts["anomaly"] == "mass-change"
    assert warning.facts["label"] == mass and warning.facts["compared"] == 4
    packs = sum(p.stat().st_size for p in (tmp_path / "repo" / "data" / "main" / mass).glob("p*"))
    assert warning.facts["changed_bytes"] == packs
    assert packs > 5 * warning.facts["median_bytes"] and changed > 60
    assert "ransomware" in warning.detail
    # raised as a notice of severity III
    server = WebhookServer().start()
    try:
        channel = WebhookChannel.model_validate({"type": "webhook", "url": server.url, "min_severity": "III"})
        notifier = Notifier(make_channels([channel]), tmp_path / "state")
        notifier.observe(list(findings.values()))
        notifier.flush()
        (notice,) = [p["drorch"] for p in server.payloads()]
        assert (notice["key"], notice["severity"], notice["state"]) == ("change/main", "III", "problem")
    finally:
        server.stop()
    # then nothing changes at all: that is said too; then a usual day clears it
    assert drorch("backup", "--policy", policy, "--type", "incr").code == 0
    report = drorch("report", "daily", "--policy", policy, "--json").json()
    (warning,) = [w for w in report["sources"][0]["warnings"] if w["key"] == "change/main"]
    assert warning["title"].startswith("no change in main") and "stored nothing new" in warning["detail"]
    small_change(data, 9)
    assert drorch("backup", "--policy", policy, "--type", "incr").code == 0
    report = drorch("report", "daily", "--policy", policy, "--json").json()
    assert not [w for w in report["sources"][0]["warnings"] if w["key"] == "change/main"]
    incident = drorch("report", "incident", "--policy", policy, "--since", "1h", "--json").json()
    (item,) = incident["incidents"]
    assert (item["key"], item["severity"], item["status"], item["failures"]) == ("change/main", "III", "resolved", 2)
    assert item["impact"]["backups_affected"][0] == mass
