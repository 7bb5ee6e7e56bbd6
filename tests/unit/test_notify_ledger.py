"""De-duplication, reminders, recoveries, flapping, severity routing and the
rate limit of notifications: the notifier with an injected clock, delivering
to a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from drorch.notify.channels import make_channels
from drorch.notify.findings import Finding, Notice, gone
from drorch.notify.notifier import Notifier
from drorch.policy.notify_models import WebhookChannel
from tests.notifyservers import WebhookServer


class Clock:
    def __init__(self):
        self.now = datetime(2026, 11, 22, 1, 0, tzinfo=timezone.utc)

    def __call__(self):
        return self.now

    def advance(self, **kw):
        self.now += timedelta(**kw)


@pytest.fixture
def hook():
    server = WebhookServer().start()
    try:
        yield server
    finally:
        server.stop()


def notifier(hook, tmp_path, clock, **channels):
    """channels: name -> dict of the webhook entry (min_severity, repeat, max_per_hour)."""
    models = [WebhookChannel.model_validate({"type": "webhook", "name": name, "url": hook.url, **kw})
              for name, kw in channels.items()]
    return Notifier(make_channels(models), tmp_path, clock)


def failed(source="main", error="begin: connection refused"):
    return Finding(f"backup/{source}", "backup", source, f"backup of {source} failed", error, occurrence=True)


def ok(source="main"):
    return gone(f"backup/{source}", "backup", source, f"backup of {source} failed", "incr backup L committed")


def states(hook):
    return [(p["drorch"]["state"], p["drorch"]["key"], p["drorch"]["severity"]) for p in hook.payloads()]


def test_a_repeating_failure_is_sent_once_reminded_and_its_recovery_told(hook, tmp_path):
    clock = Clock()
    n = notifier(hook, tmp_path, clock, ops={"min_severity": "II", "repeat": "6h"})
    for _ in range(5):  # the same failure, five slots in a row
        n.observe([failed()])
        n.flush()
        clock.advance(minutes=30)
    assert states(hook) == [("problem", "backup/main", "II")]
    first = hook.payloads()[0]
    assert first["text"].startswith("*[drorch II major] backup of main failed*")
    assert "begin: connection refused" in first["text"] and "resolve within 1d" in first["text"]
    clock.advance(hours=4)  # 6h after the first notice: a reminder, counting the failures
    n.observe([failed()])
    n.flush()
    assert states(hook)[-1] == ("reminder", "backup/main", "II")
    assert "since 2026-11-22T01:00:00Z, 6 time(s)" in hook.payloads()[-1]["text"]
    n.observe([ok()])
    n.flush()
    n.flush()
    assert states(hook)[-1] == ("recovered", "backup/main", "II")
    assert len(hook.payloads()) == 3
    assert "incr backup L committed" in hook.payloads()[-1]["text"]
    # the ledger survives a restart: a new notifier on the same state says nothing more
    again = notifier(hook, tmp_path, clock, ops={"min_severity": "II", "repeat": "6h"})
    again.observe([ok()])
    again.flush()
    assert len(hook.payloads()) == 3


def test_severity_routing_and_escalation(hook, tmp_path):
    clock = Clock()
    n = notifier(hook, tmp_path, clock, pager={"min_severity": "I"}, ops={"min_severity": "III"})
    n.observe([failed(), Finding("change/main", "change", "main", "mass change in main", "9x")])
    n.flush()
    got = {(p["drorch"]["key"], p["drorch"]["severity"]) for p in hook.payloads()}
    assert got == {("backup/main", "II"), ("change/main", "III")}  # nothing reached the pager
    assert len(hook.payloads()) == 2
    # the same key turning worse is told again, to whoever now cares
    n.observe([Finding("backup/main", "backup", "main", "backup of main failed: RPO lost", severity="I")])
    n.flush()
    assert [p["drorch"]["severity"] for p in hook.payloads()[2:]] == ["I", "I"]
    # a one-off event (a runbook's notify step) goes where its severity reaches
    tried = n.announce(Notice("info", "II", "failover of main-db started", "runbook pg-failover, run R"))
    assert [t["channel"] for t in tried] == ["ops"]
    assert hook.payloads()[-1]["drorch"]["state"] == "info"


def test_a_flapping_problem_is_announced_once_then_settles(hook, tmp_path):
    clock = Clock()
    n = notifier(hook, tmp_path, clock, ops={})
    for _ in range(4):
        n.observe([failed()])
        n.flush()
        clock.advance(minutes=5)
        n.observe([ok()])
        n.flush()
        clock.advance(minutes=5)
    assert [s for s, _, _ in states(hook)] == ["problem", "recovered", "flapping"]
    assert "keeps coming and going" in hook.payloads()[-1]["text"]
    for _ in range(3):  # still flapping: nothing more
        n.observe([failed()])
        n.flush()
        clock.advance(minutes=5)
    assert len(hook.payloads()) == 3
    clock.advance(hours=1)  # held still (failing) for an hour: its state is sent
    n.flush()
    assert states(hook)[-1] == ("problem", "backup/main", "II")


def test_a_storm_becomes_a_digest_and_a_failed_delivery_is_retried(hook, tmp_path):
    clock = Clock()
    n = notifier(hook, tmp_path, clock, ops={"max_per_hour": 3})
    hook.fail_next(1)
    n.observe([failed("a")])
    tried = n.flush()
    assert [t["ok"] for t in tried] == [False] and "HTTP 500" in tried[0]["error"]
    assert "T0KEN" not in tried[0]["error"]  # the URL (it holds a token) is never said
    n.flush()  # the next pass delivers it
    assert states(hook) == [("problem", "backup/a", "II")]
    n.observe([failed(s) for s in "bcdefg"])
    n.flush()
    (digest,) = hook.payloads()[1:]
    assert digest["drorch"]["state"] == "digest"
    assert [i["key"] for i in digest["drorch"]["facts"]["items"]] == [f"backup/{s}" for s in "bcdefg"]
    n.observe([failed("h")])
    n.observe([failed("i")])
    n.flush()  # 3rd message of the hour: one left, two due -> a digest of both
    assert hook.payloads()[-1]["drorch"]["state"] == "digest"
    n.observe([failed("j")])
    n.flush()  # the hour is used up: held, not lost
    assert len(hook.payloads()) == 3
    clock.advance(minutes=61)
    n.flush()
    assert states(hook)[-1] == ("problem", "backup/j", "II")
    journal = (tmp_path / "notify" / "events.jsonl").read_text()
    assert '"event": "problem-opened"' in journal and '"event": "notice"' in journal
