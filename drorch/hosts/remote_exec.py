"""Commands on a remote host, each on its own exec channel (host.run / host.start)."""

from __future__ import annotations

import os
import re
import threading

from drorch.errors import HostError
from drorch.hosts.base import RunResult
from drorch.hosts.ssh import Channel, Dropped

_SAFE = re.compile(rb"^[A-Za-z0-9@%+=:,./_-]+$")


def exec_text(argv: list[str]) -> bytes:
    """argv as one command line for the login shell (POSIX quoting, any bytes)."""
    words = []
    for word in argv:
        raw = os.fsencode(word)
        words.append(raw if raw and _SAFE.match(raw) else b"'" + raw.replace(b"'", b"'\\''") + b"'")
    return b" ".join(words)


class RemoteProcess:
    """stdout streamed to the caller, stderr collected by a thread (so a chatty
    command never stalls the channel), stdin written as it comes."""

    def __init__(self, channel: Channel, what: str):
        self.channel = channel
        self.what = what
        self._stderr = bytearray()
        self._drain = threading.Thread(target=self._read_stderr, name="drorch-stderr", daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        try:
            while chunk := self.channel.recv_stderr(65536):
                self._stderr += chunk
        except Dropped:
            pass

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            chunks = []
            while chunk := self.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        try:
            return self.channel.recv(n)
        except Dropped as exc:
            raise self._lost(exc) from None

    def write(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except Dropped as exc:
            raise self._lost(exc) from None

    def close_stdin(self) -> None:
        self.channel.shutdown_write()

    def wait(self, timeout: float | None = None) -> RunResult:
        self.close_stdin()
        rest = self.read()
        try:
            status = self.channel.exit_status()
        except Dropped as exc:
            raise self._lost(exc) from None
        finally:
            self._drain.join(5)
            self.channel.close()
        return RunResult(status, rest, bytes(self._stderr))

    def kill(self) -> None:
        self.channel.close()

    def _lost(self, exc: Dropped) -> HostError:
        self.channel.close()
        return HostError(f"{self.what}: {exc}; it may or may not have completed",
                         "check the host and run it again if needed (commands are not retried "
                         "automatically: they may not be safe to run twice)")
