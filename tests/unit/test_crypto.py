"""The encryption layer on its own: blobs bound to their context, the key wrap
and its check, refusal of what this reader does not implement."""

from __future__ import annotations

import json

import pytest

from drorch.errors import IntegrityError, RepositoryError
from drorch.repo import crypto
from drorch.repo.codec import Codec
from drorch.repo.repository import Repository
from drorch.storage.posix import PosixStorage

CHEAP = crypto.ScryptParams(n=1 << 10)


def test_a_sealed_blob_opens_only_under_its_context():
    cipher = crypto.Cipher(crypto.new_key())
    blob = cipher.seal(b"\x00payload", "manifests/s/20261122T010000Z-F")
    assert len(blob) == len(b"\x00payload") + crypto.OVERHEAD
    assert b"payload" not in blob
    assert cipher.open(blob, "manifests/s/20261122T010000Z-F", what="m") == b"\x00payload"
    with pytest.raises(IntegrityError, match="authentication"):
        cipher.open(blob, "manifests/s/20261122T020000Z-I", what="m")  # moved to another key
    damaged = bytearray(blob)
    damaged[20] ^= 1
    with pytest.raises(IntegrityError, match="authentication"):
        cipher.open(bytes(damaged), "manifests/s/20261122T010000Z-F", what="m")
    with pytest.raises(IntegrityError):
        crypto.Cipher(crypto.new_key()).open(blob, "manifests/s/20261122T010000Z-F", what="m")


def test_two_seals_of_the_same_bytes_differ():
    cipher = crypto.Cipher(crypto.new_key())
    assert cipher.seal(b"\x00same", "k") != cipher.seal(b"\x00same", "k")  # fresh nonce per blob


def test_codec_layers_round_trip_with_and_without_encryption():
    raw = b"line of text\n" * 1000
    for codec in (Codec(3), Codec(3, crypto.Cipher(crypto.new_key()))):
        blob = codec.encode(raw, context="data/s/L/")
        assert codec.decode(blob, context="data/s/L/") == raw
        inner = codec.unseal(blob, "data/s/L/")
        assert inner[0] == 1 and codec.decompress(inner) == raw  # zstd inner form
        assert (blob == inner) is (not codec.encrypted)


def test_wrap_unlock_and_the_key_check():
    key = crypto.new_key()
    block = crypto.wrap(key, "correct horse", "repo-id", CHEAP)
    assert block["kdf"] | {"salt": None} == {"algorithm": "scrypt", "n": 1 << 10, "r": 8, "p": 1, "salt": None}
    assert crypto.unlock(block, "correct horse", "repo-id", "loc").data_key == key
    with pytest.raises(RepositoryError, match="wrong passphrase"):
        crypto.unlock(block, "correct hors", "repo-id", "loc")
    with pytest.raises(RepositoryError, match="wrong passphrase"):  # the wrap is bound to its repository
        crypto.unlock(block, "correct horse", "other-id", "loc")
    rewrapped = crypto.wrap(key, "new", "repo-id", CHEAP)
    assert rewrapped["kdf"]["salt"] != block["kdf"]["salt"]
    assert crypto.unlock(rewrapped, "new", "repo-id", "loc").data_key == key


@pytest.mark.parametrize("change, message", [
    ({"algorithm": "chacha20-poly1305"}, "does not support"),
    ({"kdf": {"algorithm": "argon2id", "salt": ""}}, "unsupported key derivation"),
    ({"kdf": {"algorithm": "scrypt", "n": 1 << 30, "r": 8, "p": 1, "salt": ""}}, "unreasonable cost"),
    ({"key": "not base64!"}, "not base64"),
])
def test_what_this_reader_does_not_implement_is_refused(change, message):
    block = {**crypto.wrap(crypto.new_key(), "pw", "id", CHEAP), **change}
    with pytest.raises(RepositoryError, match=message):
        crypto.unlock(block, "pw", "id", "loc")


def test_no_passphrase_for_an_encrypted_repository_is_refused():
    block = crypto.wrap(crypto.new_key(), "pw", "id", CHEAP)
    with pytest.raises(RepositoryError, match="gives no passphrase"):
        crypto.unlock(block, None, "id", "loc")


def test_encrypted_repositories_say_version_2_and_plain_ones_version_1(tmp_path, monkeypatch):
    monkeypatch.setattr(crypto, "DEFAULT_KDF", CHEAP)
    plain = Repository.open_or_init(PosixStorage(tmp_path / "plain"))
    sealed = Repository.open_or_init(PosixStorage(tmp_path / "sealed"), passphrase="pw")
    assert json.loads((tmp_path / "plain" / "config").read_bytes())["version"] == 1
    config = json.loads((tmp_path / "sealed" / "config").read_bytes())
    assert config["version"] == 2 and config["encryption"]["algorithm"] == "aes-256-gcm"
    assert not plain.encrypted and sealed.encrypted
    again = Repository.open(PosixStorage(tmp_path / "sealed"), passphrase="pw")
    assert again.codec.cipher.data_key == sealed.codec.cipher.data_key


def test_policy_and_repository_must_agree(tmp_path, monkeypatch):
    monkeypatch.setattr(crypto, "DEFAULT_KDF", CHEAP)
    Repository.open_or_init(PosixStorage(tmp_path / "plain"))
    Repository.open_or_init(PosixStorage(tmp_path / "sealed"), passphrase="pw")
    for opener in (Repository.open, Repository.open_or_init):
        with pytest.raises(RepositoryError, match="not encrypted, but the policy gives it a passphrase") as exc:
            opener(PosixStorage(tmp_path / "plain"), passphrase="pw")
        assert "in place" in exc.value.hint
        with pytest.raises(RepositoryError, match="encrypted, but the policy gives no passphrase"):
            opener(PosixStorage(tmp_path / "sealed"))


def test_an_empty_passphrase_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(RepositoryError, match="passphrase is empty"):
        Repository.open_or_init(PosixStorage(tmp_path / "r"), passphrase="")
    assert not (tmp_path / "r").exists()

