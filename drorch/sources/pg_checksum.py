"""PostgreSQL data page checksums (the algorithm of PostgreSQL's checksum_impl.h),
vectorised with numpy over every page of a block at once.

A page's checksum is an FNV-1a variant over 32 parallel lanes of the page's
32-bit words (with pd_checksum zeroed), two extra rounds of zeros, the lanes
XOR-folded, XORed with the block number, then reduced to 1..65535.
"""

from __future__ import annotations

import numpy as np

PAGE = 8192
N_SUMS = 32
FNV_PRIME = np.uint32(16777619)
ROWS = PAGE // (4 * N_SUMS)
BASE_OFFSETS = np.array([
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
], dtype=np.uint32)
SEGMENT_PAGES = 131072  # RELSEG_SIZE: pages per 1 GiB relation segment file


def _comp(sums: np.ndarray, values: np.ndarray) -> np.ndarray:
    tmp = sums ^ values
    return (tmp * FNV_PRIME) ^ (tmp >> np.uint32(17))


def page_checksums(data: bytes, first_block: int) -> tuple[np.ndarray, np.ndarray]:
    """(computed, stored) checksums of every whole page in data; pages are
    numbered from first_block (the relation's block number of the first page)."""
    count = len(data) // PAGE
    pages = np.frombuffer(data, dtype="<u4", count=count * PAGE // 4).reshape(count, ROWS, N_SUMS).copy()
    stored = pages[:, 0, 2] & np.uint32(0xFFFF)  # pd_checksum: bytes 8-9 of the header
    pages[:, 0, 2] &= np.uint32(0xFFFF0000)  # ... is zero while computing
    with np.errstate(over="ignore"):
        sums = np.broadcast_to(BASE_OFFSETS, (count, N_SUMS)).copy()
        for row in range(ROWS):
            sums = _comp(sums, pages[:, row, :])
        zero = np.zeros_like(sums)
        sums = _comp(_comp(sums, zero), zero)
        folded = np.bitwise_xor.reduce(sums, axis=1)
        folded ^= (np.arange(count, dtype=np.uint64) + first_block).astype(np.uint32)
        computed = (folded % np.uint32(65535)) + np.uint32(1)
    return computed.astype(np.uint16), stored.astype(np.uint16)


def page_lsns(data: bytes) -> np.ndarray:
    """pd_lsn of every page, as 64-bit integers (xlogid << 32 | xrecoff)."""
    count = len(data) // PAGE
    words = np.frombuffer(data, dtype="<u4", count=count * PAGE // 4).reshape(count, PAGE // 4)
    return (words[:, 0].astype(np.uint64) << np.uint64(32)) | words[:, 1].astype(np.uint64)


def bad_pages(data: bytes, first_block: int, skip_from_lsn: int) -> list[tuple[int, int, int]]:
    """Indexes of pages in data whose checksum is wrong: [(index, stored, computed)].
    New (all-zero) pages and pages changed at or after skip_from_lsn (WAL replay
    rewrites them) are not counted."""
    if len(data) < PAGE:
        return []
    computed, stored = page_checksums(data, first_block)
    wrong = np.nonzero(computed != stored)[0]
    if not len(wrong):
        return []
    lsns = page_lsns(data)
    out = []
    for index in wrong.tolist():
        page = data[index * PAGE:(index + 1) * PAGE]
        if lsns[index] >= skip_from_lsn or not any(page):
            continue
        out.append((index, int(stored[index]), int(computed[index])))
    return out
