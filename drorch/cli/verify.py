"""`drorch verify`: prove that backups restore (engine/verify.py), record the evidence."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta

import click

from drorch.cli.common import json_option, load, policy_option, repository_option, source_option
from drorch.cli.render import emit_json, progress_shown, say, warn
from drorch.engine.progress import Progress
from drorch.engine.verify import LEVELS, choose_labels, run_verify
from drorch.errors import UsageError
from drorch.engine.hooks import verify_facts
from drorch.factory import (make_hooks, make_host, make_source, open_repository, repository_name, source_policy,
                            verify_settings)
from drorch.repo.catalog import Catalog
from drorch.timefmt import format_duration

MARK = {"passed": "ok", "failed": "FAIL", "skipped": "skip"}


@contextmanager
def _terminate_as_exit():
    """SIGTERM / SIGHUP end the run like Ctrl-C: finally blocks stop the sandbox
    database and remove the sandbox before the process exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("verify")
@policy_option
@source_option
@repository_option
@click.option("--backup", "label", metavar="LABEL", help="this backup")
@click.option("--latest", is_flag=True, help="the newest backup")
@click.option("--sample", type=int, metavar="N", help="N backups chosen at random")
@click.option("--level", type=click.Choice(LEVELS), help="structure | read | restore "
              "(default: the source's verify.level; without --backup/--latest/--sample, structure and "
              "read verify every backup, restore the newest)")
@click.option("--no-hooks", is_flag=True, help="do not run the sources' post_verify hooks (hooks/README.md)")
@json_option
def verify(policy_path, source, repository, label, latest, sample, level, no_hooks, as_json) -> None:
    """Verify backups: every object there (structure), every byte checked (read), or
    restored into a sandbox and checked by the database (restore).  The outcome is
    recorded in the repository; `drorch list` shows it."""
    policy = load(policy_path)
    names = [source] if source else sorted(policy.sources)
    if source:
        source_policy(policy, source)
    if label and len(names) > 1:
        raise UsageError("--backup needs --source (this policy has several sources)")
    results, empty, hook_failures = [], [], []
    progress = Progress()
    with _terminate_as_exit(), progress_shown(progress, "verify"):
        for name in names:
            repo = open_repository(policy, repository_name(policy, name, repository))
            settings = verify_settings(policy, name)
            chosen_level = level or settings.level
            labels = choose_labels(Catalog(repo), name, chosen_level, label, latest, sample)
            if not labels:
                empty.append(name)
                continue
            done = run_verify(repo, name, labels, chosen_level, settings, progress=progress,
                              make_source=lambda n=name: make_source(policy, n),
                              host=make_host(policy, settings.host))
            results += done
            if not no_hooks:
                hook_failures += _post_verify(policy, name, done)
    failed = bool(empty) or any(v.result == "failed" or v.record_error for v in results)
    if as_json:
        emit_json({"ok": not failed, "verifications": [asdict(v) for v in results], "without_backups": empty,
                   "hooks": hook_failures})
        for line in _failures(results, empty):  # for whoever reads only stderr (the daemon's job log)
            warn(line)
    else:
        _show(results, empty)
    if failed:
        raise SystemExit(1)


def _post_verify(policy, name: str, done) -> list[dict]:
    """The source's post_verify hooks, once per verified backup; their failures (reported only)."""
    hooks = make_hooks(policy, name)
    if not hooks.has("post_verify"):
        return []
    return [run.as_dict() for v in done for run in hooks.run("post_verify", verify_facts(asdict(v)))
            if not run.ok]


def _show(results, empty) -> None:
    for v in results:
        timing = f" in {v.seconds:.1f}s"
        if v.restore_seconds is not None:
            timing += f"; restored in {v.restore_seconds:.1f}s"
        if v.ready_seconds is not None and v.ready_seconds != v.restore_seconds:
            timing += f", ready in {v.ready_seconds:.1f}s"
        if v.rto_seconds and v.ready_seconds is not None:
            timing += f" (RTO {format_duration_s(v.rto_seconds)})"
        say(f"{v.source} {v.label} ({v.type}) {v.level}: {v.result.upper()}{timing}")
        for check in v.checks:
            say(f"  {MARK.get(check.result, check.result):<4}  {check.name}: {check.detail}"
                + (f" ({check.seconds:.1f}s)" if check.seconds >= 0.05 else ""))
        for problem in v.problems:
            say(f"  problem: {problem}")
        if v.problem_count > len(v.problems):
            say(f"  ... and {v.problem_count - len(v.problems)} more problems (see the record)")
        if v.record_error:
            warn(f"the outcome could not be recorded in the repository: {v.record_error}")
    for name in empty:
        say(f"{name}: FAILED: no committed backup to verify")
    if results and not any(v.result == "failed" for v in results) and not empty:
        total = sum(v.phases.get("read", 0) for v in results)
        say(f"{len(results)} backup(s) verified" + (f" ({total:.1f}s reading)" if total else ""))


def _failures(results, empty) -> list[str]:
    lines = [f"{name}: no committed backup to verify" for name in empty]
    for v in results:
        if v.result == "failed":
            first = next((f"{c.name}: {c.detail}" for c in v.checks if c.result == "failed"), "")
            lines.append(f"verification of {v.source} {v.label} ({v.level}) failed: "
                         f"{v.problems[0] if v.problems else first}")
    return lines


def format_duration_s(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def register(cli: click.Group) -> None:
    cli.add_command(verify)
