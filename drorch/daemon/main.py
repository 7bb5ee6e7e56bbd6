"""`drorch daemon`: the loop that runs schedules.

Start-up validates the policies (and refuses invalid ones: PolicyError, exit
2), copies them into the state directory (the jobs read that copy, so an
edit on disk changes nothing until a reload), opens the HTTP endpoint and
loops: read each source's history from its repository, ask the planner what
is due, start what the limits allow, sleep until the next fire time, a job's
end or a signal.  SIGHUP reloads (a bad edit is logged, the old policies
stay); SIGTERM or SIGINT stop taking jobs, let running ones finish within
stop_grace, abort the rest, and exit 0.
"""

from __future__ import annotations

import logging
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from drorch.daemon import planner
from drorch.daemon.alerts import Alerts
from drorch.daemon.history import HistoryReader, SourceHistory
from drorch.daemon.loaded import Loaded, load
from drorch.daemon.planner import Attempt, Decision, History
from drorch.daemon.runner import Job, Runner
from drorch.daemon.state import DaemonState, SourceState
from drorch.daemon.summary import summary_line
from drorch.daemon.waker import Waker
from drorch.errors import DrorchError, PolicyError
from drorch.timefmt import iso, utcnow

log = logging.getLogger("drorch.daemon")
HEARTBEAT = 30.0  # seconds between passes when nothing else wakes the loop
ATTEMPT_MEMORY = 400  # per source: what this daemon tried, newest kept


class Daemon:
    def __init__(self, policy_path: Path, log_format: str = "human", clock: Callable[[], datetime] = utcnow):
        self.policy_path = Path(policy_path)
        self.log_format = log_format
        self.clock = clock
        self.waker = Waker()
        self.stopping = False
        self.reload_wanted = False
        self.history = HistoryReader()
        self.attempts: dict[str, list[Attempt]] = {}
        self.state = DaemonState(started=clock())
        self.runner = Runner(self._job_done, self.waker.wake)
        self.loaded: Loaded | None = None
        self.endpoint = None
        self._said: dict[tuple, str] = {}  # (source, job, slot) -> reason already logged
        self.alerts = Alerts(clock, state=self.state)  # notifications, objectives, daily report (own thread)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Everything that must work before the loop runs; raises PolicyError / DrorchError."""
        self._apply(load(self.policy_path, generation=1))
        self.alerts.start()
        if self.loaded.policy.daemon.listen != "off":
            from drorch.daemon.http import Endpoint

            self.endpoint = Endpoint(self.loaded.policy.daemon.listen, self.state, self.status)
            self.endpoint.start()
        for signum, handler in ((signal.SIGHUP, self._on_hup), (signal.SIGTERM, self._on_stop),
                                (signal.SIGINT, self._on_stop)):
            signal.signal(signum, handler)
        scheduled = sorted(self.loaded.rules)
        log.info("drorch daemon started: %d source(s) scheduled (%s), policies %s, endpoint %s",
                 len(scheduled), ", ".join(scheduled) or "none", self.policy_path,
                 self.endpoint.address if self.endpoint else "off",
                 extra={"fields": {"event": "started", "sources": scheduled}})
        for name in sorted(set(self.loaded.policy.sources) - set(scheduled)):
            log.info("source %s has no schedule: the daemon leaves it alone", name)

    def run(self) -> int:
        self.start()
        try:
            while not self.stopping:
                if self.reload_wanted:
                    self.reload()
                self.tick()
                self.waker.wait(self._sleep_for())
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        grace = self.loaded.policy.daemon.stop_grace.total_seconds() if self.loaded else 0
        if self.runner.jobs():
            log.info("stopping: no new jobs; %d running", len(self.runner.jobs()))
        self.runner.stop(grace)
        self.alerts.stop()  # the outcomes of the last jobs are still told
        if self.endpoint is not None:
            self.endpoint.stop()
        log.info("drorch daemon stopped", extra={"fields": {"event": "stopped"}})

    def _on_hup(self, signum, frame) -> None:
        self.reload_wanted = True
        self.waker.wake()

    def _on_stop(self, signum, frame) -> None:
        self.stopping = True
        self.waker.wake()

    def reload(self) -> None:
        self.reload_wanted = False
        try:
            loaded = load(self.policy_path, generation=self.loaded.generation + 1)
        except PolicyError as exc:
            self._reload_failed(exc.problems)
            return
        except DrorchError as exc:
            self._reload_failed([exc.message])
            return
        old = set(self.loaded.rules)
        if loaded.policy.daemon.listen != self.loaded.policy.daemon.listen:
            log.warning("daemon.listen changed to %s: restart the daemon to move the endpoint",
                        loaded.policy.daemon.listen)
        self._apply(loaded)
        new = set(loaded.rules)
        self.state.reloads["ok"] += 1
        log.info("policies reloaded: %d source(s) scheduled%s%s", len(new),
                 f"; added {', '.join(sorted(new - old))}" if new - old else "",
                 f"; removed {', '.join(sorted(old - new))}" if old - new else "",
                 extra={"fields": {"event": "reloaded", "sources": sorted(new)}})

    def _reload_failed(self, problems: list[str]) -> None:
        for line in problems:
            log.error("policy reload: %s", line)
        log.error("policy reload failed (%d problem(s)): the policies loaded at %s stay in force",
                  len(problems), iso(self.loaded.loaded_at), extra={"fields": {"event": "reload-failed",
                                                                              "problems": problems}})
        with self.state.lock:
            self.state.reloads["failed"] += 1
            self.state.last_reload_ok = False

    def _apply(self, loaded: Loaded) -> None:
        in_use = {job.spec["policy"] for job in self.runner.jobs()}
        if self.loaded is not None:
            self.loaded.forget(keep=in_use | {loaded.snapshot})
        self.loaded = loaded
        with self.state.lock:
            self.state.last_reload_ok = True
            self.state.generation = loaded.generation
            self.state.policy_files = [str(f) for f in loaded.policy.files]
            self.state.sources = {name: self.state.sources.get(name) or SourceState(
                name, model.kind, model.repository, model.host) for name, model in loaded.policy.sources.items()}
            for name, src in self.state.sources.items():
                model = loaded.policy.sources[name]
                src.kind, src.repository, src.host = model.kind, model.repository, model.host
                src.schedule = loaded.schedule_text(name)
                src.rpo = getattr(getattr(model, "objectives", None), "rpo", None)  # verification's section
        self.alerts.apply(loaded.policy, self._next_runs)

    def _next_runs(self, name: str) -> dict:
        with self.state.lock:
            src = self.state.sources.get(name)
            return dict(src.next_runs) if src is not None else {}

    # -- one pass ----------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        due: list[Decision] = []
        for name, rules in sorted(self.loaded.rules.items()):
            history = self._history(name, now)
            if history is None or self.runner.busy(name):
                continue
            attempts = self.attempts.get(name, [])
            for decision in planner.decide(name, rules, History(history.backups, history.failures + attempts),
                                           now, since=self.state.started):
                self._note(decision)
                if decision.run:
                    due.append(decision)
        due.sort(key=lambda d: (d.slot, -planner.STRENGTH.get(d.type or "", 0)))
        for decision in due:
            if self.stopping:
                break
            if not self.runner.busy(decision.source):  # one job per source at a time
                self._launch(decision)
        with self.state.lock:
            self.state.running = [job.describe() for job in self.runner.jobs()]
            self.state.last_tick = time.monotonic()
        if len(self._said) > 2000:  # forget what was said about slots long gone
            self._said = {k: v for k, v in self._said.items() if k[2] > now - timedelta(days=2)}

    def _history(self, name: str, now: datetime):
        model = self.loaded.policy.sources[name]
        src = self.state.sources[name]
        try:
            repo = self.loaded.repository(model.repository)
            history = self.history.read(repo, name) if repo is not None else None
            archive = self.loaded.archive_last(repo, name, model, now) if repo is not None else None
        except DrorchError as exc:
            if src.error != exc.message:
                log.error("source %s: cannot read repository %s: %s", name, model.repository, exc.message)
            with self.state.lock:
                src.error = exc.message
            return None
        with self.state.lock:
            if history is not None:
                src.take_history(history)
            else:
                src.error = None
            src.archive_last = archive or src.archive_last
            rules = self.loaded.rules.get(name)
            src.next_runs = {job: t for job, cron in (rules.crons.items() if rules else [])
                             if (t := cron.next_after(now)) is not None}
        return history if history is not None else SourceHistory()

    def _note(self, decision: Decision) -> None:
        """Log a decision once (the loop looks at the same slot many times)."""
        key = (decision.source, decision.job, decision.slot)
        with self.state.lock:
            self.state.sources[decision.source].decision = decision.reason
        if decision.run or self._said.get(key) == decision.reason:
            return
        self._said[key] = decision.reason
        log.info("%s: %s", decision.source, decision.reason,
                 extra={"fields": {"event": "not-run", "source": decision.source, "job": decision.job}})

    def _launch(self, decision: Decision) -> None:
        model = self.loaded.policy.sources[decision.source]
        host = model.host if decision.job == "backup" else None
        daemon = self.loaded.policy.daemon
        why_not = self.runner.refusal(host, daemon.max_jobs, daemon.per_host_jobs)
        if why_not:
            key = (decision.source, decision.job, decision.slot, "waiting")
            if self._said.get(key) != why_not:
                self._said[key] = why_not
                log.info("%s: %s due, waiting: %s", decision.source, decision.job, why_not)
            return
        spec = self.loaded.job_spec(decision, self.log_format)
        job = self.runner.start(decision, spec, host)
        log.info("%s: %s started (pid %d): %s", decision.source,
                 f"{decision.type} backup" if decision.job == "backup" else decision.job, job.proc.pid,
                 decision.reason, extra={"fields": {"event": "job-started", "source": decision.source,
                                                    "job": decision.job, "type": decision.type,
                                                    "reason": decision.reason}})

    def _job_done(self, job: Job, result: dict) -> None:
        decision = job.decision
        outcome = result["result"]
        attempt = Attempt(decision.job, result.get("type") or decision.type, job.started, outcome,
                          result.get("label"), result.get("error"))
        memory = self.attempts.setdefault(decision.source, [])
        memory.append(attempt)
        del memory[:-ATTEMPT_MEMORY]
        line, fields = summary_line(job, result)
        level = logging.INFO if outcome in ("ok", "skipped", "locked") else logging.ERROR
        log.log(level, line, extra={"fields": {"event": "job-finished", **fields}})
        self.alerts.job_done(decision.source, decision.job, result, line)
        with self.state.lock:
            self.state.jobs[(decision.job, result.get("type") or decision.type, outcome)] += 1
            src = self.state.sources.get(decision.source)
            if src is not None and outcome == "failed" and decision.job == "backup":
                src.last_failure, src.last_failure_error = self.clock(), result.get("error")
            if src is not None and decision.job == "verify" and outcome in ("ok", "failed"):
                src.last_verify, src.last_verify_ok = self.clock(), outcome == "ok"

    def _sleep_for(self) -> float:
        now = self.clock()
        soonest = HEARTBEAT
        for rules in self.loaded.rules.values():
            for cron in rules.crons.values():
                fire = cron.next_after(now)
                if fire is not None:
                    soonest = min(soonest, (fire - now).total_seconds() + 0.005)
        return max(0.01, soonest)

    # -- /status -------------------------------------------------------------------

    def status(self) -> dict:
        now = self.clock()
        with self.state.lock:
            return {"started": iso(self.state.started), "stopping": self.stopping,
                    "policy": {"path": str(self.policy_path), "files": self.state.policy_files,
                               "generation": self.state.generation, "last_reload_ok": self.state.last_reload_ok},
                    "running": self.state.running, "problems": self.alerts.open_problems(),
                    "sources": {name: src.as_json(now) for name, src in sorted(self.state.sources.items())},
                    "jobs": [{"job": j, "type": t, "result": r, "count": n}
                             for (j, t, r), n in sorted(self.state.jobs.items(), key=str)]}


def run_daemon(policy_path: Path, log_format: str) -> int:
    return Daemon(policy_path, log_format).run()
