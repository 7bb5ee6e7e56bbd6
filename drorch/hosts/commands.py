"""Running commands, the same way on every host: argv to text, stdin feeding,
timeouts, and the `sudo -n -u USER` prefix of `become`."""

from __future__ import annotations

import shlex
import threading
import time
from typing import Callable

from drorch.errors import HostError
from drorch.hosts.base import Process, RunResult, StdinData

CHUNK = 1 << 20
TIMEOUT_STATUS = 124  # what coreutils `timeout` exits with


def as_argv(argv: list[str] | str, shell: bool) -> list[str]:
    """A command as argv; a shell string only when shell=True was asked for."""
    if shell:
        if not isinstance(argv, str):
            argv = " ".join(shlex.quote(a) for a in argv)
        return ["sh", "-c", argv]
    if isinstance(argv, str):
        raise TypeError("a command is an argv list; pass shell=True to run a shell string")
    return list(argv)


def with_user(argv: list[str], user: str | None, current: str | None) -> list[str]:
    """Prefix sudo when the command must run as another OS user."""
    if user is None or user == current:
        return argv
    return ["sudo", "-n", "-u", user, "--", *argv]


def describe(argv: list[str]) -> str:
    text = " ".join(shlex.quote(a) for a in argv)
    return text if len(text) <= 200 else text[:197] + "..."


def feed(stdin: StdinData, write: Callable[[bytes], None]) -> None:
    """Write bytes, chunks or a file object's bytes through write()."""
    if stdin is None:
        return
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        view = memoryview(stdin)
        for start in range(0, len(view), CHUNK):
            write(bytes(view[start:start + CHUNK]))
        return
    if hasattr(stdin, "read"):
        while chunk := stdin.read(CHUNK):
            write(chunk)
        return
    for chunk in stdin:
        write(chunk)


def drive(process: Process, stdin: StdinData, timeout: float | None, what: str,
          grace: float = 0.0) -> RunResult:
    """Feed stdin (in a thread), collect stdout, wait; kill on timeout (here,
    or on the far side by `timeout`, which exits 124)."""
    started = time.monotonic()
    problems: list[BaseException] = []
    timed_out = threading.Event()

    def feeder() -> None:
        try:
            feed(stdin, process.write)
        except BaseException as exc:  # noqa: BLE001 - a broken pipe means the command ended
            problems.append(exc)
        finally:
            try:
                process.close_stdin()
            except OSError:
                pass

    def expire() -> None:
        timed_out.set()
        process.kill()

    thread = threading.Thread(target=feeder, name="drorch-stdin", daemon=True)
    thread.start()
    timer = threading.Timer(timeout + grace, expire) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        chunks = []
        while chunk := process.read(CHUNK):
            chunks.append(chunk)
        result = process.wait(timeout)
    finally:
        if timer:
            timer.cancel()
    thread.join(5)
    late = timeout and result.exit_status == TIMEOUT_STATUS and time.monotonic() - started >= timeout * 0.99
    if timed_out.is_set() or late:
        raise HostError(f"{what} did not finish within {timeout:g}s and was stopped",
                        "give it a longer timeout, or find out why it hangs")
    return RunResult(result.exit_status, b"".join(chunks) + result.stdout, result.stderr)
