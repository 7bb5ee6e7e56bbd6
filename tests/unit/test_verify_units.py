"""Pure parts of verification: record keys, sample choice, assertion values, the
WAL record checker (on synthetic segments), the verify/objectives policy keys."""

from __future__ import annotations

import random
import struct
from datetime import datetime, timezone
from decimal import Decimal

import crc32c
import pytest
from pydantic import ValidationError

from drorch.policy.models import FilesSource, PostgresSource
from drorch.repo import layout
from drorch.sources.assertions import as_text
from drorch.sources.pg_walcheck import WalChecker

BLOCK, SEGMENT = 8192, 4 * 8192
MAGIC = 0xD110
SYSID = 7000000000000000001


def test_verify_keys_round_trip_and_refuse_strangers():
    when = datetime(2026, 11, 22, 3, 4, 5, 600000, tzinfo=timezone.utc)
    key = layout.verify_key("db", "20261122T010000Z-F", when, "restore", "passed")
    assert key == "verify/db/20261122T010000Z-F/20261122T030405Z-restore-passed"
    source, label, at, level, result = layout.parse_verify_key(key)
    assert (source, label, level, result) == ("db", "20261122T010000Z-F", "restore", "passed")
    assert at == when.replace(microsecond=0)
    for bad in ("verify/db/20261122T010000Z-F/x", "verify/db/notalabel/20261122T030405Z-read-passed",
                "verify/db/20261122T010000Z-F/20261122T030405Z-read-maybe", "runs/db/20261122T010000Z-F"):
        assert layout.parse_verify_key(bad) is None
    assert "verify/" in layout.MUTABLE_PREFIXES  # evidence is never put under Object Lock


def test_assertion_values_as_text():
    assert [as_text(v) for v in (None, True, False, 0, 500, Decimal("3"), Decimal("2.50"), "shop")] == \
        ["null", "true", "false", "0", "500", "3", "2.50", "shop"]


def test_sample_is_a_subset_in_label_order():
    from drorch.engine.verify import choose_labels

    class FakeCatalog:  # only labels() is used
        repo = type("R", (), {"location": "/x"})()

        def labels(self, source):
            return [f"2026112{i}T000000Z-F" for i in range(8)]

    chosen = choose_labels(FakeCatalog(), "s", "read", sample=3, rng=random.Random(1))
    assert len(chosen) == 3 and chosen == sorted(chosen)
    assert choose_labels(FakeCatalog(), "s", "restore") == ["20261127T000000Z-F"]
    assert len(choose_labels(FakeCatalog(), "s", "structure")) == 8


# -- WAL ---------------------------------------------------------------------------------


def record(payload: bytes, rmid: int = 10, info: int = 0, prev: int = 0) -> bytes:
    tot_len = 24 + len(payload)
    head = struct.pack("<IIQBBxx", tot_len, 1, prev, info, rmid)
    crc = crc32c.crc32c(head, crc32c.crc32c(payload))
    return head + struct.pack("<I", crc) + payload


def segment(start_lsn: int, stream: bytes, cont: int = 0) -> bytes:
    """Pages of a WAL segment holding `stream` (records, 8-byte aligned), page headers
    inserted; cont: bytes at the start that continue a record of the previous segment."""
    out, pos = bytearray(), 0
    for page in range(SEGMENT // BLOCK):
        lsn = start_lsn + page * BLOCK
        remaining = max(0, cont - pos)
        info = (1 if remaining else 0) | (2 if page == 0 else 0)
        header = struct.pack("<HHIQI", MAGIC, info, 1, lsn, remaining)
        if page == 0:
            header += struct.pack("<4xQII", SYSID, SEGMENT, BLOCK)
        header = header.ljust(40 if page == 0 else 24, b"\0")
        room = BLOCK - len(header)
        out += header + stream[pos:pos + room].ljust(room, b"\0")
        pos += room
    return bytes(out)


def lsn_at(start_lsn: int, pos: int) -> int:
    """The LSN of byte `pos` of the record stream of the segment at start_lsn."""
    if pos < BLOCK - 40:
        return start_lsn + 40 + pos
    page, offset = divmod(pos - (BLOCK - 40), BLOCK - 24)
    return start_lsn + (page + 1) * BLOCK + 24 + offset


def chain(start_lsn: int, payloads: list, prev: int = 0, at: int = 0, wrong: int | None = None):
    """Records laid out from stream position `at` of a segment, each pointing back at
    the one before (the first at `prev`; record number `wrong` at the one before that):
    (aligned stream, the last record's LSN)."""
    out, lsns = b"", [prev]
    for n, (payload, rmid, info) in enumerate(payloads):
        back = lsns[-2] if n == wrong else lsns[-1]
        out += aligned(record(payload, rmid, info, back))
        lsns.append(lsn_at(start_lsn, at + len(out) - len(aligned(record(payload)))))
    return out, lsns[-1]


def aligned(*records: bytes) -> bytes:
    return b"".join(r + b"\0" * (-len(r) % 8) for r in records)


def two_segments(wrong: int | None = None, wrong_switch: bool = False) -> tuple[bytes, bytes]:
    """Records that cross pages and the segment boundary, then an XLOG_SWITCH."""
    start = 0x1000000
    head = [(b"a" * 100, 10, 0), (bytes(range(256)) * 40, 10, 0), (b"b" * 50, 10, 0)]  # the 2nd crosses a page
    room = (BLOCK - 40) + (SEGMENT // BLOCK - 1) * (BLOCK - 24)  # record bytes a segment holds
    head_len = len(aligned(*(record(p) for p, _, _ in head)))
    filler = (b"f" * (room - head_len - 1000 - 24), 10, 0)
    tail = (b"c" * 30000, 10, 0)  # starts 1000 bytes before the segment's end: crosses into the next
    stream, last = chain(start, [*head, filler, tail], prev=0x0FFFF00, wrong=wrong)
    rest = stream[room:]
    switch = record(b"", rmid=0, info=0x40, prev=0x0FFFF00 if wrong_switch else last)
    return segment(start, stream[:room]), segment(start + SEGMENT, aligned(rest, switch), cont=len(rest))


def test_wal_records_across_pages_and_segments_pass_and_a_flip_fails():
    seg1, seg2 = two_segments()
    checker = WalChecker()
    assert checker.feed("000000010000000000000001", seg1) is None
    assert checker.feed("000000010000000000000002", seg2) is None
    assert checker.records == 6  # a, big, b, filler, tail (checked across the boundary), switch

    damaged = bytearray(seg1)
    damaged[40 + 24 + 100 + 4 + 24 + 5000] ^= 0x01  # inside `big`, on its first page
    problem = WalChecker().feed("000000010000000000000001", bytes(damaged))
    assert problem == "has a record at 0/10000A8 that fails its CRC (damaged WAL)"  # `big`, after `a`

    damaged = bytearray(seg2)
    damaged[40 + 100] ^= 0x01  # in the part of `tail` that continues into the second segment
    checker = WalChecker()
    assert checker.feed("000000010000000000000001", seg1) is None
    assert "fails its CRC" in checker.feed("000000010000000000000002", bytes(damaged))

    header = bytearray(seg1)
    header[BLOCK + 8] ^= 0x01  # the address in page 1's header
    assert "damaged page header" in WalChecker().feed("000000010000000000000001", bytes(header))


def test_a_sound_record_that_does_not_point_back_at_the_one_before_fails():
    seg1, _ = two_segments(wrong=2)  # `b` points at `a`, not at `big` before it
    assert WalChecker().feed("000000010000000000000001", seg1) == (
        "has a record at 0/10028D8 whose previous record is 0/1000028, not 0/10000A8 "
        "(WAL of another history spliced in, or a segment of another server)")
    seg1, seg2 = two_segments(wrong_switch=True)  # across the segment boundary
    checker = WalChecker()
    assert checker.feed("000000010000000000000001", seg1) is None
    assert "whose previous record is 0/FFFF00" in checker.feed("000000010000000000000002", seg2)
    assert WalChecker().feed("000000010000000000000002", seg2) is None  # alone: nothing to point back at


# -- policy ---------------------------------------------------------------------------------


def test_verify_and_objectives_policy_keys():
    model = PostgresSource.model_validate({
        "kind": "postgres", "repository": "r", "pgdata": "/pg",
        "objectives": {"rpo": "15m", "rto": "2h"},
        "verify": {"level": "restore", "sandbox": "/var/tmp/v", "max_age": "7d",
                   "assertions": [{"sql": "SELECT true"}, {"sql": "SELECT 1", "expect": "1", "database": "shop"}]}})
    assert model.objectives.rpo.total_seconds() == 900 and model.verify.max_age.days == 7
    assert model.verify.assertions[1].database == "shop"
    files = FilesSource.model_validate({"kind": "files", "repository": "r", "paths": ["/etc"]})
    assert files.verify.level == "read" and files.objectives.rpo is None
    for bad in ({"verify": {"level": "deep"}}, {"verify": {"sandbox": "relative/dir"}},
                {"verify": {"assertions": [{"sql": "SELECT 1"}]}}, {"objectives": {"rpo": "15"}},
                {"verify": {"assertions": []}, "objectives": {"rpx": "1h"}}):
        with pytest.raises(ValidationError):
            FilesSource.model_validate({"kind": "files", "repository": "r", "paths": ["/etc"], **bad})


def test_a_record_finishing_in_the_second_of_an_earlier_one_is_still_the_newest(tmp_path):
    from datetime import datetime, timezone

    from drorch.repo import verifications
    from drorch.repo.repository import Repository
    from drorch.storage.posix import PosixStorage

    repo = Repository.open_or_init(PosixStorage(tmp_path / "repo"))
    at = datetime(2026, 11, 22, 10, 0, 0, 900000, tzinfo=timezone.utc)
    verifications.write(repo, "s", "20261122T090000Z-F", at, "restore", "passed", {"n": 1})
    # the next one finished in the same second (and sorts before "restore-passed" by name)
    verifications.write(repo, "s", "20261122T090000Z-F", at.replace(microsecond=950000), "structure", "failed",
                        {"n": 2})
    # a host whose clock is behind
    verifications.write(repo, "s", "20261122T090000Z-F", at.replace(second=0, minute=0, hour=9), "read", "passed",
                        {"n": 3})
    refs = verifications.refs(repo, "s", "20261122T090000Z-F")
    assert [(r.level, r.result) for r in refs] == [("restore", "passed"), ("structure", "failed"), ("read", "passed")]
    assert verifications.last_by_label(repo, "s")["20261122T090000Z-F"].level == "read"


def test_a_verify_host_is_accepted_for_postgres_and_its_sandbox_reads_wal_from_the_sandbox():
    from types import SimpleNamespace

    from drorch.sources.base import RestoreOptions
    from drorch.sources.pg_recovery import recovery_settings

    model = PostgresSource.model_validate({"kind": "postgres", "repository": "r", "pgdata": "/pg",
                                           "verify": {"level": "restore", "host": "verify1"}})
    assert model.verify.host == "verify1"
    settings = SimpleNamespace(drorch_command="drorch", policy_path="/etc/drorch/p.yaml", spool="/spool", prefetch=8)
    local = recovery_settings(RestoreOptions(target="/t", source_options={"sandbox": True}), {}, "db", settings)
    assert "wal-get" in local["restore_command"] and "--spool" not in local["restore_command"]
    remote = recovery_settings(RestoreOptions(target="/t", source_options={"sandbox": True, "archive_dir": "/s/a"}),
                               {}, "db", settings)
    assert remote["restore_command"] == "'cp /s/a/%f %p'" and remote["archive_mode"] == "off"
    assert remote["recovery_target"] == "'immediate'" and remote["recovery_target_action"] == "'promote'"


def test_query_results_of_the_sandbox_clients_are_typed_like_the_drivers():
    from drorch.sources import mariadb_verify, pg_sandbox

    assert pg_sandbox._typed("t", "boolean") is True and pg_sandbox._typed("f", "boolean") is False
    assert pg_sandbox._typed("501", "bigint") == 501 and pg_sandbox._typed("1.50", "numeric") == Decimal("1.50")
    assert pg_sandbox._typed(pg_sandbox._NULL, "integer") is None and pg_sandbox._typed("t", "text") == "t"
    assert pg_sandbox._psql_error('psql:<stdin>:7: ERROR:  column "x" does not exist\nLINE 1: ...') == \
        'column "x" does not exist'
    assert mariadb_verify._typed("NULL") is None and mariadb_verify._typed("1") == 1
    assert mariadb_verify._typed("2.50") == Decimal("2.50") and mariadb_verify._typed("a b") == "a b"
    assert mariadb_verify._unescape("a\\tb\\\\n\\n") == "a\tb\\n\n"
