"""`notify:`, `reports:`, and a source's `hooks:` and `warnings:` in policies:
FILE:LINE errors, secrets by reference only, lists that add up across files,
what `drorch policy check` says."""

from __future__ import annotations

import textwrap

import pytest

from drorch.errors import PolicyError
from drorch.policy import load_policy

SOURCE = """\
repositories:
  r: {type: posix, path: /tmp/r}
sources:
  main-db:
    kind: files
    repository: r
    paths: [/etc]
"""


def problems(tmp_path, text: str, name: str = "p.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return [p.split(": ", 1)[1] for p in caught.value.problems]


def test_the_issue_example_loads(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(SOURCE + textwrap.dedent("""\
            hooks:
              pre_backup: [hooks/pre-backup-check.sh]
              post_backup: [hooks/post-backup-notify.sh]
              on_failure: [hooks/on-failure.sh]
            warnings: {change_factor: 5, min_free: 10%}
        notify:
          - {type: webhook, url: "${env:DRORCH_WEBHOOK}", min_severity: II}
          - {type: email, smtp: "mail.internal:587", from: drorch@corp, to: [dba@corp], user: drorch, password: "${env:SMTP_PASSWORD}", min_severity: I}
        reports:
          daily: {at: "07:30", timezone: Asia/Shanghai, notify: true}
        """))
    policy = load_policy(path)
    webhook, email = policy.notify
    assert (webhook.type, webhook.min_severity, webhook.url.ref) == ("webhook", "II", "${env:DRORCH_WEBHOOK}")
    assert (email.from_, email.to, email.host_port, email.security) == ("drorch@corp", ["dba@corp"],
                                                                        ("mail.internal", 587), "starttls")
    assert policy.reports.daily.at == "07:30" and policy.reports.daily.timezone == "Asia/Shanghai"
    source = policy.sources["main-db"]
    assert source.hooks.pre_backup == ["hooks/pre-backup-check.sh"] and source.hooks.timeout.total_seconds() == 300
    assert (source.warnings.change_factor, source.warnings.min_free) == (5, "10%")
    assert policy.base_dir == tmp_path


def test_mistakes_point_at_their_line(tmp_path):
    found = problems(tmp_path, SOURCE + """\
    hooks: {pre_backup: [x.sh], timout: 5m}
    warnings: {change_factor: 1, min_free: lots}
notify:
  - {type: webhook, url: "https://hooks.example/T0KEN", min_severity: V}
  - {type: email, smtp: "mail:99999", from: drorch, to: [], password: hunter2}
  - {type: pager}
reports:
  daily: {at: "7.30", timezone: Mars/Olympus}
""")
    assert found == [
        "sources.main-db.hooks.timout: unknown key; did you mean 'timeout'?",
        "sources.main-db.warnings.change_factor: Input should be greater than 1",
        "sources.main-db.warnings.min_free: 'lots': write a share of the file system (e.g. 10%) or a size "
        "(e.g. 50GiB)",
        "notify[0].min_severity: Input should be 'I', 'II', 'III' or 'IV'",
        "notify[1].smtp: 'mail:99999': write HOST:PORT, e.g. mail.internal:587",
        "notify[1].from: 'drorch' is not an e-mail address",
        "notify[1].to: List should have at least 1 item after validation, not 0",
        "notify[1].password: secrets are given by reference, never inline: write \"${env:NAME}\" or "
        "\"${file:/path/to/secret}\"",
        "notify[2].type: `type` must be one of: webhook, email",
        "reports.daily.at: '7.30': write the time of day as HH:MM, e.g. 07:30",
        "reports.daily.timezone: 'Mars/Olympus' is not a time zone; use an IANA name such as Europe/Berlin, "
        "Asia/Shanghai or UTC"]


def test_channels_add_up_across_files_and_reports_is_one_section(tmp_path):
    (tmp_path / "a.yaml").write_text(SOURCE + 'notify:\n  - {type: webhook, url: "http://127.0.0.1:1/a"}\n'
                                     'reports:\n  daily: {at: "07:30"}\n')
    (tmp_path / "b.yaml").write_text('notify:\n  - {type: webhook, name: b, url: "http://127.0.0.1:1/b"}\n')
    policy = load_policy(tmp_path)
    assert [c.url for c in policy.notify] == ["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"]
    (tmp_path / "b.yaml").write_text('reports:\n  daily: {at: "08:00"}\n')
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path)
    assert "reports: defined twice" in caught.value.problems[0]


def test_policy_check_says_where_notifications_go(tmp_path, drorch):
    path = tmp_path / "p.yaml"
    path.write_text(SOURCE + textwrap.dedent("""\
        notify:
          - {type: webhook, name: ops, url: "${env:OPS_HOOK}", min_severity: III}
          - {type: email, smtp: "mail.internal", from: d@corp, to: [dba@corp], daily_report: false}
        reports:
          daily: {at: "07:30", timezone: Asia/Shanghai}
        """))
    result = drorch("policy", "check", path)
    assert result.code == 0, result.err
    assert "  notify ops: webhook (${env:OPS_HOOK}), severity III and worse" in result.out
    assert "  notify email#1: email (mail.internal to dba@corp), severity II and worse, no daily report" in \
        result.out
    assert "  daily report at 07:30 Asia/Shanghai (sent to the channels)" in result.out
