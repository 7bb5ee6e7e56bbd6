"""Asynchronous WAL push/get through a spool directory: the fast path.

PostgreSQL starts archive_command / restore_command once per WAL file, and a
Python interpreter that imports drorch's policy models costs a few hundred
milliseconds.  With `--async --spool DIR`, each call only imports the
standard library: it answers from the spool when a background worker
(engine/wal_worker.py, started on demand, exiting when idle) has already
pushed or fetched the file, and otherwise asks the worker and waits.  The
worker pushes several ready segments at once (look-ahead from
pg_wal/archive_status) and fetches the next segments before they are asked
for.

Spool layout, per source: push/<name>.want (a request: the file's path),
push/<name>.ok / push/<name>.error (results), get/<name>.want,
get/<name> (fetched bytes) / get/<name>.missing, <mode>.lock (held by the
running worker), <mode>.fatal (the worker could not start), <mode>.log.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time

WAIT = 0.01


def _dir(spool: str, source: str, mode: str) -> str:
    path = os.path.join(spool, source, mode)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _take(path: str) -> str | None:
    """Read and remove a marker file; None if it is not there."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        os.unlink(path)
        return text
    except FileNotFoundError:
        return None


def _running(lock_path: str) -> bool:
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _ensure_worker(mode: str, policy: str, source: str, spool: str, extra: list[str]) -> None:
    base = os.path.join(spool, source)
    if _running(os.path.join(base, f"{mode}.lock")):
        return
    log = open(os.path.join(base, f"{mode}.log"), "ab")
    # The worker imports drorch from where this process found it (a venv, or a checkout).
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
    subprocess.Popen([sys.executable, "-m", "drorch.engine.wal_worker", mode, "--policy", policy, "--source",
                      source, "--spool", spool, *extra], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                     start_new_session=True, close_fds=True, env=env)
    log.close()


def _fatal(spool: str, source: str, mode: str) -> str | None:
    return _take(os.path.join(spool, source, f"{mode}.fatal"))


def push(policy: str, source: str, spool: str, path: str, timeout: float) -> int:
    name = os.path.basename(path)
    directory = _dir(spool, source, "push")
    ok, error = os.path.join(directory, name + ".ok"), os.path.join(directory, name + ".error")
    if _take(ok) is not None:
        return 0
    want = os.path.join(directory, name + ".want")
    with open(want + ".tmp", "w") as handle:
        handle.write(os.path.abspath(path))
    os.replace(want + ".tmp", want)
    extra = ["--pg-wal", os.path.dirname(os.path.abspath(path))]
    deadline, nudge = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        if time.monotonic() >= nudge:  # (re)start the worker if none runs (it exits when idle)
            _ensure_worker("push", policy, source, spool, extra)
            nudge = time.monotonic() + 1.0
        if _take(ok) is not None:
            return 0
        message = _take(error) or _fatal(spool, source, "push")
        if message is not None:
            sys.stderr.write(f"error: {message.strip()}\n")
            return 1
        time.sleep(WAIT)
    sys.stderr.write(f"error: {name} was not archived within {timeout:.0f}s; see {os.path.join(spool, source)}/push.log\n")
    return 1


def get(policy: str, source: str, spool: str, name: str, dest: str, timeout: float, prefetch: int) -> int:
    directory = _dir(spool, source, "get")
    data, missing = os.path.join(directory, name), os.path.join(directory, name + ".missing")
    if _deliver(data, dest):
        return 0
    want = os.path.join(directory, name + ".want")
    with open(want + ".tmp", "w") as handle:
        handle.write(name)
    os.replace(want + ".tmp", want)
    deadline, nudge = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        if time.monotonic() >= nudge:
            _ensure_worker("get", policy, source, spool, ["--prefetch", str(prefetch)])
            nudge = time.monotonic() + 1.0
        if _deliver(data, dest):
            return 0
        if _take(missing) is not None:
            sys.stderr.write(f"drorch: {name} is not in the archive of {source}\n")
            return 1
        message = _fatal(spool, source, "get")
        if message is not None:
            sys.stderr.write(f"error: {message.strip()}\n")
            return 1
        time.sleep(WAIT)
    sys.stderr.write(f"error: {name} was not fetched within {timeout:.0f}s; see {os.path.join(spool, source)}/get.log\n")
    return 1


def _deliver(data: str, dest: str) -> bool:
    """Move a fetched file into place (atomically when on one file system)."""
    try:
        os.replace(data, dest)
        return True
    except FileNotFoundError:
        return False
    except OSError:  # another file system
        tmp = dest + ".drorch-tmp"
        shutil.copyfile(data, tmp)
        os.replace(tmp, dest)
        os.unlink(data)
        return True


def parse(argv: list[str]) -> dict | None:
    """The arguments of `wal-push`/`wal-get` with --async, or None to leave it to the full CLI."""
    if len(argv) < 2 or argv[0] not in ("wal-push", "wal-get") or "--async" not in argv:
        return None
    out: dict = {"verb": argv[0], "args": [], "timeout": 60.0, "prefetch": 8,
                 "policy": os.environ.get("DRORCH_POLICY", "/etc/drorch/policies")}
    items = iter(argv[1:])
    for item in items:
        if item in ("--policy", "--source", "--spool", "--timeout", "--prefetch"):
            value = next(items, None)
            if value is None:
                return None
            out[item[2:]] = value
        elif item == "--async":
            continue
        elif item.startswith("-"):
            return None
        else:
            out["args"].append(item)
    wanted = 1 if out["verb"] == "wal-push" else 2
    if "source" not in out or "spool" not in out or len(out["args"]) != wanted:
        return None
    try:
        out["timeout"], out["prefetch"] = float(out["timeout"]), int(out["prefetch"])
    except ValueError:
        return None
    out["policy"] = os.path.abspath(out["policy"])
    return out


def run(parsed: dict) -> int:
    if parsed["verb"] == "wal-push":
        return push(parsed["policy"], parsed["source"], parsed["spool"], parsed["args"][0], parsed["timeout"])
    name, dest = parsed["args"]
    return get(parsed["policy"], parsed["source"], parsed["spool"], name, dest, parsed["timeout"],
               parsed["prefetch"])
