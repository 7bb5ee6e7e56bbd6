"""Requests sent ahead on one shell, their replies read in order.

A batch of small files costs a round trip when each request waits for the
one before it: the host sits idle while the reply is parsed and the next
request travels.  Here requests are sent as soon as the caller knows them
(the backup pipeline knows its batches well before a worker gets to them),
the host's shell runs them back to back, and one thread reads the replies in
the order they were sent and hands each to its Future.

Sending happens on its own thread, so a full channel window (the host busy
with earlier requests) never stops the reader that frees it.  A lost
connection is made again and every unanswered request sent again in order
(requests given here must be safe to repeat); a request lost ATTEMPTS times
fails with HostUnreachableError, as SshHost.call() does.

The shell is the lane's alone while it has requests (an idle one of the
pool, or a new one); after IDLE_CLOSE s without any it goes back to the pool.
warm() opens it before the first request (a session costs the host its
login shell's start-up: ≈ 0.1 s where rc files are heavy).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from drorch.errors import HostError, HostUnreachableError
from drorch.hosts.shell import Reply, ShellPool, ShellSession
from drorch.hosts.ssh import Dropped, SshConnection

log = logging.getLogger(__name__)
IDLE_CLOSE = 5.0  # seconds without requests before the shell is given back to the pool


@dataclass(eq=False)
class _Request:
    line: bytes
    data: bytes
    parse: Callable[[Reply], object]
    future: Future = field(default_factory=Future)
    token: bytes = b""
    losses: int = 0


class ReadAhead:
    def __init__(self, connection: SshConnection, shells: ShellPool, attempts: int):
        self._connection, self._shells, self._attempts = connection, shells, attempts
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()  # unanswered, in the order sent
        self._shell: ShellSession | None = None
        self._reader: threading.Thread | None = None
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="drorch-ssh-send")
        self._closed = False

    def submit(self, line: bytes, data: bytes, parse: Callable[[Reply], object]) -> Future:
        """Send `line` (with `data` staged in $i) now; the Future gets parse(reply)."""
        request = _Request(line, data, parse)
        with self._cond:
            if self._closed:
                raise HostError(f"host {self._shells.where}: the connection was closed")
            self._queue.append(request)
            if self._shell is not None:
                self._send(self._shell, request)
            if self._reader is None:
                self._reader = threading.Thread(target=self._run, name="drorch-ssh-readahead", daemon=True)
                self._reader.start()
            self._cond.notify_all()
        return request.future

    def warm(self) -> None:
        """Open the shell now, in the background, so the first request finds it
        ready (opening one costs the host a session: ≈ 50 ms); it is given back
        after IDLE_CLOSE s if no request comes."""
        with self._cond:
            if self._reader is None and not self._closed:
                self._reader = threading.Thread(target=self._run, args=(True,), name="drorch-ssh-readahead",
                                                daemon=True)
                self._reader.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            shell, self._shell = self._shell, None
            self._cond.notify_all()
        if shell is not None:
            shell.close()  # wakes a reader waiting for data
        self._sender.shutdown(wait=True)
        if self._reader is not None:
            self._reader.join(10)
        self._fail_all(HostError(f"host {self._shells.where}: the connection was closed"))

    # -- sending (called with _cond held: the sender runs them in this order) -------

    def _send(self, shell: ShellSession, request: _Request) -> None:
        request.token = secrets.token_hex(16).encode()
        self._sender.submit(self._send_now, shell, request.line, request.data, request.token)

    @staticmethod
    def _send_now(shell: ShellSession, line: bytes, data: bytes, token: bytes) -> None:
        try:
            shell.send(line, data, token)
        except Exception:  # noqa: BLE001 - a dead channel: the reader sees it and sends again
            shell.close()

    # -- reading (the reader thread) ----------------------------------------------

    def _run(self, warm: bool = False) -> None:
        if warm:
            self._open()
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    self._cond.wait(IDLE_CLOSE)
                if not self._queue or self._closed:
                    self._reader = None
                    shell, self._shell = self._shell, None
                    idle = not self._closed
                    break
                request, shell = self._queue[0], self._shell
            if shell is None:
                self._open()
                continue
            try:
                result = request.parse(Reply(shell, request.token))
            except Dropped as exc:
                self._lost(shell, request, exc)
                continue
            except BaseException as exc:  # noqa: BLE001 - this request fails; the rest go on
                self._drop_shell(shell)
                self._finish(request, error=exc)
                continue
            self._finish(request, result=result)
        if shell is not None and idle:
            self._shells.give_back(shell)  # every reply read: reusable by others
        elif shell is not None:
            shell.close()

    def _open(self) -> None:
        try:
            shell = self._shells.take()
        except Dropped as exc:
            with self._cond:
                request = self._queue[0] if self._queue else None
            if request is not None:
                self._count_loss(request, exc)
            return
        except BaseException as exc:  # noqa: BLE001 - e.g. become refused: every request fails
            self._fail_all(exc)
            return
        with self._cond:
            if self._closed:
                shell.close()
                return
            self._shell = shell
            for request in self._queue:
                self._send(shell, request)

    def _lost(self, shell: ShellSession, request: _Request, exc: Dropped) -> None:
        self._connection.lost(shell.channel.transport)
        self._drop_shell(shell)
        self._count_loss(request, exc)

    def _count_loss(self, request: _Request, exc: Exception) -> None:
        request.losses += 1
        if request.losses >= self._attempts:  # the host is gone: the requests behind it fail too
            self._fail_all(HostUnreachableError(
                f"lost the connection to host {self._shells.where} {self._attempts} times: {exc}",
                "check the network and sshd on that host; nothing half-done was kept, run it again"))
            return
        log.warning("%s: %s; trying again", self._shells.where, exc)
        time.sleep(min(5.0, 0.2 * 2 ** request.losses))

    def _drop_shell(self, shell: ShellSession) -> None:
        """Stop using a shell whose stream is in an unknown state; the requests not
        answered yet are sent again on a new one."""
        with self._cond:
            if self._shell is shell:
                self._shell = None
        shell.close()

    def _finish(self, request: _Request, *, result=None, error: BaseException | None = None) -> None:
        with self._cond:
            if self._queue and self._queue[0] is request:
                self._queue.popleft()
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(result)

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            failed, self._queue = list(self._queue), deque()
        for request in failed:
            if not request.future.done():
                request.future.set_exception(error)
