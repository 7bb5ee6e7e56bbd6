"""A fault-injecting HTTP proxy for tests, in front of an S3 endpoint (moto server).

Each request is forwarded to the upstream as is, except that a fraction of
them (`rate`, drawn from a seeded generator) get one of the faults below,
or every request `rule(method, path)` names a fault for:

- `503`: answered 503 SlowDown at once, never forwarded (throttling);
- `500`: forwarded, then answered 500 InternalError (the write may have landed);
- `reset`: the connection is reset (RST) before forwarding;
- `reset-after`: forwarded, then the connection is reset instead of answering
  (the client cannot know whether its write landed);
- `truncate`: forwarded, then the answer is cut in the middle of its body
  (an answer without a body: reset);
- `403`, `invalid-key`: answered 403 AccessDenied / InvalidAccessKeyId
  (permanent errors: a client must not retry them).

`counts` says how many of each were injected, so a test can prove that
faults did happen; `max_in_flight` is the most requests it had at once;
`latency` delays every request (to stand for a distant endpoint).
The proxy runs in threads of the test process.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

FAULTS = ("503", "500", "reset", "reset-after", "truncate")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "expect"}
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate.</Message></Error>')
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            b'<Message>We encountered an internal error. Please try again.</Message></Error>')
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
          b'<Message>Access Denied</Message></Error>')
BAD_KEY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidAccessKeyId</Code>'
           b'<Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>')
ANSWERS = {"503": (503, SLOW_DOWN), "403": (403, DENIED), "invalid-key": (403, BAD_KEY)}


class _Reset(Exception):
    """The handler reset the connection: nothing more to write."""


class FaultProxy:
    def __init__(self, upstream_port: int, *, rate: float = 0.0, faults: tuple[str, ...] = FAULTS,
                 seed: int = 0):
        self.upstream_port = upstream_port
        self.rate = rate
        self.faults = faults
        self.rule: Callable[[str, str], str | None] | None = None
        self.latency = 0.0  # seconds added to every request (a distant endpoint)
        self.counts: Counter = Counter()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def choose(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            fault = self.rule(method, path) if self.rule else None
            if fault is None and self.rate and self._rng.random() < self.rate:
                fault = self._rng.choice(self.faults)
            if fault:
                self.counts[fault] += 1
            return fault

    def entered(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    @property
    def injected(self) -> int:
        return sum(self.counts.values())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # resets are on purpose; the client sees them, the test log need not


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered as S3 does

    def log_message(self, *args) -> None:
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = self.owner.choose(self.command, self.path)
        self.owner.entered(+1)
        self._inside = True
        if self.owner.latency:
            time.sleep(self.owner.latency)
        try:
            if fault in ANSWERS:
                status, text = ANSWERS[fault]
                return self._answer(status, {"Content-Type": "application/xml"}, text)
            if fault == "reset":
                self._reset()
            status, headers, answer = self._forward(body)
            if fault == "500":
                return self._answer(500, {"Content-Type": "application/xml"}, INTERNAL)
            if fault == "reset-after" or (fault == "truncate" and len(answer) < 2):
                self._reset()
            if fault == "truncate":
                self._answer(status, headers, answer, cut=len(answer) // 2)
                self._reset()
            self._answer(status, headers, answer)
        except _Reset:
            self.close_connection = True
        finally:
            self._leave()

    def _leave(self) -> None:
        """The request stops counting as in flight before its answer is sent, so
        that a client, which holds its connection slot until it has the answer,
        never overlaps with it here: max_in_flight never overstates concurrency."""
        if self._inside:
            self._inside = False
            self.owner.entered(-1)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    def _forward(self, body: bytes) -> tuple[int, dict, bytes]:
        upstream = http.client.HTTPConnection("127.0.0.1", self.owner.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            answer = response.read()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
            if self.command != "HEAD" and not any(k.lower() == "content-length" for k in kept):
                kept["Content-Length"] = str(len(answer))
            return response.status, kept, answer
        finally:
            upstream.close()

    def _answer(self, status: int, headers: dict, body: bytes, cut: int | None = None) -> None:
        self._leave()
        self.send_response_only(status)
        if not any(k.lower() == "content-length" for k in headers):
            headers = {**headers, "Content-Length": str(len(body))}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
        self._leave()
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        raise _Reset()
