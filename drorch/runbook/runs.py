"""Starting, resuming and refreshing runs: the journal's repository, the lease,
the context the actions see, then the Runner (runner.py)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from drorch.errors import DrorchError, UsageError
from drorch.runbook import metrics
from drorch.runbook.approvals import Approvals, Asker
from drorch.runbook.context import RunContext
from drorch.runbook.journal import Journal, StateDir, new_run_id, run_key, runbook_of
from drorch.runbook.lease import TopologyLease
from drorch.runbook.model import MAIN_MODES
from drorch.engine.hooks import Hooks
from drorch.notify.notifier import Notifier as NotifyChannels
from drorch.runbook.notifier import Notifier
from drorch.runbook.runner import Runner
from drorch.timefmt import iso, utcnow


@dataclass
class RunOptions:
    state_dir: Path
    candidate: str | None = None
    detected_at: datetime | None = None
    failed_at: datetime | None = None
    asker: Asker | None = None
    emit: Callable[[str, str], None] = field(default=lambda kind, text: None)


def digest(book) -> str:
    return hashlib.sha256(json.dumps(book.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def journal_repository(policy, book):
    from drorch.factory import open_repository, repository_name

    name = book.topology.repository or repository_name(policy, book.topology.source, None)
    return open_repository(policy, name, create=True)


def start(policy, book, mode: str, options: RunOptions) -> Journal:
    if mode not in book.modes:
        raise UsageError(f"runbook {book.id} has no mode {mode} (modes: {', '.join(book.modes)})")
    repo = journal_repository(policy, book)
    state = StateDir(options.state_dir)
    now = utcnow()
    run_id = new_run_id(book.id, now, lambda r: state.path("runs", r).exists() or
                        repo.storage.stat(run_key(r)) is not None)
    lease = TopologyLease(repo, book.lease_name, run_id, book.lease).acquire()
    try:
        objectives = {key: (value.total_seconds() if hasattr(value, "total_seconds") else value)
                      for key, value in book.objectives}
        journal = Journal.create(run_id, {
            "runbook": book.id, "title": book.title, "mode": mode, "started": iso(now),
            "runbook_digest": digest(book), "runbook_file": str(policy.runbook_docs[book.id].path),
            "host": socket.gethostname(), "pid": os.getpid(), "objectives": objectives, "branch": "main"
            if mode in MAIN_MODES else "dr", "failed_at": iso(options.failed_at) if options.failed_at else None,
            "milestones": {"detected": iso(options.detected_at or now), "started": iso(now)}}, state, repo)
        options.emit("info", f"run {run_id}: {book.title}, mode {mode}")
        Runner(_context(policy, book, journal, options), lease, options.candidate, options.emit).go(fresh=True)
        return journal
    finally:
        lease.release()


def resume(policy, run_id: str, options: RunOptions) -> Journal:
    book_id = runbook_of(run_id)
    if book_id not in policy.runbooks:
        raise UsageError(f"run {run_id} is of runbook {book_id}, which is not in {policy.path}")
    book = policy.runbooks[book_id]
    repo = journal_repository(policy, book)
    journal = Journal.load(run_id, StateDir(options.state_dir), repo)
    status = journal.data["status"]
    if status in ("succeeded", "rolled-back"):
        raise UsageError(f"run {run_id} has ended ({status}); nothing to resume")
    lease = TopologyLease(repo, book.lease_name, run_id, book.lease).acquire()
    try:
        if journal.data.get("runbook_digest") != digest(book):
            options.emit("warn", f"runbook {book.id} changed since run {run_id} started; steps are matched by id")
        journal.data["status"] = "running"
        journal.data.setdefault("resumed", []).append({"at": iso(utcnow()), "host": socket.gethostname(),
                                                       "pid": os.getpid()})
        journal.save()
        options.emit("info", f"resuming run {run_id} ({journal.data['mode']}) at step "
                             f"{(journal.data.get('cursor') or {}).get('step', 'the start')}")
        Runner(_context(policy, book, journal, options), lease, options.candidate, options.emit).go(fresh=False)
        return journal
    finally:
        lease.release()


def _context(policy, book, journal: Journal, options: RunOptions) -> RunContext:
    approvals = Approvals(journal.state, journal.repo)
    channels = NotifyChannels.from_policy(policy) if policy.notify else None
    notifier = Notifier(journal.state, journal.run_id, book.id, book.notify.webhook, channels)
    hooks = Hooks({"post_runbook_step": list(book.hooks.post_step)}, book.hooks.timeout.total_seconds(),
                  {"DRORCH_POLICY": str(policy.path.resolve()), "DRORCH_RUNBOOK": book.id,
                   "DRORCH_RUN": journal.run_id, "DRORCH_MODE": journal.data["mode"]}, policy.base_dir.resolve())
    return RunContext(policy, book, journal, approvals=approvals, notifier=notifier, asker=options.asker,
                      emit=options.emit, hooks=hooks)


def refresh_rpo(policy, run_id: str, state_dir: Path) -> Journal:
    """`report --refresh`: read the old primary's end of WAL now that it can be reached
    (it must be stopped) and recompute the data loss exactly."""
    book = policy.runbooks.get(runbook_of(run_id))
    if book is None:
        raise UsageError(f"run {run_id} is of runbook {runbook_of(run_id)}, which is not in {policy.path}")
    journal = Journal.load(run_id, StateDir(state_dir), journal_repository(policy, book))
    end = journal.data["facts"].get("old_primary_end") or {}
    name = journal.data.get("roles", {}).get("primary")
    if end.get("lsn") or not name or not journal.data["facts"].get("promotion"):
        return journal
    ctx = RunContext(policy, book, journal)
    node = ctx.node_at(name)
    if node.running():
        if ctx.engine == "mariadb":
            raise DrorchError(f"{name} runs: its end of binlog cannot be read while it runs (a restart adds "
                              "to it)", "stop it, then refresh: its binlog on disk is read")
        raise DrorchError(f"{name} runs: its end of WAL cannot be read while it runs",
                          "stop it (it is fenced with standby.signal), or rejoin it with pg.rewind, which reads "
                          "it first")
    lsn, basis = node.end_of_wal()
    ctx.old_end_of_wal(name, lsn, basis)
    journal.data["outcome"] = {"rto": metrics.rto(journal.data), "rpo": metrics.rpo(journal.data)}
    journal.save()
    return journal
