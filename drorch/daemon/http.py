"""The daemon's HTTP endpoint (daemon.listen, loopback by default).

- /healthz: 200 "ok" while the scheduling loop runs, 503 when it is stuck;
- /metrics: Prometheus text format (prometheus-client), every name drorch_*;
- /status: JSON — sources, their last backups and next runs, running jobs.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from drorch import __version__
from drorch.daemon.state import DaemonState
from drorch.errors import DrorchError
from drorch.timefmt import iso, utcnow

log = logging.getLogger("drorch.daemon.http")
STUCK_AFTER = 180.0  # seconds without a pass of the loop before /healthz says so


def _ts(moment) -> float | None:
    return moment.timestamp() if moment is not None else None


class Collector:
    """Metrics computed from the daemon's state at each scrape."""

    def __init__(self, state: DaemonState):
        self.state = state

    def collect(self):
        state, now = self.state, utcnow()
        with state.lock:
            yield from self._daemon(state)
            yield from self._sources(state, now)
            yield from self._jobs(state)
            yield from self._notify(state)

    def _daemon(self, state: DaemonState):
        info = GaugeMetricFamily("drorch_daemon_info", "drorch daemon version", labels=["version"])
        info.add_metric([__version__], 1)
        started = GaugeMetricFamily("drorch_daemon_start_time_seconds", "when the daemon started (unix time)")
        started.add_metric([], state.started.timestamp())
        reload_ok = GaugeMetricFamily("drorch_policy_last_reload_success",
                                      "1 if the last policy (re)load succeeded, 0 if the old policies stay")
        reload_ok.add_metric([], 1 if state.last_reload_ok else 0)
        reloads = CounterMetricFamily("drorch_policy_reloads", "policy reloads (SIGHUP) by result",
                                      labels=["result"])
        for result in ("ok", "failed"):
            reloads.add_metric([result], state.reloads.get(result, 0))
        yield from (info, started, reload_ok, reloads)

    def _sources(self, state: DaemonState, now):
        def family(name, doc, extra=()):
            return GaugeMetricFamily(name, doc, labels=["source", *extra])

        success = family("drorch_backup_last_success_timestamp_seconds", "finish time of the newest committed backup")
        failure = family("drorch_backup_last_failure_timestamp_seconds", "time of the newest failed backup run")
        stored = family("drorch_backup_last_stored_bytes", "bytes the newest backup stored in the repository")
        size = family("drorch_backup_last_size_bytes", "bytes of data the newest backup describes")
        duration = family("drorch_backup_last_duration_seconds", "how long the newest backup took")
        count = family("drorch_backups", "committed backups in the repository", ["type"])
        verify_at = family("drorch_verify_last_timestamp_seconds", "time of the last verification run")
        verify_ok = family("drorch_verify_last_success", "1 if the last verification passed, 0 if it failed")
        lag = family("drorch_archive_lag_seconds", "seconds since the newest archived WAL reached the repository")
        rpo = family("drorch_rpo_remaining_seconds", "seconds until the recovery point objective is breached "
                     "(negative: breached)")
        nxt = family("drorch_schedule_next_run_timestamp_seconds", "next fire time of each schedule", ["job"])
        readable = family("drorch_repository_readable", "1 if the source's repository was read on the last pass")
        for name, src in sorted(state.sources.items()):
            _add(success, [name], _ts(src.last_success))
            _add(failure, [name], _ts(src.last_failure))
            if src.last_backup:
                _add(stored, [name], src.last_backup["stored_bytes"])
                _add(size, [name], src.last_backup["size_bytes"])
                _add(duration, [name], src.last_backup["seconds"])
            for btype in ("full", "diff", "incr"):
                count.add_metric([name, btype], src.backups.get(btype, 0))
            _add(verify_at, [name], _ts(src.last_verify))
            _add(verify_ok, [name], None if src.last_verify_ok is None else int(src.last_verify_ok))
            if src.archive_last is not None:
                lag.add_metric([name], (now - src.archive_last).total_seconds())
            point = src.recovery_point()
            if src.rpo is not None and point is not None:
                rpo.add_metric([name], (src.rpo - (now - point)).total_seconds())
            for job, moment in sorted(src.next_runs.items()):
                nxt.add_metric([name, job], moment.timestamp())
            readable.add_metric([name], 0 if src.error else 1)
        yield from (success, failure, stored, size, duration, count, verify_at, verify_ok, lag, rpo, nxt, readable)

    def _jobs(self, state: DaemonState):
        jobs = CounterMetricFamily("drorch_jobs", "jobs run by this daemon, by job, backup type and result",
                                   labels=["job", "type", "result"])
        for (job, btype, result), n in sorted(state.jobs.items()):
            jobs.add_metric([job, btype or "", result], n)
        running = GaugeMetricFamily("drorch_jobs_running", "jobs running now")
        running.add_metric([], len(state.running))
        yield from (jobs, running)


    def _notify(self, state: DaemonState):
        problems = GaugeMetricFamily("drorch_problems_open", "problems open now (notifications), by severity",
                                     labels=["severity"])
        for severity in ("I", "II", "III", "IV"):
            problems.add_metric([severity], state.problems_open.get(severity, 0))
        notices = CounterMetricFamily("drorch_notifications", "notifications delivered or not, by channel",
                                      labels=["channel", "result"])
        for (channel, result), n in sorted(state.notices.items()):
            notices.add_metric([channel, result], n)
        yield from (problems, notices)


def _add(family, labels, value) -> None:
    if value is not None:
        family.add_metric(labels, value)


class Endpoint:
    def __init__(self, listen: str, state: DaemonState, status: Callable[[], dict]):
        host, port = listen.rsplit(":", 1)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(state))
        handler = _handler(state, status, self.registry)
        server_class = _Server6 if ":" in host else ThreadingHTTPServer
        try:
            self.server = server_class((host.strip("[]"), int(port)), handler)
        except OSError as exc:
            raise DrorchError(f"cannot listen on {listen} (daemon.listen): {exc.strerror}",
                              "another process holds that port (a second daemon?); pick another port "
                              "or set daemon.listen: off") from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(state: DaemonState, status: Callable[[], dict], registry: CollectorRegistry):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                stuck = time.monotonic() - state.last_tick > STUCK_AFTER
                self._send(503 if stuck else 200, "text/plain; charset=utf-8",
                           b"stuck: the scheduling loop has not run for a while\n" if stuck else b"ok\n")
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/status":
                body = json.dumps({"time": iso(utcnow()), **status()}, indent=2, default=str).encode()
                self._send(200, "application/json", body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz, /metrics or /status\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("%s %s", self.address_string(), fmt % args)

    return Handler
