"""Open, create and read/write a repository (FORMAT.md, "config")."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from drorch.errors import NotFoundError, RepositoryError
from drorch.repo import crypto, layout
from drorch.repo.codec import Codec
from drorch.storage.base import AlreadyExists, Storage
from drorch.timefmt import iso, utcnow

FORMAT_NAME = "drorch"
FORMAT_VERSION = 2  # the newest this code reads: 1 plain, 2 adds encryption (FORMAT.md)
ENCRYPTED_VERSION = 2
DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_PACK_SIZE = 16 << 20

log = logging.getLogger(__name__)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class Repository:
    """A repository: its storage, its config and the codec for its blobs."""

    def __init__(self, storage: Storage, config: dict, *, compression_level: int | None = None,
                 cipher: crypto.Cipher | None = None):
        self.storage = storage
        self.config = config
        level = compression_level or config["compression"]["level"]
        self.codec = Codec(level, cipher)
        self.block_size = int(config["chunking"]["block_size"])
        self.pack_size = int(config["chunking"]["pack_size"])
        self.created = False  # set when this process initialised it

    @property
    def location(self) -> str:
        return self.storage.location

    @property
    def id(self) -> str:
        return self.config["id"]

    @property
    def encrypted(self) -> bool:
        return self.codec.encrypted

    # -- opening ----------------------------------------------------------------

    @classmethod
    def open(cls, storage: Storage, *, compression_level: int | None = None,
             passphrase: str | None = None) -> "Repository":
        """Open an existing repository; fail clearly when there is none.  passphrase
        is the policy's (None: the policy says the repository is not encrypted)."""
        config = _read_config(storage)
        if config is None:
            if storage.is_empty():
                raise RepositoryError(f"no repository at {storage.location}",
                                      "check the repository settings of the policy; a repository is "
                                      "created by the first backup or by `drorch repo init`")
            raise RepositoryError(f"{storage.location} is not a drorch repository (it holds other files "
                                  "and no drorch config)", "point the policy at an empty location")
        return cls(storage, config, compression_level=compression_level,
                   cipher=_unlock(storage, config, passphrase))

    @classmethod
    def open_or_init(cls, storage: Storage, *, compression_level: int = 3,
                     passphrase: str | None = None) -> "Repository":
        """Open the repository, creating it when the location is empty (encrypted
        when a passphrase is given).  Racing creators end with one repository:
        the config is created if absent."""
        config = _read_config(storage)
        if config is None and not storage.is_empty():
            config = _read_config(storage)  # another writer may have just created it
            if config is None:
                raise RepositoryError(
                    f"refusing to initialise a repository in {storage.location}: it is not empty and "
                    "holds no drorch repository", "point the policy at an empty (or new) location")
        if config is not None:
            return cls(storage, config, compression_level=compression_level,
                       cipher=_unlock(storage, config, passphrase))
        config, cipher = _new_config(storage, compression_level, passphrase)
        created = True
        try:
            storage.put(layout.CONFIG, _dumps(config), if_absent=True)
        except AlreadyExists:
            created = False  # another writer won the race: use its repository
            config = _read_config(storage)
            cipher = _unlock(storage, config, passphrase)
        repo = cls(storage, config, compression_level=compression_level, cipher=cipher)
        repo.created = created
        if created:
            log.info("initialised a new %srepository at %s (id %s)", "encrypted " if cipher else "",
                     storage.location, config["id"])
        return repo

    def require_encrypted(self) -> None:
        if not self.encrypted:
            raise RepositoryError(f"the repository at {self.location} is not encrypted; it has no passphrase",
                                  _NOT_IN_PLACE_HINT)

    def change_passphrase(self, new_passphrase: str) -> None:
        """Re-wrap the data key under a new passphrase (no data is rewritten).  The
        config is replaced by one atomic put: every reader sees the old wrap or the
        new one, so at each moment exactly one of the two passphrases opens it."""
        self.require_encrypted()
        crypto.check_passphrase(new_passphrase, self.location)
        config = {**self.config, "encryption": crypto.wrap(self.codec.cipher.data_key, new_passphrase,
                                                           self.id)}
        self.storage.put(layout.CONFIG, _dumps(config))
        self.config = config
        now = _read_config(self.storage)
        if now != config:  # a concurrent passwd replaced ours: say whose wrap is in place
            raise RepositoryError(f"another process changed the passphrase of {self.location} at the same "
                                  "time; the passphrase now is the one it set", "run passwd again if needed")

    # -- objects ---------------------------------------------------------------

    def put_json(self, key: str, obj: Any, *, if_absent: bool = False) -> None:
        """A small record (run record, pin): plain JSON, or a blob in an encrypted
        repository (its text may hold what the source is, e.g. an error naming a file)."""
        if self.encrypted:
            self.put_blob(key, _dumps(obj), if_absent=if_absent)
        else:
            self.storage.put(key, _dumps(obj), if_absent=if_absent)

    def get_json(self, key: str) -> Any:
        data = self.get_blob(key) if self.encrypted else self.storage.get(key)
        return _loads(data, self.location, key)

    def put_plain_json(self, key: str, obj: Any, *, if_absent: bool = False) -> None:
        """Plain JSON even when encrypted: locks (host, pid, user, time: nothing of the source)."""
        self.storage.put(key, _dumps(obj), if_absent=if_absent)

    def get_plain_json(self, key: str) -> Any:
        return _loads(self.storage.get(key), self.location, key)

    def put_blob(self, key: str, raw: bytes, *, if_absent: bool = False) -> bytes:
        blob = self.codec.encode(raw, context=key)
        self.storage.put(key, blob, if_absent=if_absent)
        return blob

    def put_blob_pieces(self, key: str, pieces: list[bytes]) -> bytes:
        """put_blob() of the pieces' concatenation, without making it (large records)."""
        blob = self.codec.seal(self.codec.compress_pieces(pieces), key)
        self.storage.put(key, blob)
        return blob

    def get_blob(self, key: str) -> bytes:
        return self.codec.decode(self.storage.get(key), context=key, what=f"{self.location}: {key}")


_NOT_IN_PLACE_HINT = ("an existing repository cannot be encrypted or decrypted in place: create a new "
                      "repository at an empty location with the encryption you want and move the backups "
                      "there with `drorch copy`, or make the policy match the repository")


def _loads(data: bytes, location: str, key: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise RepositoryError(f"{location}: {key} is not valid JSON (damaged?)") from None


def _new_config(storage: Storage, compression_level: int, passphrase: str | None):
    config = {
        "format": FORMAT_NAME,
        "version": 1,
        "id": str(uuid.uuid4()),
        "created": iso(utcnow()),
        "compression": {"algorithm": "zstd", "level": compression_level},
        "chunking": {"block_size": DEFAULT_BLOCK_SIZE, "pack_size": DEFAULT_PACK_SIZE},
        "encryption": None,
    }
    if passphrase is None:
        return config, None
    crypto.check_passphrase(passphrase, storage.location)
    data_key = crypto.new_key()
    config["version"] = ENCRYPTED_VERSION  # readers that predate encryption must refuse it
    config["encryption"] = crypto.wrap(data_key, passphrase, config["id"])
    return config, crypto.Cipher(data_key)


def _unlock(storage: Storage, config: dict, passphrase: str | None) -> crypto.Cipher | None:
    """The repository's cipher; refuses a policy that disagrees with the repository."""
    encryption = config.get("encryption")
    if encryption is None:
        if passphrase is not None:
            raise RepositoryError(f"the repository at {storage.location} is not encrypted, but the policy "
                                  "gives it a passphrase", _NOT_IN_PLACE_HINT)
        return None
    return crypto.unlock(encryption, passphrase, config.get("id", ""), storage.location)


def _read_config(storage: Storage) -> dict | None:
    try:
        data = storage.get(layout.CONFIG)
    except NotFoundError:
        return None
    try:
        config = json.loads(data)
    except ValueError:
        raise RepositoryError(f"{storage.location}: the repository config is not valid JSON",
                              "the repository is damaged; restore its config object from a copy") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise RepositoryError(f"{storage.location} holds a config that is not a drorch repository's",
                              "point the policy at a drorch repository or an empty location")
    version = config.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RepositoryError(
            f"{storage.location} uses repository format version {version}; this drorch reads "
            f"version {FORMAT_VERSION} and older", "upgrade drorch to read this repository")
    return config
