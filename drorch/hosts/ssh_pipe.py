"""A channel's incoming data kept packet by packet (used by ssh.py).

paramiko's BufferedPipe keeps what a channel received in one array that grows
on every packet and is shifted on every read.  With the large channel window
ssh.py asks for (to keep the host sending), that array holds megabytes when
the reader is behind, and each 16-128 KiB packet then moves them: 12 % of
drorch's time reading a tree of small files (py-spy, bench/ssh).  Here the
packets wait in a deque as they came and a read joins only what it returns.
The methods are those paramiko's Channel calls, with the same meaning.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from paramiko.buffered_pipe import PipeTimeout


class ChunkPipe:
    def __init__(self):
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._event: threading.Event | None = None
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._closed = False

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()
            if data:
                self._chunks.append(bytes(data))
                self._size += len(data)
            self._cv.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        """Up to nbytes (at least one, waiting up to `timeout` s for it: else
        PipeTimeout); b"" once closed and empty."""
        with self._lock:
            if not self._size:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                while not self._size and not self._closed:
                    then = time.monotonic()
                    self._cv.wait(timeout)
                    if timeout is not None:
                        timeout -= time.monotonic() - then
                        if timeout <= 0.0 and not self._size:
                            raise PipeTimeout()
                if not self._size:
                    return b""
            out = self._take(nbytes)
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def _take(self, nbytes: int) -> bytes:
        chunks = self._chunks
        first = chunks[0]
        if len(first) >= nbytes:  # a part of one packet (or all of it)
            if len(first) == nbytes:
                chunks.popleft()
            else:
                chunks[0] = first[nbytes:]
            self._size -= nbytes
            return first[:nbytes] if len(first) > nbytes else first
        parts, got = [], 0
        while chunks and got + len(chunks[0]) <= nbytes:  # whole packets only: no copy to split
            parts.append(chunks.popleft())
            got += len(parts[-1])
        self._size -= got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def empty(self) -> bytes:
        with self._lock:
            out = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cv.notify_all()
            if self._event is not None:
                self._event.set()

    def __len__(self) -> int:
        with self._lock:
            return self._size
