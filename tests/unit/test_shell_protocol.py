"""The framing of the remote shell protocol, against a local `sh` running the
same loop (the SSH part is tested in tests/integration/test_ssh_*.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from drorch.hosts.shell import LOOP, ShellSession, command, q


class PipeChannel:
    """The Channel interface over a local process's pipes."""

    where = "local sh"

    def __init__(self):
        self.proc = subprocess.Popen(["sh", "-c", LOOP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def recv(self, n: int) -> bytes:
        return os.read(self.proc.stdout.fileno(), n)

    def sendall(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def stderr_ready(self) -> bool:
        return False

    closed = False
    connection_alive = True

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def shell():
    channel = PipeChannel()
    session = ShellSession(channel, "local sh")
    yield session
    channel.close()


def test_stdout_status_and_stderr_come_back_apart(shell):
    reply = shell.call(b"printf 'a\\0b'; echo oops >&2; false")
    assert (reply.stdout, reply.status, reply.stderr) == (b"a\0b", 1, b"oops\n")
    assert shell.call(b"echo hi").stdout == b"hi\n"


def test_binary_output_and_staged_data_survive(shell):
    blob = os.urandom(3 << 20) + b"\0" * 100
    reply = shell.call(b'cat "$i"', blob)
    assert reply.stdout == blob and reply.status == 0
    # data that looks like commands is never run: it is staged first
    reply = shell.call(b'wc -c <"$i"', b"\nrm -rf /nonexistent\n" * 1000)
    assert reply.stdout.strip() == b"21000"


def test_pipelined_replies_are_all_read(shell):
    replies = shell.pipeline([(b"printf %s " + str(n).encode(), None) for n in range(300)]
                             + [(b'cat "$i"', b"x" * 70000)])
    assert [r.stdout for r in replies[:300]] == [str(n).encode() for n in range(300)]
    assert replies[-1].stdout == b"x" * 70000


@pytest.mark.parametrize("name", ["plain", "with space", "it's", "new\nline", "tab\there", "$(echo no)",
                                  "-dash", "ünï", os.fsdecode(b"raw\xff\xfe"), "back\\slash", "\"q\""])
def test_quoting_keeps_any_name(shell, name):
    assert shell.call(b"printf %s " + q(name)).stdout == os.fsencode(name)
    assert b"\n" not in command("printf", "%s", name)
