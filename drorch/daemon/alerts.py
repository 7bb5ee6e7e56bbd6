"""The daemon's notify side, in a thread of its own so the scheduler loop never
waits for a repository listing, an SMTP server or a webhook.

It turns each job's outcome into findings (drorch/notify/jobs.py), looks at
the source's objectives right after (and every EVALUATE_EVERY seconds at
every source, and the free space), sends what is due through the notifier
(de-duplicated, rate-limited, recoveries), and the daily report at
`reports.daily.at` in its time zone — once per day, also after a restart
within CATCHUP of that time.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from drorch.daemon.schedule import Cron
from drorch.errors import DrorchError
from drorch.timefmt import iso, parse_iso, utcnow

log = logging.getLogger("drorch.daemon.alerts")
EVALUATE_EVERY = 60.0  # seconds between looks at every source's objectives
CATCHUP = timedelta(hours=12)  # a daily report missed (daemon down) is sent if at most this late
STOP = object()


class Alerts:
    def __init__(self, clock: Callable[[], datetime] = utcnow, evaluate_every: float = EVALUATE_EVERY,
                 state=None):
        self.clock = clock
        self.state = state  # the daemon's DaemonState: open problems and deliveries for /metrics
        self.evaluate_every = evaluate_every
        self.queue: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.policy = None
        self.notifier = None
        self.repos = None
        self.next_runs: Callable[[str], dict] = lambda name: {}
        self.thread: threading.Thread | None = None
        self.passes = 0  # evaluations done
        self._said: dict[str, str] = {}  # what -> the error last logged about it

    # -- called from the daemon's loop ----------------------------------------------------

    def apply(self, policy, next_runs: Callable[[str], dict] | None = None) -> None:
        """The policies in force (at start and after each reload)."""
        from drorch.factory import open_repository
        from drorch.notify.facts import RepoCache
        from drorch.notify.notifier import Notifier

        with self.lock:
            if self.notifier is None or Path(policy.daemon.state_dir) != Path(self.policy.daemon.state_dir):
                self.notifier = Notifier.from_policy(policy, clock=self.clock)
            else:
                from drorch.notify.channels import make_channels

                self.notifier.channels = make_channels(policy.notify)
            self.policy = policy
            self.repos = RepoCache(lambda name: open_repository(policy, name))
            for key in self.notifier.ledger.retire(lambda p: p.get("source") not in (None, *policy.sources)):
                log.info("problem %s forgotten: its source is no longer in the policies", key)
            self.next_runs = next_runs or (lambda name: {})
        self.queue.put(("evaluate", None))

    def job_done(self, source: str, job: str, result: dict, summary: str) -> None:
        self.queue.put(("job", (source, job, result, summary)))

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="drorch-alerts", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Finish what is queued (job outcomes are told), then end."""
        if self.thread is None:
            return
        self.queue.put((STOP, None))
        self.thread.join(timeout)

    def open_problems(self) -> list[dict]:
        with self.lock:
            if self.notifier is None:
                return []
            return [{"key": key, "severity": p["severity"], "title": p["title"], "detail": p.get("detail"),
                     "since": p["since"], "count": p["count"], "flapping": bool(p.get("flapping"))}
                    for key, p in sorted(self.notifier.ledger.problems.items()) if p["state"] == "problem"]

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        last_all = -1e18
        while True:
            wait = max(0.0, last_all + self.evaluate_every - _monotonic())
            try:
                kind, item = self.queue.get(timeout=min(wait, self._until_daily()))
            except queue.Empty:
                kind, item = "tick", None
            try:
                if kind is STOP:
                    self._drain()
                    return
                if kind == "job":
                    self._job(*item)
                if kind == "evaluate" or _monotonic() - last_all >= self.evaluate_every:
                    self._evaluate_all()
                    last_all = _monotonic()
                self.daily_if_due()
                self._flush()
            except Exception:  # noqa: BLE001 - notify must never take the daemon down
                log.exception("notifications: unexpected error (the daemon carries on)")

    def _drain(self) -> None:
        while True:
            try:
                kind, item = self.queue.get_nowait()
            except queue.Empty:
                break
            if kind == "job":
                self._job(*item)
        if self.notifier is not None:
            self._flush()

    def _flush(self) -> None:
        with self.lock:
            tried = self.notifier.flush()
            counts: dict[str, int] = {}
            for problem in self.notifier.ledger.problems.values():
                if problem["state"] == "problem":
                    counts[problem["severity"]] = counts.get(problem["severity"], 0) + 1
        self._count(tried)
        if self.state is not None:
            with self.state.lock:
                self.state.problems_open = counts

    def _count(self, tried: list[dict]) -> None:
        if self.state is not None:
            with self.state.lock:
                for outcome in tried:
                    self.state.notices[(outcome["channel"], "ok" if outcome["ok"] else "failed")] += 1

    def _job(self, source: str, job: str, result: dict, summary: str) -> None:
        from drorch.notify.jobs import job_findings

        with self.lock:
            self.notifier.record("job", source=source, job=job, result=result.get("result"),
                                 type=result.get("type"), label=result.get("label"), error=result.get("error"),
                                 summary=summary)
            self.notifier.observe(job_findings(source, job, result))
        if source in self.policy.sources:
            self._evaluate(source)
        self._flush()

    def _evaluate(self, source: str) -> None:
        from drorch.notify.objectives import Evaluator

        evaluator = Evaluator(self.policy, self.repos, self.clock)
        findings = self._safely(lambda: evaluator.source(source), source)
        with self.lock:
            self.notifier.observe(findings)

    def _evaluate_all(self) -> None:
        from drorch.notify.objectives import Evaluator

        evaluator = Evaluator(self.policy, self.repos, self.clock, host_paths=[self.policy.daemon.state_dir])
        findings = []
        for name in sorted(self.policy.sources):
            findings += self._safely(lambda n=name: evaluator.source(n), name)
        space = self._safely(evaluator.space, "free space")
        findings += space
        checked = {f.key for f in space}
        with self.lock:
            self.notifier.observe(findings)
            if space:  # paths no longer used by any source are not watched any more
                self.notifier.ledger.retire(lambda p: p.get("kind") == "space" and p["key"] not in checked)
        self.passes += 1

    def _safely(self, look, what: str) -> list:
        try:
            found = look()
        except DrorchError as exc:
            if self._said.get(what) != exc.message:  # once, not every pass
                log.warning("notifications: cannot look at %s: %s", what, exc.message)
            self._said[what] = exc.message
            return []
        self._said.pop(what, None)
        return found

    # -- the daily report ------------------------------------------------------------------------

    def _daily_cron(self) -> Cron | None:
        daily = self.policy.reports.daily if self.policy is not None else None
        if daily is None or not daily.notify:
            return None
        hour, minute = daily.at.split(":")
        return Cron(f"{int(minute)} {int(hour)} * * *", daily.timezone)

    def _until_daily(self) -> float:
        cron = self._daily_cron()
        upcoming = cron.next_after(self.clock()) if cron else None
        return 3600.0 if upcoming is None else max(0.05, (upcoming - self.clock()).total_seconds() + 0.05)

    def daily_if_due(self) -> None:
        """Send the daily report when its time has come today (and it was not sent yet)."""
        cron = self._daily_cron()
        if cron is None:
            return
        now = self.clock()
        slot = cron.latest_at_or_before(now)
        last = self.notifier.ledger.report_sent("daily")
        if slot is None or now - slot > CATCHUP or (last is not None and parse_iso(last) >= slot):
            return
        from drorch.notify.daily import daily_report
        from drorch.notify.report import Context

        ctx = Context(self.policy, self.repos, now=now, timezone=self.policy.reports.daily.timezone,
                      journal=self.notifier.journal, ledger=self.notifier.ledger, next_runs=self.next_runs)
        report = daily_report(ctx)
        with self.lock:
            channels = [c for c in self.notifier.channels if c.daily_report]
            outcomes = self.notifier.send(report.notice(), channels) if channels else []
        self._count(outcomes)
        with self.lock:
            if channels and not any(o["ok"] for o in outcomes):
                return  # tried again at the next pass (within CATCHUP)
            self.notifier.ledger.mark_report("daily", iso(slot))
            self.notifier.record("report", report="daily", title=report.title,
                                 channels=[o["channel"] for o in outcomes if o["ok"]])
            self.notifier.ledger.save()
        log.info("daily report for %s: %s (sent to %s)", slot.astimezone(cron.zone).date(), report.title,
                 ", ".join(o["channel"] for o in outcomes if o["ok"]) or "no channel",
                 extra={"fields": {"event": "daily-report", "title": report.title}})


def _monotonic() -> float:
    import time

    return time.monotonic()
