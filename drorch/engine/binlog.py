"""The binlog archive of a MariaDB source, in its repository.

Keys (FORMAT.md, "Binlog archive"): `binlog/<source>/<file>/p<NNNN>` parts
(blobs of at most PART bytes of the binlog), then `binlog/<source>/<file>/index`
(JSON: size, SHA-256, parts), written last: a binlog is archived when its
index exists.  Only closed binlogs are archived (the active one still grows).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from dataclasses import dataclass

from drorch.errors import IntegrityError, NotFoundError, RepositoryError
from drorch.repo.repository import Repository
from drorch.sources.mariadb_facts import binlog_sequence

log = logging.getLogger(__name__)
PART = 16 << 20


def _prefix(source: str, name: str) -> str:
    return f"binlog/{source}/{name}/"


def index_key(source: str, name: str) -> str:
    return _prefix(source, name) + "index"


def part_key(source: str, name: str, part: int) -> str:
    return _prefix(source, name) + f"p{part:04d}"


@dataclass
class Archived:
    name: str
    size: int
    stored: bool  # False when it was already there


def archived(repo: Repository, source: str) -> dict[str, dict]:
    """name -> index of every archived binlog."""
    out = {}
    for info in repo.storage.list(f"binlog/{source}/"):
        if info.key.endswith("/index"):
            name = info.key.split("/")[2]
            out[name] = repo.get_json(info.key)
    return out


def push(repo: Repository, source: str, host, path: str, known: dict | None = None) -> Archived:
    """Archive one closed binlog read from host (parts first, index last)."""
    name = posixpath.basename(path)
    st = host.lstat(path)
    if st is None:
        raise NotFoundError(f"binlog {path} does not exist on {host.name}")
    existing = (known or {}).get(name)
    if existing is None:
        try:
            existing = repo.get_json(index_key(source, name))
        except NotFoundError:
            existing = None
    if existing is not None:
        if existing["size"] != st.st_size:
            raise RepositoryError(f"binlog {name} is archived with {existing['size']} bytes but has "
                                  f"{st.st_size} on {host.name}", "a server reused a binlog name: check that "
                                  "only one server archives into this source")
        return Archived(name, st.st_size, False)
    digest, offset, part = hashlib.sha256(), 0, 0
    while offset < st.st_size:
        data = host.read(path, offset, min(PART, st.st_size - offset))
        if not data:
            raise RepositoryError(f"binlog {path} shrank while it was archived")
        digest.update(data)
        repo.put_blob(part_key(source, name, part), data)
        offset, part = offset + len(data), part + 1
    repo.put_json(index_key(source, name), {"name": name, "size": offset, "sha256": digest.hexdigest(),
                                            "parts": part})
    log.info("%s: archived binlog %s (%d bytes)", source, name, offset)
    return Archived(name, offset, True)


def chunks(repo: Repository, source: str, name: str):
    """The bytes of an archived binlog, checked against its SHA-256."""
    try:
        index = repo.get_json(index_key(source, name))
    except NotFoundError:
        raise RepositoryError(f"binlog {name} of {source} is not in the archive",
                              "archive binlogs with `drorch binlog-archive` (the daemon does it after backups)") from None
    digest = hashlib.sha256()
    for part in range(index["parts"]):
        data = repo.get_blob(part_key(source, name, part))
        digest.update(data)
        yield data
    if digest.hexdigest() != index["sha256"]:
        raise IntegrityError(f"binlog {name} of {source} does not match its checksum",
                             "the repository is damaged: run `drorch verify`")


def gaps(names: list[str]) -> list[str]:
    """Binlog names missing between the first and the last archived one."""
    numbered = sorted((binlog_sequence(n), n) for n in names if binlog_sequence(n) is not None)
    if not numbered:
        return []
    base = numbered[0][1].rsplit(".", 1)[0]
    width = len(numbered[0][1].rsplit(".", 1)[1])
    have = {seq for seq, _ in numbered}
    return [f"{base}.{seq:0{width}d}" for seq in range(numbered[0][0], numbered[-1][0]) if seq not in have]


def needed_from(names: list[str], first: str) -> list[str]:
    """The archived binlogs at or after `first`, in order (what a replay from there reads)."""
    start = binlog_sequence(first)
    return sorted((n for n in names if (binlog_sequence(n) or -1) >= start), key=binlog_sequence)


def expirable(names: list[str], oldest_needed: str | None) -> list[str]:
    """Binlogs before the oldest kept backup's binlog file."""
    if not oldest_needed:
        return []
    floor = binlog_sequence(oldest_needed)
    return [n for n in names if (binlog_sequence(n) or floor) < floor]


def delete(repo: Repository, source: str, name: str) -> None:
    repo.storage.delete(index_key(source, name))  # un-archive first, then the parts
    for info in list(repo.storage.list(_prefix(source, name))):
        repo.storage.delete(info.key)


def archive_closed(repo: Repository, source, flush: bool = False) -> list[Archived]:
    """Archive every closed binlog of a MariaDB source that the archive lacks
    (with flush, close the current one first so everything up to now goes)."""
    try:
        if flush:
            source.flush_binlogs()
        known = archived(repo, source.name)
        return [push(repo, source.name, source.host, path, known) for path in source.closed_binlogs()]
    finally:
        source.cleanup()
