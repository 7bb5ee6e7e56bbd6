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
_RAW_BYTE, _ZSTD_BYTE = bytes((RAW,)), bytes((ZSTD,))


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

    def encode_parts(self, raw: bytes, *, context: str) -> tuple[bytes, ...]:
        """encode() as parts whose concatenation is the blob: a plain blob's codec
        byte and payload stay apart, so the bulk of the data is not copied to join them."""
        if self.cipher is not None:
            return (self.encode(raw, context=context),)
        if len(raw) > 64:
            packed = self._compressor().compress(raw)
            if len(packed) < len(raw):
                return _ZSTD_BYTE, packed
        return _RAW_BYTE, raw

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

    def compress_pieces(self, pieces: list[bytes]) -> bytes:
        """compress() of the pieces' concatenation without making it: one zstd
        frame that records its size (so any reader decompresses it in one go)."""
        total = sum(map(len, pieces))
        if total > 64:
            stream = self._compressor().compressobj(size=total)
            packed = b"".join([_ZSTD_BYTE] + [stream.compress(p) for p in pieces] + [stream.flush()])
            if len(packed) <= total:
                return packed
        return b"".join([_RAW_BYTE, *pieces])

    def decompress_chunks(self, inner: bytes, *, what: str = "object", size: int = 1 << 20):
        """decompress() in pieces of about `size` bytes, for payloads read as a stream."""
        if not inner:
            raise IntegrityError(f"{what}: empty blob")
        codec, payload = inner[0], memoryview(inner)[1:]
        if codec == RAW:
            for start in range(0, len(payload), size):
                yield bytes(payload[start:start + size])
            return
        if codec != ZSTD:
            raise IntegrityError(f"{what}: unknown codec byte {codec}")
        done = 0
        try:
            expected = zstandard.get_frame_parameters(payload).content_size
            with zstandard.ZstdDecompressor().stream_reader(payload, read_across_frames=False) as reader:
                while chunk := reader.read(size):
                    done += len(chunk)
                    yield chunk
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what}: cannot decompress: {exc}") from None
        if expected != zstandard.CONTENTSIZE_UNKNOWN and done != expected:
            raise IntegrityError(f"{what}: decompressed to {done} bytes, its frame says {expected}")

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
