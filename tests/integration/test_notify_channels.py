"""The delivery channels against real receivers on 127.0.0.1: e-mail over
STARTTLS, implicit TLS and (refused) plain SMTP, bad passwords and unknown
CAs; webhooks that fail or cannot be reached — and no secret in any error."""

from __future__ import annotations

import pytest

from drorch.notify.channels import Channel, DeliveryError
from drorch.notify.findings import Notice
from drorch.policy.notify_models import EmailChannel, WebhookChannel
from tests.notifyservers import SmtpServer, WebhookServer
from tests.s3server import free_port

# the receivers without STARTTLS take AUTH over implicit TLS or (on purpose) over plain text
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def email(server: SmtpServer, **over) -> Channel:
    entry = {"type": "email", "smtp": f"127.0.0.1:{server.port}", "from": "drorch@corp.test",
             "to": ["dba@corp.test", "ops@corp.test"], "user": "drorch", "password": "${env:TEST_SMTP_PW}",
             "ca_file": str(server.ca), "timeout": "10s", **over}
    return Channel("dba", EmailChannel.model_validate(entry))


def notice() -> Notice:
    return Notice("problem", "I", "main-db has no restorable backup within its RPO of 1h",
                  "the newest recovery point is 3h old", key="rpo/main-db", source="main-db", kind="rpo",
                  attachments={"detail.json": b'{"a": 1}'})


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_email_is_delivered_over_tls_with_authentication(tmp_path, monkeypatch, mode):
    server = SmtpServer(tmp_path, mode=mode).start()
    try:
        monkeypatch.setenv("TEST_SMTP_PW", server.password)
        email(server, security=mode).send(notice())
        (mail,) = server.wait_for(1)
        assert mail.tls and mail.login == "drorch"
        assert mail.rcpt_tos == ["dba@corp.test", "ops@corp.test"] and mail.mail_from == "drorch@corp.test"
        message = mail.message
        assert message["Subject"] == "[drorch I critical] main-db has no restorable backup within its RPO of 1h"
        assert (message["X-Drorch-Severity"], message["X-Drorch-State"]) == ("I", "problem")
        assert "the newest recovery point is 3h old" in message.get_body().get_content()
        (attachment,) = message.iter_attachments()
        assert attachment.get_filename() == "detail.json" and attachment.get_content() == b'{"a": 1}'
    finally:
        server.stop()


def test_email_failures_say_what_and_never_the_password(tmp_path, monkeypatch):
    server = SmtpServer(tmp_path).start()
    try:
        monkeypatch.setenv("TEST_SMTP_PW", "wrong-password-123")
        with pytest.raises(DeliveryError) as refused:
            email(server).send(notice())
        assert "refused the login of drorch" in refused.value.message
        assert "wrong-password-123" not in refused.value.message + str(refused.value.hint)
        assert set(server.refused_logins) == {"drorch"}  # (smtplib tries PLAIN, then LOGIN)
        monkeypatch.setenv("TEST_SMTP_PW", server.password)
        with pytest.raises(DeliveryError) as untrusted:  # the system CAs do not know the test CA
            email(server, ca_file=None).send(notice())
        assert "TLS with the SMTP server" in untrusted.value.message and "CERTIFICATE_VERIFY_FAILED" in \
            untrusted.value.message
        monkeypatch.delenv("TEST_SMTP_PW")
        with pytest.raises(DeliveryError) as unset:
            email(server).send(notice())
        assert "environment variable TEST_SMTP_PW is not set" in unset.value.message
        assert server.mails == []
    finally:
        server.stop()
    plain = SmtpServer(tmp_path, mode="plain").start()
    try:
        monkeypatch.setenv("TEST_SMTP_PW", plain.password)
        with pytest.raises(DeliveryError) as no_tls:  # STARTTLS is required unless security: none
            email(plain).send(notice())
        assert "does not offer STARTTLS" in no_tls.value.message
        email(plain, security="none").send(notice())
        (mail,) = plain.wait_for(1)
        assert not mail.tls and mail.login == "drorch"
    finally:
        plain.stop()


def test_webhook_payload_and_failures(monkeypatch):
    server = WebhookServer().start()
    try:
        monkeypatch.setenv("TEST_HOOK_URL", server.url)
        channel = Channel("ops", WebhookChannel.model_validate({"type": "webhook", "url": "${env:TEST_HOOK_URL}"}))
        channel.send(notice())
        (post,) = server.posts
        assert post["path"] == "/hook/T0KEN-secret" and post["headers"]["Content-Type"] == "application/json"
        body = post["json"]
        assert body["text"].startswith("*[drorch I critical] main-db has no restorable backup")
        assert {k: body["drorch"][k] for k in ("state", "severity", "severity_name", "key", "source", "kind")} == \
            {"state": "problem", "severity": "I", "severity_name": "critical", "key": "rpo/main-db",
             "source": "main-db", "kind": "rpo"}
        server.fail_next(1)
        with pytest.raises(DeliveryError) as failed:
            channel.send(notice())
        assert failed.value.message == "ops: the webhook answered HTTP 500 Internal Server Error"
    finally:
        server.stop()
    monkeypatch.setenv("TEST_HOOK_URL", f"http://127.0.0.1:{free_port()}/T0KEN")
    with pytest.raises(DeliveryError) as unreachable:
        channel.send(notice())
    assert "could not be reached" in unreachable.value.message and "T0KEN" not in unreachable.value.message


def test_notify_test_and_report_send_from_the_cli(tmp_path, drorch, monkeypatch):
    server = WebhookServer().start()
    try:
        monkeypatch.setenv("TEST_HOOK_URL", server.url)
        data = tmp_path / "data"
        data.mkdir()
        (data / "a.txt").write_text("alpha\n")
        policy = tmp_path / "policy.yaml"
        policy.write_text(f"""\
daemon: {{state_dir: {tmp_path}/state}}
notify:
  - {{type: webhook, name: ops, url: "${{env:TEST_HOOK_URL}}", min_severity: I}}
  - {{type: webhook, name: nowhere, url: "http://127.0.0.1:{free_port()}/x", daily_report: false}}
repositories:
  local: {{type: posix, path: {tmp_path}/repo}}
sources:
  main: {{kind: files, repository: local, paths: [{data}]}}
""")
        result = drorch("notify", "test", "--policy", policy)
        assert result.code == 1  # one channel cannot be reached
        assert "ops: sent" in result.out and "nowhere: " in result.err and "could not be reached" in result.err
        (test,) = server.payloads()
        assert test["drorch"]["state"] == "test" and "Nothing is wrong" in test["text"]
        assert drorch("notify", "test", "--policy", policy, "--channel", "ops").code == 0
        assert drorch("notify", "test", "--policy", policy, "--channel", "nope").code == 2
        assert drorch("backup", "--policy", policy, "--type", "full").code == 0
        sent = drorch("report", "daily", "--policy", policy, "--send")
        assert sent.code == 0 and "sent to ops" in sent.err and "nowhere" not in sent.err  # daily_report: false
        report = server.payloads()[-1]
        assert report["drorch"]["state"] == "report" and report["text"].startswith("*[drorch] drorch daily report")
        assert "| main | 1 | 0 |" in report["text"]
        assert not (tmp_path / "state" / "notify").exists()  # a manual send leaves no daemon state
    finally:
        server.stop()
