"""Open, create and read/write a repository (FORMAT.md, "config")."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from drorch.errors import NotFoundError, RepositoryError
from drorch.repo import layout
from drorch.repo.codec import Codec
from drorch.storage.base import AlreadyExists, Storage
from drorch.timefmt import iso, utcnow

FORMAT_NAME = "drorch"
FORMAT_VERSION = 1
DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_PACK_SIZE = 16 << 20

log = logging.getLogger(__name__)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class Repository:
    """A repository: its storage, its config and the codec for its blobs."""

    def __init__(self, storage: Storage, config: dict, *, compression_level: int | None = None):
        self.storage = storage
        self.config = config
        level = compression_level or config["compression"]["level"]
        self.codec = Codec(level)
        self.block_size = int(config["chunking"]["block_size"])
        self.pack_size = int(config["chunking"]["pack_size"])
        self.created = False  # set when this process initialised it

    @property
    def location(self) -> str:
        return self.storage.location

    @property
    def id(self) -> str:
        return self.config["id"]

    # -- opening ----------------------------------------------------------------

    @classmethod
    def open(cls, storage: Storage, *, compression_level: int | None = None) -> "Repository":
        """Open an existing repository; fail clearly when there is none."""
        config = _read_config(storage)
        if config is None:
            if storage.is_empty():
                raise RepositoryError(f"no repository at {storage.location}",
                                      "check the repository settings of the policy; a repository is "
                                      "created by the first backup or by `drorch repo init`")
            raise RepositoryError(f"{storage.location} is not a drorch repository (it holds other files "
                                  "and no drorch config)", "point the policy at an empty location")
        return cls(storage, config, compression_level=compression_level)

    @classmethod
    def open_or_init(cls, storage: Storage, *, compression_level: int = 3) -> "Repository":
        """Open the repository, creating it when the location is empty.  Racing
        creators end with one repository: the config is created if absent."""
        config = _read_config(storage)
        if config is not None:
            return cls(storage, config, compression_level=compression_level)
        if not storage.is_empty():
            config = _read_config(storage)  # another writer may have just created it
            if config is not None:
                return cls(storage, config, compression_level=compression_level)
            raise RepositoryError(
                f"refusing to initialise a repository in {storage.location}: it is not empty and "
                "holds no drorch repository", "point the policy at an empty (or new) location")
        config = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "id": str(uuid.uuid4()),
            "created": iso(utcnow()),
            "compression": {"algorithm": "zstd", "level": compression_level},
            "chunking": {"block_size": DEFAULT_BLOCK_SIZE, "pack_size": DEFAULT_PACK_SIZE},
            "encryption": None,
        }
        created = True
        try:
            storage.put(layout.CONFIG, _dumps(config), if_absent=True)
        except AlreadyExists:
            created = False  # another writer won the race: use its repository
            config = _read_config(storage)
        repo = cls(storage, config, compression_level=compression_level)
        repo.created = created
        if created:
            log.info("initialised a new repository at %s (id %s)", storage.location, config["id"])
        return repo

    # -- objects ---------------------------------------------------------------

    def put_json(self, key: str, obj: Any, *, if_absent: bool = False) -> None:
        self.storage.put(key, _dumps(obj), if_absent=if_absent)

    def get_json(self, key: str) -> Any:
        data = self.storage.get(key)
        try:
            return json.loads(data)
        except ValueError:
            raise RepositoryError(f"{self.location}: {key} is not valid JSON (damaged?)") from None

    def put_blob(self, key: str, raw: bytes, *, if_absent: bool = False) -> bytes:
        blob = self.codec.encode(raw)
        self.storage.put(key, blob, if_absent=if_absent)
        return blob

    def get_blob(self, key: str) -> bytes:
        return self.codec.decode(self.storage.get(key), what=f"{self.location}: {key}")


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
