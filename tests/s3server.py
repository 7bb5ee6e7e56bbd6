"""An S3 endpoint for tests: moto in server mode, a real process over HTTP on 127.0.0.1.

`MotoServer.start()` runs `python -m moto.server` on a free port and waits
until it answers; `stop()` ends that process by its PID.  `bucket()` makes
a fresh bucket (optionally with Object Lock); `client()` is a boto3 client
for checks from the test side.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import boto3
from botocore.config import Config

ACCESS_KEY = "drorch-test-key"
SECRET_KEY = "drorch-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.url = ""

    def start(self, timeout: float = 30.0) -> "MotoServer":
        for _ in range(3):  # the free port may be taken before the server binds it
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            # its request log goes to a file: a pipe nobody reads would block the server
            self._log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                          str(self.port)], stdout=self._log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    urllib.request.urlopen(self.url + "/moto-api/", timeout=1).read()
                    return self
                except OSError:
                    time.sleep(0.05)
            error = self._end()
            if "in use" not in error:
                raise RuntimeError(f"moto server did not start on {self.url}: {error.strip()[-2000:]}")
        raise RuntimeError("moto server: no free port found")

    def _end(self) -> str:
        """Stop the process (by its PID); return what it wrote to stderr."""
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._log.seek(0)
        output = self._log.read().decode(errors="replace")
        self._log.close()
        return output

    def stop(self) -> None:
        self._end()

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/moto-api/reset", method="POST")).read()

    def client(self, endpoint: str | None = None):
        return boto3.client("s3", endpoint_url=endpoint or self.url, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION,
                            config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                          s3={"addressing_style": "path"}))

    def bucket(self, *, object_lock: bool = False) -> str:
        name = f"test-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name
