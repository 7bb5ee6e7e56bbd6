"""The daemon's notify side with an injected clock: the daily report goes out
once a day at its time in its zone (and after a restart within 12 h of it);
free-space warnings from the real file systems; job outcomes as findings."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from drorch.daemon.alerts import Alerts
from drorch.notify.facts import RepoCache
from drorch.notify.jobs import job_findings
from drorch.notify.objectives import Evaluator
from drorch.policy import load_policy
from tests.notifyservers import WebhookServer


@pytest.fixture
def hook():
    server = WebhookServer().start()
    try:
        yield server
    finally:
        server.stop()


def policy_file(tmp_path, hook_url: str, min_free: str = "10%") -> object:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(f"""\
        daemon: {{state_dir: {tmp_path}/state}}
        notify:
          - {{type: webhook, url: "{hook_url}", min_severity: III}}
        reports:
          daily: {{at: "07:30", timezone: Asia/Shanghai}}
        repositories:
          local: {{type: posix, path: {tmp_path}/repo}}
        sources:
          main:
            kind: files
            repository: local
            paths: [{tmp_path}]
            warnings: {{min_free: "{min_free}"}}
        """))
    return load_policy(path)


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_the_daily_report_goes_out_once_a_day_at_its_time(tmp_path, hook):
    shanghai = timezone(timedelta(hours=8))
    clock = Clock(datetime(2026, 11, 23, 7, 29, 59, tzinfo=shanghai))
    alerts = Alerts(clock)
    alerts.apply(policy_file(tmp_path, hook.url))

    def reports():
        return [p for p in hook.payloads() if p["drorch"]["state"] == "report"]

    alerts.daily_if_due()
    assert reports() == []
    clock.now = datetime(2026, 11, 23, 7, 30, 0, tzinfo=shanghai)
    alerts.daily_if_due()
    alerts.daily_if_due()
    (first,) = reports()
    assert first["drorch"]["title"].startswith("drorch daily report 2026-11-23: ")
    assert "Period 2026-11-22 07:30:00 CST – 2026-11-23 07:30:00 CST" in first["text"]
    clock.now += timedelta(hours=23)
    alerts.daily_if_due()
    assert len(reports()) == 1
    # a new daemon (a restart) the next day at 19:00: within 12 h of 07:30, so it is sent now, once
    clock.now = datetime(2026, 11, 24, 19, 0, tzinfo=shanghai)
    again = Alerts(clock)
    again.apply(policy_file(tmp_path, hook.url))
    again.daily_if_due()
    again.daily_if_due()
    assert len(reports()) == 2 and "2026-11-24" in reports()[-1]["drorch"]["title"]
    # more than 12 h late: that day's report is not sent any more
    clock.now = datetime(2026, 11, 26, 6, 0, tzinfo=shanghai)
    late = Alerts(clock)
    late.apply(policy_file(tmp_path, hook.url))
    late.daily_if_due()
    assert len(reports()) == 2


def test_free_space_warnings_from_the_file_systems(tmp_path, hook):
    for limit, low in (("100%", True), ("1000TiB", True), ("0%", False), ("1B", False)):
        policy = policy_file(tmp_path, hook.url, min_free=limit)
        evaluator = Evaluator(policy, RepoCache(lambda name: None), lambda: datetime.now(timezone.utc),
                              host_paths=[str(tmp_path / "state")])
        found = {f.key: f for f in evaluator.space()}
        assert set(found) == {f"space/{tmp_path}/repo", f"space/{tmp_path}/state"}
        repo = found[f"space/{tmp_path}/repo"]
        assert repo.active is low and repo.severity == "III", (limit, repo)
        assert repo.title == "low free space for repository local"
        assert repo.facts["min_free"] == limit and repo.facts["total_bytes"] > repo.facts["free_bytes"] > 0
        assert found[f"space/{tmp_path}/state"].active is low


def test_job_outcomes_as_findings():
    failed = job_findings("main", "backup", {"result": "failed", "error": "begin: no route to host", "type": "incr"})
    assert [(f.key, f.severity, f.active, f.occurrence) for f in failed] == [("backup/main", "II", True, True)]
    ok = job_findings("main", "backup", {
        "result": "ok", "label": "20261122T010000Z-I", "type": "incr", "finished": "2026-11-22T01:00:09Z",
        "hooks": [{"event": "post_backup", "ok": False, "path": "/x.sh", "summary": "post_backup hook /x.sh exited 1"}],
        "steps": [{"step": "copy to dr", "result": "failed", "detail": "dr: access denied"},
                  {"step": "copy to far", "result": "ok", "detail": "1 copied"},
                  {"step": "expire", "result": "ok", "detail": "0 expired"},
                  {"step": "after the backup", "result": "aborted", "detail": "stopping"}]})
    assert [(f.key, f.severity, f.active) for f in ok] == [
        ("backup/main", "II", False), ("copy/main/dr", "II", True), ("copy/main/far", "II", False),
        ("expire/main", "III", False), ("hook/main/post_backup", "III", True)]
    assert ok[-1].detail == "post_backup hook /x.sh exited 1"
    assert job_findings("main", "backup", {"result": "locked"}) == []
    could_not = job_findings("main", "verify", {"result": "failed", "verification": None, "error": "no sandbox"})
    assert [(f.key, f.active) for f in could_not] == [("verify-job/main", True), ("hook/main/post_verify", False)]
    ran = job_findings("main", "verify", {"result": "failed", "verification": {"ok": False}, "hooks": []})
    assert [(f.key, f.active) for f in ran] == [("verify-job/main", False), ("hook/main/post_verify", False)]
