"""Encryption at rest (FORMAT.md, "Encryption").

A repository that is encrypted has one random 256-bit data key.  Every blob
is sealed with it (AES-256-GCM, a random 96-bit nonce per blob, the blob's
context — its key, or its backup's data prefix for blobs in packs — as
associated data, so a blob moved to another key fails to open).  The data
key is kept in `config.encryption`, wrapped (AES-256-GCM) by a key derived
from the passphrase with scrypt; the wrap's tag is the key check: a wrong
passphrase fails to unwrap, it never yields a wrong key.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from drorch.errors import IntegrityError, RepositoryError
from drorch.timefmt import iso, utcnow

ALGORITHM = "aes-256-gcm"
KDF = "scrypt"
NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG  # bytes an encrypted blob has beyond its codec byte and payload
KEY_BYTES = 32
SALT_BYTES = 32
MAX_SCRYPT_N = 1 << 22  # refuse configs that would need more than 4 GiB to open


@dataclass(frozen=True)
class ScryptParams:
    n: int = 1 << 17  # 128 MiB, about 0.35 s on a small server: once per command
    r: int = 8
    p: int = 1


#: the cost new wraps use (recorded in the config, so it can change without breaking old repositories)
DEFAULT_KDF = ScryptParams()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, location: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise RepositoryError(f"{location}: config.encryption.{what} is not base64 (damaged config?)",
                              "restore the repository's config object from a copy") from None


class Cipher:
    """Seal and open blobs with the repository's data key.  Thread-safe."""

    def __init__(self, data_key: bytes):
        self._aead = AESGCM(data_key)
        self.data_key = data_key

    def seal(self, inner: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, bytes(inner), context.encode())

    def open(self, blob: bytes | memoryview, context: str, *, what: str) -> bytes:
        if len(blob) < OVERHEAD + 1:
            raise IntegrityError(f"{what}: encrypted blob too short ({len(blob)} bytes)")
        blob = memoryview(blob)
        try:
            return self._aead.decrypt(blob[:NONCE], blob[NONCE:], context.encode())
        except InvalidTag:
            raise IntegrityError(f"{what}: fails its authentication check (damaged, or not the "
                                 "object stored under this key)",
                                 "run `drorch verify`; restore from another backup or a copy") from None


def _kek(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    return Scrypt(salt=salt, length=KEY_BYTES, n=params.n, r=params.r, p=params.p).derive(
        passphrase.encode("utf-8"))


def _wrap_aad(repo_id: str) -> bytes:
    return f"drorch key-wrap {ALGORITHM} {repo_id}".encode()


def check_passphrase(passphrase: str | None, location: str) -> str:
    if not passphrase:
        raise RepositoryError(f"{location}: the passphrase is empty",
                              "give the repository a non-empty passphrase (encryption.passphrase)",
                              exit_code=2)
    return passphrase


def wrap(data_key: bytes, passphrase: str, repo_id: str, params: ScryptParams | None = None) -> dict:
    """The `config.encryption` object holding data_key wrapped under passphrase."""
    params = params or DEFAULT_KDF
    salt = os.urandom(SALT_BYTES)
    nonce = os.urandom(NONCE)
    wrapped = AESGCM(_kek(passphrase, salt, params)).encrypt(nonce, data_key, _wrap_aad(repo_id))
    return {"algorithm": ALGORITHM,
            "kdf": {"algorithm": KDF, "n": params.n, "r": params.r, "p": params.p, "salt": _b64(salt)},
            "key": _b64(nonce + wrapped), "wrapped": iso(utcnow())}


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def unlock(encryption: object, passphrase: str | None, repo_id: str, location: str) -> Cipher:
    """The data key of an encrypted repository, or a clear refusal."""
    if not isinstance(encryption, dict) or encryption.get("algorithm") != ALGORITHM:
        algorithm = encryption.get("algorithm") if isinstance(encryption, dict) else encryption
        raise RepositoryError(f"{location} is encrypted with {algorithm!r}, which this drorch does not "
                              f"support (it knows {ALGORITHM})", "upgrade drorch to read this repository")
    kdf = encryption.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("algorithm") != KDF:
        raise RepositoryError(f"{location}: unsupported key derivation {kdf!r} in config.encryption",
                              "upgrade drorch to read this repository")
    if passphrase is None:
        raise RepositoryError(f"{location} is encrypted, but the policy gives no passphrase for it",
                              "add `encryption: {passphrase: \"${env:NAME}\"}` (or ${file:/path}) to this "
                              "repository in the policy")
    try:
        params = ScryptParams(int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
    except (KeyError, TypeError, ValueError):
        raise RepositoryError(f"{location}: config.encryption.kdf is damaged",
                              "restore the repository's config object from a copy") from None
    if params.n > MAX_SCRYPT_N or params.n < 2 or params.r * params.p > 64:
        raise RepositoryError(f"{location}: config.encryption.kdf asks for an unreasonable cost {kdf}",
                              "the config is damaged or crafted; restore it from a copy")
    salt = _unb64(kdf.get("salt"), "kdf.salt", location)
    blob = _unb64(encryption.get("key"), "key", location)
    kek = _kek(passphrase, salt, params)
    try:
        data_key = AESGCM(kek).decrypt(blob[:NONCE], blob[NONCE:], _wrap_aad(repo_id))
    except (InvalidTag, ValueError):
        raise RepositoryError(f"wrong passphrase for the encrypted repository at {location} "
                              "(it does not unlock the repository's key)",
                              "check the passphrase the policy gives this repository "
                              "(encryption.passphrase); nothing was read or written (if it is right, the "
                              "repository's config is damaged: restore it from a copy)") from None
    if len(data_key) != KEY_BYTES:
        raise RepositoryError(f"{location}: config.encryption.key holds a key of {len(data_key)} bytes")
    return Cipher(data_key)
