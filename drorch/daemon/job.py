"""One job of the daemon, in a process of its own: `python -m drorch.daemon.job SPEC`.

SPEC (JSON): job (backup | verify | expire | copy | drill), source, policy (the
daemon's copy of the policies in force), and for backups the slot, the type
whose slot is due (requested), the daemon's reason and the slot tolerance.
The process logs to stderr (the daemon's) and prints one JSON result line on
stdout: result ok | failed | skipped | locked | aborted, and the facts of
the summary line.

A backup job takes the source's lock (a lease) first and then looks at the
repository again: if another daemon covered the slot meanwhile it stops
("skipped"), so two daemons sharing a repository back up a slot once.  The
upgrade rules are applied to the history read under the lock.

SIGTERM aborts the job cleanly: the run is recorded as failed (aborted), the
lock released, nothing is listed.  Losing the lease aborts it the same way.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from drorch.daemon import logs, planner
from drorch.daemon.history import backups_from_labels
from drorch.errors import DrorchError, LockedError
from drorch.timefmt import parse_iso, utcnow

log = logging.getLogger("drorch.daemon.job")


class JobAborted(BaseException):
    """Raised in the job's main thread by SIGTERM (or a lost lease): unwinds
    through the engine, which records the run as failed and aborted."""

    aborted = True

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


_abort_reason = ["aborted: the daemon is stopping"]


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the unwinding must not be interrupted again
    raise JobAborted(_abort_reason[0])


def _on_lost(lock, why: str) -> None:
    log.error("lost the lock of %s: %s; aborting", lock.source, why)
    _abort_reason[0] = f"aborted: lost the lock lease ({why})"
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    logs.setup(spec.get("log_format", "human"))
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides; a terminal's ^C is not for us
    start = time.monotonic()
    try:
        result = run(spec)
    except JobAborted as exc:
        result = {"result": "aborted", "error": exc.message}
    except LockedError as exc:
        result = {"result": "locked", "error": exc.message}
    except DrorchError as exc:
        result = {"result": "failed", "error": exc.message, "hint": exc.hint}
    except Exception as exc:  # noqa: BLE001 - a bug; the daemon carries on and says so
        log.exception("job %s of %s failed unexpectedly", spec.get("job"), spec.get("source"))
        result = {"result": "failed", "error": f"internal error: {type(exc).__name__}: {exc}"}
    finally:
        _close_hosts()
    result.setdefault("seconds", round(time.monotonic() - start, 3))
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 0 if result["result"] in ("ok", "skipped") else 1


def _close_hosts() -> None:
    """End SSH connections the job opened (a quiet exit for the remote side)."""
    try:
        from drorch.factory import close_hosts

        close_hosts()
    except Exception as exc:  # noqa: BLE001 - the job's result matters more
        log.warning("closing host connections: %s", exc)


def run(spec: dict) -> dict:
    from drorch.policy import load_policy
    from drorch.repo.locks import SourceLock

    policy = load_policy(spec["policy"])
    SourceLock.default_ttl = policy.daemon.lease
    SourceLock.on_lost = staticmethod(_on_lost)
    job = spec["job"]
    if job == "backup":
        return backup_job(policy, spec)
    if job == "verify":
        return verify_job(spec)
    if job == "expire":
        return {"result": "ok", "steps": [expire_step(policy, spec["source"])]}
    if job == "copy":
        return {"result": "ok", "steps": copy_steps(policy, spec["source"])}
    if job == "drill":
        return drill_job(policy, spec)
    raise DrorchError(f"unknown job {job!r}")


def backup_job(policy, spec: dict) -> dict:
    from drorch.engine.backup import run_backup
    from drorch.factory import make_hooks, make_source, open_repository, source_policy
    from drorch.repo.locks import SourceLock

    name = spec["source"]
    model = source_policy(policy, name)
    repo = open_repository(policy, model.repository, create=True)
    lock = SourceLock(repo, name, "backup").acquire()
    try:
        backups = backups_from_labels(repo, name)
        slot = parse_iso(spec["slot"])
        done = planner.satisfied(spec["requested"], slot, backups, timedelta(seconds=spec.get("tolerance", 10)))
        if done is not None:
            return {"result": "skipped", "label": done.label, "type": done.type,
                    "why": f"the slot is already covered by {done.type} {done.label} (run elsewhere meanwhile)"}
        rules = planner.rules_for(model, policy.daemon.catchup_grace)
        btype, upgrade = planner.upgrade(spec["requested"], backups, utcnow(), rules)
        reason = spec["reason"] + (f"; {upgrade}" if upgrade else "")
        result = run_backup(repo, make_source(policy, name), btype, lock=lock, reason=reason,
                            hooks=make_hooks(policy, name))
    finally:
        lock.release()
    out = {"result": "ok", "label": result.label, "type": result.type, "why": result.why,
           "stored_bytes": result.stats.get("stored_bytes", 0), "size_bytes": result.stats.get("size_bytes", 0),
           "started": result.started, "finished": result.finished, "warnings": len(result.warnings), "steps": [],
           "hooks": [h for h in result.hooks if not h["ok"]]}
    schedule = model.schedule
    try:  # the backup is committed: a stop now only cuts the steps after it short
        if schedule is not None and schedule.copy_ == "after_backup" and model.copy_to:
            out["steps"] += copy_steps(policy, name)
        if schedule is not None and schedule.expire == "after_backup":
            out["steps"].append(expire_step(policy, name))
    except JobAborted as exc:
        out["steps"].append({"step": "after the backup", "result": "aborted", "detail": exc.message})
    return out


def copy_steps(policy, name: str) -> list[dict]:
    """Copy to every copy_to repository; one failing target does not stop the others."""
    from drorch.engine.copy import run_copy
    from drorch.factory import open_repository, source_policy

    model = source_policy(policy, name)
    steps = []
    for target in model.copy_to:
        try:
            src = open_repository(policy, model.repository)
            dst = open_repository(policy, target, create=True)
            result = run_copy(src, dst, name)
            steps.append({"step": f"copy to {target}", "result": "ok",
                          "detail": f"{len(result.copied)} copied, {len(result.present)} already there",
                          "written_bytes": result.written_bytes})
        except DrorchError as exc:
            log.error("%s: copy to %s failed: %s", name, target, exc.message)
            steps.append({"step": f"copy to {target}", "result": "failed", "detail": exc.message})
    return steps


def expire_step(policy, name: str) -> dict:
    from drorch.engine.expire import run_expire
    from drorch.factory import open_repository, retention_rules, source_policy

    model = source_policy(policy, name)
    try:
        repo = open_repository(policy, model.repository)
        result = run_expire(repo, name, retention_rules(policy, name), with_wal=model.kind == "postgres")
    except DrorchError as exc:
        log.error("%s: expire failed: %s", name, exc.message)
        return {"step": "expire", "result": "failed", "detail": exc.message}
    return {"step": "expire", "result": "ok", "freed_bytes": result.freed_bytes,
            "detail": f"{len(result.expired)} expired, {len(result.leftovers)} leftovers removed"}


# -- verification and drills: `drorch verify` and `drorch runbook run --mode drill` -------


def verify_command(spec: dict) -> list[str]:
    """How the daemon verifies a source: the `drorch verify` verb, at the level
    the source's `verify:` policy gives, on its latest backup."""
    return [sys.executable, "-m", "drorch.cli.main", "verify", "--policy", spec["policy"],
            "--source", spec["source"], "--latest", "--json"]


def _drorch(argv: list[str]) -> tuple[int, str, str]:
    """Run a drorch command in its own session; SIGTERM of the job ends it too."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate()
    except JobAborted:
        proc.terminate()
        proc.wait()
        raise
    return proc.returncode, out, err


def drill_runbooks(policy, source: str) -> list[str]:
    """The runbooks a source's drill schedule rehearses."""
    return sorted(book_id for book_id, book in policy.runbooks.items()
                  if "drill" in book.modes and book.topology.source == source)


def drill_job(policy, spec: dict) -> dict:
    """One drill run per runbook of the source; journals under the daemon's state_dir/runbooks."""
    runs, failed = [], []
    state_dir = str(Path(policy.daemon.state_dir) / "runbooks")
    for book_id in drill_runbooks(policy, spec["source"]):
        code, out, err = _drorch([sys.executable, "-m", "drorch.cli.main", "runbook", "run", book_id, "--mode",
                                  "drill", "--policy", spec["policy"], "--state-dir", state_dir, "--json"])
        for line in err.splitlines():
            log.info("drill %s: %s", book_id, line)
        details = _last_json(out) or {}
        runs.append({"runbook": book_id, "run": details.get("run"), "status": details.get("status"),
                     "rto": details.get("rto"), "rpo": details.get("rpo")})
        if code != 0:
            failed.append(f"{book_id}: " + (details.get("error") or (err.strip().splitlines() or ["failed"])[-1]))
    if not runs:
        return {"result": "skipped", "why": f"no runbook with mode drill has topology.source {spec['source']}"}
    return {"result": "failed" if failed else "ok", "runs": runs, "error": "; ".join(failed) or None}


def verify_job(spec: dict) -> dict:
    code, out, err = _drorch(verify_command(spec))
    for line in err.splitlines():
        log.info("verify %s: %s", spec["source"], line)
    details = _last_json(out)
    result = "ok" if code == 0 else "failed"
    out = {"result": result, "verification": details,
           "error": None if result == "ok" else (err.strip().splitlines() or ["failed"])[-1]}
    out["hooks"] = details.get("hooks") or [] if isinstance(details, dict) else []  # post_verify failures
    return out


def _last_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
