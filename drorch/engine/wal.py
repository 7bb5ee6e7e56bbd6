"""The WAL archive of a PostgreSQL source, in its repository.

Keys (FORMAT.md, "WAL archive"): `wal/<source>/archive.info` (the cluster the
archive belongs to), `wal/<source>/<timeline+log>/<file>` for segments,
partial segments and .backup files, `wal/<source>/history/<file>`.  Each WAL
file is one blob (compressed, and encrypted when the repository is).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass

from drorch.errors import DrorchError, RepositoryError, UsageError
from drorch.repo.repository import Repository
from drorch.sources import pg_wal
from drorch.storage.base import AlreadyExists

log = logging.getLogger(__name__)


def info_key(source: str) -> str:
    return f"wal/{source}/archive.info"


def wal_key(source: str, name: str) -> str:
    kind = pg_wal.kind_of(name)
    if kind is None:
        raise UsageError(f"{name!r} is not a WAL file name", "wal-push/wal-get take %p / %f from PostgreSQL")
    if kind == "history":
        return f"wal/{source}/history/{name}"
    return f"wal/{source}/{name[:16]}/{name}"


class ArchiveConflict(DrorchError):
    """A WAL file is already archived with other content, or comes from another cluster."""


@dataclass
class PushResult:
    name: str
    stored: bool  # False when an identical copy was already there
    size: int


def _check_cluster(repo: Repository, source: str, header: dict) -> None:
    """The first segment fixes the archive's cluster; WAL of another cluster is refused."""
    mine = {"system_identifier": str(header["system_identifier"]), "seg_size": header["seg_size"],
            "magic": header["magic"]}
    try:
        repo.put_json(info_key(source), mine, if_absent=True)
        return
    except AlreadyExists:
        pass
    known = repo.get_json(info_key(source))
    if str(known.get("system_identifier")) != mine["system_identifier"]:
        raise ArchiveConflict(
            f"WAL from the cluster with system identifier {mine['system_identifier']} refused: the archive of "
            f"{source} belongs to cluster {known.get('system_identifier')}",
            "two clusters must not share one archive: give this cluster its own source (and archive), "
            "or, after a deliberate re-initdb, move the old archive away")


def push(repo: Repository, source: str, path: str) -> PushResult:
    """Archive one WAL file (archive_command).  Pushing an identical copy again
    succeeds; different content for the same name is refused."""
    name = os.path.basename(path)
    key = wal_key(source, name)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise DrorchError(f"cannot read WAL file {path}: {exc.strerror}",
                          "archive_command runs in the data directory with %p relative to it") from None
    if pg_wal.kind_of(name) == "segment":
        header = pg_wal.segment_header(data)
        if header is None or len(data) != header["seg_size"]:
            raise DrorchError(f"{path} is not a complete WAL segment ({len(data)} bytes)")
        _check_cluster(repo, source, header)
    try:
        repo.put_blob(key, data, if_absent=True)
        return PushResult(name, True, len(data))
    except AlreadyExists:
        pass
    existing = repo.get_blob(key)
    if existing == data:
        return PushResult(name, False, len(data))
    raise ArchiveConflict(f"{name} is already archived for {source} with different content; refusing to "
                          "overwrite it", "another cluster (or a restored copy) may be archiving into this "
                          "source's archive: check archive_command on every server")


def get(repo: Repository, source: str, name: str, dest: str) -> int:
    """Fetch one WAL file to dest (restore_command).  NotFoundError when missing."""
    data = repo.get_blob(wal_key(source, name))
    tmp = f"{dest}.drorch-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, dest)
    return len(data)


def exists(repo: Repository, source: str, name: str) -> bool:
    return repo.storage.stat(wal_key(source, name)) is not None


def wait_for(repo: Repository, source: str, names: list[str], timeout: float) -> None:
    """Wait until every named WAL file is in the repository (a backup commits
    only when the WAL that makes it consistent is archived)."""
    deadline = time.monotonic() + timeout
    missing = list(names)
    while True:
        missing = [name for name in missing if not exists(repo, source, name)]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise RepositoryError(
                f"WAL needed by this backup did not reach the archive within {timeout:.0f}s: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                "check that archive_command is `drorch wal-push --policy ... --source "
                f"{source} %p` and that it succeeds (pg_stat_archiver, `drorch check`)")
        time.sleep(0.2)


def position_key(name: str) -> str:
    return pg_wal.position(name)


def archived(repo: Repository, source: str) -> list[str]:
    """Names of every archived WAL file of a source."""
    prefix = f"wal/{source}/"
    return sorted(info.key.rsplit("/", 1)[1] for info in repo.storage.list(prefix)
                  if not info.key.endswith("archive.info"))


def expirable(repo: Repository, source: str, oldest_start_wal: str | None) -> list[str]:
    """WAL files before the oldest kept backup's start (any timeline: recovery
    from that backup never reads an earlier position).  History files stay.
    With no kept backup, nothing goes."""
    if not oldest_start_wal:
        return []
    floor = pg_wal.position(oldest_start_wal)
    return [name for name in archived(repo, source)
            if pg_wal.kind_of(name) in ("segment", "partial", "backup") and pg_wal.position(name) < floor]
