"""Notifications from a real `drorch daemon` process: a source that keeps
failing (its pre_backup hook says no) is told once per channel whose severity
threshold it reaches — webhook (a receiver on 127.0.0.1) and e-mail (aiosmtpd
with STARTTLS and AUTH) — and its recovery is told when it clears; a post
hook's failure arrives as a warning; the daily report goes out at its time;
no secret reaches the log."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timezone

import pytest

from tests.daemonproc import DaemonProc, port
from tests.notifyservers import SmtpServer, WebhookServer

EVERY_2S = '"*/2 * * * * *"'


@pytest.fixture
def receivers(tmp_path):
    ops, pager = WebhookServer().start(), WebhookServer().start()
    smtp = SmtpServer(tmp_path).start()
    try:
        yield ops, pager, smtp
    finally:
        ops.stop()
        pager.stop()
        smtp.stop()


def notices(server, key=None, state=None):
    return [p["drorch"] for p in server.payloads()
            if (key is None or p["drorch"]["key"] == key) and (state is None or p["drorch"]["state"] == state)]


def test_daemon_notifies_once_per_problem_by_severity_and_tells_the_recovery(tmp_path, receivers, drorch):
    ops, pager, smtp = receivers
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    flag = tmp_path / "gate-closed"
    flag.write_text("")
    gate = tmp_path / "gate.sh"
    gate.write_text(f"#!/bin/sh\n[ -e {flag} ] && {{ echo 'the application refused to freeze'; exit 2; }}\nexit 0\n")
    post = tmp_path / "post.sh"
    post.write_text("#!/bin/sh\necho 'upload refused'\nexit 1\n")
    gate.chmod(0o755)
    post.chmod(0o755)
    listen = port()
    minute = datetime.now(timezone.utc).strftime("%H:%M")
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        daemon: {{listen: "127.0.0.1:{listen}", state_dir: {tmp_path}/state}}
        notify:
          - {{type: webhook, name: ops, url: "${{env:TEST_OPS_WEBHOOK}}", min_severity: III}}
          - {{type: webhook, name: pager, url: "${{env:TEST_PAGER_WEBHOOK}}", min_severity: I, daily_report: false}}
          - {{type: email, name: dba, smtp: "127.0.0.1:{smtp.port}", from: drorch@corp.test, to: [dba@corp.test],
             user: drorch, password: "${{env:TEST_SMTP_PASSWORD}}", ca_file: {smtp.ca}, min_severity: II}}
        reports:
          daily: {{at: "{minute}", timezone: UTC}}
        repositories:
          local: {{type: posix, path: {tmp_path}/repo}}
        sources:
          broken:
            kind: files
            repository: local
            paths: [{data}]
            schedule: {{incr: {EVERY_2S}}}
            hooks: {{pre_backup: [{gate}]}}
          good:
            kind: files
            repository: local
            paths: [{data}]
            schedule: {{full: "0 0 1 1 *", incr: {EVERY_2S}}}
            hooks: {{post_backup: [{post}]}}
          vault:
            kind: files
            repository: local
            paths: [{data}]
            schedule: {{verify: {EVERY_2S}}}
            verify: {{level: read}}
        """))
    # vault: one backup, then a byte of it flipped: its scheduled verifications fail (severity I)
    assert drorch("backup", "--policy", policy, "--source", "vault", "--type", "full").code == 0
    pack = next((tmp_path / "repo" / "data" / "vault").glob("*/p000000"))
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    pack.write_bytes(bytes(raw))
    env = {"TEST_OPS_WEBHOOK": ops.url, "TEST_PAGER_WEBHOOK": pager.url, "TEST_SMTP_PASSWORD": smtp.password}
    daemon = DaemonProc(policy, tmp_path / "daemon.log", port=listen, env=env)
    try:
        failed = lambda: daemon.events("job-finished", source="broken", result="failed")  # noqa: E731
        daemon.wait_for(lambda: len(failed()) >= 3, what="three failed backups of broken")
        ops.wait_for(lambda got: notices(ops, "hook/good/post_backup"), what="the post hook warning")
        # one notice for three (and more) failures; the pager (severity I only) hears nothing of it
        (problem,) = notices(ops, "backup/broken")
        assert (problem["state"], problem["severity"], problem["source"]) == ("problem", "II", "broken")
        text = next(p["text"] for p in ops.payloads() if p["drorch"]["key"] == "backup/broken")
        assert text.startswith("*[drorch II major] backup of broken failed*")
        assert "the application refused to freeze" in text and "pre_backup hook" in text
        assert notices(pager, "backup/broken") == []
        # the failed verification is critical: the pager hears it, once, however often it fails
        daemon.wait_for(lambda: len(daemon.events("job-finished", source="vault", result="failed")) >= 2,
                        what="two failed verifications")
        pager.wait_for(lambda got: got, what="the critical notice")
        (critical,) = notices(pager)
        assert (critical["key"], critical["severity"], critical["state"]) == ("verification/vault", "I", "problem")
        assert critical["title"].startswith("read verification of vault backup ")
        assert "respond within 30m, resolve within 12h" in pager.payloads()[0]["text"]
        (warning,) = notices(ops, "hook/good/post_backup")
        assert warning["severity"] == "III" and warning["state"] == "problem"
        # e-mail: STARTTLS, logged in, the problem (II), not the warning (III)
        mail = smtp.wait_subject("backup of broken failed")
        assert mail.message["Subject"] == "[drorch II major] backup of broken failed"
        assert mail.tls and mail.login == "drorch" and mail.rcpt_tos == ["dba@corp.test"]
        assert mail.message["X-Drorch-Key"] == "backup/broken"
        assert "the application refused to freeze" in mail.message.get_body().get_content()

        # the daily report of this minute went to ops and dba, not to the pager
        ops.wait_for(lambda got: notices(ops, state="report"), what="the daily report")
        (report,) = [p for p in ops.payloads() if p["drorch"]["state"] == "report"]
        assert "drorch daily report" in report["text"] and "## Source broken" in report["text"]
        assert report["drorch"]["facts"]["summary"]["sources"] == 3
        daily = smtp.wait_subject("drorch daily report")
        attached = {part.get_filename(): part for part in daily.message.iter_attachments()}
        body = json.loads(attached["drorch-daily-report.json"].get_content())
        assert body["report"] == "daily" and [s["name"] for s in body["sources"]] == ["broken", "good", "vault"]
        assert notices(pager, state="report") == []

        status = daemon.status()
        assert {p["key"] for p in status["problems"]} == {"backup/broken", "hook/good/post_backup",
                                                           "verification/vault"}
        (open_problem,) = [p for p in status["problems"] if p["key"] == "backup/broken"]
        assert open_problem["count"] >= 3
        metrics = daemon.metrics()
        assert [metrics[("drorch_problems_open", (("severity", level),))] for level in ("I", "II", "III")] == \
            [1, 1, 1]
        assert metrics[("drorch_notifications_total", (("channel", "ops"), ("result", "ok")))] == \
            len(ops.payloads())

        # the gate opens: the next backup of broken commits, and the recovery is told once
        flag.unlink()
        ops.wait_for(lambda got: notices(ops, "backup/broken", "recovered"), what="the recovery notice")
        recovered = smtp.wait_subject("recovered")
        assert recovered.message["Subject"] == "[drorch II resolved] backup of broken failed: recovered"
        daemon.wait_for(lambda: len(daemon.events("job-finished", source="broken", result="ok")) >= 2,
                        what="more good backups")
        assert [n["state"] for n in notices(ops, "backup/broken")] == ["problem", "recovered"]
        assert len(notices(pager)) == 1 and len(notices(ops, "verification/vault")) == 1
        assert len(notices(ops, state="report")) == 1  # once a day, not once a pass
        subjects = [str(m.message["Subject"]) for m in smtp.mails]
        assert sum("backup of broken" in s for s in subjects) == 2  # problem and recovery, no more
        assert sum("verification of vault" in s for s in subjects) == 1
        assert not any("post_backup hook" in s for s in subjects)  # III is below dba's threshold
        assert not any(p["key"] == "backup/broken" for p in daemon.status()["problems"])
    finally:
        assert daemon.stop() == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "T0KEN" not in log and smtp.password not in log
    assert '"event": "notified"' in log

    # the incident report reads the repository and the daemon's journal
    result = drorch("report", "incident", "--policy", policy, "--since", "1h", "--json")
    assert result.code == 0, result.err
    body = result.json()
    (backup_incident,) = [i for i in body["incidents"] if i["key"] == "backup/broken"]
    assert backup_incident["status"] == "resolved" and backup_incident["failures"] >= 3
    assert "the application refused to freeze" in backup_incident["cause"]
    told = [a for a in backup_incident["actions"] if a["what"].startswith("notified ")]
    assert {a["what"] for a in told} >= {"notified ops (problem)", "notified dba (problem)",
                                        "notified ops (recovered)"}
    hook_incident = [i for i in body["incidents"] if i["key"] == "hook/good/post_backup"]
    assert hook_incident and hook_incident[0]["severity"] == "III" and hook_incident[0]["status"] == "open"
