"""Expire: apply retention to one source and remove leftovers of runs that never committed.

Runs under the source's lock, so a backup in progress is never touched.
Manifests go before the data they reference (an interrupted expire leaves
unreferenced data, never a listed backup with missing data).

On storage with Object Lock, a backup whose manifest is still retained is
not touched (its data was written before it, so it is retained no longer):
it is reported with the time after which a later expire can remove it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drorch.engine import binlog, wal
from drorch.engine.retention import BackupRef, Decision, Rules, decide
from drorch.errors import RepositoryError
from drorch.repo import layout, verifications
from drorch.sources.mariadb_facts import binlog_sequence
from drorch.repo.catalog import Catalog
from drorch.repo.locks import SourceLock
from drorch.repo.manifest import Manifest
from drorch.repo.repository import Repository
from drorch.storage.base import ObjectLocked
from drorch.timefmt import parse_iso, utcnow

log = logging.getLogger(__name__)
FAILED_RECORD_KEEP = timedelta(days=30)  # failed-run records stay this long, for reports
INTERRUPTED_UPLOAD_AGE = timedelta(days=1)  # a multipart upload this old is no running writer's


@dataclass
class ExpireResult:
    source: str
    dry_run: bool
    decisions: list[Decision] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # labels of runs that never committed
    freed_bytes: int = 0
    wal_removed: list[str] = field(default_factory=list)
    binlogs_removed: list[str] = field(default_factory=list)
    # expired by retention, or leftovers, that Object Lock still retains: label -> until (None: legal hold)
    locked: dict[str, datetime | None] = field(default_factory=dict)
    uploads_aborted: int = 0  # multipart uploads that crashed writers left behind


def run_expire(repo: Repository, source: str, rules: Rules, *, dry_run: bool = False,
               now: datetime | None = None, lock_wait: float = 0.0, with_wal: bool = False,
               with_binlog: bool = False) -> ExpireResult:
    """Apply retention to one source; with_wal also removes archived WAL that no
    kept backup needs (everything before the oldest kept backup's start)."""
    now = now or utcnow()
    with SourceLock(repo, source, "expire").acquire(wait=lock_wait):
        catalog = Catalog(repo)
        backups = catalog.backups(source)
        decisions = _decide(source, backups, rules, now)
        result = ExpireResult(source, dry_run, decisions=list(decisions.values()))
        kept = {label for label, d in decisions.items() if d.keep}
        sizes = _find_removals(repo, catalog, source, backups, kept, now, result)
        _find_logs(repo, source, backups, kept, result, with_wal=with_wal, with_binlog=with_binlog)
        if dry_run:
            return result
        _remove_backups(repo, source, decisions, result)
        result.freed_bytes = sum(size for label, size in sizes.items() if label not in result.locked)
        committed = {m.label for m in backups}
        _prune_run_records(repo, source, committed - set(result.expired), now)
        cleanup = getattr(repo.storage, "cleanup_interrupted", None)
        if cleanup is not None:
            result.uploads_aborted = cleanup(INTERRUPTED_UPLOAD_AGE)
        _remove_logs(repo, source, result)  # after the manifests of the backups that needed them
        return result


def _decide(source: str, backups: list[Manifest], rules: Rules, now: datetime) -> dict[str, Decision]:
    """Retention's decision for every backup; refuses one that would break a kept chain."""
    refs = [BackupRef(m.label, m.type, m.parent, parse_iso(m.finished), m.pinned) for m in backups]
    decisions = decide(refs, rules, now)
    kept = {label for label, d in decisions.items() if d.keep}
    for manifest in backups:  # never delete what a kept backup references
        if manifest.label in kept and not set(manifest.chain) <= kept:
            raise RepositoryError(f"{source}: retention would drop part of the chain of "
                                  f"{manifest.label}; nothing was expired", "report this bug")
    return decisions


def _find_removals(repo: Repository, catalog: Catalog, source: str, backups: list[Manifest], kept: set[str],
                   now: datetime, result: ExpireResult) -> dict[str, int]:
    """Fill in what goes (expired backups, leftovers, what Object Lock keeps); returns {label: bytes}."""
    expired = [m.label for m in backups if m.label not in kept]
    result.locked = _still_locked(repo, source, expired, now)
    result.expired = [label for label in expired if label not in result.locked]
    committed = {m.label for m in backups}
    unfinished = {run.label for run in catalog.runs(source) if run.status == "incomplete"}
    result.leftovers = sorted((_data_labels(repo, source) - committed) | unfinished)
    sizes = {label: _size(repo, source, label) for label in result.expired + result.leftovers}
    result.freed_bytes = sum(sizes.values())
    return sizes


def _find_logs(repo: Repository, source: str, backups: list[Manifest], kept: set[str], result: ExpireResult, *,
               with_wal: bool, with_binlog: bool) -> None:
    """The archived WAL / binlogs that no kept backup needs."""
    if with_wal:
        starts = [m.source_facts.get("start_wal") for m in backups if m.label in kept]
        oldest = min((s for s in starts if s), key=wal.position_key, default=None)
        result.wal_removed = wal.expirable(repo, source, oldest)
    if with_binlog:  # MariaDB: the binlogs from the oldest kept backup's position on stay
        firsts = [m.source_facts.get("binlog_file") for m in backups if m.label in kept]
        oldest = min((f for f in firsts if f), key=lambda n: binlog_sequence(n) or 0, default=None)
        result.binlogs_removed = binlog.expirable(list(binlog.archived(repo, source)), oldest)


def _remove_backups(repo: Repository, source: str, decisions: dict[str, Decision], result: ExpireResult) -> None:
    """Expired backups (manifest first: uncommit) and the leftovers of runs that never committed."""
    for label in list(result.expired):
        try:
            repo.storage.delete(layout.manifest_key(source, label))  # uncommit first
        except ObjectLocked as exc:
            _note_locked(result, label, exc)
            continue
        repo.storage.delete(layout.pin_key(source, label))
        verifications.delete_all(repo, source, label)  # its evidence goes with it
        _delete_data(repo, source, label, result)
        log.info("%s: expired backup %s (%s)", source, label, "; ".join(decisions[label].reasons))
    for label in result.leftovers:
        _delete_data(repo, source, label, result)
        log.info("%s: removed the leftovers of run %s, which never committed", source, label)


def _remove_logs(repo: Repository, source: str, result: ExpireResult) -> None:
    for n, name in enumerate(result.wal_removed):
        try:
            repo.storage.delete(wal.wal_key(source, name))
        except ObjectLocked as exc:  # archived in order, so the newer ones are locked too
            log.info("%s: WAL from %s on is still locked: %s", source, name, exc.message)
            result.wal_removed = result.wal_removed[:n]
            break
    for name in result.binlogs_removed:
        binlog.delete(repo, source, name)


def _data_labels(repo: Repository, source: str) -> set[str]:
    prefix = f"data/{source}/"
    return {info.key[len(prefix):].split("/", 1)[0] for info in repo.storage.list(prefix)}


def _size(repo: Repository, source: str, label: str) -> int:
    return sum(info.size for info in repo.storage.list(layout.data_prefix(source, label)))


def _still_locked(repo: Repository, source: str, labels: list[str], now: datetime) -> dict[str, datetime | None]:
    """Backups whose manifest Object Lock still retains (storage without it: none)."""
    locked_until = getattr(repo.storage, "locked_until", None)
    if locked_until is None:
        return {}
    found = {}
    for label in labels:
        until = locked_until(layout.manifest_key(source, label))
        if until is not None and until > now:
            found[label] = until
    return found


def _note_locked(result: ExpireResult, label: str, exc: ObjectLocked) -> None:
    log.info("%s: %s is still locked: %s", result.source, label, exc.message)
    if label in result.expired:
        result.expired.remove(label)
    if label not in result.locked:
        result.locked[label] = exc.until


def _delete_data(repo: Repository, source: str, label: str, result: ExpireResult) -> None:
    """Delete a backup's data; objects still locked stay (a later expire removes them)."""
    for info in list(repo.storage.list(layout.data_prefix(source, label))):
        try:
            repo.storage.delete(info.key)
        except ObjectLocked as exc:  # written together, so the rest is locked too
            log.info("%s: data of %s is still locked: %s", source, label, exc.message)
            result.locked.setdefault(label, exc.until)
            return
    discard = getattr(repo.storage, "discard_partial", None)  # posix: a pack the dead run was appending to
    if discard is not None:
        discard(layout.data_prefix(source, label))


def _prune_run_records(repo: Repository, source: str, committed: set[str], now: datetime) -> None:
    """Incomplete runs' records go; failed runs' records stay a while (history for reports)."""
    for info in list(repo.storage.list(layout.runs_prefix(source))):
        label = layout.split_key(info.key)[1]
        if label in committed:
            repo.storage.delete(info.key)  # a stale record of a committed backup
            continue
        record = repo.get_json(info.key)
        old = now - datetime.fromtimestamp(info.mtime, now.tzinfo) > FAILED_RECORD_KEEP
        if record.get("status") != "failed" or old:
            repo.storage.delete(info.key)
