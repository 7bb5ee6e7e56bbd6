"""Blob encoding (FORMAT.md, "Objects are blobs"): compression, then
encryption when the repository is encrypted.

A blob's *inner* form is `codec || payload`; an encrypted repository seals
it (crypto.Cipher) under the blob's context — its key, or for blobs in packs
its backup's data prefix.  zstd compressors are not thread-safe, so each
thread keeps its own; zstd and AES release the GIL, so encoding in worker
threads runs in parallel.
"""

from __future__ import annotations

import threading

import zstandard

from drorch.errors import IntegrityError
from drorch.repo.crypto import Cipher

RAW, ZSTD = 0, 1


class Codec:
    def __init__(self, level: int = 3, cipher: Cipher | None = None):
        self.level = level
        self.cipher = cipher
        self._local = threading.local()

    @property
    def encrypted(self) -> bool:
        return self.cipher is not None

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

    # -- whole blobs ---------------------------------------------------------------

    def encode(self, raw: bytes, *, context: str, compress: bool = True) -> bytes:
        return self.seal(self.compress(raw, compress=compress), context)

    def decode(self, blob: bytes, *, context: str, what: str = "object") -> bytes:
        return self.decompress(self.unseal(blob, context, what=what), what=what)

    # -- the two layers, for copies that keep the compressed payload ------------------

    def compress(self, raw: bytes, *, compress: bool = True) -> bytes:
        """raw -> codec || payload."""
        if compress and len(raw) > 64:
            packed = self._compressor().compress(raw)
            if len(packed) < len(raw):
                return bytes((ZSTD,)) + packed
        return bytes((RAW,)) + raw

    def decompress(self, inner: bytes, *, what: str = "object") -> bytes:
        """codec || payload -> raw."""
        if not inner:
            raise IntegrityError(f"{what}: empty blob")
        codec, payload = inner[0], memoryview(inner)[1:]
        if codec == RAW:
            return bytes(payload)
        if codec == ZSTD:
            try:
                return self._decompressor().decompress(payload)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{what}: cannot decompress: {exc}") from None
        raise IntegrityError(f"{what}: unknown codec byte {codec}")

    def seal(self, inner: bytes, context: str) -> bytes:
        """codec || payload -> the stored blob (encrypted when the repository is)."""
        return self.cipher.seal(inner, context) if self.cipher else inner

    def unseal(self, blob: bytes, context: str, *, what: str = "object") -> bytes:
        """The stored blob -> codec || payload."""
        return self.cipher.open(blob, context, what=what) if self.cipher else blob
