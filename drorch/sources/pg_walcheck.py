"""Check archived WAL segments the way recovery will read them: every page
header in place (magic, address), every record's CRC-32C, and every record's
xl_prev pointing at the record before it, record by record (records that
cross into the next segment are checked when that segment is fed next).  Pure functions of the WAL format (PostgreSQL 15: xlog_internal.h,
xlogrecord.h)."""

from __future__ import annotations

import bisect
import struct

import crc32c

from drorch.sources.pg_wal import format_lsn, segment_header

PAGE_HEADER = struct.Struct("<HHIQI")  # XLogPageHeaderData: magic, info, tli, pageaddr, rem_len
SHORT_HEADER, LONG_HEADER = 24, 40  # MAXALIGNed sizes
FIRST_IS_CONTRECORD = 0x0001
RECORD_HEADER = struct.Struct("<IIQBBxxI")  # XLogRecord: tot_len, xid, prev, info, rmid, crc
RECORD_SIZE = 24
RM_XLOG_ID, XLOG_SWITCH = 0, 0x40
MAX_RECORD = 1020 * 1024 * 1024  # XLogRecordMaxSize


def _align(n: int) -> int:
    return (n + 7) & ~7


class WalChecker:
    """Feed the segments a backup needs, in order; each feed returns a problem or None."""

    def __init__(self) -> None:
        self.carry = b""  # the start of a record that continues in the next segment
        self.carry_lsn = 0
        self.next_segment_lsn: int | None = None
        self.prev_lsn: int | None = None  # where the last checked record starts: the next one's xl_prev
        self.records = 0

    def feed(self, name: str, raw: bytes) -> str | None:
        header = segment_header(raw)
        if header is None:
            return "is too short to be a WAL segment"
        start, block = header["pageaddr"], header["block_size"]
        if block < 1024 or block & (block - 1) or len(raw) % block:
            return f"has a damaged first page header (block size {block})"
        if self.next_segment_lsn != start:  # not the continuation of the segment fed before
            self.carry, self.prev_lsn = b"", None
        self.next_segment_lsn = start + len(raw)
        pieces, index, trouble, first_info, size = [], [], None, 0, len(self.carry)
        for offset in range(0, len(raw), block):
            page = raw[offset:offset + block]
            magic, info, _, pageaddr, _ = PAGE_HEADER.unpack_from(page)
            if not any(page):
                break  # zeros: no WAL written here
            if magic != header["magic"] or pageaddr != start + offset:
                trouble = f"has a damaged page header at {format_lsn(start + offset)}"
                break
            skip = LONG_HEADER if offset == 0 else SHORT_HEADER
            first_info = info if offset == 0 else first_info
            index.append((size, start + offset + skip))
            pieces.append(page[skip:])
            size += block - skip
        stream = self.carry + b"".join(pieces)
        positions = [(0, self.carry_lsn)] + index if self.carry else index
        pos = 0
        if not self.carry and first_info & FIRST_IS_CONTRECORD:
            pos = _align(PAGE_HEADER.unpack_from(raw)[4])  # the end of a record from an earlier segment
        problem = self._records(stream, pos, positions)
        return trouble or problem

    def _records(self, stream: bytes, pos: int, positions: list) -> str | None:
        def lsn(at: int) -> int:
            i = bisect.bisect_right([p for p, _ in positions], at) - 1
            return positions[i][1] + (at - positions[i][0])

        self.carry = b""
        while pos + RECORD_SIZE <= len(stream):
            tot_len, _, prev, info, rmid, crc = RECORD_HEADER.unpack_from(stream, pos)
            if tot_len == 0:
                return None  # the end of the WAL written into this segment
            if tot_len < RECORD_SIZE or tot_len > MAX_RECORD:
                return f"has an invalid record length {tot_len} at {format_lsn(lsn(pos))}"
            if pos + tot_len > len(stream):
                break
            record = stream[pos:pos + tot_len]
            if crc32c.crc32c(record[:20], crc32c.crc32c(record[RECORD_SIZE:])) != crc:
                return f"has a record at {format_lsn(lsn(pos))} that fails its CRC (damaged WAL)"
            if self.prev_lsn is not None and prev != self.prev_lsn:  # a sound record, out of place
                return (f"has a record at {format_lsn(lsn(pos))} whose previous record is "
                        f"{format_lsn(prev)}, not {format_lsn(self.prev_lsn)} (WAL of another history "
                        "spliced in, or a segment of another server)")
            self.prev_lsn = lsn(pos)
            self.records += 1
            if rmid == RM_XLOG_ID and info & 0xF0 == XLOG_SWITCH:
                return None  # the rest of the segment is unused; the next one goes on from here
            pos = _align(pos + tot_len)
        if pos < len(stream):
            self.carry, self.carry_lsn = stream[pos:], lsn(pos)
        return None
