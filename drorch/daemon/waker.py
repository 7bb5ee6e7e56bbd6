"""Wake the daemon's loop from a signal handler or a thread (a self-pipe:
safe in a signal handler, unlike a lock or an Event)."""

from __future__ import annotations

import os
import select


class Waker:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def wake(self) -> None:
        try:
            os.write(self._write, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def wait(self, timeout: float) -> None:
        """Sleep until woken or timeout seconds passed; then forget earlier wake-ups."""
        try:
            select.select([self._read], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
