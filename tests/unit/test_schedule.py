"""Cron schedules: field conversion, the day-of-month AND day-of-week rule, DST."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from drorch.daemon.schedule import Cron
from drorch.policy import cron

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_first_sunday_is_day_of_month_and_day_of_week():
    schedule = Cron("0 1 1-7 * sun", "Europe/Berlin")
    runs = schedule.next_runs(utc(2026, 12, 31), 12)
    local = [r.astimezone(schedule.zone) for r in runs]
    assert [r.month for r in local] == list(range(1, 13))  # once a month, every month of 2027
    assert all(r.strftime("%a") == "Sun" and r.day <= 7 and r.hour == 1 for r in local)
    assert local[0].date().isoformat() == "2027-01-03"
    assert schedule.notes() and "AND" in schedule.notes()[0]


def test_other_sundays_and_weekdays_complete_the_bacula_scheme():
    days = {}
    zone = Cron("0 1 * * *", "Asia/Shanghai").zone
    for kind, expr in (("full", "0 1 1-7 * sun"), ("diff", "0 1 8-31 * sun"), ("incr", "0 1 * * mon-sat")):
        for run in Cron(expr, "Asia/Shanghai").next_runs(utc(2027, 1, 20), 60):
            if run.astimezone(zone).strftime("%Y-%m") == "2027-02":
                days.setdefault(run, []).append(kind)
    assert all(len(kinds) == 1 for kinds in days.values())  # never two on one day
    assert len(days) == 28  # every day of February 2027 exactly once
    for run, (kind,) in days.items():
        local = run.astimezone(zone)
        expected = "incr" if local.weekday() != 6 else "full" if local.day <= 7 else "diff"
        assert kind == expected, local


@pytest.mark.parametrize("expr, weekdays", [
    ("0 1 * * 0", {"Sun"}), ("0 1 * * 7", {"Sun"}), ("0 1 * * 1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
    ("0 1 * * 5-7", {"Fri", "Sat", "Sun"}), ("0 1 * * sat-sun", {"Sat", "Sun"}),
    ("0 1 * * */2", {"Sun", "Tue", "Thu", "Sat"}), ("0 1 * * 1,3", {"Mon", "Wed"}),
])
def test_day_of_week_numbers_are_crons_not_apschedulers(expr, weekdays):
    runs = Cron(expr).next_runs(utc(2026, 11, 1), 14)
    assert {r.strftime("%a") for r in runs} == weekdays


@pytest.mark.parametrize("expr, words", [
    ("0 1 * *", "5 fields"), ("0 25 * * *", "hour '25'"), ("0 1 * * fri-mon", "runs backwards"),
    ("0 1 * * 8", "out of range"), ("0 1 * * funday", "day-of-week"), ("x 1 * * *", "minute 'x'"),
])
def test_bad_expressions_say_what_is_wrong(expr, words):
    with pytest.raises(ValueError, match=words):
        cron.trigger(expr)


def test_seconds_field_and_aliases():
    assert Cron("*/5 * * * * *").next_runs(utc(2026, 1, 1), 3) == [utc(2026, 1, 1, 0, 0, s) for s in (5, 10, 15)]
    assert Cron("@weekly").next_runs(utc(2026, 11, 20), 1) == [utc(2026, 11, 22)]  # a Sunday, 00:00


def test_latest_at_or_before():
    schedule = Cron("0 1 * * mon-sat", "Asia/Shanghai")
    now = utc(2026, 11, 22, 12)  # Sunday 20:00 in Shanghai
    assert schedule.latest_at_or_before(now) == utc(2026, 11, 20, 17)  # Saturday 01:00 CST
    assert schedule.latest_at_or_before(utc(2026, 11, 20, 17)) == utc(2026, 11, 20, 17)  # at the slot
    assert Cron("0 0 29 2 *").latest_at_or_before(utc(2026, 11, 22)) == utc(2024, 2, 29)
    assert schedule.count_between(utc(2026, 11, 15, 12), now) == 6


def test_dst_spring_forward_runs_the_skipped_time_once_an_hour_later():
    schedule = Cron("30 2 * * *", "Europe/Berlin")
    runs = schedule.next_runs(utc(2026, 3, 27), 4)
    assert [schedule.local(r) for r in runs] == [
        "2026-03-27 02:30:00 CET", "2026-03-28 02:30:00 CET", "2026-03-29 03:30:00 CEST", "2026-03-30 02:30:00 CEST"]
    assert runs[2] - runs[1] == timedelta(hours=24)


def test_dst_fall_back_runs_a_fixed_time_once_but_hourly_schedules_in_both_hours():
    daily = Cron("30 2 * * *", "Europe/Berlin")
    runs = daily.next_runs(utc(2026, 10, 24), 3)
    assert [daily.local(r) for r in runs] == [
        "2026-10-24 02:30:00 CEST", "2026-10-25 02:30:00 CEST", "2026-10-26 02:30:00 CET"]
    assert daily.latest_at_or_before(utc(2026, 10, 25, 1, 45)) == utc(2026, 10, 25, 0, 30)  # not the repeat
    half_hourly = Cron("*/30 * * * *", "Europe/Berlin")
    runs = half_hourly.next_runs(utc(2026, 10, 24, 23, 59), 6)
    assert runs == [utc(2026, 10, 25, 0, 0) + timedelta(minutes=30 * i) for i in range(6)]  # evenly spaced
