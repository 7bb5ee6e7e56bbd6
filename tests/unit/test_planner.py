"""The planner, driven by an injected clock: nothing here waits for real time.

`simulate` plays the daemon: it wakes at every fire time (except while
"down"), asks the planner, and records each backup it decides as committed
a few seconds later, like a real job would.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from drorch.daemon import planner
from drorch.daemon.planner import Attempt, Backup, History, Rules
from drorch.daemon.schedule import Cron

UTC = timezone.utc
BACULA = {"full": "0 1 1-7 * sun", "diff": "0 1 8-31 * sun", "incr": "0 1 * * mon-sat"}


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def rules(crons: dict, tz: str = "UTC", grace=timedelta(hours=12), **kwargs) -> Rules:
    return Rules({k: Cron(v, tz) for k, v in crons.items()}, grace, **kwargs)


def label(moment: datetime, btype: str) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ-") + btype[0].upper()


def backup(moment: datetime, btype: str, host: str = "a") -> Backup:
    return Backup(label(moment, btype), btype, moment, host)


def simulate(plan: Rules, start: datetime, end: datetime, history: History | None = None,
             down: tuple[datetime, datetime] | None = None, since: datetime | None = None):
    """Run the planner at every fire time in [start, end); returns (history, decisions that ran)."""
    history = history or History()
    ran = []
    now = start
    while now < end:
        fires = [c.next_at_or_after(now) for c in plan.crons.values()]
        now = min(f for f in fires if f is not None)
        if down and down[0] <= now < down[1]:
            now = down[1]  # the daemon comes back: its first pass is at this moment
        if now >= end:
            break
        for decision in planner.decide("s", plan, history, now, since=since):
            if decision.run and decision.job == "backup":
                ran.append((now, decision))
                history.backups.append(backup(now + timedelta(seconds=3), decision.type))
        now += timedelta(microseconds=1)
    return history, ran


def test_bacula_scheme_over_two_months():
    plan = rules(BACULA, "Asia/Shanghai")
    seed = History([backup(utc(2026, 12, 31), "full")])
    _, ran = simulate(plan, utc(2027, 1, 1), utc(2027, 3, 1), seed)
    zone = plan.crons["full"].zone
    assert len(ran) == 59  # one backup a day, January 1 to February 28 (CST: Jan 1 01:00 is Dec 31 17:00 UTC)
    for now, decision in ran:
        local = now.astimezone(zone)
        expected = "incr" if local.weekday() != 6 else "full" if local.day <= 7 else "diff"
        assert decision.type == expected, (local, decision.reason)
        assert decision.upgrade is None


def test_incr_with_no_full_runs_as_a_full_and_says_why():
    plan = rules({"incr": "0 1 * * *"})
    (decision,) = planner.decide("s", plan, History(), utc(2026, 11, 22, 1))
    assert (decision.requested, decision.type) == ("incr", "full")
    assert "there is no full backup to build on" in decision.reason


def test_max_full_interval_upgrades_an_incr_to_a_full():
    plan = rules({"incr": "0 1 * * *"}, max_full_interval=timedelta(days=7))
    history, ran = simulate(plan, utc(2026, 11, 1, 2), utc(2026, 11, 22, 2), History([backup(utc(2026, 11, 1), "full")]))
    types = [d.type for _, d in ran]
    # the full of Nov 1 00:00 is more than 7d old on Nov 8 01:00; the next full then on Nov 16
    assert types == (["incr"] * 6 + ["full"] + ["incr"] * 7 + ["full"] + ["incr"] * 6)
    upgraded = ran[6][1]
    assert upgraded.requested == "incr"
    assert "more than max_full_interval 7d" in upgraded.reason and "20261101T000000Z-F" in upgraded.reason


def test_max_diff_interval_upgrades_an_incr_to_a_diff():
    plan = rules({"incr": "0 1 * * *"}, max_diff_interval=timedelta(days=2), max_full_interval=timedelta(days=30))
    _, ran = simulate(plan, utc(2026, 11, 1, 2), utc(2026, 11, 10, 2), History([backup(utc(2026, 11, 1), "full")]))
    assert [d.type for _, d in ran] == ["incr", "diff", "incr", "incr", "diff", "incr", "incr", "diff", "incr"]
    assert "more than max_diff_interval 2d" in ran[1][1].reason


def test_colliding_full_and_incr_run_once_as_the_full():
    plan = rules({"full": "0 1 * * sun", "incr": "0 1 * * *"})
    history = History([backup(utc(2026, 11, 21, 1), "full")])
    decisions = planner.decide("s", plan, history, utc(2026, 11, 22, 1, 0, 1))  # Sunday 01:00
    assert [(d.type, d.run) for d in decisions] == [("full", True)]
    assert "incr due too: one run, as the stronger full" in decisions[0].reason
    history.backups.append(backup(utc(2026, 11, 22, 1, 0, 2), "full"))
    assert planner.decide("s", plan, history, utc(2026, 11, 22, 1, 5)) == []  # both slots are done


def test_catch_up_after_downtime_runs_once_not_once_per_missed_slot():
    plan = rules({"incr": "0 */4 * * *"}, grace=timedelta(hours=6))
    seed = History([backup(utc(2026, 11, 20), "full")])
    start = utc(2026, 11, 20, 1)
    # down from Friday 01:00 until Saturday 02:00: six slots missed; the last (00:00) is within the grace
    history, ran = simulate(plan, start, utc(2026, 11, 21, 9), seed, down=(start, utc(2026, 11, 21, 2)),
                            since=utc(2026, 11, 21, 2))
    assert [now for now, _ in ran] == [utc(2026, 11, 21, 2), utc(2026, 11, 21, 4), utc(2026, 11, 21, 8)]
    first = ran[0][1]
    assert first.slot == utc(2026, 11, 21, 0)
    assert "catching up once for 6 missed slots" in first.reason
    assert "no daemon was running" in first.reason


def test_a_missed_slot_older_than_the_grace_is_not_caught_up():
    plan = rules({"full": "0 1 * * sun"}, grace=timedelta(hours=12))
    history = History([backup(utc(2026, 11, 1, 1), "full")])
    (decision,) = planner.decide("s", plan, history, utc(2026, 11, 22, 20))
    assert not decision.run
    assert "more than catchup_grace 12h: not caught up" in decision.reason
    assert "next full at 2026-11-29 01:00:00 UTC" in decision.reason


def test_a_failed_run_is_not_retried_an_aborted_one_is_and_a_locked_one_later():
    plan = rules({"incr": "0 1 * * *"})
    base = [backup(utc(2026, 11, 21, 1), "full")]
    now = utc(2026, 11, 22, 1, 10)
    failed = Attempt("backup", "incr", utc(2026, 11, 22, 1, 0, 1), "failed", "20261122T010001Z-I", "copy: disk full")
    (decision,) = planner.decide("s", plan, History(base, [failed]), now)
    assert not decision.run and "failed (copy: disk full)" in decision.reason
    aborted = Attempt("backup", "incr", utc(2026, 11, 22, 1, 0, 1), "aborted")
    (decision,) = planner.decide("s", plan, History(base, [aborted]), now)
    assert decision.run and decision.type == "incr"
    locked = Attempt("backup", "incr", utc(2026, 11, 22, 1, 9, 30), "locked", error="locked by b pid 7")
    (decision,) = planner.decide("s", plan, History(base, [locked]), now)
    assert not decision.run and "locked elsewhere" in decision.reason
    (decision,) = planner.decide("s", plan, History(base, [locked]), now + planner.LOCKED_RETRY)
    assert decision.run


def test_a_slot_covered_by_another_hosts_backup_is_done():
    plan = rules({"incr": "0 1 * * *"})
    history = History([backup(utc(2026, 11, 21, 1), "full", host="a"), backup(utc(2026, 11, 22, 1, 0, 1), "incr", "b")])
    assert planner.decide("s", plan, history, utc(2026, 11, 22, 1, 0, 5)) == []
    # a backup started a moment before the slot by another host's clock still counts (clock skew)
    history = History([backup(utc(2026, 11, 21, 1), "full"), backup(utc(2026, 11, 22, 0, 59, 57), "incr", "b")])
    assert planner.decide("s", plan, history, utc(2026, 11, 22, 1, 0, 5)) == []


def test_dst_fall_back_day_has_one_backup_in_europe_berlin():
    plan = rules({"incr": "30 2 * * *"}, "Europe/Berlin")
    seed = History([backup(utc(2026, 10, 20), "full")])
    history, ran = simulate(plan, utc(2026, 10, 24), utc(2026, 10, 27), seed)
    zone = plan.crons["incr"].zone
    assert [now.astimezone(zone).strftime("%m-%d %H:%M %Z") for now, _ in ran] == [
        "10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET"]


def test_dst_spring_forward_day_has_one_backup_in_europe_berlin():
    plan = rules({"incr": "30 2 * * *"}, "Europe/Berlin")
    seed = History([backup(utc(2026, 3, 20), "full")])
    _, ran = simulate(plan, utc(2026, 3, 28), utc(2026, 3, 31), seed)
    zone = plan.crons["incr"].zone
    assert [now.astimezone(zone).strftime("%m-%d %H:%M %Z") for now, _ in ran] == [
        "03-28 02:30 CET", "03-29 03:30 CEST", "03-30 02:30 CEST"]


def test_full_only_sources_never_get_incrementals():
    plan = rules({"full": "0 1 * * *"}, full_only=True)
    _, ran = simulate(plan, utc(2026, 11, 1), utc(2026, 11, 4))
    assert [d.type for _, d in ran] == ["full", "full", "full"]


def test_verify_expire_copy_slots_run_once_each():
    plan = rules({"verify": "0 6 * * *", "copy": "0 3 * * *"})
    now = utc(2026, 11, 22, 6, 0, 1)
    decisions = planner.decide("s", plan, History(), now)
    assert sorted(d.job for d in decisions if d.run) == ["copy", "verify"]
    done = [Attempt("verify", None, now, "ok"), Attempt("copy", None, now, "failed")]
    assert planner.decide("s", plan, History([], done), now + timedelta(minutes=1)) == []
