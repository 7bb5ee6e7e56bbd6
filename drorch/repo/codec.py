"""Blob encoding: compression now, room for encryption (FORMAT.md, "Objects are blobs").

zstd compressors are not thread-safe, so each thread keeps its own; zstd
releases the GIL, so encoding in worker threads runs in parallel.
"""

from __future__ import annotations

import threading

import zstandard

from drorch.errors import IntegrityError

RAW, ZSTD = 0, 1


class Codec:
    def __init__(self, level: int = 3):
        self.level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "comp", None)
        if comp is None:
            comp = self._local.comp = zstandard.ZstdCompressor(level=self.level)
        return comp

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec = getattr(self._local, "dec", None)
        if dec is None:
            dec = self._local.dec = zstandard.ZstdDecompressor()
        return dec

    def encode(self, raw: bytes, *, compress: bool = True) -> bytes:
        if compress and len(raw) > 64:
            packed = self._compressor().compress(raw)
            if len(packed) < len(raw):
                return bytes((ZSTD,)) + packed
        return bytes((RAW,)) + raw

    def decode(self, blob: bytes, *, what: str = "object") -> bytes:
        if not blob:
            raise IntegrityError(f"{what}: empty blob")
        codec, payload = blob[0], memoryview(blob)[1:]
        if codec == RAW:
            return bytes(payload)
        if codec == ZSTD:
            try:
                return self._decompressor().decompress(payload)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{what}: cannot decompress: {exc}") from None
        raise IntegrityError(f"{what}: unknown codec byte {codec}")
