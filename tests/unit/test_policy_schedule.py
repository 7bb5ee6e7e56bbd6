"""`schedule:` and `daemon:` in policies; `drorch schedule` and `policy check` print next runs."""

from __future__ import annotations

import textwrap

import pytest

from tests.unit.test_policy import failed, line_of, write

BASE = """\
repositories:
  local: {type: posix, path: /srv/repo}
sources:
  etc:
    kind: files
    repository: local
    paths: [/etc]
    schedule:
      timezone: Asia/Shanghai
      full: "0 1 1-7 * sun"
      diff: "0 1 8-31 * sun"
      incr: "0 1 * * mon-sat"
      max_full_interval: 35d
"""


def test_schedule_prints_next_runs_and_the_and_rule(tmp_path, drorch):
    policy = write(tmp_path, BASE)
    result = drorch("schedule", "--policy", policy, "--count", "2")
    assert result.code == 0, result.err
    assert 'full    "0 1 1-7 * sun"  next: ' in result.out
    assert "both day-of-month 1-7 AND day-of-week sun" in result.out
    assert "classic cron would run on days matching either" in result.out
    assert "expire  after each successful backup" in result.out
    data = drorch("schedule", "--policy", policy, "--json").json()
    assert len(data["etc"]["schedules"]["incr"]["next"]) == 3
    check = drorch("policy", "check", policy)
    assert check.code == 0 and "next: " in check.out and "CST" in check.out
    assert drorch("policy", "check", policy, "--json").json()["schedules"]["etc"]["timezone"] == "Asia/Shanghai"


@pytest.mark.parametrize("bad, key, words", [
    ('incr: "0 25 * * mon-sat"', "sources.etc.schedule.incr", "hour '25'"),
    ('timezone: Mars/Olympus', "sources.etc.schedule.timezone", "not a time zone"),
    ('incr: "0 1 * * fri-mon"', "sources.etc.schedule.incr", "runs backwards"),
    ('max_full_interval: 35', "sources.etc.schedule.max_full_interval", "a duration is a string"),
])
def test_schedule_errors_point_at_the_line(tmp_path, drorch, bad, key, words):
    field = bad.split(":")[0]
    lines = [line for line in BASE.splitlines() if not line.strip().startswith(field + ":")]
    lines.insert(9, f"      {bad}")
    policy = write(tmp_path, "\n".join(lines) + "\n")
    err = failed(drorch("policy", "check", policy))
    assert f"{policy}:{line_of(policy, bad)}:" in err and key in err and words in err, err


def test_unknown_schedule_key_gets_a_suggestion(tmp_path, drorch):
    policy = write(tmp_path, BASE.replace("max_full_interval", "max_ful_interval"))
    err = failed(drorch("policy", "check", policy))
    assert "schedule.max_ful_interval: unknown key; did you mean 'max_full_interval'?" in err


def test_logical_postgres_with_incr_schedule_is_an_error(tmp_path, drorch):
    policy = write(tmp_path, """\
        repositories:
          local: {type: posix, path: /srv/repo}
        sources:
          shop:
            kind: postgres
            mode: logical
            repository: local
            schedule:
              full: "0 1 * * sun"
              incr: "0 1 * * mon-sat"
        """)
    err = failed(drorch("policy", "check", policy))
    assert f"{policy}:{line_of(policy, 'incr:')}:" in err
    assert "sources.shop.schedule.incr: mode logical takes full backups only" in err


def test_daemon_section(tmp_path, drorch):
    policy = write(tmp_path, BASE + textwrap.dedent("""\
        daemon:
          listen: 127.0.0.1:9477
          max_jobs: 3
          per_host_jobs: {local: 1}
          stop_grace: 45s
          catchup_grace: 6h
        """))
    assert drorch("policy", "check", policy).code == 0
    bad = write(tmp_path, BASE + "daemon:\n  listen: everywhere\n  max_jobs: 0\n", "bad.yaml")
    err = failed(drorch("policy", "check", bad))
    assert f"{bad}:{line_of(bad, 'listen:')}:" in err and "write HOST:PORT" in err
    assert f"{bad}:{line_of(bad, 'max_jobs')}:" in err and "daemon.max_jobs" in err


def test_daemon_section_in_two_files_is_an_error(tmp_path, drorch):
    write(tmp_path, BASE + "daemon: {max_jobs: 2}\n", "a.yaml")
    second = write(tmp_path, "daemon: {max_jobs: 3}\n", "b.yaml")
    err = failed(drorch("policy", "check", tmp_path))
    assert f"{second}:1:1: daemon: defined twice" in err


def test_a_copy_schedule_needs_copy_to(tmp_path, drorch):
    policy = write(tmp_path, BASE.replace("      max_full_interval: 35d", '      copy: "0 3 * * *"'))
    err = failed(drorch("policy", "check", policy))
    assert "sources.etc.schedule.copy: the source has no `copy_to` repositories" in err
