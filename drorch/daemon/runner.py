"""Jobs in their own processes, within the daemon's limits.

- at most `max_jobs` at once, one per source, and at most `per_host_jobs`
  backups at once reading from one source host;
- each job is `python -m drorch.daemon.job SPEC` in its own session (a
  terminal's ^C or a reload never reaches it; the daemon decides);
- stop(): wait for running jobs up to the grace period, then SIGTERM them
  (they record the run as aborted and release their locks), then SIGKILL
  what is still there after ABORT_WAIT.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from drorch.daemon.planner import Decision
from drorch.timefmt import utcnow

log = logging.getLogger("drorch.daemon")
ABORT_WAIT = 15.0  # seconds an aborted job gets to record its run and release its lock


@dataclass
class Job:
    decision: Decision
    spec: dict
    host: str | None  # the source host a backup reads from (per-host limit), else None
    proc: subprocess.Popen
    started: datetime
    start_mono: float = field(default_factory=time.monotonic)
    aborting: bool = False

    @property
    def source(self) -> str:
        return self.decision.source

    def describe(self) -> dict:
        return {"source": self.source, "job": self.decision.job, "type": self.decision.type,
                "pid": self.proc.pid, "started": self.started, "reason": self.decision.reason,
                "seconds": round(time.monotonic() - self.start_mono, 1)}


class Runner:
    def __init__(self, on_done: Callable[[Job, dict], None], wake: Callable[[], None], env: dict | None = None):
        self.on_done = on_done
        self.wake = wake
        self.env = env
        self.running: dict[str, Job] = {}
        self.lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def busy(self, source: str) -> bool:
        with self.lock:
            return source in self.running

    def refusal(self, host: str | None, max_jobs: int, per_host: int | dict | None) -> str | None:
        """Why a job for this host cannot start now (None: it can)."""
        with self.lock:
            if len(self.running) >= max_jobs:
                return f"{len(self.running)} jobs are running (max_jobs {max_jobs})"
            limit = per_host if isinstance(per_host, int) else (per_host or {}).get(host or "")
            if host is not None and limit is not None:
                on_host = sum(1 for job in self.running.values() if job.host == host)
                if on_host >= limit:
                    return f"{on_host} backups are reading from host {host} (per_host_jobs {limit})"
        return None

    def start(self, decision: Decision, spec: dict, host: str | None) -> Job:
        proc = subprocess.Popen([sys.executable, "-m", "drorch.daemon.job", json.dumps(spec)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None,
                                start_new_session=True, env=self.env, text=True)
        job = Job(decision, spec, host, proc, utcnow())
        with self.lock:
            self.running[decision.source] = job
        thread = threading.Thread(target=self._wait, args=(job,), name=f"job-{decision.source}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return job

    def _wait(self, job: Job) -> None:
        out, _ = job.proc.communicate()
        result = _parse_result(out, job.proc.returncode)
        if job.aborting and result["result"] == "failed" and job.proc.returncode < 0:
            result["result"] = "aborted"
        result.setdefault("seconds", round(time.monotonic() - job.start_mono, 3))
        try:
            self.on_done(job, result)  # its summary line comes before anything started in its place
        except Exception:  # noqa: BLE001 - the daemon carries on
            log.exception("handling the end of the job of %s failed", job.source)
        finally:
            with self.lock:
                self.running.pop(job.source, None)
            self.wake()

    def jobs(self) -> list[Job]:
        with self.lock:
            return list(self.running.values())

    def stop(self, grace: float) -> None:
        """Let running jobs finish within grace seconds, then abort them."""
        deadline = time.monotonic() + grace
        if self.jobs():
            log.info("waiting up to %.0fs for %d running job(s) to finish", grace, len(self.jobs()))
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        for job in self.jobs():
            log.warning("aborting the %s of %s (pid %d): stop_grace is over", job.decision.job, job.source,
                        job.proc.pid)
            job.aborting = True
            _signal(job.proc, signal.SIGTERM)
        deadline = time.monotonic() + ABORT_WAIT
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        for job in self.jobs():
            log.error("killing the %s of %s (pid %d): it did not stop within %.0fs", job.decision.job,
                      job.source, job.proc.pid, ABORT_WAIT)
            _signal(job.proc, signal.SIGKILL)
        for thread in self._threads:
            thread.join(timeout=5)


def _signal(proc: subprocess.Popen, signum: int) -> None:
    try:
        proc.send_signal(signum)  # does nothing once the process has been reaped (no stray pid)
    except ProcessLookupError:
        pass


def _parse_result(out: str, returncode: int) -> dict:
    for line in reversed((out or "").strip().splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and "result" in result:
            return result
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return {"result": "failed", "error": f"the job process ended without a result ({how})"}
