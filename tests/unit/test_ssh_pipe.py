"""ChunkPipe (hosts/ssh_pipe.py) keeps paramiko's BufferedPipe contract: reads
return at least one byte and at most n, in order, wait with a timeout, and
return b"" only once closed and drained.  The SSH tests (a real sshd) run every
channel through it; these pin the edge cases."""

from __future__ import annotations

import threading
import time

import pytest
from paramiko.buffered_pipe import PipeTimeout

from drorch.hosts.ssh_pipe import ChunkPipe


def test_reads_split_and_join_packets_in_order():
    pipe = ChunkPipe()
    for chunk in (b"abc", b"defg", b"h", b"ijklmnop"):
        pipe.feed(chunk)
    assert len(pipe) == 16 and pipe.read_ready()
    got = [pipe.read(2), pipe.read(5), pipe.read(100)]
    assert got[0] == b"ab" and b"".join(got) == b"abcdefghijklmnop"
    assert all(1 <= len(part) for part in got) and len(got[1]) <= 5
    assert len(pipe) == 0 and not pipe.read_ready()


def test_a_read_waits_for_data_and_times_out_without_it():
    pipe = ChunkPipe()
    with pytest.raises(PipeTimeout):
        pipe.read(10, 0.0)
    started = time.monotonic()
    with pytest.raises(PipeTimeout):
        pipe.read(10, 0.05)
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.05, pipe.feed, (b"late",)).start()
    assert pipe.read(10, 5.0) == b"late"


def test_closed_returns_what_is_left_then_empty():
    pipe = ChunkPipe()
    pipe.feed(b"tail")
    pipe.close()
    assert pipe.read(2) == b"ta" and pipe.read(10) == b"il" and pipe.read(10) == b""
    waiter = ChunkPipe()
    threading.Timer(0.05, waiter.close).start()
    assert waiter.read(10, 5.0) == b""  # a waiting reader is woken by close


def test_event_follows_the_data_and_empty_drains():
    pipe, event = ChunkPipe(), threading.Event()
    pipe.set_event(event)
    assert not event.is_set()
    pipe.feed(b"xy")
    assert event.is_set()
    assert pipe.empty() == b"xy" and not event.is_set() and len(pipe) == 0
    pipe.feed(b"z")
    assert pipe.read(1) == b"z" and not event.is_set()
    pipe.close()
    assert event.is_set()
