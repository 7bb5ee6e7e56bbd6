"""Hook scripts: the operator's own steps around backups, verifications and
runbook steps (the contract: hooks/README.md).

A hook is an executable run on the host drorch runs on, with the facts in
DRORCH_* environment variables, stdin from /dev/null, stdout and stderr
captured (the end of it is logged and reported), in a session of its own so
that a timeout kills everything it started.  What an exit code means
depends on the event: a non-zero `pre_backup` hook aborts the backup (the
rest of the pre_backup hooks do not run); every other hook's failure is
reported and changes nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from drorch import __version__
from drorch.errors import DrorchError

log = logging.getLogger(__name__)
EVENTS = ("pre_backup", "post_backup", "on_failure", "post_verify", "post_runbook_step")
OUTPUT_KEPT = 4000  # characters of a hook's output kept for logs and reports
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a hook that timed out


@dataclass
class HookRun:
    """One hook run: what ran, how it ended, the end of what it said."""

    event: str
    path: str
    exit_code: int | None  # None: it could not be started, or was killed
    seconds: float
    output: str = ""
    timed_out: bool = False
    error: str | None = None  # why it could not be started

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def last_line(self) -> str:
        lines = [line for line in self.output.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def describe(self) -> str:
        what = f"{self.event} hook {self.path}"
        if self.error:
            return f"{what} could not be started: {self.error}"
        if self.timed_out:
            outcome = f"{what} timed out after {self.seconds:.0f}s and was killed"
        elif self.exit_code == 0:
            return f"{what} succeeded ({self.seconds:.1f}s)"
        else:  # no duration: the same refusal must read the same each time (reports group by it)
            outcome = f"{what} exited {self.exit_code}"
        said = self.last_line()
        return outcome + (f": {said}" if said else "")

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "summary": self.describe()}


class HookFailed(DrorchError):
    """A pre_backup hook said no: the backup is aborted."""

    def __init__(self, run: HookRun):
        super().__init__(f"{run.describe()}; the backup was not taken",
                         "the hook decides whether a backup may run: see its output above, fix the cause and "
                         "run the backup again (hooks/README.md has the contract)")
        self.run = run


@dataclass
class Hooks:
    """The hook scripts of one source (or runbook).  `base_env` holds what every
    hook of it gets (DRORCH_SOURCE, DRORCH_POLICY, ...)."""

    scripts: dict[str, list[str]] = field(default_factory=dict)
    timeout: float = 300.0
    base_env: dict[str, str] = field(default_factory=dict)
    base_dir: Path | None = None  # relative script paths are read from here
    runs: list[HookRun] = field(default_factory=list)  # every hook run so far, for results and reports

    def has(self, event: str) -> bool:
        return bool(self.scripts.get(event))

    def path(self, script: str) -> str:
        candidate = Path(script).expanduser()
        if not candidate.is_absolute() and self.base_dir is not None:
            candidate = self.base_dir / candidate
        return str(candidate)

    def run(self, event: str, facts: dict | None = None) -> list[HookRun]:
        """Run the event's hooks in order; a failing pre_backup hook stops the rest
        (the caller raises HookFailed for it).  Never raises for a hook's failure."""
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}")
        done = []
        for script in self.scripts.get(event, []):
            result = run_one(event, self.path(script), self.environment(event, facts or {}), self.timeout,
                             cwd=str(self.base_dir) if self.base_dir and self.base_dir.is_dir() else None)
            done.append(result)
            self.runs.append(result)
            _log(result)
            if event == "pre_backup" and not result.ok:
                break
        return done

    def pre_backup(self, facts: dict) -> None:
        """Raise HookFailed when a pre_backup hook says no."""
        for result in self.run("pre_backup", facts):
            if not result.ok:
                raise HookFailed(result)

    def environment(self, event: str, facts: dict) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.base_env)
        env["DRORCH_EVENT"] = event
        env["DRORCH_HOOK_TIMEOUT"] = str(int(self.timeout))
        env["DRORCH_VERSION"] = __version__
        for key, value in facts.items():
            name = "DRORCH_" + key.upper()
            if value is None:
                env.pop(name, None)
            else:
                env[name] = str(value)
        return env

    def failures(self) -> list[HookRun]:
        return [r for r in self.runs if not r.ok]


def run_one(event: str, path: str, env: dict[str, str], timeout: float, cwd: str | None = None) -> HookRun:
    start = time.monotonic()
    try:
        proc = subprocess.Popen([path], env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        return HookRun(event, path, None, 0.0, error=exc.strerror or str(exc))
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = proc.poll() is None  # exited, but something it started still holds the output open
        out = _stop(proc)
    except BaseException:  # the caller is being stopped (daemon shutdown): the hook goes too
        _stop(proc)
        raise
    text = out.decode(errors="replace")[-OUTPUT_KEPT:] if out else ""
    return HookRun(event, path, None if timed_out else proc.returncode, round(time.monotonic() - start, 3),
                   text, timed_out)


def _stop(proc: subprocess.Popen) -> bytes:
    """SIGTERM the hook's whole session, SIGKILL it after KILL_GRACE; what it said meanwhile."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
        try:
            out, _ = proc.communicate(timeout=KILL_GRACE)
            return out or b""
        except subprocess.TimeoutExpired:
            continue
    proc.stdout.close()  # something left the session and holds the pipe: stop reading it
    proc.wait()
    return b""


def _log(result: HookRun) -> None:
    level = logging.INFO if result.ok else logging.WARNING
    log.log(level, "%s", result.describe())
    if result.output.strip():
        for line in result.output.strip().splitlines()[-20:]:
            log.log(level, "  %s: %s", Path(result.path).name, line)


def backup_facts(source: str, label: str | None, btype: str | None, requested: str | None, **more) -> dict:
    """The DRORCH_* facts of a backup (keys without the prefix)."""
    return {"source": source, "backup_label": label, "type": btype, "requested_type": requested, **more}


def verify_facts(verification: dict) -> dict:
    """The DRORCH_* facts of one backup's verification (engine/verify.py's Verification, as a dict)."""
    failed = verification.get("result") == "failed"
    problems = verification.get("problems") or []
    checks = [c for c in verification.get("checks") or [] if isinstance(c, dict) and c.get("result") == "failed"]
    error = problems[0] if problems else (f"{checks[0].get('name')}: {checks[0].get('detail')}" if checks else None)
    return {"source": verification.get("source"), "backup_label": verification.get("label"),
            "type": verification.get("type"), "verify_level": verification.get("level"),
            "verify_result": verification.get("result"), "status": "failed" if failed else "ok",
            "error": error if failed else None, "verify_seconds": verification.get("seconds"),
            "verify_ready_seconds": verification.get("ready_seconds")}


def hook_items(source: str, hooks: Hooks) -> list:
    """`drorch check` items: each hook script exists and is executable (one item per source)."""
    from drorch.engine.health import Item

    scripts = [(event, hooks.path(s)) for event in EVENTS for s in hooks.scripts.get(event, [])]
    if not scripts:
        return []
    bad = [f"{event} {path}: " + ("missing" if not os.path.exists(path) else "not executable")
           for event, path in scripts if not (os.path.isfile(path) and os.access(path, os.X_OK))]
    name = f"source {source}: hooks"
    if bad:
        return [Item(name, "fail", "; ".join(bad), "install the scripts on this host and make them executable "
                                                   "(chmod +x); relative paths are read from the policy's "
                                                   "directory (hooks/README.md)")]
    return [Item(name, "ok", f"{len(scripts)} hook script(s) present and executable")]
