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
            objectives: {{rpo: 1d, rto: 1h}}
            verify: {{max_age: 7d, sandbox: {tmp_path}/sandbox}}
        """))
    (tmp_path / "sandbox").mkdir()
    return policy


def listing(drorch, policy, *extra) -> dict[str, dict]:
    result = drorch("list", "--policy", policy, "--all", "--json", *extra)
    assert result.code == 0, result.err
    return {row["label"]: row for row in result.json()}


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """B1 full, B2 incr, F1 and F2 failed (the gate hook said no), a copy to dr, B3 incr,
    a failed runbook run's journal in the repository, a passed restore verification of B1,
    and a failed read verification of B2 (a byte of its pack flipped)."""
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
    verified = {}
    result = drorch("verify", "--policy", policy, "--source", "main", "--backup", labels["B1"], "--level", "restore",
                    "--json")
    assert result.code == 0, result.err
    verified["B1"] = result.json()["verifications"][0]
    pack = tmp_path / "repo" / "data" / "main" / labels["B2"] / "p000000"
    with open(pack, "r+b") as handle:
        handle.seek(pack.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(pack.stat().st_size // 2)
        handle.write(bytes([byte[0] ^ 0x40]))
    result = drorch("verify", "--policy", policy, "--source", "main", "--backup", labels["B2"], "--level", "read",
                    "--json")
    assert result.code == 1
    verified["B2"] = result.json()["verifications"][0]
    return tmp_path, policy, labels, listing(drorch, policy), journal, verified


def backup_rows(rows: dict, names, labels) -> list[dict]:
    return [{k: rows[labels[n]][k] for k in ("label", "type", "started", "finished", "size_bytes", "stored_bytes",
                                               "files")} for n in names]


def test_daily_report_says_what_ran(history, drorch):
    tmp_path, policy, labels, rows, journal, verified = history
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
    b1_check, b2_check = verified["B1"], verified["B2"]
    assert [{k: v[k] for k in ("label", "level", "result", "at", "seconds", "ready_seconds", "restore_seconds")}
            for v in section["verifications"]] == [
        {"label": labels[n], "level": v["level"], "result": v["result"], "at": rows[labels[n]]["verification"]["at"]
         if n == "B2" else iso(parse_iso(v["finished"]).replace(microsecond=0)), "seconds": v["seconds"],
         "ready_seconds": v["ready_seconds"], "restore_seconds": v["restore_seconds"]}
        for n, v in (("B1", b1_check), ("B2", b2_check))]
    assert (b1_check["result"], b2_check["result"]) == ("passed", "failed")
    assert section["verifications"][1]["problems"] == b2_check["problems"][:5]
    assert f"data/main/{labels['B2']}/p000000" in b2_check["problems"][0]
    assert totals == {"backups": 3, "failed": 2, "copies": 2, "copies_failed": 0, "verifications": 2,
                      "verifications_failed": 1,
                      "stored_bytes": sum(rows[labels[n]]["stored_bytes"] for n in ("B1", "B2", "B3")),
                      "seconds": round(sum(b["seconds"] for b in section["backups"]), 3),
                      "size_bytes": rows[labels["B3"]]["size_bytes"]}
    state = section["state"]
    assert state["last_backup"]["label"] == labels["B3"] and state["last_failure"]["label"] == labels["F2"]
    assert state["rpo"]["recovery_point"] == rows[labels["B3"]]["finished"]
    assert state["rpo"]["basis"] == f"backup {labels['B3']} finished {rows[labels['B3']]['finished']}"
    assert state["rpo"]["objective_seconds"] == 86400 and state["rpo"]["met"] is True
    assert state["rpo"]["age_seconds"] == round(
        (parse_iso(report["generated"]) - parse_iso(rows[labels["B3"]]["finished"])).total_seconds(), 1)
    b1_record = parse_iso(rows[labels["B1"]]["verification"]["at"])
    assert state["rto"] == {"objective_seconds": 3600, "measured_seconds": b1_check["ready_seconds"],
                            "label": labels["B1"], "measured_at": iso(b1_record), "met": True}
    assert state["verification"] == {"last_restore_passed": iso(b1_record), "max_age_seconds": 7 * 86400,
                                     "met": True, "failed_labels": [labels["B2"]],
                                     "age_seconds": round((parse_iso(report["generated"]) - b1_record)
                                                          .total_seconds(), 1)}
    warnings = {w["key"]: w for w in section["warnings"]}
    assert warnings["verification/main"]["severity"] == "I"
    assert warnings["verification/main"]["title"] == f"read verification of main backup {labels['B2']} failed"
    assert not {"rpo/main", "rto/main", "verify-age/main"} & set(warnings)
    # next runs: 01:00 in Shanghai (17:00 UTC), full on Sundays
    runs = {job: parse_iso(at) for job, at in section["next_runs"].items()}
    assert set(runs) == {"full", "incr"}
    assert all(at > parse_iso(report["generated"]) and (at.hour, at.minute) == (17, 0) for at in runs.values())
    assert runs["full"].weekday() == 5  # Sunday 01:00 CST is Saturday 17:00 UTC
    assert report["summary"] == {**report["summary"], "sources": 1, "backups": 3, "failed": 2, "copies": 2,
                                 "verifications": 2, "verifications_failed": 1, "rpo_met": 1, "rpo_missed": 0,
                                 "worst_severity": "I"}
    assert report["title"].startswith("drorch daily report ")
    assert report["title"].endswith("3 backup(s), 2 failed, 1 verification(s) failed")
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
    tmp_path, policy, labels, rows, journal, verified = history
    since = iso(parse_iso(rows[labels["B1"]]["started"]) - timedelta(minutes=1))
    result = drorch("report", "incident", "--policy", policy, "--since", since, "--json")
    assert result.code == 0, result.err
    report = result.json()
    backup, runbook, damaged = report["incidents"]
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
    assert impact["rpo_exceeded"] is False and impact["rpo_seconds"] == 86400
    assert impact["text"].endswith("; RPO 1d: kept")
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
    # the failed verification: severity I, the damaged backup and the one depending on it
    b2_failed_at = rows[labels["B2"]]["verification"]["at"]
    assert {k: damaged[k] for k in ("key", "kind", "source", "severity", "status", "started", "ended", "failures")} \
        == {"key": "verification/main", "kind": "verification", "source": "main", "severity": "I", "status": "open",
            "started": b2_failed_at, "ended": None, "failures": 1}
    assert damaged["title"] == f"read verification of main backup {labels['B2']} failed"
    assert damaged["cause"] == verified["B2"]["problems"][0]
    assert damaged["impact"]["backups_affected"] == [labels["B2"], labels["B3"]]
    assert damaged["targets"]["respond_by"] == iso(parse_iso(b2_failed_at) + timedelta(minutes=30))
    assert [(a["what"], a["result"]) for a in damaged["actions"]] == [(f"read verification of {labels['B2']}",
                                                                      "failed")]
    assert report["summary"] == {**report["summary"], "incidents": 3, "open": 2, "resolved": 1,
                                 "by_severity": {"I": 2, "II": 1}, "worst_severity": "I"}
    (current,) = report["current"]
    assert current["last_backup"]["label"] == labels["B3"] and current["last_failure"]["label"] == labels["F2"]
    # a window after the failures holds only the runbook run
    after = iso(parse_iso(b3["finished"]) + timedelta(milliseconds=1))
    later = drorch("report", "incident", "--policy", policy, "--since", after, "--json").json()
    assert [i["kind"] for i in later["incidents"]] == ["runbook", "verification"]
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


def test_rpo_breach_is_critical_and_a_failed_backup_that_outlasts_it_too(tmp_path, drorch):
    """objectives.rpo 2s: the recovery point ages past it (severity I, and a report of that moment says
    so); a backup failing across it makes the incident critical, with the data at risk measured."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    flag, gate = tmp_path / "gate-closed", tmp_path / "gate.sh"
    gate.write_text(f"#!/bin/sh\n[ -e {flag} ] && {{ echo 'standby not in sync'; exit 1; }}\nexit 0\n")
    gate.chmod(0o755)
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        repositories:
          local: {{type: posix, path: {tmp_path}/repo}}
        sources:
          main:
            kind: files
            repository: local
            paths: [{data}]
            objectives: {{rpo: 2s}}
            hooks: {{pre_backup: [{gate}]}}
        """))
    assert drorch("backup", "--policy", policy, "--type", "full").code == 0
    loaded = load_policy(policy)
    repos = RepoCache(lambda name: open_repository(loaded, name))
    (b1,) = listing(drorch, policy).values()
    b1_done = parse_iso(b1["finished"])
    fresh = {f.key: f for f in Evaluator(loaded, repos, lambda: b1_done + timedelta(seconds=1)).source("main")}
    assert not fresh["rpo/main"].active
    stale = {f.key: f for f in Evaluator(loaded, repos, lambda: b1_done + timedelta(seconds=5)).source("main")}
    rpo = stale["rpo/main"]
    assert (rpo.active, rpo.severity, rpo.title) == (True, "I", "main has no restorable backup within its RPO of 2s")
    assert rpo.detail.startswith(f"the newest recovery point is 5s old: backup {b1['label']} finished")
    assert rpo.facts == {"rpo_seconds": 2.0, "recovery_point": b1["finished"], "age_seconds": 5.0}
    flag.write_text("")
    assert drorch("backup", "--policy", policy).code == 1
    flag.unlink()
    time.sleep(2.1)  # the failure lasts longer than the RPO
    assert drorch("backup", "--policy", policy).code == 0
    rows = listing(drorch, policy)
    f1, b2 = sorted((r for r in rows.values() if r["label"] != b1["label"]), key=lambda r: r["label"])
    # a daily report of a moment after the failure and more than 2 s after B1, before B2: RPO missed then
    moment = parse_iso(f1["finished"]) + timedelta(seconds=2.05)
    assert moment < parse_iso(b2["finished"])
    early = drorch("report", "daily", "--policy", policy, "--until", iso(moment), "--json").json()
    state = early["sources"][0]["state"]
    assert (state["rpo"]["met"], state["rpo"]["age_seconds"], state["rpo"]["recovery_point"]) == \
        (False, round((moment - b1_done).total_seconds(), 1), b1["finished"])
    assert state["last_backup"]["label"] == b1["label"] and state["last_failure"]["label"] == f1["label"]
    assert early["summary"]["rpo_missed"] == 1 and early["summary"]["worst_severity"] == "I"
    # the incident: a failed backup while the RPO ran out is critical; no separate gap incident
    until = iso(parse_iso(b2["finished"]) + timedelta(seconds=1))
    report = drorch("report", "incident", "--policy", policy, "--since", b1["started"], "--until", until,
                    "--json").json()
    (item,) = report["incidents"]
    at_risk = (parse_iso(b2["finished"]) - b1_done).total_seconds()
    assert (item["key"], item["severity"], item["status"], item["started"], item["ended"]) == \
        ("backup/main", "I", "resolved", f1["finished"], b2["finished"])
    assert item["impact"] == {**item["impact"], "at_risk_from": b1["finished"], "at_risk_until": b2["finished"],
                              "data_at_risk_seconds": round(at_risk, 1), "rpo_seconds": 2.0, "rpo_exceeded": True}
    assert "RPO 2s: exceeded by" in item["impact"]["text"]
    assert item["targets"]["respond_by"] == iso(parse_iso(f1["finished"]) + timedelta(minutes=30))
